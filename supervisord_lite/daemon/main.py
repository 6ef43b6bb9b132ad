"""Wiring of the long-running daemon: lock, pidfile, servers, signals, systemd.

The daemon holds the lock on ``state_dir`` (see statedir), runs the supervisor,
serves supctl and HTTP, tells systemd READY=1 only once the apps that start at boot
are ready, pings systemd's watchdog from the event loop (a hung loop stops the pings)
and shuts down gracefully on TERM/INT/QUIT. Signal handlers only enqueue work; the
supervisor does it.
"""

from __future__ import annotations

import asyncio
import grp
import os
import signal
import socket
import sys
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .. import paths
from ..config.parser import parse_config
from ..config.settings import Config
from ..control.server import ControlServer
from ..errors import ConfigError, SupervisorError
from ..host import exits, procs, stopping
from ..host.cgroups import Cgroups
from ..log import configure, get_logger
from ..state.directory import acquire_state_dir, write_pidfile
from ..state.handover import (
    HANDOVER_ENV,
    Handover,
    recover_after_crash,
    spare_sockets,
    sweep_cgroups,
    write_private_json,
)
from ..state.handover import read as read_handover
from ..state.journal import Journal
from ..supervisor.supervisor import Supervisor
from . import gcpolicy
from .notify import NotifyServer, SystemdNotifier, inherited_fds

if TYPE_CHECKING:  # the HTTP API is imported only when it is on
    from ..httpapi.server import HttpApi

log = get_logger("daemon")


def silence_full_wakeup_fd() -> None:
    """Keeps the C signal handler from taking a lock when the loop's wakeup fd is full.

    asyncio's ``add_signal_handler`` points the signal wakeup fd at its self-pipe with
    ``warn_on_full_buffer`` on. When a burst of signals (hundreds of children exiting
    at once) fills that pipe before the loop drains it, CPython's C handler then queues
    a warning with ``_PyEval_AddPendingCall``, which takes the pending-calls lock: a
    signal arriving while the main thread holds that lock deadlocks the daemon (seen
    at 400 instances: a SIGTERM shutdown that never ended, with gdb inside that lock).
    With the warning off a full pipe is harmless: the bytes already in it wake the loop,
    and the loop runs the handler of every signal that tripped."""
    # blocked meanwhile: a signal in the instant the fd is unset would wake nothing;
    # blocked, it stays pending and arrives once the fd is back
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    try:
        fd = signal.set_wakeup_fd(-1)
        if fd != -1:
            signal.set_wakeup_fd(fd, warn_on_full_buffer=False)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


