"""Captured output of the apps: size-rotated log files, tails in memory, followers.

Each instance owns one :class:`LogSink` (its file ``DIR/APP.INSTANCE.log``, rotated
to ``.1``..``.N`` at ``max_bytes``, reopened on SIGUSR1 for logrotate). Every process
it spawns gets its own pipe (:class:`PipeReader`) read on the event loop, with its own
tail of recent lines: when one generation fails to start, its own last lines are what
the operator is shown, not another generation's.
"""

from __future__ import annotations

import asyncio
import errno
import os
import time
from collections import deque

from ..host import files
from ..log import get_logger

log = get_logger("logs")

_TAIL_LINES = 200
_SINK_TAIL_LINES = 2000
_MAX_LINE = 8192
_READ_SIZE = 65536
_RETRY_OPEN = 1.0  # seconds between two tries to open an unusable file (not one per write)


class LogSink:
    """One instance's log file, its recent lines and its live followers."""

    __slots__ = (
        "_fd",
        "_followers",
        "_retry_at",
        "_size",
        "_tail",
        "backups",
        "last_error",
        "max_bytes",
        "path",
    )

    def __init__(self, path: str, max_bytes: int, backups: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        # made with the first line: most instances of a big app say nothing, and an
        # empty deque costs most of a kilobyte
        self._tail: deque[str] | None = None
        self.last_error: str | None = None  # why output is being lost, reported once
        self._fd = -1
        self._size = 0
        self._retry_at = 0.0
        self._followers: set[asyncio.Queue[str | None]] | None = None  # made when asked
        self._open()

    def _open(self) -> None:
        """Open the file relative to its directory, never through a link (the app's
        user may be able to write the directory: see host.files)."""
        self._retry_at = time.monotonic() + _RETRY_OPEN
        directory, name = os.path.split(self.path)
        try:
            dir_fd = files.open_dir(directory, create_mode=0o750)
            try:
                self._fd = files.open_append(dir_fd, name, 0o640, shown=self.path)
            finally:
                os.close(dir_fd)
            self._size = os.fstat(self._fd).st_size
            self.last_error = None
        except OSError as exc:
            self._fd = -1
            error = f"cannot open {self.path}: {exc.strerror}"
            if isinstance(exc, files.UnsafeFile):
                error = f"log file refused, output dropped: {exc.strerror}"
            self._failed("log_file_unusable", error)

    def _failed(self, event: str, error: str) -> None:
        if error != self.last_error:  # once per cause, not once per write
            log.error(event, path=self.path, error=error)
        self.last_error = error

    def reopen(self) -> None:
        """Close and reopen the file (after logrotate moved it away)."""
        self.close()
        self._open()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _rotate(self) -> None:
        """Shift PATH -> PATH.1 -> ... within the directory fd (a rename moves a
        planted link itself, never what it points at), then open a fresh PATH."""
        self.close()
        directory, name = os.path.split(self.path)
        dir_fd = files.open_dir(directory)
        try:
            if self.backups > 0:
                for n in range(self.backups - 1, 0, -1):
                    files.rename(dir_fd, f"{name}.{n}", f"{name}.{n + 1}")
                files.rename(dir_fd, name, f"{name}.1")
            else:
                files.unlink(dir_fd, name)
        finally:
            os.close(dir_fd)
        self._open()

    def write(self, data: bytes) -> None:
        """Append ``data``, rotating whenever the file reaches ``max_bytes`` (a big
        read is split at the room left, at a line end where there is one)."""
        while data:
            room = max(1, self.max_bytes - self._size)
            chunk = data
            if len(data) > room:
                cut = data.rfind(b"\n", 0, room)
                chunk = data[: cut + 1] if cut >= 0 else data[:room]
            data = data[len(chunk) :]
            if not self._append(chunk):
                return
            if self._size >= self.max_bytes or data:
                try:
                    self._rotate()
                except OSError as exc:
                    self._failed("log_rotate_failed", f"rotating {self.path}: {exc.strerror}")
                    return

    def _append(self, data: bytes) -> bool:
        if self._fd < 0:
            if time.monotonic() >= self._retry_at:
                self._open()
            if self._fd < 0:
                return False
        try:
            os.write(self._fd, data)
            self._size += len(data)
        except OSError as exc:
            # ENOSPC and friends: keep the app running, drop its output
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO):
                self._failed("log_write_failed", f"writing {self.path}: {exc.strerror}")
            return False
        return True

    def add_lines(self, lines: list[str]) -> None:
        if self._tail is None:
            self._tail = deque(maxlen=_SINK_TAIL_LINES)
        self._tail.extend(lines)
        for q in list(self._followers or ()):
            for line in lines:
                if q.qsize() >= 10000:  # a stuck follower loses lines, never the daemon
                    break
                q.put_nowait(line)

    def last(self, n: int) -> list[str]:
        if n <= 0 or self._tail is None:
            return []
        return list(self._tail)[-n:]

    def subscribe(self) -> asyncio.Queue[str | None]:
        """A queue of the lines written from now on (None when the sink closes)."""
        q: asyncio.Queue[str | None] = asyncio.Queue()
        if self._followers is None:
            self._followers = set()
        self._followers.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[str | None]) -> None:
        if self._followers is not None:
            self._followers.discard(q)

    def end_followers(self) -> None:
        for q in self._followers or ():
            q.put_nowait(None)


