"""``supctl status --watch``: show a fresh frame every second until Ctrl-C.

On a terminal each frame replaces the last in place with plain ANSI (cursor home,
clear to the end of the screen; no curses), cut to the terminal's height. On
anything else (a pipe, a file) frames follow each other, separated by a blank line,
like ``vmstat 1``, so the output can be logged or grepped; with ``--json``, one JSON
answer per line and nothing else. Ctrl-C ends it with exit status 0 and no traceback.

The first frame decides whether watching makes sense: if the daemon cannot be
reached or refuses the request (a mistyped app), that error is printed and its exit
status returned at once. After that an error is drawn in place of the table and the
watch goes on, so it survives a daemon restart or ``supctl upgrade``.

Standard library only, and nothing of ours: supctl hands in a ``fetch`` callable.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["HOME_CLEAR", "INTERVAL_S", "loop"]

#: Cursor to the top-left corner, then erase from there to the end of the screen.
HOME_CLEAR = "\033[H\033[J"
INTERVAL_S = 1.0

Fetch = Callable[[], tuple[int, list[str]]]  # (exit status, lines to show)


def loop(
    fetch: Fetch, stdout: TextIO, stderr: TextIO, *, raw: bool = False, interval: float = INTERVAL_S
) -> int:
    """Draw ``fetch()``'s lines every ``interval`` seconds until interrupted; the exit status.

    ``raw``: machine output (``--json``): only the lines, one frame after the other.
    """
    redraw = not raw and _is_tty(stdout)
    first = True
    try:
        while True:
            started = time.monotonic()
            status, lines = fetch()
            if first and status != 0:
                stderr.write("".join(line + "\n" for line in lines))
                return status
            first = False
            header = f"every {interval:g}s  {time.strftime('%Y-%m-%d %H:%M:%S')}"
            frame = [header + ("  (Ctrl-C to quit)" if redraw else ""), *lines]
            if raw:
                stdout.write("".join(line + "\n" for line in lines))
            elif redraw:
                stdout.write(HOME_CLEAR + "\n".join(_fit(frame, stdout)))
            else:
                stdout.write("".join(line + "\n" for line in frame) + "\n")
            stdout.flush()
            time.sleep(max(0.0, started + interval - time.monotonic()))
    except KeyboardInterrupt:
        if redraw:
            stdout.write("\n")  # the shell's prompt on a line of its own
            stdout.flush()
        return 0


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _fit(frame: list[str], stream: TextIO) -> list[str]:
    """The frame cut to the terminal's height: more would scroll the top away."""
    try:
        rows = os.get_terminal_size(stream.fileno()).lines
    except (OSError, ValueError):
        return frame
    if rows < 3 or len(frame) < rows:
        return frame
    keep = rows - 2
    return [*frame[:keep], f"... {len(frame) - keep} more lines (a taller window, or APP)"]
