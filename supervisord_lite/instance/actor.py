"""The actor of one instance: the task that takes its messages and carries out the tables.

It is the only writer of an instance's state (the fields below, read by the
:class:`~instance.Instance` that owns it and by nobody else). Each message from the
queue goes through the pure tables in ``states`` (the swap's phase first, then the
state); the actor carries out the actions they return through the runners
(``spawn``, ``ready``, ``liveness``, ``swap``,
``stop``), which get a generation, the config and :meth:`Actor.post`, never
the actor. Events carry the generation they concern; one about a generation that is
no longer current is dropped. The task runs only while messages wait (one at a
time, in order): an idle instance holds no task.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Callable
from typing import Any

from ..config.settings import AppConfig
from ..errors import Busy, OperationFailed, SpawnError
from ..host import exits
from ..log import Logger
from ..state.handover import InstanceRecord
from .generation import Generation, Runtime, Spot, instance_log
from .liveness import Health, Watch, watched
from .messages import Msg, Waiters, failure_text, report_failure, start_failure
from .output import LogSink
from .ready import Prober, wait_ready
from .records import adopted
from .spawn import pace_spawns, spawn
from .state import State
from .states import Action, Context, Event, SwapPhase, SwapRule, during_swap, transition
from .stop import Stopper
from .swap import SwapPlan, SwapRun


class Actor:
    # slots: a thousand instances' attribute dicts were over a kilobyte each
    __slots__ = (
        "_closed",
        "_deferred",
        "_failure_output",
        "_inbox",
        "_ready_task",
        "_retry",
        "_swap",
        "_swap_task",
        "_task",
        "_waiters",
        "_watch",
        "cfg",
        "current",
        "failures",
        "generation",
        "health",
        "label",
        "last_error",
        "last_exit",
        "listen",
        "loop",
        "memory_replacements",
        "name",
        "numbers_used",
        "phase",
        "release",
        "restarts",
        "rt",
        "sink",
        "state",
        "stopper",
    )

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
        self.numbers_used = 0  # candidates of failed swaps used numbers too
        self.current: Generation | None = None
        self.last_exit: exits.ExitStatus | None = None
        self.last_error: str | None = None
        self.health = Health()
        self.memory_replacements = 0
        self.phase = SwapPhase.NONE  # while a swap runs (states.SWAP_TABLE)
        self.listen = cfg.listen_for(name)
        self.sink = LogSink(
            os.path.join(runtime.logs_dir, f"{runtime.app}.{name}.log"),
            cfg.logs.max_bytes,
            cfg.logs.backups,
        )
        # the messages not yet taken, in order; a task takes them only while there are
        # some (an idle instance holds no task, queue or future: at a thousand
        # instances, those were a third of the daemon's memory per instance)
        self._inbox: list[Msg] = []
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._retry: asyncio.TimerHandle | None = None
        self._ready_task: asyncio.Task[None] | None = None
        self._watch: Watch | None = None  # made for the first generation to watch
        self._swap_task: asyncio.Task[None] | None = None
        self._swap: SwapPlan | None = None
        self._waiters = Waiters()
        self._deferred: list[Msg] = []  # held while a swap runs (see states.SWAP_TABLE)
        self._failure_output: list[str] = []  # the failed generation's last lines
        self.label = f"{runtime.app}:{name}"
        self.stopper = Stopper(self.label, runtime, lambda: self.current, loop)

    @property
    def log(self) -> Logger:
        return instance_log(self.label)

    @property
    def swapping(self) -> bool:
        return self.phase is not SwapPhase.NONE

    def claim(self, inode: int) -> Callable[[], None] | None:
        return self._watch.claim(inode) if self._watch is not None else None

    def _start_watch(self, gen: Generation) -> None:
        """Watch ``gen``'s liveness per the config (stopping the previous watch)."""
        if self._watch is None:
            if not watched(self.cfg):
                return  # nothing to watch: no Watch (most instances of a big app)
            self._watch = Watch(
                self.health, self.post, lambda: self.swapping, self._memory_exceeded, self.loop
            )
        self._watch.start(gen, self.cfg, self.prober())

    def _unwatch(self) -> None:
        if self._watch is not None:
            self._watch.stop()

    def retarget(self, cfg: AppConfig | None, release: str | None) -> None:
        """A stopped instance takes a new config or release for its next start."""
        self.cfg = cfg or self.cfg
        self.release = release or self.release

    async def wait_for(self, predicate: Callable[[State], bool]) -> State:
        if predicate(self.state):
            return self.state
        fut: asyncio.Future[State] = self.loop.create_future()
        self._waiters.states.append((predicate, fut))
        return await fut

    def close(self) -> None:
        """Stop the actor's task and its runners (after the instance was stopped)."""
        self._closed = True  # what is posted from now on is never taken
        if self._task is not None:
            self._task.cancel()
        for task in (self._ready_task, self._swap_task):
            if task is not None:
                task.cancel()
        self._unwatch()

    def adopt(self, rec: InstanceRecord) -> None:
        """Take back a process that outlived the previous daemon (see Instance.adopt)."""
        gen = adopted(rec, self.sink, self.loop)
        self.generation = rec.generation
        self.numbers_used = rec.generation
        self.release = rec.release
        self.restarts = rec.restarts
        self.current = gen
        self.rt.on_generation(gen, True)
        gen.child.exited.add_done_callback(lambda f: self._on_exit(gen, f))
        self._set_state(State.RUNNING)
        self.log.info("adopted", pid=rec.pid, generation=rec.generation)

    async def command(self, event: Event, **params: Any) -> None:
        reply: asyncio.Future[Any] = self.loop.create_future()
        self._enqueue(Msg(event, reply=reply, **params))
        await reply

    def post(self, event: Event, gen: Generation | None, **kw: Any) -> None:
        self._enqueue(Msg(event, gen, **kw))

    def _enqueue(self, msg: Msg) -> None:
        """Add a message; start the task that takes them if none is running."""
        if self._closed:
            return
        self._inbox.append(msg)
        if self._task is None:
            name = f"instance {self.label}"
            self._task = self.loop.create_task(self._run(), name=name)

    async def _run(self) -> None:
        """Take the messages one at a time, in order, until there are none left."""
        while self._inbox:
            msg = self._inbox.pop(0)
            try:
                await self._handle(msg)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # never let one bad message kill the owner
                self.log.exception("instance_internal_error")
                if msg.reply is not None and not msg.reply.done():
                    msg.reply.set_exception(OperationFailed(f"internal error: {exc!r}"))
        self._task = None  # no await since the inbox was seen empty: nothing is missed

    async def _handle(self, msg: Msg) -> None:
        if msg.gen is not None and msg.gen is not self.current:
            if msg.event is Event.EXIT:
                self.stopper.gone(msg.gen)
            return  # about a generation that is no longer ours to act on
        rule = during_swap(self.phase, msg.event)
        if rule is SwapRule.DEFER:
            self._deferred.append(msg)  # the swap decides first; handled once it ends
            return
        if rule is SwapRule.REFUSE:
            msg.fail(Busy(f"{self.label}: a swap is already in progress"))
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
            msg.fail(Busy(f"{self.label}: {t.refused}"))
            return
        if msg.event is Event.EXIT and msg.exit_status is not None:
            self.last_exit = msg.exit_status
        if msg.event is Event.EXIT and msg.gen is not None:
            self.stopper.after_exit(msg.gen, self.cfg.stop)
            self.stopper.gone(msg.gen)  # forget it: its pid may be reused
        if msg.is_failure:
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
                self._waiters.starts.append(msg.reply)
        for action in t.actions:
            await self._do(action, t.delay, msg)
        failed = msg.event in (Event.EXIT, Event.NOT_READY, Event.SPAWN_FAILED)
        if before is State.STARTING and t.changed and (t.state is not State.STARTING or failed):
            exc = start_failure(self.label, self.state, self.last_error, self._failure_output)
            self._waiters.settle_starts(exc)
        if msg.reply is not None and msg.event is Event.SWAP and not msg.reply.done():
            if Action.SWAP not in t.actions and Action.SPAWN in t.actions:
                self._waiters.starts.append(msg.reply)  # swapping a dead instance = start
            elif Action.SWAP not in t.actions:
                msg.reply.set_result(None)
        if msg.reply is not None and msg.event is Event.STOP and not msg.reply.done():
            msg.reply.set_result(None)

    def _record_failure(self, msg: Msg) -> None:
        if msg.event is Event.EXIT and msg.gen is not None:
            self._failure_output = msg.gen.output()
        elif msg.output is not None:
            self._failure_output = msg.output
        self.last_error = failure_text(msg, self.state) or self.last_error
        report_failure(msg, self.state, self.name, self.log, self.last_error, self.rt.on_event)

    def _set_state(self, state: State) -> None:
        if state is self.state:
            return
        self.log.info(
            "instance_state",
            state=state.value,
            previous=self.state.value,
            pid=self.current.pid if self.current else None,
        )
        self.rt.on_event("state", self.name, state=state.value, previous=self.state.value)
        self.state = state
        self.rt.on_state()
        if state is State.RUNNING and self.current is not None:
            self._start_watch(self.current)
            self.rt.on_generation(self.current, True)  # now worth persisting for adoption
        else:
            self._unwatch()
        self._waiters.state_changed(state)

    async def _do(self, action: Action, delay: float | None, msg: Msg) -> None:
        if action is Action.KILL:
            await self._kill_current()
            if self.state is State.STOPPING:  # the exit we awaited completes the stop
                self._set_state(transition(self.state, Event.EXIT).state)
        elif action is Action.SPAWN:
            await pace_spawns()
            if msg.event is Event.SWAP:  # a swap of a dead instance starts it afresh
                self.cfg = msg.cfg or self.cfg
                self.release = msg.release or self.release
            await self._spawn_current()
        elif action is Action.SCHEDULE_RETRY:
            assert delay is not None
            self._retry = self.loop.call_later(delay, self.post, Event.RETRY, None)
            self.rt.on_event("backoff", self.name, delay_s=delay)
        elif action is Action.CANCEL_RETRY:
            if self._retry is not None:
                self._retry.cancel()
                self._retry = None
        elif action is Action.SWAP:
            trigger = "command" if msg.reply else "auto"
            self.rt.on_event("swap_started", self.name, trigger=trigger)
            undo = (self.cfg, self.release)
            kind = msg.kind or "reload"
            if msg.cfg is not None:
                self.cfg, kind = msg.cfg, "update"
            if msg.release is not None:
                self.release, kind = msg.release, "deploy"
            self._begin_swap(msg.reply, kind, undo)
        elif action is Action.REPLACE:
            if self._swap is not None:  # a reload or deploy is replacing it already
                self._swap.replace_if_fails = True
                return
            self._begin_swap(None, "replace", (self.cfg, self.release))

    # --- generations ----------------------------------------------------------------------

    def spot(self) -> Spot:
        return Spot(self.rt.app, self.name, self.cfg, self.listen, self.log)

    def prober(self) -> Prober:
        return Prober(self.spot(), self.rt, lambda: self.swapping, self.loop)

    def _next_number(self) -> int:
        self.numbers_used = max(self.numbers_used, self.generation) + 1
        return self.numbers_used

    async def _spawn_current(self) -> None:
        try:
            gen = await spawn(
                self.spot(), self.rt, self.sink, self._next_number(), self.release, self.loop
            )
        except SpawnError as exc:
            self._failure_output = []
            self.post(Event.SPAWN_FAILED, None, reason=exc.message)
            return
        self.current = gen
        self.generation = gen.number
        self.health.healthy = None
        gen.child.exited.add_done_callback(lambda f: self._on_exit(gen, f))
        self._ready_task = self.loop.create_task(self._readiness(gen))

    def _on_exit(self, gen: Generation, fut: asyncio.Future[exits.ExitStatus]) -> None:
        status = fut.result()
        gen.reader.drain()
        self.post(Event.EXIT, gen, exit_status=status)

    async def _readiness(self, gen: Generation) -> None:
        try:
            ok, reason = await wait_ready(gen, self.prober())
        finally:
            if self._ready_task is asyncio.current_task():
                self._ready_task = None  # a finished task is no use (and holds memory)
        if gen is not self.current:
            return
        if ok:
            gen.ready_at = time.monotonic()
            self.post(Event.READY, gen)
        else:
            self.post(Event.NOT_READY, gen, reason=reason, output=gen.output())

    def _memory_exceeded(self, rss: int, limit: int) -> None:
        self.log.warning("max_memory_exceeded", rss=rss, limit=limit)
        self.last_error = f"RSS {rss} bytes stayed above max_memory {limit}"
        self.rt.on_event("memory", self.name, rss=rss, limit=limit)
        self.memory_replacements += 1
        self.post(Event.SWAP, None, kind="max_memory")

    async def _kill_current(self) -> None:
        if self._ready_task is not None:
            self._ready_task.cancel()
            self._ready_task = None
        self._unwatch()
        gen = self.current
        if gen is None:
            return
        self.current = None  # its exit event is now stale; we await it here instead
        self.last_exit = await self.stopper.stop(gen, self.cfg.stop)

    # --- hot swap: the actor's side (swap.py runs the processes) -------------------

    def _begin_swap(
        self, reply: asyncio.Future[Any] | None, kind: str, undo: tuple[AppConfig, str | None]
    ) -> None:
        """Boot g+1 beside g, retire g once g+1 is ready (or, reload: restart, stop g
        first). A failed replacement of an unhealthy g: REPLACE_FAILED, stop-then-start."""
        self.phase = SwapPhase.BOOTING
        self._swap = SwapPlan(undo)
        run = SwapRun(
            spot=self.spot(),
            rt=self.rt,
            sink=self.sink,
            old=self.current,
            kind=kind,
            generation=self.generation,
            numbers=self._next_number,
            release=self.release,
            prober=self.prober(),
            stopper=self.stopper,
            phase=self._set_phase,
            promote=lambda new: self._promote(new, kind == "replace"),
            ended=self._swap_ended,
            loop=self.loop,
            undo=undo,
            unwatch=self._unwatch,
        )
        self._swap_task = self.loop.create_task(run.run(reply))

    def _set_phase(self, phase: SwapPhase) -> None:
        self.phase = phase

    def _promote(self, new: Generation, replacing: bool) -> None:
        """g+1 passed readiness: it becomes current before g is retired."""
        self.current = new
        self.generation = new.number
        self.rt.on_generation(new, True)  # recorded as current before g is retired
        new.child.exited.add_done_callback(lambda f: self._on_exit(new, f))
        self.health.healthy = None
        self._start_watch(new)
        if replacing:
            self.restarts += 1  # keep last_error: it says why it was replaced
        else:
            self.last_error = None

    def _swap_ended(self, run: SwapRun) -> None:
        """A failed, rolled back or cancelled swap leaves the config and release it had;
        then what it leaves to the state machine: g's exit during the swap (a cold
        restart), or, when g was unhealthy, its stop-then-start."""
        swap = self._swap
        assert swap is not None
        if not run.promoted or run.rolled_back:
            self.cfg, self.release = swap.undo
            if not run.cancelled:
                self.last_error = f"swap failed: {run.reason}"
        self.phase = SwapPhase.NONE
        self._swap_task, self._swap = None, None
        self.rt.on_swap(self.name, run.ok, run.finish(), run.reason)
        fall_back = run.replacing or swap.replace_if_fails
        deferred, self._deferred = self._deferred, []
        for held in deferred:  # now handled against what the swap left (stale ones drop)
            self._enqueue(held)
        if run.ok:
            return
        old = run.old
        if any(m.event is Event.EXIT and m.gen is old for m in deferred):
            return  # g died during a failed swap: its exit (requeued) is a cold restart
        if fall_back and not run.cancelled and old is not None and old is self.current:
            self.post(Event.REPLACE_FAILED, old, reason=f"replacement failed: {run.reason}")