class Daemon:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.notifier = SystemdNotifier()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._kept_control_fd: int | None = None
        self._kept_notify_fd: int | None = None

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def run(self) -> int:
        cfg = self.config.supervisor
        configure(cfg.log.format.value, cfg.log.level)
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(_LoopErrors().handle)
        handover = take_handover()
        cgroups = Cgroups.detect(fresh_start=handover is None)  # before any spawn or recovery
        if handover is not None and handover.lock_fd is not None:
            lock_fd = handover.lock_fd  # still locked: flock survives exec with the fd
            os.set_inheritable(lock_fd, False)
        else:
            group = cfg.control_socket.group
            lock_fd = acquire_state_dir(
                cfg.state_dir,
                paths.state_dir_mode(
                    cfg.control_socket.mode,
                    group,
                    others_notify=any(
                        a.user is not None and a.needs_notify_socket
                        for a in self.config.apps.values()
                    ),
                ),
                grp.getgrnam(group).gr_gid if group else None,
            )
            handover = recover_from_state_file(cfg.state_dir, inherited_fds(), cgroups)
        http = self._http_api()  # bound before anything starts: a taken port ends us here
        if handover is not None and handover.config_text and handover.config_path:
            # keep running what the predecessor ran: `update` applies the file's changes
            try:
                self.config = replace(
                    parse_config(handover.config_text, handover.config_path),
                    supervisor=self.config.supervisor,
                )
            except ConfigError as exc:
                log.warning("previous_config_unreadable", error=exc.message)
        pidfile = os.path.join(cfg.state_dir, paths.PIDFILE)
        exits.set_child_subreaper()
        sup = Supervisor(
            self.config,
            loop,
            on_state=self._on_state,
            handover=handover,
            fd_store=self.notifier if self.notifier.enabled else None,
            cgroups=cgroups,
        )
        self.sup = sup
        write_pidfile(cfg.state_dir)
        notify_server = NotifyServer(sup.notify_path, sup.durable.on_notify)
        notify_server.start(loop, handover.notify_fd if handover else None)
        control = self._control_server(sup, handover.control_fd if handover else None)
        await control.start()
        if http is not None:
            await http.start()
        self._install_signals(loop, sup)
        if self.notifier.watchdog_interval:
            self._spawn(self._watchdog())
        log.info(
            "daemon_started",
            pid=os.getpid(),
            config=self.config.path,
            state_dir=cfg.state_dir,
            apps=len(sup.apps),
            http=http.bound if http else None,
            adopted=sum(len(a.instances) for a in handover.apps.values()) if handover else 0,
            upgraded=bool(handover and handover.upgrade),
        )
        recovered = handover is not None and not handover.upgrade and bool(handover.apps)
        boot = loop.create_task(self._boot(sup, recovered))
        while True:
            reason = await sup.wait_for_request()
            if reason == "upgrade":
                boot.cancel()
                await asyncio.gather(boot, return_exceptions=True)
                if await self._reexec(sup, control, http, notify_server, lock_fd):
                    return 0  # not reached: exec replaced us
                control = self._control_server(sup, self._kept_control_fd)
                await control.start()
                notify_server.start(loop, self._kept_notify_fd)
                if http is not None:
                    await http.start()  # (binds its address again)
                continue
            break
        boot.cancel()
        await asyncio.gather(boot, return_exceptions=True)
        self.notifier.stopping()
        log.info("shutting_down", timeout=cfg.shutdown_timeout)
        try:
            await asyncio.wait_for(sup.stop_all(), cfg.shutdown_timeout)
        except TimeoutError:
            log.error("shutdown_timeout", timeout=cfg.shutdown_timeout)
            for pid in list(procs.list_children()):
                stopping.signal_group(pid, signal.SIGKILL)
        await self._stop_strays(sup)
        sup.durable.save_state_now()
        await control.close()
        if http is not None:
            await http.close()
        notify_server.close()
        for task in list(self._tasks):
            task.cancel()
        sup.reap_orphans()
        try:
            os.unlink(pidfile)
        except OSError:
            pass
        os.close(lock_fd)
        log.info("daemon_stopped")
        return 0

    def _http_api(self) -> HttpApi | None:
        """The HTTP API, bound (None when off); cli prints the one line of a bind error."""
        http_cfg = self.config.supervisor.http
        if http_cfg.listen is None:
            return None
        from ..httpapi.server import HttpApi

        http = HttpApi(
            http_cfg.listen,
            lambda: self.sup.full_status(),  # (the supervisor is made after the bind)
            lambda app, n: self.sup.history(app, n),
            allowed_hosts=http_cfg.allowed_hosts,
        )
        http.bind()
        return http

    async def _stop_strays(self, sup: Supervisor, grace: float = 5.0) -> None:
        """Children we inherited as subreaper (a helper that left its app's process
        group with setsid) must not outlive us: the stop sequence, a short grace."""

        def strays() -> list[int]:
            sup.reap_orphans()  # one that exited is a zombie of ours until reaped
            return [p for p in procs.list_children() if not sup.durable.is_tracked(p)]

        found = strays()
        if found:
            log.warning("stopping_strays", pids=found)
            deadline = time.monotonic() + grace
            await stopping.stop_target(stopping.Pids(strays), signal.SIGTERM, deadline)
            sup.reap_orphans()

    def _control_server(self, sup: Supervisor, fd: int | None) -> ControlServer:
        cfg = self.config.supervisor
        gid = grp.getgrnam(cfg.control_socket.group).gr_gid if cfg.control_socket.group else None
        sock = None
        if fd is not None:
            sock = socket.socket(fileno=fd)
            sock.set_inheritable(False)
        return ControlServer(
            os.path.join(cfg.state_dir, paths.CONTROL_SOCKET),
            sup,
            cfg.control_socket.mode,
            gid,
            sock=sock,
        )

    async def _reexec(
        self,
        sup: Supervisor,
        control: ControlServer,
        http: HttpApi | None,
        notify_server: NotifyServer,
        lock_fd: int,
    ) -> bool:
        """Re-execute this program in place, handing every child and fd to the new image.

        Returns False (with the servers closed, their sockets kept) if exec failed.
        """
        cfg = self.config.supervisor
        assert control.socket is not None
        self._kept_control_fd = os.dup(control.socket.fileno())
        await control.close(grace=5.0, unlink=False)  # lets the upgrade's answer out
        if http is not None:
            await http.close()
        self._kept_notify_fd = os.dup(notify_server.fileno())
        notify_server.close(unlink=False)
        state = sup.durable.handover()
        state.control_fd, state.notify_fd, state.lock_fd = (
            self._kept_control_fd,
            self._kept_notify_fd,
            lock_fd,
        )
        state.upgrade = True
        fds = [self._kept_control_fd, self._kept_notify_fd, lock_fd]
        for app in state.apps.values():
            fds.extend(app.sockets.values())
            fds.extend(i.pipe_fd for i in app.instances.values() if i.pipe_fd is not None)
        for fd in fds:
            os.set_inheritable(fd, True)
        path = os.path.join(cfg.state_dir, "handover.json")
        write_private_json(cfg.state_dir, "handover.json", state.to_json())
        env = dict(os.environ, **{HANDOVER_ENV: path})
        argv = list(sys.orig_argv)
        log.info("reexec", argv=argv, pid=os.getpid())
        try:
            os.execve(sys.executable, argv, env)
        except OSError as exc:
            log.error("reexec_failed", error=str(exc))
            for fd in fds:
                os.set_inheritable(fd, False)
            return False
        return True  # pragma: no cover

    async def _boot(self, sup: Supervisor, recovered: bool) -> None:
        failed = await sup.start_all()
        if recovered:
            await sup.durable.finish_interrupted()
        sup.state = "running"
        self._settle_heap()
        summary = self._summary(sup)
        if failed:
            log.warning("boot_incomplete", failed=failed)
        log.info("ready", status=summary)
        self.notifier.ready(summary)
        while True:  # keep systemctl status's STATUS= line current
            await asyncio.sleep(10)
            self.notifier.status(self._summary(sup))

    @staticmethod
    def _summary(sup: Supervisor) -> str:
        counts: dict[str, int] = {}
        total = 0
        for app in sup.apps.values():
            for inst in app.instances.values():
                counts[inst.state.value] = counts.get(inst.state.value, 0) + 1
                total += 1
        parts = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        return f"{len(sup.apps)} apps, {total} instances: {parts or 'none'}"

    def _on_state(self, state: str) -> None:
        if state == "reloading":
            self.notifier.reloading()
        elif state == "running":
            self._settle_heap()  # after an update: its config's objects live on
            self.notifier.ready(self._summary(self.sup))

    @staticmethod
    def _settle_heap() -> None:
        seconds, frozen = gcpolicy.settle()
        log.debug("heap_settled", seconds=round(seconds, 4), frozen_objects=frozen)

    async def _watchdog(self) -> None:
        # pinged from the event loop itself: if the loop hangs, systemd stops hearing it
        assert self.notifier.watchdog_interval is not None
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(self.notifier.watchdog_interval)

    def _install_signals(self, loop: asyncio.AbstractEventLoop, sup: Supervisor) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            loop.add_signal_handler(signum, self._on_stop_signal, signum)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._spawn(self._update(sup)))
        loop.add_signal_handler(signal.SIGUSR1, sup.reopen_logs)
        loop.add_signal_handler(signal.SIGUSR2, lambda: self._spawn(self._reload(sup)))
        # after the callbacks already due: a watched child's pidfd, ready in the same
        # wake-up, is reaped by its watcher first, and the orphan reaper sees no one
        loop.add_signal_handler(signal.SIGCHLD, loop.call_soon, sup.reap_orphans)
        silence_full_wakeup_fd()

    def _on_stop_signal(self, signum: int) -> None:
        log.info("signal_received", signal=signal.Signals(signum).name)
        self.sup.request_shutdown()

    async def _update(self, sup: Supervisor) -> None:
        try:
            result = await sup.update(lambda m, f: log.info("update", message=m))
            log.info("update_done", **result)
        except SupervisorError as exc:
            log.error("update_failed", reason=exc.message)

    async def _reload(self, sup: Supervisor) -> None:
        try:
            await sup.reload([], lambda m, f: log.info("reload", message=m))
        except SupervisorError as exc:
            log.error("reload_failed", reason=exc.message)