class PipeReader:
    """Reads one child's stdout+stderr pipe into a sink, keeping that child's own tail."""

    __slots__ = ("_partial", "_tail", "loop", "read_fd", "sink", "write_fd")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, sink: LogSink, adopt_fd: int | None = None
    ) -> None:
        self.loop = loop
        self.sink = sink
        self._tail: deque[str] | None = None  # made with the first line (see LogSink)
        self._partial = b""
        if adopt_fd is not None:  # a pipe that outlived the supervisor (upgrade, crash)
            self.read_fd, self.write_fd = adopt_fd, -1
            os.set_inheritable(adopt_fd, False)
            os.set_blocking(adopt_fd, False)
        else:
            self.read_fd, self.write_fd = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
            # the child's end must block (most programs do not expect EAGAIN on stdout)
            os.set_blocking(self.write_fd, True)
        loop.add_reader(self.read_fd, self._on_readable)

    def child_started(self) -> None:
        """Close our copy of the write end once the child has its own."""
        if self.write_fd >= 0:
            os.close(self.write_fd)
            self.write_fd = -1

    def _on_readable(self) -> None:
        try:
            data = os.read(self.read_fd, _READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._finish()
            return
        self.sink.write(data)
        self._split(data)

    def drain(self) -> None:
        """Read whatever is in the pipe now (called when the child exits, so that its
        last words are in the tail before anyone reports them)."""
        while self.read_fd >= 0:
            try:
                data = os.read(self.read_fd, _READ_SIZE)
            except (BlockingIOError, OSError):
                return
            if not data:
                self._finish()
                return
            self.sink.write(data)
            self._split(data)

    def _split(self, data: bytes) -> None:
        buf = self._partial + data
        *complete, rest = buf.split(b"\n")
        if len(rest) > _MAX_LINE:  # a flood without newlines: cut it into lines
            complete.append(rest[:_MAX_LINE])
            rest = b""
        self._partial = rest
        if complete:
            lines = [c.decode(errors="replace").rstrip("\r") for c in complete]
            self._keep(lines)
            self.sink.add_lines(lines)

    def _finish(self) -> None:
        if self._partial:
            line = self._partial.decode(errors="replace")
            self._keep([line])
            self.sink.add_lines([line])
            self._partial = b""
        self.close()

    def close(self) -> None:
        if self.read_fd >= 0:
            self.loop.remove_reader(self.read_fd)
            os.close(self.read_fd)
            self.read_fd = -1
        self.child_started()

    def _keep(self, lines: list[str]) -> None:
        if self._tail is None:
            self._tail = deque(maxlen=_TAIL_LINES)
        self._tail.extend(lines)

    def last(self, n: int = 20) -> list[str]:
        if self._tail is None:
            return []
        return list(self._tail)[-n:]
