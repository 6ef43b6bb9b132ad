"""The event history: who ran which command, and what happened to the apps.

Owns ``STATE_DIR/history.jsonl``: an append-only file of one JSON object per line
(mode 0600, opened with O_APPEND|O_NOFOLLOW|O_CLOEXEC relative to the state dir),
and an in-memory ring of the newest events for fast queries. Each event is written
with one ``os.write`` of a whole line, so a daemon killed at any instant leaves at
most a truncated last line; readers skip lines that do not parse, and a daemon that
finds the file not ending in a newline ends that line first, so its own events are
never glued onto a fragment.

The file is bounded: once it holds more than twice :data:`KEEP` lines, the newest
:data:`KEEP` are written to a temporary file that is renamed over it. It survives
``supctl upgrade`` and a daemon's death: the next daemon reads it at start-up and
continues its numbering (``id``).

Every event has ``id``, ``time`` (ISO-8601 UTC), ``ts`` (epoch seconds), ``kind``,
``app``, ``instance`` (None when it concerns no single one) and ``message``, plus the
fields of its kind; the daemon's log gets the same fields (event ``history``).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import stat
import time
from collections.abc import Callable, Iterable
from typing import Any

from ..log import get_logger

log = get_logger("history")

FILE = "history.jsonl"
KEEP = 10_000  # events kept on disk (the file is rewritten at twice as many)
RING = 1_000  # newest events kept in memory
MAX_TEXT = 2_000  # characters of one string field (app output can be long)
_FLAGS = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


def _clip(value: Any) -> Any:
    if isinstance(value, str) and len(value) > MAX_TEXT:
        return value[:MAX_TEXT] + "..."
    if isinstance(value, list | tuple):
        return [_clip(v) for v in value[:100]]
    if isinstance(value, dict):
        return {str(k): _clip(v) for k, v in list(value.items())[:100]}
    return value


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None  # the torn last line of a daemon killed mid-write, or garbage
    return value if isinstance(value, dict) and isinstance(value.get("id"), int) else None


def matches(event: dict[str, Any], app: str | None) -> bool:
    """Whether ``event`` concerns ``app`` (any event when ``app`` is None)."""
    if app is None or event.get("app") == app:
        return True
    apps = event.get("apps")
    return isinstance(apps, list) and app in apps


class History:
    """The event history of one state dir (memory-only when its file cannot be used)."""

    def __init__(self, state_dir: str, keep: int = KEEP, ring: int = RING) -> None:
        self.keep = keep
        self.path = os.path.join(state_dir, FILE)
        # the newest lines as written: a third of the memory of parsed events
        self._ring: collections.deque[bytes] = collections.deque(maxlen=ring)
        self._next_id = 1
        self._lines = 0  # lines in the file (valid or not)
        self._dir_fd = -1
        self._fd = -1
        self._failing = False  # a write failed: warn once, not once per event
        # told about each event once it is written (the notify hooks)
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        try:
            self._dir_fd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            self._fd = self._open()
            self._load()
        except OSError as exc:
            log.warning("history_file_unusable", path=self.path, error=str(exc))
            self.close()

    def _open(self) -> int:
        fd = os.open(FILE, _FLAGS, 0o600, dir_fd=self._dir_fd)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise OSError(f"{self.path} is not a regular file")
            if stat.S_IMODE(st.st_mode) != 0o600:
                os.fchmod(fd, 0o600)  # may hold command arguments: private
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _read_all(self) -> bytes:
        size = os.fstat(self._fd).st_size
        chunks = []
        offset = 0
        while offset < size:
            chunk = os.pread(self._fd, min(size - offset, 1 << 20), offset)
            if not chunk:
                break
            chunks.append(chunk)
            offset += len(chunk)
        return b"".join(chunks)

    def _load(self) -> None:
        data = self._read_all()
        if data and not data.endswith(b"\n"):
            os.write(self._fd, b"\n")  # end a torn line, so the next event starts afresh
            data += b"\n"
        lines = data.splitlines()
        self._lines = len(lines)
        newest: list[bytes] = []
        for line in reversed(lines):
            event = _parse(line)
            if event is not None:
                if not newest:
                    self._next_id = event["id"] + 1
                newest.append(line)
                if len(newest) >= (self._ring.maxlen or 0):
                    break
        self._ring.extend(reversed(newest))

    def close(self) -> None:
        for fd in (self._fd, self._dir_fd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fd = self._dir_fd = -1

    # --- writing ------------------------------------------------------------------

    def record(
        self,
        kind: str,
        message: str,
        *,
        app: str | None = None,
        instance: str | None = None,
        level: str = "info",
        **fields: Any,
    ) -> dict[str, Any]:
        """Append one event (to the ring, the file and the daemon's log); the event."""
        ms = round(time.time() * 1000)
        event: dict[str, Any] = {
            "id": self._next_id,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000))
            + f".{ms % 1000:03d}Z",
            "ts": ms / 1000,
            "kind": kind,
            "app": app,
            "instance": instance,
            "message": _clip(message),
        }
        for key, value in fields.items():
            if key not in event:
                event[key] = _clip(value)
        self._next_id += 1
        line = json.dumps(event, separators=(",", ":"), ensure_ascii=False, default=str)
        data = line.encode("utf-8", "replace")
        self._ring.append(data)
        self._append(data + b"\n")
        getattr(log, level)("history", **event)
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:  # a listener's bug must not cost the event or its caller
                log.exception("history_listener_failed", kind=kind)
        return event

    def _append(self, data: bytes) -> None:
        if self._fd < 0:
            return
        try:
            written = os.write(self._fd, data)  # one write of the whole line
            if written < len(data):
                os.write(self._fd, b"\n")  # a full disk cut it: end it, readers skip it
            self._lines += 1
            self._failing = False
        except OSError as exc:
            if not self._failing:
                log.warning("history_write_failed", path=self.path, error=str(exc))
            self._failing = True
            return
        if self._lines > 2 * self.keep:
            self._compact()

    def _compact(self) -> None:
        """Rewrite the newest ``keep`` events into a new file renamed over the old one."""
        tmp = FILE + ".tmp"
        try:
            lines = [line for line in self._read_all().splitlines() if _parse(line) is not None]
            kept = lines[-self.keep :]
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=self._dir_fd)
            fd = os.open(
                tmp,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
                dir_fd=self._dir_fd,
            )
            try:
                data = b"".join(line + b"\n" for line in kept)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)  # the rename must not replace the history with an empty file
            finally:
                os.close(fd)
            os.rename(tmp, FILE, src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd)
            new_fd = self._open()
        except OSError as exc:
            log.warning("history_compaction_failed", path=self.path, error=str(exc))
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=self._dir_fd)
            self._lines = self.keep  # retry after another `keep` events, not on every one
            return
        os.close(self._fd)
        self._fd = new_fd
        self._lines = len(kept)

    # --- reading ------------------------------------------------------------------

    def recent(self, app: str | None = None, count: int = 50) -> list[dict[str, Any]]:
        """The newest ``count`` events (of ``app``), newest first."""
        count = max(0, min(count, self.keep))
        found = _select(reversed(self._ring), app, count)
        older_on_disk = self._lines > len(self._ring)
        if len(found) >= count or not older_on_disk or self._fd < 0:
            return found
        try:
            data = self._read_all()
        except OSError as exc:
            log.warning("history_read_failed", path=self.path, error=str(exc))
            return found
        return _select(reversed(data.splitlines()), app, count)


def _select(lines: Iterable[bytes], app: str | None, count: int) -> list[dict[str, Any]]:
    """The first ``count`` events of ``app`` among ``lines`` (newest first)."""
    out: list[dict[str, Any]] = []
    needle = json.dumps(app, ensure_ascii=False).encode() if app is not None else b""
    for line in lines:
        if len(out) >= count:
            break
        if needle not in line:
            continue  # cheaper than parsing every line of someone else's app
        event = _parse(line)
        if event is not None and matches(event, app):
            out.append(event)
    return out