class _LoopErrors:
    """The event loop's own error reports, through our logger, each kind at most once
    per ``_QUIET`` seconds with a count of what was held back: the log must say so
    without a repeating error drowning everything else."""

    _QUIET = 30.0

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, int]] = {}

    def handle(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", "event loop error"))
        exc = context.get("exception")
        key = f"{message}: {type(exc).__name__}" if exc is not None else message
        now = loop.time()
        last, held = self._last.get(key, (-self._QUIET, 0))
        if now - last < self._QUIET:
            self._last[key] = (last, held + 1)
            return
        self._last[key] = (now, 0)
        log.error("event_loop_error", message=message, error=repr(exc), repeated=held)


def take_handover() -> Handover | None:
    """The handover an upgrading predecessor left us (named in our environment)."""
    path = os.environ.pop(HANDOVER_ENV, None)
    if not path:
        return None
    state = read_handover(path)
    try:
        os.unlink(path)
    except OSError:
        pass
    return state


def recover_from_state_file(
    state_dir: str, stored: dict[str, int], cgroups: Cgroups | None = None
) -> Handover | None:
    """After a crash: the processes the dead daemon ran, if any are still there
    (``stored``: fds systemd kept for us in its fd store)."""
    found = Journal(state_dir).load()
    if cgroups is not None and (found is None or not found.state.apps):
        # no record, but the kernel's: nothing of a previous daemon is left running
        sweep_cgroups(cgroups, Handover(daemon_pid=0))
    state = found.state if found is not None else None
    anything = found is not None and (
        found.unresolved or any(a.instances or a.others for a in found.state.apps.values())
    )
    if state is None or found is None or not anything:
        if not stored:
            return None
        # nothing to adopt, but systemd kept sockets for us (a restart it queued)
        return Handover(daemon_pid=0, spare_sockets=spare_sockets(stored))
    log.warning(
        "recovering_after_crash",
        previous_pid=state.daemon_pid,
        stored_fds=len(stored),
        unrecorded_spawns=len(found.unresolved),
    )
    return recover_after_crash(state, stored, found.unresolved, cgroups)


def run(config: Config) -> int:
    return asyncio.run(Daemon(config).run())
