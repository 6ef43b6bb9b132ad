"""The durable record of every app and process, and what a new daemon does with it.

Every change that a successor daemon needs goes to the journal before the daemon
goes on (``journal.py``): the intent before each spawn, each generation that starts
or goes, each app's release and stopped instances; a compaction writes the whole
state as a snapshot. At start, :meth:`Durable.adopt` takes back the processes a
previous daemon left running, and :meth:`Durable.finish_interrupted` rolls back what
a crash left half-done. The pid registry (which generation a pid is) lives here too,
with systemd's fd store for the apps' sockets and pipes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from typing import Any, Protocol

from ..app.app import App, Progress, canonical, quiet
from ..config.settings import Config
from ..errors import SupervisorError
from ..host import procs, stopping
from ..instance.generation import Generation
from ..instance.instance import Instance
from ..instance.state import State
from ..log import get_logger
from ..paths import fd_store_name
from .handover import AppRecord, Handover
from .journal import Journal
from .recorder import Recorder

log = get_logger("supervisor")


class FdStore(Protocol):
    """systemd's file-descriptor store (notify.SystemdNotifier)."""

    def store_fd(self, name: str, fd: int) -> None: ...
    def remove_fd(self, name: str) -> None: ...


class Durable:
    def __init__(
        self,
        config: Callable[[], Config],
        apps: Callable[[], dict[str, App]],
        journal: Journal,
        recorder: Recorder,
        fd_store: FdStore | None,
        state_path: str,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._config = config  # the running config (update replaces it)
        self._apps = apps  # the running apps (update replaces the dict)
        self.journal = journal
        self.recorder = recorder
        self.fd_store = fd_store
        self.state_path = state_path
        self.loop = loop
        self.by_pid: dict[int, tuple[Instance, Generation]] = {}
        self._stored_pipes: set[int] = set()
        self._stopping: set[asyncio.Task[None]] = set()
        self._compaction_scheduled = False
        self._app_recorded: dict[str, tuple[str | None, bool, tuple[str, ...]]] = {}

    def store_sockets(self, app: App, remove: bool = False) -> None:
        """Keep the app's listening sockets in systemd's fd store (under systemd), so
        a daemon that crashed gets them back with the apps still serving on them."""
        if self.fd_store is None:
            return
        for addr in app.cfg.listen.values():
            sock = app.sockets.get(addr.address)
            name = fd_store_name("sock", canonical(addr))
            if remove:
                self.fd_store.remove_fd(name)
            elif sock is not None:
                self.fd_store.store_fd(name, sock.fileno())

    def _stop_unconfigured(self, pgid: int) -> None:
        """The one stop sequence (TERM, CONT, grace, KILL) for a recorded group no app
        of the running config claims: a process that ignores TERM must not stay on."""
        deadline = time.monotonic() + self._config().supervisor.shutdown_timeout
        task = self.loop.create_task(stopping.stop_group(pgid, signal.SIGTERM, deadline))
        self._stopping.add(task)  # held until done: the loop keeps only weak references
        task.add_done_callback(self._stopping.discard)

    def adopt(self, handover: Handover) -> None:
        """Take back the processes (and their fds) a previous daemon left running."""
        for app_name, rec_app in handover.apps.items():
            app = self._apps().get(app_name)
            for inst_name, rec in rec_app.instances.items():
                inst = app.instances.get(inst_name) if app is not None else None
                if inst is None or not rec.running:
                    # no longer configured: stop it rather than leave it unsupervised
                    log.warning(
                        "adopted_orphan_stopped", app=app_name, instance=inst_name, pid=rec.pid
                    )
                    self._stop_unconfigured(rec.pgid)
                    if rec.pipe_fd is not None:
                        os.close(rec.pipe_fd)
                    continue
                inst.adopt(rec)
                if app is not None and app.store is None and rec_app.release is not None:
                    # (an app with releases takes its release from its own history file,
                    # written before `current` is switched: that record is the authority)
                    app.release = rec_app.release
        for app_name, rec_app in handover.apps.items():
            app = self._apps().get(app_name)
            if app is not None:
                # what an operator stopped stays stopped across an upgrade or a crash
                app.should_run = rec_app.should_run
                app.held = set(rec_app.stopped) if rec_app.should_run else set(app.instances)

    def append(self, record: dict[str, Any]) -> None:
        """One journal record, durable before we go on; a compaction when it is due."""
        if not self.journal.is_open:
            return  # adopting, before the first snapshot: that snapshot will hold it
        try:
            self.journal.append(record)
        except OSError as exc:
            # the record could not be had: write the whole state instead, now
            log.warning("journal_not_written", error=str(exc))
            self._compact_soon()
            return
        if self.journal.compaction_due:
            self._compact_soon()

    def _compact_soon(self) -> None:
        """Compact outside the hook that asked (an instance may be mid-update)."""
        if not self._compaction_scheduled:
            self._compaction_scheduled = True
            self.loop.call_soon(self.save_state_now)

    def save_state_now(self) -> None:
        """Write the whole state as a snapshot and start a new journal epoch."""
        self._compaction_scheduled = False
        try:
            self.journal.compact(self.handover())
        except OSError as exc:
            log.warning("state_file_not_written", path=self.state_path, error=str(exc))

    def record_intent(self, inst: Instance, marker: str) -> None:
        """Before a spawn: what a successor needs to find the process (raises OSError)."""
        self.journal.append({"k": "intent", "app": inst.app, "inst": inst.name, "mark": marker})

    def record_app(self, app: App) -> None:
        """The app's operator-visible state, when it changed since it was recorded."""
        stopped = app.stopped()
        now = (app.release, app.should_run, stopped)
        if self._app_recorded.get(app.name) == now:
            return
        self._app_recorded[app.name] = now
        self.append(
            {
                "k": "app",
                "app": app.name,
                "release": app.release,
                "should_run": app.should_run,
                "stopped": list(stopped),
            }
        )

    def handover(self) -> Handover:
        """The live state a successor daemon needs (fds: our own, for an upgrade)."""
        result = Handover(
            daemon_pid=os.getpid(), config_path=self._config().path, config_text=self._config().text
        )
        for app in self._apps().values():
            rec_app = AppRecord(
                app.release,
                should_run=app.should_run,
                stopped=[i.name for i in app.instances.values() if i.state is State.STOPPED],
                sockets={
                    canonical(addr): app.sockets[addr.address].fileno()
                    for addr in app.cfg.listen.values()
                    if addr.address in app.sockets
                },
            )
            for inst in app.instances.values():
                rec = inst.record()
                if rec is not None:
                    rec_app.instances[inst.name] = rec
            for inst, gen in self.by_pid.values():
                if inst.app == app.name and (found := inst.record_of(gen)) and not found[0]:
                    rec_app.others.append(found[1])
            result.apps[app.name] = rec_app
        return result

    async def finish_interrupted(self, progress: Progress = quiet) -> list[str]:
        """After a crash: roll back what a swap, deploy or update left half-done.

        Every adopted instance that runs another release or config than the record
        says the app runs is hot-swapped back to it (zero downtime, like any swap).
        Returns a line per instance rolled back.
        """
        done: list[str] = []
        for app in self._apps().values():
            store = app.store
            if store is not None and app.release and store.current_link() != app.release:
                # the deploy was recorded, its `current` switch not yet made: finish it
                store.switch_current(app.release)
                message = f"{app.name}: interrupted deploy finished: current is {app.release}"
                self.recorder.history.record(
                    "recovery", message, app=app.name, level="warning", release=app.release
                )
                done.append(message)
            for inst in app.reload_order():
                why = inst.drifted(app.release if app.store is not None else None)
                if why is None:
                    continue
                log.warning("interrupted_operation_rolling_back", instance=inst.label, reason=why)
                try:
                    await inst.swap(release=app.release)
                    message, result = f"{inst.label}: interrupted operation rolled back", "ok"
                except SupervisorError as exc:
                    message = f"{inst.label}: rollback of an interrupted operation failed"
                    result = exc.message
                self.recorder.history.record(
                    "recovery",
                    f"{message} ({why})",
                    app=app.name,
                    instance=inst.name,
                    level="warning",
                    result=result,
                    reason=why,
                )
                done.append(f"{message} ({why})")
        return done

    def track(self, inst: Instance, gen: Generation, alive: bool) -> None:
        self.recorder.generation(inst, gen, alive)
        pid = gen.child.pid
        if alive:
            self.by_pid[pid] = (inst, gen)
            store = self.fd_store
            if store is not None and pid not in self._stored_pipes and gen.reader.read_fd >= 0:
                store.store_fd(fd_store_name("pipe", str(pid)), gen.reader.read_fd)
                self._stored_pipes.add(pid)
        else:
            self.by_pid.pop(pid, None)
            if pid in self._stored_pipes:
                self._stored_pipes.discard(pid)
                if self.fd_store is not None:
                    self.fd_store.remove_fd(fd_store_name("pipe", str(pid)))
        app = inst.app
        if not alive:
            self.append({"k": "gone", "app": app, "pid": pid})
        elif (found := inst.record_of(gen)) is not None:
            current, rec = found
            self.append(
                {"k": "proc", "app": app, "inst": inst.name, "current": current, "rec": vars(rec)}
            )
        if app in self._apps():
            self.record_app(self._apps()[app])

    def is_tracked(self, pid: int) -> bool:
        return pid in self.by_pid

    def on_notify(self, pid: int, fields: dict[str, str]) -> None:
        """A NOTIFY_SOCKET datagram: find the generation that sent it."""
        found = self.by_pid.get(pid)
        if found is None:
            for ancestor in procs.ancestors(pid)[1:]:
                found = self.by_pid.get(ancestor)
                if found is not None:
                    break
        if found is None:
            log.debug("notify_from_unknown_pid", pid=pid, fields=fields)
            return
        inst, gen = found
        inst.notify(gen, fields)
