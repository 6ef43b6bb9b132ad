"""Reading a source file as text, and telling its format when ``--from`` is not given.

A file that is not UTF-8 text (a binary, a NUL byte) is a :class:`SourceError` naming
the line where the bad byte is, before any format's parser sees it.
"""

from __future__ import annotations

import os
import re

from .report import SourceError

FORMATS = ("supervisord", "procfile", "systemd")
_PROCFILE_LINE = re.compile(r"^[A-Za-z0-9_-]+:\s")
_SYSTEMD_SECTIONS = re.compile(r"^\[(Unit|Service|Install)\]\s*$", re.MULTILINE)
_SUPERVISORD_SECTIONS = re.compile(
    r"^\[(program|group|eventlistener|fcgi-program|rpcinterface):[^\]]+\]|^\[(supervisord|include|"
    r"unix_http_server|inet_http_server|supervisorctl)\]",
    re.MULTILINE,
)


def read_text(path: str) -> str:
    """The file's text; unreadable, binary or non-UTF-8 input is a SourceError."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise SourceError(f"cannot read: {exc.strerror or exc}", file=path) from None
    nul = data.find(b"\0")
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        raise SourceError("a NUL byte: this is a binary file, not a config", file=path, line=line)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise SourceError("not UTF-8 text", file=path, line=line) from None


def guess_format(path: str, text: str) -> str:
    """The format of ``path`` from its name and content, or SourceError: use --from."""
    name = os.path.basename(path)
    if name.endswith((".service", ".socket")) or _SYSTEMD_SECTIONS.search(text):
        return "systemd"
    if _SUPERVISORD_SECTIONS.search(text):
        return "supervisord"
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if name.startswith("Procfile") or (lines and all(_PROCFILE_LINE.match(ln) for ln in lines)):
        return "procfile"
    raise SourceError(
        "cannot tell its format (no [program:x], [Service] or 'name: command' lines): "
        "use --from supervisord|procfile|systemd",
        file=path,
    )
