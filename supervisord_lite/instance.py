"""One instance of an app (``web:primary``): the single owner of its state.

An :class:`Instance` runs one task that takes messages from a queue, one at a time:
operator commands (each with a reply future) and events (exits, readiness results,
backoff timers, health verdicts). Each message goes through the pure table in
``states.py``; the task carries out the actions it returns. Nothing else changes
an instance's state, so there are no locks and no flags set from callbacks.

Events carry the :class:`Generation` they concern; an event about a generation
that is no longer current (the process we killed ourselves, a candidate of a swap
that was abandoned) is dropped. A hot swap runs as a sub-task: the candidate
generation boots beside the current one on the same socket, must pass readiness
attributed to its own processes, and only then does the old one get its stop
signal; until then the instance stays RUNNING on the old generation.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import cgroups, checks, envfile, oslayer, swaps
from .cgroups import Cgroups
from .config import AppConfig, CheckConfig, ListenAddress, render
from .errors import Busy, OperationFailed, SpawnError
from .handover import InstanceRecord
from .journal import MARK_ENV, new_marker
from .log import get_logger
from .logs import LogSink, PipeReader
from .model import InstanceStatus
from .states import Action, Context, Event, State, SwapPhase, SwapRule, during_swap, transition

log = get_logger("instance")

_ENV_FROM_OUR_SYSTEMD = (
    "NOTIFY_SOCKET",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "INVOCATION_ID",
)
_NO_CHECK_YET = "no check has run"
_OUTPUT_LINES = 20  # lines of the app's output shown with a failure
_MAX_STATUS_TEXT = 512  # STATUS= is the app's text: kept short in /status
# max_memory: RSS (of the whole process tree) is sampled this often, and must stay
# above the limit for this many samples in a row before the instance is replaced
_MEMORY_EVERY = 1.0
_MEMORY_SAMPLES = 3


_SPAWN_SLICE = 0.02  # seconds of back-to-back spawning before the loop gets a turn
_spawning_since = 0.0


async def _pace_spawns() -> None:
    """Fork is synchronous: when a thousand instances start at once, let the event
    loop serve supctl, HTTP, signals and exits between slices of spawning."""
    global _spawning_since
    now = time.monotonic()
    if now - _spawning_since > _SPAWN_SLICE:
        await asyncio.sleep(0)
        _spawning_since = time.monotonic()


async def _stop_cgroup(path: str, signum: int, deadline: float) -> list[int]:
    """Stop what is left in a generation's cgroup: ``signum``, then ``cgroup.kill`` at
    ``deadline``; remove the cgroup once empty. The pids that were left."""
    left = cgroups.procs(path)
    if left:

        def send(sig: int) -> None:
            if sig == signal.SIGKILL:
                cgroups.kill(path)  # every member at once, where the kernel can
            else:
                cgroups.signal_all(path, sig)

        def members() -> bool:
            return bool(cgroups.procs(path))

        await oslayer.stop_until(send, members, signum, deadline)
        # SIGKILL cannot be caught: only the exits remain to be waited for
        await oslayer.stop_until(lambda sig: None, members, 0, time.monotonic() + 5.0)
    cgroups.remove(path)
    return left


_digests: dict[int, tuple[AppConfig, str]] = {}  # id -> (the config, kept alive; digest)


def config_digest(cfg: AppConfig) -> str:
    """A short fingerprint of an app's config, to tell which one a process runs.

    Cached per config object (configs are frozen): the repr of an app with a
    thousand instances is long, and every spawn of each of them asks."""
    got = _digests.get(id(cfg))
    if got is not None and got[0] is cfg:
        return got[1]
    digest = hashlib.sha256(repr(cfg).encode()).hexdigest()[:16]
    if len(_digests) >= 256:  # configs replaced by updates: forget the oldest
        del _digests[next(iter(_digests))]
    _digests[id(cfg)] = (cfg, digest)
    return digest


@dataclass(frozen=True)
class Runtime:
    """What an instance needs from its app and the supervisor, fixed at creation."""

    app: str
    sockets: tuple[socket.socket, ...]  # supervisor-held listening sockets (may be empty)
    notify_socket: str | None  # path of our NOTIFY_SOCKET, when the app needs it
    logs_dir: str
    shared_socket: bool  # other instances accept on the same socket
    on_generation: Callable[[Generation, bool], None]  # (gen, alive): pid registry hook
    on_swap: Callable[[str, bool, float, str | None], None]  # (instance, ok, secs, reason)
    on_event: Callable[..., None]  # (kind, instance, **fields): for the history
    # before a spawn: make the marker the child will carry durable (raises OSError)
    on_spawning: Callable[[str], None] = lambda marker: None
    on_state: Callable[[], None] = lambda: None  # the instance's state changed
    cgroups: Cgroups | None = None  # per-generation cgroups, where delegated


@dataclass
class Generation:
    """One spawned process of an instance (its number grows with every spawn)."""

    number: int
    child: oslayer.Child
    reader: PipeReader
    release: str | None
    ready_at: float | None = None
    ready_wall: float | None = None  # ready_at as Unix time, fixed once (see snapshot)
    notified_ready: asyncio.Event = field(default_factory=asyncio.Event)
    last_watchdog: float = field(default_factory=time.monotonic)
    status_text: str | None = None
    main_pid: int | None = None  # MAINPID=, once checked to be one of this instance's
    main_identity: float | None = None  # its start time: a reused pid is not believed
    listen_fd: int | None = None  # where its listening socket sits in the child
    keeper_fd: int | None = None  # where its output pipe's read end sits in the child
    listen_inode: int | None = None  # inodes identify them wherever the app moves them
    pipe_inode: int | None = None
    marker: str | None = None  # SUPERVISORD_LITE_MARK of the tree we spawned (not a re-exec)
    config_digest: str | None = None  # the app config it runs (see config_digest)
    cgroup: str | None = None  # its own cgroup (a re-exec shares its predecessor's)

    @property
    def pid(self) -> int:
        if self.main_pid is not None and oslayer.process_identity(self.main_pid) != (
            self.main_identity
        ):
            self.main_pid = None  # it exited: its number may be anyone's now
        return self.main_pid or self.child.pid

    def pids(self) -> set[int]:
        return oslayer.tree_pids(self.pid) | {self.child.pid}

    def output(self, n: int = _OUTPUT_LINES) -> list[str]:
        self.reader.drain()
        return self.reader.last(n)


@dataclass
class _Msg:
    event: Event
    gen: Generation | None = None  # None for operator commands
    reply: asyncio.Future[Any] | None = None
    reason: str = ""
    exit_status: oslayer.ExitStatus | None = None
    # a swap's parameters travel with its request: what it applies, and why
    cfg: AppConfig | None = None
    release: str | None = None
    kind: str | None = None


class Instance:
    """The state owner of one instance; talk to it only through its async methods."""

    def __init__(
        self,
        cfg: AppConfig,
        name: str,
        runtime: Runtime,
        loop: asyncio.AbstractEventLoop,
        release: str | None = None,
    ) -> None:
        self.cfg = cfg
        self.name = name
        self.rt = runtime
        self.loop = loop
        self.release = release  # what the next spawn runs (deploys change it)
        self.state = State.STOPPED
        self.failures = 0
        self.restarts = 0
        self.generation = 0  # the current generation's number
        self._numbers_used = 0  # candidates of failed swaps used numbers too
        self.current: Generation | None = None
        self.last_exit: oslayer.ExitStatus | None = None
        self.last_error: str | None = None
        self.healthy: bool | None = None
        self.health_failures_total = 0
        self.memory_replacements_total = 0
        self.swap_phase = SwapPhase.NONE  # while a swap runs (states.SWAP_TABLE)
        self.listen: ListenAddress | None = cfg.listen_for(name)
        self.sink = LogSink(
            os.path.join(runtime.logs_dir, f"{runtime.app}.{name}.log"),
            cfg.logs.max_bytes,
            cfg.logs.backups,
        )
        self._queue: asyncio.Queue[_Msg] = asyncio.Queue()
        self._retry: asyncio.TimerHandle | None = None
        self._ready_task: asyncio.Task[None] | None = None
        self._health_task: asyncio.Task[None] | None = None
        self._swap_task: asyncio.Task[None] | None = None
        self._start_waiters: list[asyncio.Future[None]] = []
        self._state_waiters: list[tuple[Callable[[State], bool], asyncio.Future[State]]] = []
        self._deferred: list[_Msg] = []  # held while a swap runs (see states.SWAP_TABLE)
        self._failure_output: list[str] = []  # the failed generation's last lines
        self._cleanups: set[asyncio.Task[None]] = set()  # leftovers of dead leaders
        # (generation, when, cpu seconds, rss bytes, cpu percent) of the last sample
        self._usage: tuple[Generation, float, float, int, float | None] | None = None
        self._swap_undo: tuple[AppConfig, str | None] | None = None  # restored on failure
        self._replace_if_swap_fails = False  # liveness gave up on g during g's swap
        self._task = loop.create_task(self._run(), name=f"instance {runtime.app}:{name}")

    @property
    def swapping(self) -> bool:
        return self.swap_phase is not SwapPhase.NONE

    @property
    def label(self) -> str:
        return f"{self.rt.app}:{self.name}"

    # --- the public, awaitable interface ---------------------------------------

    async def start(self) -> None:
        """Start (if needed) and return once ready; raise OperationFailed if the
        attempt fails (the instance then retries on its own per its backoff)."""
        await self._command(Event.START)

    async def stop(self) -> None:
        """Stop gracefully; return once the process group is gone."""
        await self._command(Event.STOP)

    async def swap(self, cfg: AppConfig | None = None, release: str | None = None) -> None:
        """Replace the running process by a new generation without downtime, with a new
        config (``update``) or release (``deploy``) when given; a stopped instance just
        takes them for its next start."""
        if self.state is State.STOPPED and (cfg is not None or release is not None):
            self.cfg = cfg or self.cfg
            self.release = release or self.release
            return
        await self._command(Event.SWAP, cfg=cfg, release=release)

    async def wait_for(self, predicate: Callable[[State], bool]) -> State:
        if predicate(self.state):
            return self.state
        fut: asyncio.Future[State] = self.loop.create_future()
        self._state_waiters.append((predicate, fut))
        return await fut

    def send_signal(self, signum: int) -> list[int]:
        """Signal the current process (not its group, like kill(1)); the pids reached."""
        gen = self.current
        if gen is None or not gen.child.alive:
            return []
        return [gen.pid] if oslayer.signal_pid(gen.pid, signum) else []

    def notify(self, gen: Generation, fields: dict[str, str]) -> None:
        """A NOTIFY_SOCKET message from one of ``gen``'s processes."""
        if fields.get("READY") == "1":
            gen.notified_ready.set()
        if fields.get("WATCHDOG") == "1":
            gen.last_watchdog = time.monotonic()
        if "STATUS" in fields:
            gen.status_text = fields["STATUS"][:_MAX_STATUS_TEXT]
        if "MAINPID" in fields:
            self._main_pid(gen, fields["MAINPID"].strip())

    def _main_pid(self, gen: Generation, text: str) -> None:
        """MAINPID= names the process that signals and metrics go to: believed only
        for a process of ``gen``'s own tree or session (an app could name any pid)."""
        pid = int(text) if text.isdigit() and len(text) < 12 else 0
        inside = (
            cgroups.member(gen.cgroup, pid)
            if gen.cgroup is not None
            else oslayer.in_instance(pid, gen.child.pid, gen.child.pgid)
        )
        if pid > 1 and gen.child.alive and inside:
            gen.main_pid, gen.main_identity = pid, oslayer.process_identity(pid)
            return
        log.warning(
            "notify_pid_rejected",
            instance=self.label,
            pid=text[:32],
            generation=gen.number,
            reason="not a process of this instance",
        )

    async def close(self) -> None:
        """Stop the actor task (after the instance has been stopped)."""
        self._task.cancel()
        for task in (self._ready_task, self._health_task, self._swap_task):
            if task is not None:
                task.cancel()
        self.sink.end_followers()
        self.sink.close()

    def snapshot(self) -> InstanceStatus:
        gen = self.current
        alive = gen is not None and gen.child.alive
        rss = cpu = cpu_s = None
        if gen is not None and alive and self._usage is not None and self._usage[0] is gen:
            _, _, cpu_s, rss, cpu = self._usage
        uptime = None
        if gen is not None and alive and gen.ready_at is not None:
            uptime = time.monotonic() - gen.ready_at
            if gen.ready_wall is None:  # computed once: a start time must not jitter
                gen.ready_wall = time.time() - uptime
        return InstanceStatus(
            app=self.rt.app,
            name=self.name,
            state=self.state.value,
            pid=gen.pid if gen is not None and alive else None,
            generation=self.generation,
            uptime_s=uptime,
            restarts=self.restarts,
            exit_status=self.last_exit.as_int if self.last_exit else None,
            ready=self.state is State.RUNNING,
            healthy=self.healthy if self.cfg.health is not None else None,
            release=gen.release if gen is not None and alive else self.release,
            listen=self.listen.address if self.listen else None,
            rss_bytes=rss,
            cpu_percent=cpu,
            health_failures=self.health_failures_total,
            last_error=self.last_error,
            swapping=self.swapping,
            cpu_seconds=cpu_s,
            ready_since=gen.ready_wall if uptime is not None and gen is not None else None,
            memory_replacements=self.memory_replacements_total,
        )

    # --- the actor ---------------------------------------------------------------

    async def _command(self, event: Event, **params: Any) -> None:
        reply: asyncio.Future[Any] = self.loop.create_future()
        self._queue.put_nowait(_Msg(event, reply=reply, **params))
        await reply

    def _post(self, event: Event, gen: Generation | None, **kw: Any) -> None:
        self._queue.put_nowait(_Msg(event, gen, **kw))

    async def _run(self) -> None:
        while True:
            msg = await self._queue.get()
            try:
                await self._handle(msg)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # never let one bad message kill the owner
                log.exception("instance_internal_error", instance=self.label)
                if msg.reply is not None and not msg.reply.done():
                    msg.reply.set_exception(OperationFailed(f"internal error: {exc!r}"))

    async def _handle(self, msg: _Msg) -> None:
        if msg.gen is not None and msg.gen is not self.current:
            if msg.event is Event.EXIT:
                self._generation_gone(msg.gen)
            return  # about a generation that is no longer ours to act on
        rule = during_swap(self.swap_phase, msg.event)
        if rule is SwapRule.DEFER:
            self._deferred.append(msg)  # the swap decides first; handled once it ends
            return
        if rule is SwapRule.REFUSE:
            self._reply_error(msg, Busy(f"{self.label}: a swap is already in progress"))
            return
        if rule is SwapRule.CANCEL and self._swap_task is not None:
            self._swap_task.cancel()
            await asyncio.gather(self._swap_task, return_exceptions=True)
        # TABLE, FALL_BACK (the table counts it; its REPLACE notes the fallback): go on

        ctx = Context(
            policy=self.cfg.restart,
            backoff=self.cfg.backoff,
            failures=self.failures,
            clean_exit=msg.exit_status.clean if msg.exit_status else False,
            ran_for=self.current.child.uptime() if self.current else 0.0,
            jitter=random.random(),
        )
        before = self.state
        t = transition(self.state, msg.event, ctx)
        if t.refused:
            self._reply_error(msg, Busy(f"{self.label}: {t.refused}"))
            return
        if msg.event is Event.EXIT and msg.exit_status is not None:
            self.last_exit = msg.exit_status
        if msg.event is Event.EXIT and msg.gen is not None:
            self._clean_up_after(msg.gen)
            self._generation_gone(msg.gen)  # forget it: its pid may be reused
        if msg.event in (
            Event.EXIT,
            Event.NOT_READY,
            Event.SPAWN_FAILED,
            Event.UNHEALTHY,
            Event.REPLACE_FAILED,
        ):
            self._record_failure(msg)
        self.failures = t.failures
        if t.changed:
            self._set_state(t.state)
        if msg.reply is None and Action.SPAWN in t.actions:
            self.restarts += 1  # an automatic respawn, not an operator's start

        if msg.reply is not None and msg.event is Event.START:
            if self.state is State.RUNNING:
                msg.reply.set_result(None)
            else:
                self._start_waiters.append(msg.reply)
        for action in t.actions:
            await self._do(action, t.delay, msg)
        failed = msg.event in (Event.EXIT, Event.NOT_READY, Event.SPAWN_FAILED)
        if before is State.STARTING and t.changed and (t.state is not State.STARTING or failed):
            self._settle_start_waiters(msg)
        if msg.reply is not None and msg.event is Event.SWAP and not msg.reply.done():
            if Action.SWAP not in t.actions and Action.SPAWN in t.actions:
                self._start_waiters.append(msg.reply)  # swapping a dead instance = start
            elif Action.SWAP not in t.actions:
                msg.reply.set_result(None)
        if msg.reply is not None and msg.event is Event.STOP and not msg.reply.done():
            msg.reply.set_result(None)

    def _reply_error(self, msg: _Msg, exc: Exception) -> None:
        if msg.reply is not None and not msg.reply.done():
            msg.reply.set_exception(exc)

    def _record_failure(self, msg: _Msg) -> None:
        if msg.event is Event.EXIT and msg.gen is not None:
            self._failure_output = msg.gen.output()
        if msg.event is Event.EXIT and msg.exit_status is not None:
            what = msg.exit_status.describe()
            phase = "while starting" if self.state is State.STARTING else "while running"
            self.last_error = f"{what} {phase}"
        elif msg.reason:
            self.last_error = msg.reason
        if msg.event is Event.UNHEALTHY:
            log.warning("instance_unhealthy", instance=self.label, reason=msg.reason)
        else:
            log.warning(
                "instance_failed",
                instance=self.label,
                trigger=msg.event.value,
                reason=self.last_error,
                state=self.state.value,
            )
        self.rt.on_event(
            "failure",
            self.name,
            trigger=msg.event.value,
            reason=msg.reason or self.last_error,
            exit_status=msg.exit_status.as_int if msg.exit_status else None,
            pid=msg.gen.pid if msg.gen else None,
            state=self.state.value,
        )

    def _settle_start_waiters(self, msg: _Msg) -> None:
        """Answer everyone waiting on a start attempt: ready, or why not."""
        waiters, self._start_waiters = self._start_waiters, []
        if self.state is State.RUNNING:
            for w in waiters:
                if not w.done():
                    w.set_result(None)
            return
        if self.state in (State.STOPPING, State.STOPPED):
            exc = OperationFailed(f"{self.label}: stopped before it became ready")
        else:
            reason = self.last_error or "did not become ready"
            then = {
                State.BACKOFF: "retrying with backoff",
                State.STARTING: "retrying now",
                State.FATAL: "gave up (FATAL)",
                State.EXITED: "not restarted (EXITED)",
            }
            exc = OperationFailed(
                f"{self.label} failed to start: {reason}; {then.get(self.state, self.state.value)}",
                output=self._failure_output,
                state=self.state.value,
            )
        for w in waiters:
            if not w.done():
                w.set_exception(exc)

    def _set_state(self, state: State) -> None:
        if state is self.state:
            return
        log.info(
            "instance_state",
            instance=self.label,
            state=state.value,
            previous=self.state.value,
            pid=self.current.pid if self.current else None,
        )
        self.rt.on_event("state", self.name, state=state.value, previous=self.state.value)
        self.state = state
        self.rt.on_state()
        if state is State.RUNNING and self.current is not None:
            self._start_health(self.current)
            self.rt.on_generation(self.current, True)  # now worth persisting for adoption
        elif self._health_task is not None:
            self._health_task.cancel()
            self._health_task = None
        still_waiting = []
        for predicate, fut in self._state_waiters:
            if fut.done():
                continue
            if predicate(state):
                fut.set_result(state)
            else:
                still_waiting.append((predicate, fut))
        self._state_waiters = still_waiting

    async def _do(self, action: Action, delay: float | None, msg: _Msg) -> None:
        if action is Action.KILL:
            await self._kill_current()
            if self.state is State.STOPPING:  # the exit we awaited completes the stop
                self._set_state(transition(self.state, Event.EXIT).state)
        elif action is Action.SPAWN:
            await _pace_spawns()
            if msg.event is Event.SWAP:  # a swap of a dead instance starts it afresh
                self.cfg = msg.cfg or self.cfg
                self.release = msg.release or self.release
            self._spawn_current()
        elif action is Action.SCHEDULE_RETRY:
            assert delay is not None
            self._retry = self.loop.call_later(delay, self._post, Event.RETRY, None)
            self.rt.on_event("backoff", self.name, delay_s=delay)
        elif action is Action.CANCEL_RETRY:
            if self._retry is not None:
                self._retry.cancel()
                self._retry = None
        elif action is Action.SWAP:
            self.swap_phase = SwapPhase.BOOTING
            self.rt.on_event("swap_started", self.name, trigger="command" if msg.reply else "auto")
            self._swap_undo = (self.cfg, self.release)
            kind = msg.kind or "reload"
            if msg.cfg is not None:
                self.cfg, kind = msg.cfg, "update"
            if msg.release is not None:
                self.release, kind = msg.release, "deploy"
            self._swap_task = self.loop.create_task(self._swap(msg.reply, kind))
        elif action is Action.REPLACE:
            if self.swapping:  # a reload or deploy is replacing it already
                self._replace_if_swap_fails = True
                return
            self.swap_phase = SwapPhase.BOOTING
            self._swap_undo = (self.cfg, self.release)
            self._swap_task = self.loop.create_task(self._swap(None, "replace"))

    # --- spawning and readiness ----------------------------------------------------

    def _values(self, generation: int, release: str | None) -> dict[str, str]:
        listen = self.listen
        release_dir = ""
        if self.cfg.release is not None and release is not None:
            release_dir = os.path.join(self.cfg.release.root, "releases", release)
        return {
            "app": self.rt.app,
            "instance": self.name,
            "generation": str(generation),
            "host": listen.host if listen and not listen.is_unix else "",
            "port": str(listen.port) if listen and not listen.is_unix else "",
            "release": release or "",
            "release_dir": release_dir,
        }

    def _next_number(self) -> int:
        self._numbers_used = max(self._numbers_used, self.generation) + 1
        return self._numbers_used

    def _new_generation(self) -> Generation:
        """Spawn one process of this instance. Every failure (EMFILE, ENOMEM, an error
        of any kind) is a SpawnError with its reason: a failed start, never a stuck one."""
        try:
            return self._spawn_generation()
        except SpawnError:
            raise
        except Exception as exc:
            raise SpawnError(f"cannot start: {exc}") from exc

    def _spawn_generation(self) -> Generation:
        number = self._next_number()
        values = self._values(number, self.release)
        env = {k: v for k, v in os.environ.items() if k not in _ENV_FROM_OUR_SYSTEMD}
        env.update(envfile.for_spawn(self.cfg.env_file))  # raises SpawnError; env: wins
        env.update({k: render(v, values) for k, v in self.cfg.env.items()})
        env.update(
            {
                "SUPERVISOR_APP": self.rt.app,
                "SUPERVISOR_INSTANCE": self.name,
                "SUPERVISOR_GENERATION": str(number),
                "SUPERVISOR_RELEASE": self.release or "",
            }
        )
        if values["port"]:
            env["PORT"] = values["port"]
        if self.rt.notify_socket is not None and self.cfg.needs_notify_socket:
            env["NOTIFY_SOCKET"] = self.rt.notify_socket
            if self.cfg.watchdog is not None:
                env["WATCHDOG_USEC"] = str(int(self.cfg.watchdog * 1_000_000))
        marker = new_marker(self.rt.app, self.name, number)
        env[MARK_ENV] = marker
        try:
            self.rt.on_spawning(marker)  # the record comes first: no record, no process
        except OSError as exc:
            raise SpawnError(f"cannot record the spawn in the state directory: {exc}") from exc
        cgroup = None
        if self.rt.cgroups is not None:  # made before the process: the kernel's record
            cgroup = self.rt.cgroups.create(self.rt.app, self.name, number)
        use_fds = self.cfg.socket_activation and self.rt.sockets
        reader = PipeReader(self.loop, self.sink)
        spec = oslayer.SpawnSpec(
            argv=tuple(render(a, values) for a in self.cfg.command),
            env=env,
            cwd=render(self.cfg.cwd, values) if self.cfg.cwd else None,
            user=self.cfg.user,
            group=self.cfg.group,
            umask=self.cfg.umask,
            listen_fds=tuple(s.fileno() for s in self.rt.sockets) if use_fds else (),
            listen_fdnames=tuple(self.rt.app for _ in self.rt.sockets) if use_fds else (),
            output_fd=reader.write_fd,
            output_keeper_fd=reader.read_fd,
            cgroup=cgroup,
        )
        try:
            child = oslayer.spawn(spec, self.loop)
        except BaseException:
            reader.close()
            raise
        finally:
            reader.child_started()
        gen = Generation(
            number,
            child,
            reader,
            self.release,
            marker=marker,
            config_digest=config_digest(self.cfg),
            cgroup=cgroup,
        )
        if spec.listen_fds:
            gen.listen_fd = 3
            gen.listen_inode = os.fstat(spec.listen_fds[0]).st_ino
        gen.keeper_fd = 3 + len(spec.listen_fds)
        gen.pipe_inode = os.fstat(reader.read_fd).st_ino
        self.rt.on_generation(gen, True)
        log.info("spawned", instance=self.label, pid=child.pid, generation=number)
        return gen

    def _spawn_current(self) -> None:
        try:
            gen = self._new_generation()
        except SpawnError as exc:
            self._failure_output = []
            self._post(Event.SPAWN_FAILED, None, reason=exc.message)
            return
        self.current = gen
        self.generation = gen.number
        self.healthy = None
        gen.child.exited.add_done_callback(lambda f: self._on_exit(gen, f))
        self._ready_task = self.loop.create_task(self._readiness(gen))

    def _on_exit(self, gen: Generation, fut: asyncio.Future[oslayer.ExitStatus]) -> None:
        status = fut.result()
        gen.reader.drain()
        self._post(Event.EXIT, gen, exit_status=status)

    def _generation_gone(self, gen: Generation) -> None:
        self.rt.on_generation(gen, False)

    async def _readiness(self, gen: Generation) -> None:
        ok, reason = await self._wait_ready(gen)
        if gen is not self.current:
            return
        if ok:
            gen.ready_at = time.monotonic()
            self._post(Event.READY, gen)
        else:
            self._failure_output = gen.output()
            self._post(Event.NOT_READY, gen, reason=reason)

    async def _wait_ready(self, gen: Generation) -> tuple[bool, str]:
        """Run the ready checks for ``gen``; (True, "") or (False, why)."""
        ready = self.cfg.ready
        deadline = time.monotonic() + ready.timeout
        exited = gen.child.exited

        async def until_exit(aw: Any, seconds: float) -> str | None:
            """Await ``aw`` unless the process exits or time runs out first."""
            task = asyncio.ensure_future(aw)
            done, _ = await asyncio.wait(
                {task, exited}, timeout=max(0.0, seconds), return_when=asyncio.FIRST_COMPLETED
            )
            if task in done:
                return None
            task.cancel()
            if exited in done:
                return f"{exited.result().describe()} before it was ready"
            return f"not ready within {ready.timeout:g}s"

        if ready.notify:
            why = await until_exit(gen.notified_ready.wait(), deadline - time.monotonic())
            if why:
                return False, why + (
                    "" if "exited" in why or "killed" in why else " (no READY=1 on NOTIFY_SOCKET)"
                )
        if ready.delay:
            why = await until_exit(asyncio.sleep(ready.delay), deadline - time.monotonic())
            if why and ("exited" in why or "killed" in why):
                return False, why
            if why:
                return False, why
        if ready.http or ready.tcp or ready.exec:
            return await self._probe_until(gen, ready, deadline)
        if exited.done():
            return False, f"{exited.result().describe()} before it was ready"
        return True, ""

    def _owner(self, gen: Generation, check: CheckConfig) -> checks.Owner | None:
        """Attribute probes to ``gen`` when someone else may answer on that address."""
        if self.listen is None or self.listen.is_unix:
            return None
        held = self.cfg.socket_activation and bool(self.rt.sockets)
        if check.tcp and held:
            return gen.pids  # the kernel accepts into our backlog even if the app is hung
        if self.rt.shared_socket or self.swapping or held:
            return gen.pids
        return None

    async def _probe(
        self, gen: Generation, check: CheckConfig, timeout: float
    ) -> checks.ProbeResult:
        values = self._values(gen.number, gen.release)
        owner = self._owner(gen, check)
        if check.http:
            return await checks.probe_http(render(check.http, values), timeout, owner)
        if check.tcp:
            return await checks.probe_tcp(render(check.tcp, values), timeout, owner)
        assert check.exec is not None
        argv = tuple(render(a, values) for a in check.exec)
        env = dict(
            os.environ,
            SUPERVISOR_APP=self.rt.app,
            SUPERVISOR_INSTANCE=self.name,
            PORT=values["port"],
        )

        def run(a: tuple[str, ...], t: float) -> asyncio.Future[tuple[int | None, str]]:
            return asyncio.ensure_future(oslayer.run_command(a, env, None, t, self.loop))

        return await checks.probe_exec(argv, timeout, run)

    async def _probe_until(
        self, gen: Generation, ready: CheckConfig, deadline: float
    ) -> tuple[bool, str]:
        pause = 0.01
        last = _NO_CHECK_YET
        while True:
            if gen.child.exited.done():
                return False, f"{gen.child.exited.result().describe()} before it was ready"
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False, f"not ready within {self.cfg.ready.timeout:g}s: {last}"
            result = await self._probe(gen, ready, min(remaining, 5.0))
            if result.ok and not gen.child.exited.done():
                return True, ""
            if result.foreign:
                continue  # the other process won this accept race: try again at once
            if time.monotonic() >= deadline and last != _NO_CHECK_YET:
                continue  # cut short by the deadline: the process's own last answer says more
            last = result.detail
            sleep_for = min(pause, max(0.0, deadline - time.monotonic()))
            exited = gen.child.exited
            await asyncio.wait({exited}, timeout=sleep_for)
            pause = min(pause * 1.5, 0.25)

    # --- running: liveness -----------------------------------------------------------

    def _start_health(self, gen: Generation) -> None:
        if self._health_task is not None:
            self._health_task.cancel()
        if self.cfg.health is None and self.cfg.watchdog is None and self.cfg.max_memory is None:
            return
        self._health_task = self.loop.create_task(self._liveness(gen))

    async def _liveness(self, gen: Generation) -> None:
        health = self.cfg.health
        consecutive = 0
        interval = health.interval if health else float("inf")
        watchdog = self.cfg.watchdog
        next_check = time.monotonic() + interval
        gen.last_watchdog = time.monotonic()
        limit = self.cfg.max_memory
        next_memory = time.monotonic() + _MEMORY_EVERY if limit else float("inf")
        over = 0
        while gen is self.current and self.state is State.RUNNING:
            wake = min(next_check, next_memory)
            if watchdog is not None:
                wake = min(wake, gen.last_watchdog + watchdog)
            await asyncio.sleep(max(0.0, wake - time.monotonic()))
            if gen is not self.current or self.state is not State.RUNNING:
                return
            if limit and time.monotonic() >= next_memory:
                next_memory = time.monotonic() + _MEMORY_EVERY
                _, rss = oslayer.read_usage(gen.pids())  # the same reading /status shows
                over = over + 1 if rss > limit else 0
                if over >= _MEMORY_SAMPLES and not self.swapping:
                    # replace it the zero-downtime way: the new one is ready first
                    log.warning("max_memory_exceeded", instance=self.label, rss=rss, limit=limit)
                    self.last_error = f"RSS {rss} bytes stayed above max_memory {limit}"
                    self.rt.on_event("memory", self.name, rss=rss, limit=limit)
                    self.memory_replacements_total += 1
                    self._post(Event.SWAP, None, kind="max_memory")
                    over = 0
            if watchdog is not None and time.monotonic() - gen.last_watchdog >= watchdog:
                self._post(
                    Event.UNHEALTHY, gen, reason=f"watchdog: no WATCHDOG=1 within {watchdog:g}s"
                )
                return
            if health is None or time.monotonic() < next_check:
                continue
            next_check = time.monotonic() + interval
            result = await self._probe_own(gen, health)
            if result.ok:
                consecutive = 0
                self.healthy = True
                continue
            consecutive += 1
            self.health_failures_total += 1
            self.healthy = False
            log.warning(
                "health_check_failed",
                instance=self.label,
                detail=result.detail,
                consecutive=consecutive,
            )
            if consecutive >= health.failures:
                self._failure_output = gen.output()
                self._post(
                    Event.UNHEALTHY,
                    gen,
                    reason=f"{consecutive} failed health checks: {result.detail}",
                )
                return

    async def _probe_own(self, gen: Generation, check: CheckConfig) -> checks.ProbeResult:
        """One liveness verdict about ``gen`` itself: on a shared socket, connections the
        other instance accepts say nothing, so retry until ours accepts one or the
        check's timeout runs out (then it is "not accepting")."""
        timeout = self.cfg.health.timeout if self.cfg.health else 2.0
        deadline = time.monotonic() + timeout
        while True:
            result = await self._probe(gen, check, max(0.05, deadline - time.monotonic()))
            if not result.foreign:
                return result
            if time.monotonic() >= deadline:
                return checks.ProbeResult(
                    False, f"none of its processes accepted a connection within {timeout:g}s"
                )

    # --- stopping ----------------------------------------------------------------------

    def _clean_up_after(self, gen: Generation) -> None:
        """The leader died: what is left of its process group (workers, helpers) gets
        the stop signal and, after stop.timeout, SIGKILL, without delaying the respawn."""
        pgid = gen.child.pgid
        deadline = time.monotonic() + self.cfg.stop.timeout
        if oslayer.group_alive(pgid):
            oslayer.signal_group(pgid, self.cfg.stop.signal)
            oslayer.signal_group(pgid, signal.SIGCONT)
        task = self.loop.create_task(self._reap_leftovers(gen, deadline))
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    async def _reap_leftovers(self, gen: Generation, deadline: float) -> None:
        await oslayer.reap_group(gen.child.pgid, deadline)
        await self._stop_escaped(gen, deadline)

    async def _stop_escaped(self, gen: Generation, deadline: float) -> None:
        """What ``gen``'s tree left outside its process group (setsid) goes with it: the
        rest of its cgroup, or else the processes that carry its marker."""
        current = self.current
        if current is not None and (current.marker, current.cgroup) == (gen.marker, gen.cgroup):
            return  # a re-exec'd successor shares them and must stay
        escaped: list[int] = []
        if gen.cgroup is not None:
            escaped = await _stop_cgroup(gen.cgroup, self.cfg.stop.signal, deadline)
        elif gen.marker is not None:
            signum = self.cfg.stop.signal
            escaped = await oslayer.stop_escaped(MARK_ENV, gen.marker, signum, deadline)
        if escaped:
            log.warning("stopped_escaped_processes", instance=self.label, pids=escaped)

    async def _kill_current(self) -> None:
        gen = self.current
        if self._ready_task is not None:
            self._ready_task.cancel()
            self._ready_task = None
        if self._health_task is not None:
            self._health_task.cancel()
            self._health_task = None
        if gen is None:
            return
        self.current = None  # its exit event is now stale; we await it here instead
        deadline = time.monotonic() + self.cfg.stop.timeout
        if gen.child.alive:
            await oslayer.terminate(gen.child, self.cfg.stop.signal, self.cfg.stop.timeout)
        else:
            oslayer.signal_group(gen.child.pgid, self.cfg.stop.signal)
            await oslayer.reap_group(gen.child.pgid, deadline)
        await self._stop_escaped(gen, deadline)
        self.last_exit = gen.child.exited.result()
        gen.reader.drain()
        self._generation_gone(gen)

    # --- hot swap ----------------------------------------------------------------------

    async def _swap(self, reply: asyncio.Future[Any] | None, kind: str) -> None:
        """Boot generation g+1 beside g; retire g only once g+1 is ready.

        ``kind`` says why (reload, update, deploy, max_memory, replace). A replacement of
        an unhealthy process is always a fresh process beside it (a hung master cannot
        be trusted to re-exec itself); when it fails, REPLACE_FAILED makes the instance
        stop the old process and start afresh.
        """
        old = self.current
        replacing = kind == "replace"
        reexec = not self.cfg.reload.is_swap and old is not None and not replacing
        report = swaps.SwapReport(
            self.label,
            kind,
            "reexec" if reexec else "swap",
            old.pid if old is not None else None,
            self.generation,
            self.release,
        )
        new: Generation | None = None
        ok = False
        outcome = swaps.KEPT_OLD
        reason: str | None = None
        try:
            try:
                if reexec:
                    assert old is not None
                    new = await self._reexec_candidate(old)
                else:
                    new = self._new_generation()
            except SpawnError as exc:
                reason = exc.message
                output: list[str] = old.output() if reexec and old is not None else []
            else:
                report.spawned_now(new.pid, new.number)
                ready, why = await self._wait_ready(new)
                output = new.output()
                if ready:
                    ok = True
                    self.swap_phase = SwapPhase.READY
                    report.ready_now()
                else:
                    reason = why
            if not ok:
                self.swap_phase = SwapPhase.ROLLING_BACK
                if new is not None:
                    await self._discard_candidate(new, reexec)
                old_gone = old is not None and old.child.exited.done()
                message = swaps.failure_message(
                    self.label, reason, old.pid if old is not None else None, old_gone
                )
                if old_gone:  # /status and the log say it too, not only supctl
                    outcome, reason = swaps.COLD_RESTART, f"{reason}; {swaps.COLD_NOTE}"
                raise OperationFailed(message, output=output)
            assert new is not None
            # g+1 is ready: make it current, then drain and retire g
            new.ready_at = time.monotonic()
            self.current = new
            self.generation = new.number
            self.rt.on_generation(new, True)  # recorded as current before g is retired
            self.swap_phase = SwapPhase.RETIRING
            new.child.exited.add_done_callback(lambda f: self._on_exit(new, f))
            self.healthy = None
            self._start_health(new)
            if replacing:
                self.restarts += 1  # keep last_error: it says why it was replaced
            else:
                self.last_error = None
            if old is not None and reexec:
                # the old master shares its group with the new one: signal it alone
                await oslayer.terminate_one(old.child, self.cfg.stop.signal, self.cfg.stop.timeout)
                self._generation_gone(old)
            elif old is not None:
                deadline = time.monotonic() + self.cfg.stop.timeout
                await oslayer.terminate(old.child, self.cfg.stop.signal, self.cfg.stop.timeout)
                await self._stop_escaped(old, deadline)
                self._generation_gone(old)
            report.retired_now()
            outcome = swaps.OK
            if reply is not None and not reply.done():
                reply.set_result(None)
        except asyncio.CancelledError:
            if new is not None and new is not self.current:
                if reexec:
                    oslayer.kill_tree(new.child.pid)
                else:
                    oslayer.signal_group(new.child.pgid, signal.SIGKILL)
                self._generation_gone(new)
            outcome, reason = swaps.CANCELLED, "cancelled"
            self._undo_swap_plan()
            if reply is not None and not reply.done():
                reply.set_exception(OperationFailed(f"{self.label}: swap cancelled by a stop"))
            raise
        except OperationFailed as exc:
            self.last_error = f"swap failed: {reason}"
            self._undo_swap_plan()
            if reply is not None and not reply.done():
                reply.set_exception(exc)
        finally:
            self.swap_phase = SwapPhase.NONE
            self._swap_task = None
            self._swap_undo = None
            duration = report.finish(outcome, reason)
            self.rt.on_swap(self.name, ok, duration, reason)
            self._after_swap(ok, outcome, replacing or self._replace_if_swap_fails, old, reason)

    def _after_swap(
        self, ok: bool, outcome: str, fall_back: bool, old: Generation | None, reason: str | None
    ) -> None:
        """What a failed swap leaves to the state machine: g's exit during the swap (a
        cold restart), or, when g was unhealthy, its stop-then-start."""
        self._replace_if_swap_fails = False
        deferred, self._deferred = self._deferred, []
        for held in deferred:  # now handled against what the swap left (stale ones drop)
            self._queue.put_nowait(held)
        if ok:
            return
        exited = any(m.event is Event.EXIT and m.gen is old for m in deferred)
        if exited:
            return  # g died during a failed swap: its exit (requeued) is a cold restart
        if fall_back and outcome != swaps.CANCELLED and old is not None and old is self.current:
            self._post(Event.REPLACE_FAILED, old, reason=f"replacement failed: {reason}")

    async def _discard_candidate(self, new: Generation, reexec: bool) -> None:
        """Kill a generation that failed its swap; the current one is untouched."""
        if reexec:
            oslayer.kill_tree(new.child.pid)
            await new.child.exited
        else:
            await oslayer.terminate(new.child, signal.SIGKILL, 5.0)
        shared = self.current is not None and self.current.cgroup == new.cgroup  # a re-exec
        if new.cgroup is not None and not shared:
            await _stop_cgroup(new.cgroup, signal.SIGKILL, time.monotonic())
        self._generation_gone(new)

    @staticmethod
    def _new_master(pidfile: str, old_pid: int) -> int | None:
        """The re-executed master, once it wrote its pid: Unicorn writes PIDFILE (the
        old one moves to .oldbin); gunicorn writes PIDFILE.2 while the old one lives."""
        tree = oslayer.tree_pids(old_pid)
        for path in (pidfile, pidfile + ".2"):
            pid = oslayer.read_pidfile(path)
            if pid is not None and pid != old_pid and pid in tree:
                return pid
        return None

    async def _reexec_candidate(self, old: Generation) -> Generation:
        """Signal the app to re-exec itself and follow its pidfile to the new master.

        The new master is the old one's child until the old one exits; we are a
        subreaper, so it then becomes ours. It shares the old master's process group.
        """
        reload = self.cfg.reload
        assert reload.signal is not None and reload.pidfile is not None
        number = self._next_number()
        pidfile = render(reload.pidfile, self._values(number, self.release))
        old_pid = old.pid
        children_before = oslayer.direct_children(old_pid)
        if not oslayer.signal_pid(old_pid, reload.signal):
            raise SpawnError(f"cannot send {reload.signal.name} to pid {old_pid}")
        deadline = time.monotonic() + self.cfg.ready.timeout
        pause = 0.01
        while True:
            if old.child.exited.done():
                raise SpawnError(f"the old master (pid {old_pid}) exited before a new one appeared")
            pid = self._new_master(pidfile, old_pid)
            if pid is not None:
                break
            if time.monotonic() >= deadline:
                # a new master may have started without saying so where we look: kill
                # what the old master forked since the signal, so only it remains
                for stray in oslayer.direct_children(old_pid) - children_before:
                    oslayer.kill_tree(stray)
                raise SpawnError(
                    f"no new master in {pidfile} within {self.cfg.ready.timeout:g}s "
                    f"after {reload.signal.name}"
                )
            await asyncio.sleep(pause)
            pause = min(pause * 1.5, 0.1)
        child = oslayer.watch_child(pid, self.loop, group=old.child.pgid)
        gen = Generation(
            number,
            child,
            old.reader,
            self.release,
            marker=old.marker,
            config_digest=config_digest(self.cfg),
            cgroup=old.cgroup,
        )
        self.rt.on_generation(gen, True)
        log.info(
            "reexec_followed", instance=self.label, old_pid=old_pid, pid=pid, generation=number
        )
        return gen

    def _undo_swap_plan(self) -> None:
        """A failed swap leaves the instance on the config and release it had."""
        if self._swap_undo is not None:
            self.cfg, self.release = self._swap_undo

    def sample_usage(self, now: float, missing_only: bool = False) -> None:
        """Measure RSS and CPU of the current generation's whole process tree (a
        master and its workers); CPU percent is over the time since the last sample.
        ``missing_only``: only if the current generation has no sample yet."""
        gen = self.current
        if missing_only and (gen is None or (self._usage is not None and self._usage[0] is gen)):
            return
        if gen is None or not gen.child.alive:
            self._usage = None
            return
        cpu_s, rss = oslayer.read_usage(gen.pids())
        if gen.cgroup is not None:  # the kernel's own account of every member
            rss = cgroups.memory_bytes(gen.cgroup) or rss
            cpu_s = cgroups.cpu_seconds(gen.cgroup) or cpu_s
        percent = None
        if self._usage is not None and self._usage[0] is gen and now > self._usage[1]:
            percent = round(100.0 * (cpu_s - self._usage[2]) / (now - self._usage[1]), 1)
        self._usage = (gen, now, cpu_s, rss, percent)

    def adopt(self, rec: InstanceRecord) -> None:
        """Take back a process that outlived the previous daemon (upgrade or crash).

        It becomes the current generation, RUNNING; its readiness was established
        by the daemon that started it, and liveness checks resume at once.
        """
        if rec.pipe_fd is not None:
            reader = PipeReader(self.loop, self.sink, adopt_fd=rec.pipe_fd)
        else:
            reader = PipeReader(self.loop, self.sink)
            reader.close()
        child = oslayer.watch_child(
            rec.pid, self.loop, group=rec.pgid if rec.pgid != rec.pid else None
        )
        gen = Generation(
            rec.generation,
            child,
            reader,
            rec.release,
            marker=rec.marker,
            config_digest=rec.config_digest,
            cgroup=rec.cgroup,
        )
        gen.listen_fd, gen.keeper_fd = rec.listen_fd, rec.keeper_fd
        gen.listen_inode, gen.pipe_inode = rec.listen_inode, rec.pipe_inode
        # keep the uptime the previous daemon measured
        gen.ready_at = (
            time.monotonic() - max(0.0, time.time() - rec.ready_since)
            if rec.ready_since
            else time.monotonic()
        )
        self.generation = rec.generation
        self._numbers_used = rec.generation
        self.release = rec.release
        self.restarts = rec.restarts
        self.current = gen
        self.rt.on_generation(gen, True)
        gen.child.exited.add_done_callback(lambda f: self._on_exit(gen, f))
        self._set_state(State.RUNNING)
        log.info("adopted", instance=self.label, pid=rec.pid, generation=rec.generation)

    def record(self) -> InstanceRecord | None:
        """What a successor daemon needs to adopt the current generation."""
        gen = self.current
        if gen is None or not gen.child.alive:
            return None
        return InstanceRecord(
            running=self.state is State.RUNNING,
            ready_since=time.time() - (time.monotonic() - gen.ready_at) if gen.ready_at else None,
            pid=gen.child.pid,
            pgid=gen.child.pgid,
            start_time=gen.child.start_time,
            generation=gen.number,
            release=gen.release,
            restarts=self.restarts,
            listen_fd=gen.listen_fd,
            keeper_fd=gen.keeper_fd,
            pipe_fd=gen.reader.read_fd if gen.reader.read_fd >= 0 else None,
            listen_inode=gen.listen_inode,
            pipe_inode=gen.pipe_inode,
            marker=gen.marker,
            config_digest=gen.config_digest,
            cgroup=gen.cgroup,
        )

    @staticmethod
    def stray_record(gen: Generation, shares_group: bool) -> InstanceRecord:
        """A live generation that is not current (a swap's candidate, a retiring one):
        a successor daemon stops it. One that shares its group with the current one
        (a re-exec) is stopped by its own process tree (pgid -1)."""
        return InstanceRecord(
            pid=gen.child.pid,
            pgid=-1 if shares_group else gen.child.pgid,
            start_time=gen.child.start_time,
            generation=gen.number,
            release=gen.release,
            running=False,
            marker=gen.marker,
            cgroup=gen.cgroup,
        )

    async def probe_health(self) -> checks.ProbeResult | None:
        """Run the liveness check once against the current generation (None: none set)."""
        gen = self.current
        if self.cfg.health is None or gen is None:
            return None
        return await self._probe(gen, self.cfg.health, self.cfg.health.timeout)

    def drifted(self, release: str | None) -> str | None:
        """Why the running generation is not what the record says should run (a swap,
        deploy or update that a crash interrupted half-way), or None."""
        gen = self.current
        if gen is None or not gen.child.alive or self.state is not State.RUNNING:
            return None
        if release is not None and gen.release != release:
            return f"runs release {gen.release}, the app's release is {release}"
        if gen.config_digest is not None and gen.config_digest != config_digest(self.cfg):
            return "runs another config than the one recorded"
        return None

    def last_output(self, n: int = _OUTPUT_LINES) -> list[str]:
        if self.current is not None:
            return self.current.output(n)
        return self.sink.last(n)
