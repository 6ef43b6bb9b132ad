"""All apps together: dependency order, start and stop of everything, ``update``.

The :class:`Supervisor` is what the control socket, the HTTP API and the daemon's
signal handlers talk to (it satisfies ``commands.dispatch.SupervisorAPI``). It starts an app
only once the apps it depends on are ready, stops an app before the apps it
depends on, routes NOTIFY_SOCKET messages to the generation whose process sent
them, and applies a new config as a difference (add, remove, hot-swap).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any, Protocol

from . import __version__, oslayer, paths
from .app import App, Progress, canonical
from .cgroups import Cgroups
from .config import AppConfig, Config
from .errors import Busy, NoSuchApp, OperationFailed, SupervisorError
from .handover import AppRecord, Handover
from .history import History
from .instance import Generation, Instance
from .journal import Journal
from .log import get_logger
from .model import Counters, SupervisorInfo, SupervisorStatus, SwapRecord
from .notify import fd_store_name
from .recorder import Recorder
from .sampler import UsageSampler
from .states import State
from .updater import Updater

log = get_logger("supervisor")


class FdStore(Protocol):
    """systemd's file-descriptor store (notify.SystemdNotifier)."""

    def store_fd(self, name: str, fd: int) -> None: ...
    def remove_fd(self, name: str) -> None: ...


def _quiet(message: str, fields: dict[str, Any]) -> None:
    """A progress sink for operations nobody is watching (boot, signals)."""
    log.info("progress", message=message, **fields)


