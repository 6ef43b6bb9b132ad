"""App-controlled text made inert for a terminal (standard library only).

An app's output, its STATUS= text and its error messages reach the operator's
terminal through ``supctl``; escape sequences in them could retitle the window,
rewrite what was printed, or (with some terminals) answer back as typed input.
:func:`escape` shows every control character in a visible form instead.
"""

from __future__ import annotations

import re

# C0 controls but tab, DEL, C1 controls (U+0080..U+009F: 8-bit CSI/OSC), and the
# bidirectional overrides that reorder what is displayed.
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(text: str) -> str:
    """``text`` with control characters as ``\\x1b``, ``\\x07``, ``\\u202e``...
    (a backslash itself is left alone: the form is for eyes, not for parsing)."""
    return _CONTROL.sub(_visible, text)
