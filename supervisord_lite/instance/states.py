"""The instance state machine: one pure transition table, and backoff arithmetic.

No I/O happens here. :func:`transition` maps (state, event, context) to the next
state and the actions the instance's owner must carry out, in order. Every
(state, event) pair has an entry in :data:`TABLE`; the unit tests walk all of them.

Vocabulary (Supervisor's): STOPPED (not running, by intent), STARTING (spawned,
not yet ready), RUNNING (ready), BACKOFF (waiting to retry after a failure),
STOPPING (stop signal sent, waiting for the exit), EXITED (exited and the restart
policy says leave it), FATAL (gave up after ``max_retries``).

Restarts: the first failure after a good run restarts at once (one crash is a
blip; the replacement is spawned within milliseconds of the exit), each further
consecutive failure waits ``initial * 2**(n-2)`` seconds, capped at ``max`` and
shortened by up to 20% of jitter so that many crashing instances do not retry in
lockstep. A process that ran ``reset_after`` seconds clears the count.

Replacement before kill: a running process that liveness checks or the watchdog
gave up on is still there, and may still serve some requests; it is replaced by a
hot swap (REPLACE: the new generation is ready before the old one gets its stop
signal) at once, counting a failure like a crash does. Only when that swap fails
(REPLACE_FAILED) is the old process stopped and a new one started, with backoff.

Swaps: while a hot swap runs the instance stays RUNNING and is in a swap phase
(:class:`SwapPhase`: candidate booting, candidate ready, old retiring, rolling back);
:data:`SWAP_TABLE` says, for every (phase, event), what becomes of the event first:
handled by the main table, held until the swap ends (an exit; a stop while the old
generation retires), refused (a second swap), or the swap cancelled (a stop before
the candidate is current). The unit tests walk every pair and random interleavings.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from .state import State


class Event(StrEnum):
    START = "start"  # an operator (or boot/update) asks for the instance to run
    STOP = "stop"  # an operator asks for it to stop
    SWAP = "swap"  # an operator asks for a zero-downtime replacement (reload)
    READY = "ready"  # the readiness check passed
    NOT_READY = "not_ready"  # the readiness check failed or missed its deadline
    EXIT = "exit"  # the instance's process exited
    SPAWN_FAILED = "spawn_failed"  # the process could not be created at all
    RETRY = "retry"  # the backoff delay elapsed
    UNHEALTHY = "unhealthy"  # liveness checks (or the watchdog) gave up on it
    REPLACE_FAILED = "replace_failed"  # the swap replacing an unhealthy process failed


class Action(StrEnum):
    SPAWN = "spawn"  # create a process and start its readiness check
    KILL = "kill"  # stop the current process (signal, timeout, SIGKILL) and await it
    SCHEDULE_RETRY = "schedule_retry"  # arm the backoff timer with Transition.delay
    CANCEL_RETRY = "cancel_retry"  # disarm the backoff timer
    SWAP = "swap"  # hot-swap the running process for a new generation
    REPLACE = "replace"  # hot-swap an unhealthy process; REPLACE_FAILED if that fails


class Rule(StrEnum):
    """What a table entry does when it is not a plain move."""

    MOVE = "move"  # go to `state` with `actions`
    IGNORE = "ignore"  # stale or irrelevant event: nothing changes
    REFUSE = "refuse"  # an operator command that cannot apply now: nothing changes
    CRASHED = "crashed"  # a ready process exited: the restart policy decides
    FAILED_START = "failed_start"  # a start failed: retry with backoff, or give up
    UNHEALTHY = "unhealthy"  # liveness gave up on a running process: replace it, or give up


@dataclass(frozen=True)
class Entry:
    rule: Rule
    state: State | None = None
    actions: tuple[Action, ...] = ()
    reason: str = ""  # for REFUSE: the message the operator sees
    resets_failures: bool = False  # an operator's start forgives earlier failures


class RestartPolicy(StrEnum):
    """``restart:``: when a process that exited is started again."""

    ALWAYS = "always"
    ON_FAILURE = "on-failure"
    NEVER = "never"


@dataclass(frozen=True)
class Backoff:
    """The restart delays' parameters (``backoff:``; the config declares each with its
    validation and doc, and takes its default from here)."""

    initial: float = 0.5
    max: float = 30.0
    reset_after: float = 60.0
    max_retries: int | None = None


TYPE_CHECKING = False  # supctl imports this module (the state names): no typing at run time
if TYPE_CHECKING:
    from typing import Protocol

    class BackoffPolicy(Protocol):
        """What the rules read of a backoff (:class:`Backoff`, or the config's)."""

        @property
        def initial(self) -> float: ...
        @property
        def max(self) -> float: ...
        @property
        def reset_after(self) -> float: ...
        @property
        def max_retries(self) -> int | None: ...


@dataclass(frozen=True)
class Context:
    """Facts about the instance the decision rules need."""

    policy: RestartPolicy = RestartPolicy.ALWAYS
    backoff: BackoffPolicy = Backoff()
    failures: int = 0  # consecutive failures before this event
    clean_exit: bool = False  # the process exited with status 0
    ran_for: float = 0.0  # seconds the exiting process had been running
    jitter: float = 0.0  # a random number in [0, 1), injected to keep this pure


@dataclass(frozen=True)
class Transition:
    state: State
    actions: tuple[Action, ...]
    failures: int
    delay: float | None = None  # for SCHEDULE_RETRY
    refused: str | None = None  # set when an operator command was refused
    changed: bool = True  # False when the event was ignored or refused


def _move(state: State, *actions: Action, resets: bool = False) -> Entry:
    return Entry(Rule.MOVE, state, actions, resets_failures=resets)


_IGNORE = Entry(Rule.IGNORE)


def _refuse(reason: str) -> Entry:
    return Entry(Rule.REFUSE, reason=reason)


S, E, A = State, Event, Action

# fmt: off
TABLE: dict[tuple[State, Event], Entry] = {
    (S.STOPPED, E.START):           _move(S.STARTING, A.SPAWN, resets=True),
    (S.STOPPED, E.STOP):            _IGNORE,
    (S.STOPPED, E.SWAP):            _refuse("stopped; use start"),
    (S.STOPPED, E.READY):           _IGNORE,
    (S.STOPPED, E.NOT_READY):       _IGNORE,
    (S.STOPPED, E.EXIT):            _IGNORE,
    (S.STOPPED, E.SPAWN_FAILED):    _IGNORE,
    (S.STOPPED, E.RETRY):           _IGNORE,
    (S.STOPPED, E.UNHEALTHY):       _IGNORE,
    (S.STOPPED, E.REPLACE_FAILED):  _IGNORE,

    (S.STARTING, E.START):          _IGNORE,  # already on its way; the caller awaits readiness
    (S.STARTING, E.STOP):           _move(S.STOPPING, A.KILL),
    (S.STARTING, E.SWAP):           _refuse("still starting; nothing to swap yet"),
    (S.STARTING, E.READY):          _move(S.RUNNING),
    (S.STARTING, E.NOT_READY):      Entry(Rule.FAILED_START, actions=(A.KILL,)),
    (S.STARTING, E.EXIT):           Entry(Rule.FAILED_START),
    (S.STARTING, E.SPAWN_FAILED):   Entry(Rule.FAILED_START),
    (S.STARTING, E.RETRY):          _IGNORE,
    (S.STARTING, E.UNHEALTHY):      _IGNORE,  # liveness checks start only once ready
    (S.STARTING, E.REPLACE_FAILED): _IGNORE,

    (S.RUNNING, E.START):           _IGNORE,
    (S.RUNNING, E.STOP):            _move(S.STOPPING, A.KILL),
    (S.RUNNING, E.SWAP):            _move(S.RUNNING, A.SWAP),
    (S.RUNNING, E.READY):           _IGNORE,
    (S.RUNNING, E.NOT_READY):       _IGNORE,
    (S.RUNNING, E.EXIT):            Entry(Rule.CRASHED),
    (S.RUNNING, E.SPAWN_FAILED):    _IGNORE,
    (S.RUNNING, E.RETRY):           _IGNORE,
    (S.RUNNING, E.UNHEALTHY):       Entry(Rule.UNHEALTHY),  # replaced by a swap
    (S.RUNNING, E.REPLACE_FAILED):  Entry(Rule.FAILED_START, actions=(A.KILL,)),

    (S.BACKOFF, E.START):           _move(S.STARTING, A.CANCEL_RETRY, A.SPAWN, resets=True),
    (S.BACKOFF, E.STOP):            _move(S.STOPPED, A.CANCEL_RETRY),
    (S.BACKOFF, E.SWAP):            _move(S.STARTING, A.CANCEL_RETRY, A.SPAWN, resets=True),
    (S.BACKOFF, E.READY):           _IGNORE,
    (S.BACKOFF, E.NOT_READY):       _IGNORE,
    (S.BACKOFF, E.EXIT):            _IGNORE,
    (S.BACKOFF, E.SPAWN_FAILED):    _IGNORE,
    (S.BACKOFF, E.RETRY):           _move(S.STARTING, A.SPAWN),
    (S.BACKOFF, E.UNHEALTHY):       _IGNORE,
    (S.BACKOFF, E.REPLACE_FAILED):  _IGNORE,

    (S.STOPPING, E.START):          _refuse("stop in progress"),
    (S.STOPPING, E.STOP):           _IGNORE,
    (S.STOPPING, E.SWAP):           _refuse("stop in progress"),
    (S.STOPPING, E.READY):          _IGNORE,
    (S.STOPPING, E.NOT_READY):      _IGNORE,
    (S.STOPPING, E.EXIT):           _move(S.STOPPED),
    (S.STOPPING, E.SPAWN_FAILED):   _IGNORE,
    (S.STOPPING, E.RETRY):          _IGNORE,
    (S.STOPPING, E.UNHEALTHY):      _IGNORE,
    (S.STOPPING, E.REPLACE_FAILED): _IGNORE,

    (S.EXITED, E.START):            _move(S.STARTING, A.SPAWN, resets=True),
    (S.EXITED, E.STOP):             _move(S.STOPPED),
    (S.EXITED, E.SWAP):             _move(S.STARTING, A.SPAWN, resets=True),
    (S.EXITED, E.READY):            _IGNORE,
    (S.EXITED, E.NOT_READY):        _IGNORE,
    (S.EXITED, E.EXIT):             _IGNORE,
    (S.EXITED, E.SPAWN_FAILED):     _IGNORE,
    (S.EXITED, E.RETRY):            _IGNORE,
    (S.EXITED, E.UNHEALTHY):        _IGNORE,
    (S.EXITED, E.REPLACE_FAILED):   _IGNORE,

    (S.FATAL, E.START):             _move(S.STARTING, A.SPAWN, resets=True),
    (S.FATAL, E.STOP):              _move(S.STOPPED),
    (S.FATAL, E.SWAP):              _move(S.STARTING, A.SPAWN, resets=True),
    (S.FATAL, E.READY):             _IGNORE,
    (S.FATAL, E.NOT_READY):         _IGNORE,
    (S.FATAL, E.EXIT):              _IGNORE,
    (S.FATAL, E.SPAWN_FAILED):      _IGNORE,
    (S.FATAL, E.RETRY):             _IGNORE,
    (S.FATAL, E.UNHEALTHY):         _IGNORE,
    (S.FATAL, E.REPLACE_FAILED):    _IGNORE,
}
# fmt: on


def backoff_delay(failures: int, backoff: BackoffPolicy, jitter: float = 0.0) -> float:
    """Seconds to wait before the restart that follows ``failures`` consecutive failures."""
    if failures <= 1:
        return 0.0
    # cap the exponent first: 2.0**1024 overflows after a long enough crash loop
    base = min(backoff.max, backoff.initial * 2.0 ** min(failures - 2, 64))
    return base * (1.0 - 0.2 * jitter)


def _retry(state: State, prefix: tuple[Action, ...], ctx: Context, failures: int) -> Transition:
    """Retry after a failure, or give up when ``max_retries`` is spent."""
    limit = ctx.backoff.max_retries
    if limit is not None and failures > limit:
        return Transition(State.FATAL, prefix, failures)
    delay = backoff_delay(failures, ctx.backoff, ctx.jitter)
    if delay <= 0.0:
        return Transition(State.STARTING, (*prefix, Action.SPAWN), failures)
    return Transition(State.BACKOFF, (*prefix, Action.SCHEDULE_RETRY), failures, delay=delay)


def _decide_crashed(ctx: Context) -> Transition:
    """A ready process exited: apply the restart policy."""
    if ctx.policy is RestartPolicy.NEVER or (
        ctx.policy is RestartPolicy.ON_FAILURE and ctx.clean_exit
    ):
        return Transition(State.EXITED, (), ctx.failures)
    earlier = 0 if ctx.ran_for >= ctx.backoff.reset_after else ctx.failures
    return _retry(State.RUNNING, (), ctx, earlier + 1)


def _decide_unhealthy(ctx: Context) -> Transition:
    """Liveness gave up on a running process: replace it by a swap, or give up."""
    earlier = 0 if ctx.ran_for >= ctx.backoff.reset_after else ctx.failures
    failures = earlier + 1
    limit = ctx.backoff.max_retries
    if ctx.policy is RestartPolicy.NEVER or (limit is not None and failures > limit):
        return Transition(State.FATAL, (Action.KILL,), failures)
    # no backoff delay: the old process serves (as well as it can) until the new one
    # is ready, and liveness itself paces repeated replacements
    return Transition(State.RUNNING, (Action.REPLACE,), failures)


def _decide_failed_start(entry: Entry, event: Event, ctx: Context) -> Transition:
    """A start failed (exit before ready, not ready, spawn error, or the swap that was
    to replace an unhealthy process)."""
    if event is Event.EXIT and ctx.clean_exit and ctx.policy is not RestartPolicy.ALWAYS:
        # a job that finished its work successfully before it was "ready"
        return Transition(State.EXITED, entry.actions, ctx.failures)
    if ctx.policy is RestartPolicy.NEVER:
        return Transition(State.FATAL, entry.actions, ctx.failures + 1)
    return _retry(State.STARTING, entry.actions, ctx, ctx.failures + 1)


def transition(state: State, event: Event, ctx: Context = Context()) -> Transition:
    """The next state and the actions to carry out, for ``event`` in ``state``."""
    entry = TABLE[(state, event)]
    if entry.rule is Rule.MOVE:
        assert entry.state is not None
        failures = 0 if entry.resets_failures else ctx.failures
        return Transition(entry.state, entry.actions, failures)
    if entry.rule is Rule.IGNORE:
        return Transition(state, (), ctx.failures, changed=False)
    if entry.rule is Rule.REFUSE:
        return Transition(state, (), ctx.failures, refused=entry.reason, changed=False)
    if entry.rule is Rule.CRASHED:
        return _decide_crashed(ctx)
    if entry.rule is Rule.UNHEALTHY:
        return _decide_unhealthy(ctx)
    return _decide_failed_start(entry, event, ctx)


# --------------------------------------------------------------------------- swaps
#
# While a hot swap runs, the instance stays RUNNING (the old generation serves) and
# is in one of the swap's phases. Every event that reaches the instance in a phase
# has an entry below saying what becomes of it before (or instead of) the main table.


class SwapPhase(StrEnum):
    NONE = "none"  # no swap
    BOOTING = "candidate_booting"  # g+1 spawned (or being followed), not ready yet
    READY = "candidate_ready"  # g+1 passed readiness; about to be promoted
    RETIRING = "old_retiring"  # g+1 is current; g got its stop signal
    ROLLING_BACK = "rolling_back"  # g+1 failed: it is being killed, g keeps serving


class SwapRule(StrEnum):
    TABLE = "table"  # the main table decides, as without a swap
    DEFER = "defer"  # held until the swap ends, then handled (the swap decides first)
    CANCEL = "cancel"  # the swap is cancelled (its candidate killed), then the main table
    REFUSE = "refuse"  # an operator command that cannot apply during a swap
    FALL_BACK = "fall_back"  # counted; if the swap fails, g is stopped and started afresh


P, R = SwapPhase, SwapRule
_DURING = (P.BOOTING, P.READY, P.ROLLING_BACK)  # g is still the current generation

SWAP_TABLE: dict[tuple[SwapPhase, Event], SwapRule] = {
    **{(P.NONE, e): R.TABLE for e in Event},
    **{(p, E.START): R.TABLE for p in SwapPhase if p is not P.NONE},  # RUNNING: ignored
    **{(p, E.SWAP): R.REFUSE for p in SwapPhase if p is not P.NONE},
    # readiness and retries concern g only when it is starting, never during a swap
    **{(p, e): R.TABLE for p in (*_DURING, P.RETIRING) for e in (E.READY, E.NOT_READY)},
    **{(p, e): R.TABLE for p in (*_DURING, P.RETIRING) for e in (E.SPAWN_FAILED, E.RETRY)},
    # a stop before g+1 is current cancels the swap (g+1 is killed, g then stopped);
    # once g is retiring, its retirement finishes first (TERM, grace, KILL), then g+1
    # is stopped: a stop never leaves a half-stopped generation behind
    **{(p, E.STOP): R.CANCEL for p in _DURING},
    (P.RETIRING, E.STOP): R.DEFER,
    # the current generation exited: while g+1 boots, the swap's outcome decides (g+1
    # ready: it takes over; g+1 failed: a cold restart); while g retires, the exit is
    # g+1's (the current one), handled once the retirement is done
    **{(p, E.EXIT): R.DEFER for p in SwapPhase if p is not P.NONE},
    # liveness gave up on g while a swap replaces it anyway: stop-then-start only if
    # the swap fails; once g retires the verdict is moot
    **{(p, E.UNHEALTHY): R.FALL_BACK for p in _DURING},
    (P.RETIRING, E.UNHEALTHY): R.DEFER,  # about g+1 (g's checks ended): after the swap
    **{(p, E.REPLACE_FAILED): R.TABLE for p in SwapPhase if p is not P.NONE},
}


def during_swap(phase: SwapPhase, event: Event) -> SwapRule:
    """What becomes of ``event`` in swap phase ``phase`` (before the main table)."""
    return SWAP_TABLE[(phase, event)]
