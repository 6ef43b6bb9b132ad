"""The durable record of what runs: a snapshot plus an append-only journal.

A successor daemon (after a crash) must find every process its predecessor started,
whatever instant the predecessor died at. So the record comes *before* the process:

- ``intent`` is appended before a process is created; it names the marker that the
  child carries in its environment (``SUPERVISORD_LITE_MARK``), so a process that was
  created but whose pid never reached the journal is still found (and stopped);
- ``proc`` is appended once the pid is known, and again whenever what a successor
  needs to know changes (it became ready, it was promoted to current by a swap);
- ``gone`` is appended once a process is forgotten (exited and reaped);
- ``app`` records an app's operator-visible state (release, stopped instances).

Each record is one ``write`` of one line on an ``O_APPEND`` descriptor: O(1) per
event, and a kill -9 of the daemon leaves at most a torn last line, which the
reader skips. Now and then (when the journal grows past a bound) the whole state is
written as a snapshot (``state.json``, atomically, by rename) naming a new, empty
journal epoch; a reader takes the snapshot and replays only the journal of its
epoch, so a crash at any point of a compaction is harmless.

The journal survives the daemon, not the host: ``state_dir`` is on /run by default,
which is emptied at boot together with every process it could name. Files are 0600
in a 0700 directory and are never opened through a symlink.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from dataclasses import dataclass, field
from typing import Any

from .. import paths
from ..log import get_logger
from .handover import MARK_ENV, AppRecord, Handover, InstanceRecord, write_private_json
from .handover import read as read_snapshot

log = get_logger("journal")

_JOURNAL_PREFIX = "journal."
_MIN_RECORDS = 1000  # a compaction is due after max(this, 4 x live records) appends
_OPEN_FLAGS = os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW


__all__ = ["MARK_ENV", "Journal", "JournalError", "Recovered", "new_marker"]


def new_marker(app: str, instance: str, generation: int) -> str:
    """The marker one spawn's process tree carries in its environment."""
    return f"{app}:{instance}:{generation}:{secrets.token_hex(8)}"


@dataclass
class Recovered:
    """What a journal replay found: the state, and spawns whose pid never arrived."""

    state: Handover
    unresolved: dict[str, str] = field(default_factory=dict)  # marker -> "app:instance"


class JournalError(OSError):
    """The record could not be written: a spawn must then not happen."""


class Journal:
    """The single writer of ``state.json`` and ``journal.N`` in one state directory."""

    def __init__(self, state_dir: str) -> None:
        self.state_dir = state_dir
        # continue after the epoch on disk, so a compaction never reuses the name of
        # the journal that the current snapshot still points at
        self.epoch = _snapshot_epoch(os.path.join(state_dir, paths.STATE_FILE))
        self._fd = -1
        self._appended = 0
        self._live = 0

    @property
    def is_open(self) -> bool:
        return self._fd >= 0

    @property
    def compaction_due(self) -> bool:
        return self._appended >= max(_MIN_RECORDS, 4 * self._live)

    def compact(self, snapshot: Handover) -> None:
        """Write the whole state and start a new, empty journal epoch.

        Order matters for a crash at any line: the new journal exists (empty) before
        the snapshot that names it is renamed into place; the old journal is removed
        only after that.
        """
        old_epoch, old_fd = self.epoch, self._fd
        epoch = old_epoch + 1
        new_path = self._journal_path(epoch)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(new_path)  # a leftover of a compaction that died before its rename
        fd = os.open(new_path, _OPEN_FLAGS | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        try:
            data = snapshot.to_json()
            data["journal_epoch"] = epoch
            write_private_json(self.state_dir, paths.STATE_FILE, data)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(new_path)
            raise
        self.epoch, self._fd = epoch, fd
        self._appended = 0
        self._live = sum(len(a.instances) + len(a.others) for a in snapshot.apps.values())
        if old_fd >= 0:
            os.close(old_fd)
        for name in os.listdir(self.state_dir):
            if name.startswith(_JOURNAL_PREFIX) and name != os.path.basename(new_path):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.state_dir, name))

    def append(self, record: dict[str, Any]) -> None:
        """Make one record durable (against our own death) before returning."""
        if self._fd < 0:
            raise JournalError("the journal is not open")
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        try:
            written = os.write(self._fd, line)
        except OSError as exc:
            raise JournalError(exc.errno, f"cannot append to the journal: {exc.strerror}") from exc
        if written != len(line):
            raise JournalError(f"short write to the journal ({written} of {len(line)} bytes)")
        self._appended += 1

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _journal_path(self, epoch: int) -> str:
        return os.path.join(self.state_dir, f"{_JOURNAL_PREFIX}{epoch}")

    # --- reading -----------------------------------------------------------------------

    def load(self) -> Recovered | None:
        """The state the last writer left: its snapshot with its journal replayed."""
        snapshot_path = os.path.join(self.state_dir, paths.STATE_FILE)
        state = read_snapshot(snapshot_path)
        if state is None:
            return None
        epoch = _snapshot_epoch(snapshot_path)
        self.epoch = max(self.epoch, epoch)
        recovered = Recovered(state)
        for record in _read_lines(self._journal_path(epoch)):
            try:
                _apply(recovered, record)
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("journal_record_skipped", error=repr(exc))
        return recovered


def _snapshot_epoch(path: str) -> int:
    try:
        with open(path) as f:
            return int(json.load(f).get("journal_epoch", 0))
    except (OSError, ValueError, AttributeError, TypeError):
        return 0


def _read_lines(path: str) -> list[dict[str, Any]]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return []
    with os.fdopen(fd, "rb") as f:
        data = f.read()
    records = []
    for line in data.split(b"\n"):
        if not line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a torn last line: the daemon died inside that write
        if isinstance(record, dict):
            records.append(record)
    return records


def _apply(recovered: Recovered, record: dict[str, Any]) -> None:
    """Replay one journal record onto the state (idempotent, in order)."""
    state = recovered.state
    kind = record["k"]
    app_name = record["app"]
    app = state.apps.setdefault(app_name, AppRecord(None))
    if kind == "intent":
        recovered.unresolved[record["mark"]] = f"{app_name}:{record['inst']}"
    elif kind == "proc":
        rec = InstanceRecord(**record["rec"])
        if rec.marker is not None:
            recovered.unresolved.pop(rec.marker, None)
        _forget(app, rec.pid)
        inst = record["inst"]
        if record.get("current"):
            previous = app.instances.get(inst)
            if previous is not None:  # replaced by a swap, and still alive: a stray now
                previous.running = False
                app.others.append(previous)
            app.instances[inst] = rec
        else:
            rec.running = False
            app.others.append(rec)
    elif kind == "gone":
        _forget(app, int(record["pid"]))
    elif kind == "app":
        app.release = record.get("release")
        app.should_run = bool(record.get("should_run", True))
        app.stopped = list(record.get("stopped", []))
    else:
        raise ValueError(f"unknown journal record kind {kind!r}")


def _forget(app: AppRecord, pid: int) -> None:
    for name, rec in list(app.instances.items()):
        if rec.pid == pid:
            del app.instances[name]
    app.others = [rec for rec in app.others if rec.pid != pid]
