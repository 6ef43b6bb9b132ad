"""All apps together: the control API, start and stop of everything, ``update``.

The :class:`Supervisor` is what the control socket, the HTTP API and the daemon's
signal handlers talk to (it satisfies ``commands.dispatch.SupervisorAPI``). It makes the apps,
starts and stops them in dependency order (``ordering.py``), keeps the durable
record and the pid registry through ``state.recovery`` (which also routes NOTIFY_SOCKET
messages to the generation whose process sent them), and applies a new config as a
difference (``updater.py``: add, remove, hot-swap).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

from .. import __version__, paths
from ..app import output as app_output
from ..app.app import App, Progress, quiet
from ..config.settings import AppConfig, Config
from ..errors import Busy, NoSuchApp, OperationFailed
from ..host import exits, spawning
from ..host.cgroups import Cgroups
from ..instance.state import State
from ..log import get_logger
from ..snapshots import Counters, SupervisorInfo, SupervisorStatus, SwapRecord
from ..state.handover import Handover
from ..state.history import History
from ..state.journal import Journal
from ..state.recorder import Recorder
from ..state.recovery import Durable, FdStore
from .hooks import Notifier
from .ordering import DependencyOrder
from .sampler import UsageSampler
from .updater import Updater

log = get_logger("supervisor")


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
        self._on_state = on_state or (lambda s: None)
        self._exclusive: str | None = None  # update / shutdown in progress
        self._requests: asyncio.Queue[str] = asyncio.Queue()  # for the daemon: shutdown, upgrade
        state_dir = config.supervisor.state_dir
        self.notify_path = paths.notify_socket(state_dir)
        self.logs_dir = os.path.join(state_dir, paths.LOGS_DIR)
        self._order = DependencyOrder(lambda: self.config, lambda: self.apps, loop)
        self.cgroups = cgroups
        self._sampler = UsageSampler(
            loop, lambda: [i for a in self.apps.values() for i in a.instances.values()]
        )
        self.recorder = Recorder(History(state_dir), loop)
        self.notifier = Notifier(
            lambda: self.config, self.recorder.history.record, self._context, loop
        )
        self.recorder.history.listeners.append(self.notifier.on_history)
        self.durable = Durable(
            lambda: self.config,
            lambda: self.apps,
            Journal(state_dir),
            self.recorder,
            fd_store,
            os.path.join(state_dir, paths.STATE_FILE),
            loop,
        )
        for name in config.start_order():
            inherited = dict(handover.spare_sockets) if handover else {}
            if handover and name in handover.apps:
                inherited.update(handover.apps[name].sockets)
            self.apps[name] = self.make_app(config.apps[name], inherited)
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
            self.durable.adopt(handover)
        for app in self.apps.values():
            self.durable.store_sockets(app)
        self.durable.save_state_now()  # our own epoch, before we spawn anything
        how = "started" if handover is None or not handover.daemon_pid else "recovered"
        self.recorder.daemon_started(
            os.getpid(),
            __version__,
            "upgraded" if handover is not None and handover.upgrade else how,
            sum(len(a.instances) for a in handover.apps.values()) if handover else 0,
        )
        self._updater = Updater(self)

    # --- one operation on all apps at a time ----------------------------------------------

    def refuse_if_exclusive(self) -> None:
        """Busy while an update (which owns every app) runs."""
        if self._exclusive is not None:
            raise Busy(f"{self._exclusive} already in progress")

    @contextlib.asynccontextmanager
    async def exclusively(self, operation: str) -> AsyncIterator[None]:
        """Run ``operation`` (an update) as the one operation on all apps: the daemon's
        state is "reloading" meanwhile (systemd's RELOADING=1)."""
        self.refuse_if_exclusive()
        self._exclusive = operation
        self._set_state("reloading")
        try:
            yield
        finally:
            self._exclusive = None
            self._set_state("running")

    def _set_state(self, state: str) -> None:
        self.state = state
        self._on_state(state)

    def take_config(self, config: Config) -> None:
        """The config that runs now (after an update): recorded at once as a snapshot,
        so the record never lags behind what runs."""
        self.config = config
        self.durable.save_state_now()

    # --- the durable record (state.recovery) ---------------------------------------------------

    def make_app(self, cfg: AppConfig, inherited: dict[str, int] | None = None) -> App:
        return App(
            cfg,
            inherited=inherited,
            loop=self.loop,
            logs_dir=self.logs_dir,
            state_dir=self.config.supervisor.state_dir,
            notify_socket=self.notify_path,
            on_generation=self.durable.track,
            on_spawning=self.durable.record_intent,
            on_change=self.durable.record_app,
            on_swap=self._count_swap,
            on_event=self.recorder.instance_event,
            cgroups=self.cgroups,
            record=self.recorder.history.record,
        )

    def _context(self, app: str, instance: str | None) -> dict[str, Any]:
        """What the notify hooks add to an event: the app's release, and the instance's
        generation and last lines of output."""
        target = self.apps.get(app)
        if target is None:
            return {}
        found: dict[str, Any] = {"release": target.release}
        inst = target.instances.get(instance or "")
        if inst is not None:
            found["generation"] = inst.generation
            found["output"] = inst.last_output()
        return found

    # --- bookkeeping hooks ---------------------------------------------------------------

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

    def reap_orphans(self) -> None:
        exits.reap_orphans(self.durable.is_tracked)

    # --- lookups --------------------------------------------------------------------------

    def app(self, name: str) -> App:
        try:
            return self.apps[name]
        except KeyError:
            raise NoSuchApp(f"no app named {name!r}") from None

    # --- start and stop everything ------------------------------------------------------

    async def start_all(self, progress: Progress = quiet) -> list[str]:
        """Start every autostart app, each once its dependencies are ready.

        Returns the names of apps that failed to start (or whose dependencies did).
        An app held back by a failed dependency starts by itself once that
        dependency becomes ready (it keeps retrying with backoff).
        """
        await self._updater.remember_env()
        names = [n for n in self.config.start_order() if self.apps[n].cfg.autostart]
        return await self.start_apps(names, progress)

    async def start_apps(self, names: list[str], progress: Progress) -> list[str]:
        return await self._order.start(names, progress)

    def _dependents(self, name: str) -> list[str]:
        return self._order.dependents(name)

    async def stop_apps(self, names: list[str], progress: Progress, close: bool) -> None:
        await self._order.stop(names, progress, close)

    async def stop_all(self, progress: Progress = quiet) -> None:
        """Stop every app in reverse dependency order and release their sockets (also
        systemd's copies: a clean stop must free the ports)."""
        self.state = "stopping"
        self._sampler.stop()
        self.recorder.daemon_stopping(os.getpid())
        for app in self.apps.values():
            self.durable.store_sockets(app, remove=True)
        await self.stop_apps(list(self.apps), progress, close=True)
        await self.notifier.close()  # what the stops reported is delivered (time-limited)

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
                await self.stop_apps(running, progress, close=False)
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

    def log_tail(self, app: str, instance: str | None, lines: int) -> list[str]:
        return app_output.tail(self.app(app).select(instance), lines)

    def follow_logs(self, app: str, instance: str | None) -> AsyncIterator[str]:
        """Lines written from now on (subscribed at once, so none falls between the
        tail a client was sent and the first followed line)."""
        return app_output.follow(self.app(app).select(instance), self.loop)

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
        return await self._updater.dry_run(allow_empty)

    async def deploy(
        self,
        app: str,
        release: str,
        pause: bool,
        progress: Progress,
        artifact: str | None = None,
        sha256: str | None = None,
        uid: int | None = None,
    ) -> dict[str, Any]:
        target = self.app(app)
        self.recorder.history.record(
            "deploy_started",
            f"deploy of {release} started (was {target.release or 'none'})"
            + (f" from {artifact}" if artifact else ""),
            app=app,
            release=release,
            previous=target.release,
            artifact=artifact,
            uid=uid,
        )
        work = target.deploy(release, pause, progress, artifact, sha256, uid)
        return await self.recorder.operation(
            "deploy", app, work, release=release, previous=target.release, uid=uid
        )

    async def promote(self, app: str, progress: Progress, uid: int | None = None) -> dict[str, Any]:
        target = self.app(app)
        work = target.promote(progress, uid)
        return await self.recorder.operation("promote", app, work, previous=target.release, uid=uid)

    async def rollback(
        self, app: str, progress: Progress, uid: int | None = None
    ) -> dict[str, Any]:
        target = self.app(app)
        work = target.rollback(progress, uid)
        return await self.recorder.operation(
            "rollback", app, work, previous=target.release, uid=uid
        )

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
        self.refuse_if_exclusive()
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
        check = spawning.SpawnSpec(argv=(*argv, "--check"), env=dict(os.environ))
        code, output = await spawning.run_command(check, 60.0, self.loop)
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
        """logrotate's USR1: every instance reopens its log file."""
        for app in self.apps.values():
            for inst in app.instances.values():
                inst.output.reopen()

    def _instances_result(self, app: App, instance: str | None) -> dict[str, Any]:
        return {i.name: {"state": i.state.value, "pid": i.pid} for i in app.select(instance)}