class Supervisor:
    def __init__(
        self,
        config: Config,
        loop: asyncio.AbstractEventLoop,
        on_state: Callable[[str], None] | None = None,
        handover: Handover | None = None,
        fd_store: FdStore | None = None,
        cgroups: Cgroups | None = None,
    ) -> None:
        self.config = config
        self.loop = loop
        self.state = "starting"
        self.started_at = time.monotonic()
        self.apps: dict[str, App] = {}
        self.counters = Counters()
        self._by_pid: dict[int, tuple[Instance, Generation]] = {}
        self._on_state = on_state or (lambda s: None)
        self._exclusive: str | None = None  # update / shutdown in progress
        self._requests: asyncio.Queue[str] = asyncio.Queue()  # for the daemon: shutdown, upgrade
        state_dir = config.supervisor.state_dir
        self.notify_path = paths.notify_socket(state_dir)
        self.logs_dir = os.path.join(state_dir, paths.LOGS_DIR)
        self._waiting_for_deps: dict[str, asyncio.Task[None]] = {}
        self.state_path = os.path.join(state_dir, paths.STATE_FILE)
        self.fd_store = fd_store
        self.cgroups = cgroups
        self._sampler = UsageSampler(
            loop, lambda: [i for a in self.apps.values() for i in a.instances.values()]
        )
        self._stored_pipes: set[int] = set()
        self.journal = Journal(state_dir)
        self._compaction_scheduled = False
        self._app_recorded: dict[str, tuple[str | None, bool, tuple[str, ...]]] = {}
        self.recorder = Recorder(History(state_dir), loop)
        for name in config.start_order():
            inherited = dict(handover.spare_sockets) if handover else {}
            if handover and name in handover.apps:
                inherited.update(handover.apps[name].sockets)
            self.apps[name] = self._make_app(config.apps[name], inherited)
            # the app took the sockets of its addresses out of `inherited`
            for address, fd in list(inherited.items()):
                if handover and address in handover.spare_sockets:
                    continue  # still spare: another app may listen there
                os.close(fd)  # this app's old address, no longer configured
            if handover:
                handover.spare_sockets = {
                    a: fd for a, fd in handover.spare_sockets.items() if a in inherited
                }
        for fd in handover.spare_sockets.values() if handover else ():
            os.close(fd)
        if handover is not None:
            self._adopt(handover)
        for app in self.apps.values():
            self._store_sockets(app)
        self.save_state_now()  # our own epoch, before we spawn anything
        how = "started" if handover is None or not handover.daemon_pid else "recovered"
        self.recorder.daemon_started(
            os.getpid(),
            __version__,
            "upgraded" if handover is not None and handover.upgrade else how,
            sum(len(a.instances) for a in handover.apps.values()) if handover else 0,
        )
        self._updater = Updater(self)

    def _store_sockets(self, app: App, remove: bool = False) -> None:
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

    def _adopt(self, handover: Handover) -> None:
        """Take back the processes (and their fds) a previous daemon left running."""
        for app_name, rec_app in handover.apps.items():
            app = self.apps.get(app_name)
            for inst_name, rec in rec_app.instances.items():
                inst = app.instances.get(inst_name) if app is not None else None
                if inst is None or not rec.running:
                    # no longer configured: stop it rather than leave it unsupervised
                    log.warning(
                        "adopted_orphan_stopped", app=app_name, instance=inst_name, pid=rec.pid
                    )
                    oslayer.signal_group(rec.pgid, signal.SIGTERM)
                    if rec.pipe_fd is not None:
                        os.close(rec.pipe_fd)
                    continue
                inst.adopt(rec)
                if app is not None and app.store is None and rec_app.release is not None:
                    # (an app with releases takes its release from its own history file,
                    # written before `current` is switched: that record is the authority)
                    app.release = rec_app.release
        for app_name, rec_app in handover.apps.items():
            app = self.apps.get(app_name)
            if app is not None:
                # what an operator stopped stays stopped across an upgrade or a crash
                app.should_run = rec_app.should_run
                app.held = set(rec_app.stopped) if rec_app.should_run else set(app.instances)

    def _append(self, record: dict[str, Any]) -> None:
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
        self.journal.append({"k": "intent", "app": inst.rt.app, "inst": inst.name, "mark": marker})

    def record_app(self, app: App) -> None:
        """The app's operator-visible state, when it changed since it was recorded."""
        stopped = app.stopped()
        now = (app.release, app.should_run, stopped)
        if self._app_recorded.get(app.name) == now:
            return
        self._app_recorded[app.name] = now
        self._append(
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
            daemon_pid=os.getpid(), config_path=self.config.path, config_text=self.config.text
        )
        for app in self.apps.values():
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
            for inst, gen in self._by_pid.values():
                if inst.rt.app == app.name and gen is not inst.current and gen.child.alive:
                    shares = inst.current is not None and gen.child.pgid == inst.current.child.pgid
                    rec_app.others.append(inst.stray_record(gen, shares))
            result.apps[app.name] = rec_app
        return result

    async def finish_interrupted(self, progress: Progress = _quiet) -> list[str]:
        """After a crash: roll back what a swap, deploy or update left half-done.

        Every adopted instance that runs another release or config than the record
        says the app runs is hot-swapped back to it (zero downtime, like any swap).
        Returns a line per instance rolled back.
        """
        done: list[str] = []
        for app in self.apps.values():
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

    def _make_app(self, cfg: AppConfig, inherited: dict[str, int] | None = None) -> App:
        return App(
            cfg,
            inherited=inherited,
            loop=self.loop,
            logs_dir=self.logs_dir,
            state_dir=self.config.supervisor.state_dir,
            notify_socket=self.notify_path,
            on_generation=self._track,
            on_spawning=self.record_intent,
            on_change=self.record_app,
            on_swap=self._count_swap,
            on_event=self.recorder.instance_event,
            cgroups=self.cgroups,
        )

    # --- bookkeeping hooks ---------------------------------------------------------------

    def _track(self, inst: Instance, gen: Generation, alive: bool) -> None:
        self.recorder.generation(inst, gen, alive)
        pid = gen.child.pid
        if alive:
            self._by_pid[pid] = (inst, gen)
            store = self.fd_store
            if store is not None and pid not in self._stored_pipes and gen.reader.read_fd >= 0:
                store.store_fd(fd_store_name("pipe", str(pid)), gen.reader.read_fd)
                self._stored_pipes.add(pid)
        else:
            self._by_pid.pop(pid, None)
            if pid in self._stored_pipes:
                self._stored_pipes.discard(pid)
                if self.fd_store is not None:
                    self.fd_store.remove_fd(fd_store_name("pipe", str(pid)))
        app = inst.rt.app
        if not alive:
            self._append({"k": "gone", "app": app, "pid": pid})
        elif gen is inst.current and (rec := inst.record()) is not None:
            self._append(
                {"k": "proc", "app": app, "inst": inst.name, "current": True, "rec": vars(rec)}
            )
        elif gen.child.alive:
            shares = inst.current is not None and gen.child.pgid == inst.current.child.pgid
            rec = inst.stray_record(gen, shares)
            self._append(
                {"k": "proc", "app": app, "inst": inst.name, "current": False, "rec": vars(rec)}
            )
        if app in self.apps:
            self.record_app(self.apps[app])

    def is_tracked(self, pid: int) -> bool:
        return pid in self._by_pid

    def _count_swap(self, record: SwapRecord) -> None:
        record = self.recorder.swap_finished(record)  # with its timings and backlog figures
        if record.app in self.apps:
            self.apps[record.app].last_swap = record
        c = self.counters
        self.counters = replace(
            c,
            swaps_ok=c.swaps_ok + record.ok,
            swaps_failed=c.swaps_failed + (not record.ok),
            swap_seconds=c.swap_seconds.observe(record.duration_s),
            swap_listen_drops=c.swap_listen_drops + (record.listen_drops or 0),
            swap_accept_queue_peak=max(c.swap_accept_queue_peak, record.accept_queue_peak or 0),
        )

    def on_notify(self, pid: int, fields: dict[str, str]) -> None:
        """A NOTIFY_SOCKET datagram: find the generation that sent it."""
        found = self._by_pid.get(pid)
        if found is None:
            for ancestor in oslayer.ancestors(pid)[1:]:
                found = self._by_pid.get(ancestor)
                if found is not None:
                    break
        if found is None:
            log.debug("notify_from_unknown_pid", pid=pid, fields=fields)
            return
        inst, gen = found
        inst.notify(gen, fields)

    def reap_orphans(self) -> None:
        oslayer.reap_orphans(self.is_tracked)

    # --- lookups --------------------------------------------------------------------------

    def app(self, name: str) -> App:
        try:
            return self.apps[name]
        except KeyError:
            raise NoSuchApp(f"no app named {name!r}") from None

    # --- start and stop everything ------------------------------------------------------

    async def start_all(self, progress: Progress = _quiet) -> list[str]:
        """Start every autostart app, each once its dependencies are ready.

        Returns the names of apps that failed to start (or whose dependencies did).
        An app held back by a failed dependency starts by itself once that
        dependency becomes ready (it keeps retrying with backoff).
        """
        names = [n for n in self.config.start_order() if self.apps[n].cfg.autostart]
        return await self._start_apps(names, progress)

    async def _start_apps(self, names: list[str], progress: Progress) -> list[str]:
        tasks: dict[str, asyncio.Task[bool]] = {}

        async def start_one(name: str) -> bool:
            app = self.apps[name]
            deps_ok = True
            for dep in app.cfg.depends_on:
                if dep in tasks:
                    deps_ok = await tasks[dep] and deps_ok
                elif not self.apps[dep].is_running():
                    deps_ok = False
            if not deps_ok:
                progress(
                    f"{name}: waiting for its dependencies "
                    f"({', '.join(app.cfg.depends_on)}) to become ready",
                    {"app": name},
                )
                app.should_run = True
                self._start_when_deps_ready(app)
                return False
            try:
                await app.start(None, progress, boot=True)
            except SupervisorError as exc:
                progress(f"{name}: {exc.message}", {"app": name, "error": exc.to_wire()})
                return False
            return True

        for name in names:
            tasks[name] = self.loop.create_task(start_one(name))
        results = await asyncio.gather(*tasks.values())
        return [n for n, ok in zip(tasks, results, strict=True) if not ok]

    def _start_when_deps_ready(self, app: App) -> None:
        async def wait_then_start() -> None:
            for dep in app.cfg.depends_on:
                for inst in self.apps[dep].instances.values():
                    await inst.wait_for(lambda s: s is State.RUNNING)
            if app.should_run:
                try:
                    await app.start(None, _quiet)
                except SupervisorError as exc:
                    log.warning("deferred_start_failed", app=app.name, reason=exc.message)
            self._waiting_for_deps.pop(app.name, None)

        old = self._waiting_for_deps.pop(app.name, None)
        if old is not None:
            old.cancel()
        self._waiting_for_deps[app.name] = self.loop.create_task(wait_then_start())

    def _dependents(self, name: str) -> list[str]:
        return [n for n, a in self.apps.items() if name in a.cfg.depends_on]

    async def _stop_apps(self, names: list[str], progress: Progress, close: bool) -> None:
        """Stop apps so that each stops only after every app that depends on it."""
        tasks: dict[str, asyncio.Task[None]] = {}
        chosen = set(names)

        async def stop_one(name: str) -> None:
            for dependent in self._dependents(name):
                if dependent in tasks:
                    await asyncio.gather(tasks[dependent], return_exceptions=True)
            waiting = self._waiting_for_deps.pop(name, None)
            if waiting is not None:
                waiting.cancel()
            app = self.apps[name]
            if close:
                await app.close()
            else:
                await app.stop(None, progress)

        order = [n for n in reversed(self.config.start_order()) if n in chosen]
        order += [n for n in names if n not in order]
        for name in order:
            tasks[name] = self.loop.create_task(stop_one(name))
        await asyncio.gather(*tasks.values(), return_exceptions=True)

    async def stop_all(self, progress: Progress = _quiet) -> None:
        """Stop every app in reverse dependency order and release their sockets (also
        systemd's copies: a clean stop must free the ports)."""
        self.state = "stopping"
        self._sampler.stop()
        self.recorder.daemon_stopping(os.getpid())
        for app in self.apps.values():
            self._store_sockets(app, remove=True)
        await self._stop_apps(list(self.apps), progress, close=True)

    # --- the control API (commands.dispatch.SupervisorAPI) -------------------------------

    def info(self) -> SupervisorInfo:
        return SupervisorInfo(
            pid=os.getpid(),
            version=__version__,
            uptime_s=time.monotonic() - self.started_at,
            state=self.state,
            config=self.config.path,
        )

    def status(self, app: str | None = None) -> SupervisorStatus:
        apps = [self.app(app)] if app is not None else list(self.apps.values())
        self._sampler.asked()  # RSS and CPU: sampled on demand (sampler.py)
        return SupervisorStatus(self.info(), {a.name: a.snapshot() for a in apps}, self.counters)

    def full_status(self) -> SupervisorStatus:
        return self.status(None)

    async def start(self, app: str, instance: str | None, progress: Progress) -> dict[str, Any]:
        target = self.app(app)
        for dep in target.cfg.depends_on:
            if not self.apps[dep].is_running():
                raise OperationFailed(f"{app}: dependency {dep!r} is not running; start it first")
        await target.start(instance, progress)
        return self._instances_result(target, instance)

    async def stop(self, app: str, instance: str | None, progress: Progress) -> dict[str, Any]:
        target = self.app(app)
        target.select(instance)
        if instance is None:
            running = [
                d
                for d in self._dependents(app)
                if any(i.state is not State.STOPPED for i in self.apps[d].instances.values())
            ]
            if running:
                progress(f"{app}: stopping its dependents first: {', '.join(running)}", {})
                await self._stop_apps(running, progress, close=False)
        await target.stop(instance, progress)
        return self._instances_result(target, instance)

    async def restart(self, app: str, instance: str | None, progress: Progress) -> dict[str, Any]:
        target = self.app(app)
        await target.restart(instance, progress)
        return self._instances_result(target, instance)

    async def signal(self, app: str, instance: str | None, signum: int) -> dict[str, Any]:
        target = self.app(app)
        pids = target.signal(instance, signum)
        if not pids:
            raise OperationFailed(
                f"{app}{':' + instance if instance else ''}: no running process to signal"
            )
        return {"pids": pids}

    def _sink_targets(self, app: str, instance: str | None) -> list[Instance]:
        return self.app(app).select(instance)

    def log_tail(self, app: str, instance: str | None, lines: int) -> list[str]:
        targets = self._sink_targets(app, instance)
        if len(targets) == 1:
            return targets[0].sink.last(lines)
        out: list[str] = []
        for inst in targets:
            out.extend(f"{inst.name}| {line}" for line in inst.sink.last(lines))
        return out

    def follow_logs(self, app: str, instance: str | None) -> AsyncIterator[str]:
        """Lines written from now on (subscribed at once, so none falls between the
        tail a client was sent and the first followed line)."""
        targets = self._sink_targets(app, instance)
        prefix = len(targets) > 1
        queues = [(inst, inst.sink.subscribe()) for inst in targets]

        async def lines() -> AsyncIterator[str]:
            merged: asyncio.Queue[str | None] = asyncio.Queue()

            async def pump(inst: Instance, q: asyncio.Queue[str | None]) -> None:
                while (line := await q.get()) is not None:
                    merged.put_nowait(f"{inst.name}| {line}" if prefix else line)
                merged.put_nowait(None)

            pumps = [self.loop.create_task(pump(i, q)) for i, q in queues]
            try:
                while (line := await merged.get()) is not None:
                    yield line
            finally:
                for p in pumps:
                    p.cancel()
                for inst, q in queues:
                    inst.sink.unsubscribe(q)

        return lines()

    async def reload(self, apps: list[str], progress: Progress) -> dict[str, Any]:
        names = apps or list(self.apps)
        targets = [self.app(n) for n in names]
        done = []
        for app in targets:
            await app.reload(progress)
            done.append(app.name)
        return {"reloaded": done}

    async def update(self, progress: Progress, allow_empty: bool = False) -> dict[str, Any]:
        """Re-read the config and apply the difference, all or nothing (updater.py)."""
        return await self._updater.update(progress, allow_empty)

    async def plan(self, allow_empty: bool = False) -> dict[str, Any]:
        """What `update` would do now, changing nothing (the same plan.diff)."""
        return self._updater.dry_run(allow_empty)

    async def deploy(
        self, app: str, release: str, pause: bool, progress: Progress
    ) -> dict[str, Any]:
        target = self.app(app)
        work = target.deploy(release, pause, progress)
        return await self.recorder.operation(
            "deploy", app, work, release=release, previous=target.release
        )

    async def promote(self, app: str, progress: Progress) -> dict[str, Any]:
        target = self.app(app)
        work = target.promote(progress)
        return await self.recorder.operation("promote", app, work, previous=target.release)

    async def rollback(self, app: str, progress: Progress) -> dict[str, Any]:
        target = self.app(app)
        work = target.rollback(progress)
        return await self.recorder.operation("rollback", app, work, previous=target.release)

    def history(self, app: str | None, count: int) -> list[dict[str, Any]]:
        return self.recorder.history.recent(app, count)

    def record_command(
        self,
        command: str,
        args: dict[str, Any],
        peer: tuple[int, int, int] | None,
        error: dict[str, Any] | None,
        duration_s: float,
    ) -> None:
        pid, uid, gid = peer if peer is not None else (None, None, None)
        self.recorder.command(
            command, args, uid=uid, pid=pid, gid=gid, error=error, duration_s=duration_s
        )

    async def upgrade(self, progress: Progress) -> dict[str, Any]:
        """Check that the code on disk starts, then have the daemon re-execute itself.

        Every child stays a child with the same pid; sockets and pipes carry over.
        Refused while an operation that owns processes (a swap, a deploy) runs.
        """
        if self._exclusive is not None:
            raise Busy(f"{self._exclusive} already in progress")
        busy = [
            a.name
            for a in self.apps.values()
            if a.busy
            or any(i.state in (State.STARTING, State.STOPPING) for i in a.instances.values())
        ]
        if busy:
            raise Busy(f"an operation is in progress on {', '.join(busy)}; upgrade refused")
        argv = [sys.executable, "-m", "supervisord_lite.cli"]
        if self.config.path is not None:
            argv += ["-c", self.config.path]
        progress("checking that the new code starts and reads the config", {})
        code, output = await oslayer.run_command(
            (*argv, "--check"), dict(os.environ), None, 60.0, self.loop
        )
        if code != 0:
            raise OperationFailed(
                "the new code failed its check; nothing changed",
                output=output.strip().splitlines()[-20:],
            )
        self._requests.put_nowait("upgrade")
        progress("re-executing; apps keep running", {})
        return {
            "message": f"daemon pid {os.getpid()} is re-executing with the new code",
            "pid": os.getpid(),
        }

    async def shutdown(self, progress: Progress) -> dict[str, Any]:
        """Ask the daemon to stop everything and exit; returns once that has begun."""
        self.request_shutdown()
        progress("shutting down: stopping all apps", {})
        return {"shutdown": True}

    async def wait_for_request(self) -> str:
        """The next thing the daemon itself must do: "shutdown" or "upgrade"."""
        return await self._requests.get()

    def request_shutdown(self) -> None:
        self._requests.put_nowait("shutdown")

    def reopen_logs(self) -> None:
        for app in self.apps.values():
            app.reopen_logs()

    def _instances_result(self, app: App, instance: str | None) -> dict[str, Any]:
        return {
            i.name: {"state": i.state.value, "pid": i.current.pid if i.current else None}
            for i in app.select(instance)
        }
