"""Pure unit tests of the instance state machine and its backoff arithmetic."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from enum import StrEnum

import pytest

from supervisord_lite.config.settings import BackoffConfig
from supervisord_lite.instance.state import State
from supervisord_lite.instance.states import (
    SWAP_TABLE,
    TABLE,
    Action,
    Context,
    Event,
    RestartPolicy,
    SwapPhase,
    SwapRule,
    Transition,
    backoff_delay,
    during_swap,
    transition,
)

S, E, A = State, Event, Action
ALL_PAIRS: list[tuple[State, Event]] = list(itertools.product(State, Event))
PROCESS_STATES = frozenset({S.STARTING, S.RUNNING})
AT_REST = frozenset({S.STOPPED, S.STOPPING, S.EXITED, S.FATAL})


def pair_id(pair: tuple[State, Event]) -> str:
    """Test id of a (state, event) pair, e.g. ``RUNNING-exit``."""
    state, event = pair
    return f"{state.value}-{event.value}"


# ---------------------------------------------------------------------------
# The specification: all 70 pairs under Context() (policy ALWAYS, failures=0,
# unclean exit, ran_for=0, jitter=0). Written from the module's documented
# vocabulary, not copied from TABLE.
# ---------------------------------------------------------------------------


class Kind(StrEnum):
    MOVE = "move"  # changed=True
    IGNORED = "ignored"  # changed=False, no refusal
    REFUSED = "refused"  # changed=False, with a reason


@dataclass(frozen=True)
class Expect:
    kind: Kind
    state: State | None = None  # None: the state does not change
    actions: tuple[Action, ...] = ()


def go(state: State, *actions: Action) -> Expect:
    """A move to ``state`` carrying out ``actions`` in order."""
    return Expect(Kind.MOVE, state, actions)


IGN = Expect(Kind.IGNORED)
REF = Expect(Kind.REFUSED)

# fmt: off
SPEC: dict[tuple[State, Event], Expect] = {
    (S.STOPPED, E.START):           go(S.STARTING, A.SPAWN),
    (S.STOPPED, E.STOP):            IGN,
    (S.STOPPED, E.SWAP):            REF,
    (S.STOPPED, E.READY):           IGN,
    (S.STOPPED, E.NOT_READY):       IGN,
    (S.STOPPED, E.EXIT):            IGN,
    (S.STOPPED, E.SPAWN_FAILED):    IGN,
    (S.STOPPED, E.RETRY):           IGN,
    (S.STOPPED, E.UNHEALTHY):       IGN,
    (S.STOPPED, E.REPLACE_FAILED):  IGN,

    (S.STARTING, E.START):          IGN,
    (S.STARTING, E.STOP):           go(S.STOPPING, A.KILL),
    (S.STARTING, E.SWAP):           REF,
    (S.STARTING, E.READY):          go(S.RUNNING),
    (S.STARTING, E.NOT_READY):      go(S.STARTING, A.KILL, A.SPAWN),
    (S.STARTING, E.EXIT):           go(S.STARTING, A.SPAWN),
    (S.STARTING, E.SPAWN_FAILED):   go(S.STARTING, A.SPAWN),
    (S.STARTING, E.RETRY):          IGN,
    (S.STARTING, E.UNHEALTHY):      IGN,
    (S.STARTING, E.REPLACE_FAILED): IGN,

    (S.RUNNING, E.START):           IGN,
    (S.RUNNING, E.STOP):            go(S.STOPPING, A.KILL),
    (S.RUNNING, E.SWAP):            go(S.RUNNING, A.SWAP),
    (S.RUNNING, E.READY):           IGN,
    (S.RUNNING, E.NOT_READY):       IGN,
    (S.RUNNING, E.EXIT):            go(S.STARTING, A.SPAWN),
    (S.RUNNING, E.SPAWN_FAILED):    IGN,
    (S.RUNNING, E.RETRY):           IGN,
    (S.RUNNING, E.UNHEALTHY):       go(S.RUNNING, A.REPLACE),
    (S.RUNNING, E.REPLACE_FAILED):  go(S.STARTING, A.KILL, A.SPAWN),

    (S.BACKOFF, E.START):           go(S.STARTING, A.CANCEL_RETRY, A.SPAWN),
    (S.BACKOFF, E.STOP):            go(S.STOPPED, A.CANCEL_RETRY),
    (S.BACKOFF, E.SWAP):            go(S.STARTING, A.CANCEL_RETRY, A.SPAWN),
    (S.BACKOFF, E.READY):           IGN,
    (S.BACKOFF, E.NOT_READY):       IGN,
    (S.BACKOFF, E.EXIT):            IGN,
    (S.BACKOFF, E.SPAWN_FAILED):    IGN,
    (S.BACKOFF, E.RETRY):           go(S.STARTING, A.SPAWN),
    (S.BACKOFF, E.UNHEALTHY):       IGN,
    (S.BACKOFF, E.REPLACE_FAILED):  IGN,

    (S.STOPPING, E.START):          REF,
    (S.STOPPING, E.STOP):           IGN,
    (S.STOPPING, E.SWAP):           REF,
    (S.STOPPING, E.READY):          IGN,
    (S.STOPPING, E.NOT_READY):      IGN,
    (S.STOPPING, E.EXIT):           go(S.STOPPED),
    (S.STOPPING, E.SPAWN_FAILED):   IGN,
    (S.STOPPING, E.RETRY):          IGN,
    (S.STOPPING, E.UNHEALTHY):      IGN,
    (S.STOPPING, E.REPLACE_FAILED): IGN,

    (S.EXITED, E.START):            go(S.STARTING, A.SPAWN),
    (S.EXITED, E.STOP):             go(S.STOPPED),
    (S.EXITED, E.SWAP):             go(S.STARTING, A.SPAWN),
    (S.EXITED, E.READY):            IGN,
    (S.EXITED, E.NOT_READY):        IGN,
    (S.EXITED, E.EXIT):             IGN,
    (S.EXITED, E.SPAWN_FAILED):     IGN,
    (S.EXITED, E.RETRY):            IGN,
    (S.EXITED, E.UNHEALTHY):        IGN,
    (S.EXITED, E.REPLACE_FAILED):   IGN,

    (S.FATAL, E.START):             go(S.STARTING, A.SPAWN),
    (S.FATAL, E.STOP):              go(S.STOPPED),
    (S.FATAL, E.SWAP):              go(S.STARTING, A.SPAWN),
    (S.FATAL, E.READY):             IGN,
    (S.FATAL, E.NOT_READY):         IGN,
    (S.FATAL, E.EXIT):              IGN,
    (S.FATAL, E.SPAWN_FAILED):      IGN,
    (S.FATAL, E.RETRY):             IGN,
    (S.FATAL, E.UNHEALTHY):         IGN,
    (S.FATAL, E.REPLACE_FAILED):    IGN,
}
# fmt: on

# Pairs where a failure is counted and the restart policy decides.
FAILURE_SITES: list[tuple[State, Event]] = [
    (S.RUNNING, E.EXIT),
    (S.STARTING, E.EXIT),
    (S.STARTING, E.NOT_READY),
    (S.STARTING, E.SPAWN_FAILED),
    (S.RUNNING, E.UNHEALTHY),
    (S.RUNNING, E.REPLACE_FAILED),
]

# Operator commands that forgive earlier failures.
RESETS = frozenset(
    {
        (S.STOPPED, E.START),
        (S.BACKOFF, E.START),
        (S.BACKOFF, E.SWAP),
        (S.EXITED, E.START),
        (S.EXITED, E.SWAP),
        (S.FATAL, E.START),
        (S.FATAL, E.SWAP),
    }
)


# ---------------------------------------------------------------------------
# Coverage of the table
# ---------------------------------------------------------------------------


def test_table_has_every_state_event_pair() -> None:
    """TABLE holds an entry for every (State, Event) pair, found by iterating both enums."""
    for state in State:
        for event in Event:
            assert (state, event) in TABLE, pair_id((state, event))


def test_table_has_nothing_else() -> None:
    """TABLE holds no key that is not a (State, Event) pair, so it has exactly 7x10 entries."""
    assert set(TABLE) == set(ALL_PAIRS)
    assert len(TABLE) == len(State) * len(Event) == 70
    for state, event in TABLE:
        assert isinstance(state, State)
        assert isinstance(event, Event)


def test_spec_covers_every_pair() -> None:
    """The specification in this file lists each of the 70 pairs exactly once."""
    assert set(SPEC) == set(ALL_PAIRS)


# ---------------------------------------------------------------------------
# Pair by pair, under the default context
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("pair", ALL_PAIRS, ids=pair_id)
def test_pair_matches_spec(pair: tuple[State, Event]) -> None:
    """Under a default Context each pair yields the next state, actions and kind the spec lists."""
    state, event = pair
    want = SPEC[pair]
    got = transition(state, event, Context())
    assert isinstance(got, Transition)
    assert got.state is (want.state if want.state is not None else state)
    assert got.actions == want.actions
    assert got.delay is None
    if want.kind is Kind.MOVE:
        assert got.changed is True
        assert got.refused is None
        assert got.failures == (1 if pair in FAILURE_SITES else 0)
    elif want.kind is Kind.IGNORED:
        assert got.changed is False
        assert got.refused is None
        assert got.failures == 0
    else:
        assert got.changed is False
        assert isinstance(got.refused, str) and got.refused.strip()
        assert got.failures == 0


def test_transition_defaults_to_default_context() -> None:
    """Calling transition without a context behaves as with Context()."""
    for state, event in ALL_PAIRS:
        assert transition(state, event) == transition(state, event, Context())


# ---------------------------------------------------------------------------
# Ignored and refused events; failure counts kept or reset
# ---------------------------------------------------------------------------

IGNORED_PAIRS = [p for p in ALL_PAIRS if SPEC[p].kind is Kind.IGNORED]
REFUSED_PAIRS = [p for p in ALL_PAIRS if SPEC[p].kind is Kind.REFUSED]
MOVE_PAIRS = [p for p in ALL_PAIRS if SPEC[p].kind is Kind.MOVE]
BUSY_CONTEXT = Context(
    policy=RestartPolicy.ON_FAILURE, failures=5, clean_exit=True, ran_for=999.0, jitter=0.5
)


@pytest.mark.parametrize("pair", IGNORED_PAIRS, ids=pair_id)
def test_ignored_event_changes_nothing(pair: tuple[State, Event]) -> None:
    """An ignored event returns changed=False, the same state and failures, and no actions."""
    state, event = pair
    got = transition(state, event, BUSY_CONTEXT)
    assert got == Transition(state, (), 5, delay=None, refused=None, changed=False)


@pytest.mark.parametrize("pair", REFUSED_PAIRS, ids=pair_id)
def test_refused_command_carries_reason_and_keeps_state(pair: tuple[State, Event]) -> None:
    """A refused operator command names a reason and leaves state, failures and actions alone."""
    state, event = pair
    assert event in (E.START, E.STOP, E.SWAP)
    got = transition(state, event, BUSY_CONTEXT)
    assert got.state is state
    assert got.actions == ()
    assert got.failures == 5
    assert got.changed is False
    assert got.delay is None
    assert isinstance(got.refused, str) and got.refused.strip()


@pytest.mark.parametrize("pair", [p for p in ALL_PAIRS if p not in REFUSED_PAIRS], ids=pair_id)
def test_only_refusals_carry_a_reason(pair: tuple[State, Event]) -> None:
    """Every transition that is not a refusal has refused=None, whatever the context."""
    state, event = pair
    assert transition(state, event, BUSY_CONTEXT).refused is None


@pytest.mark.parametrize("pair", sorted(RESETS), ids=pair_id)
def test_operator_start_resets_failures(pair: tuple[State, Event]) -> None:
    """An operator start (or swap that starts) from BACKOFF/FATAL/EXITED/STOPPED zeroes failures."""
    state, event = pair
    got = transition(state, event, Context(failures=7))
    assert got.state is S.STARTING
    assert A.SPAWN in got.actions
    assert got.failures == 0
    assert got.changed is True


@pytest.mark.parametrize(
    "pair", [p for p in MOVE_PAIRS if p not in RESETS and p not in FAILURE_SITES], ids=pair_id
)
def test_other_moves_keep_failures(pair: tuple[State, Event]) -> None:
    """Moves that are neither operator starts nor failures carry the failure count unchanged."""
    state, event = pair
    got = transition(state, event, Context(failures=7))
    assert got.failures == 7
    assert got.changed is True


def test_retry_after_backoff_keeps_failures() -> None:
    """The backoff timer firing spawns again without forgiving the failures that led there."""
    got = transition(S.BACKOFF, E.RETRY, Context(failures=4))
    assert got == Transition(S.STARTING, (A.SPAWN,), 4)


def test_stop_from_backoff_cancels_the_timer() -> None:
    """Stopping an instance in BACKOFF disarms the retry timer and lands in STOPPED."""
    got = transition(S.BACKOFF, E.STOP, Context(failures=4))
    assert got.state is S.STOPPED
    assert got.actions == (A.CANCEL_RETRY,)


# ---------------------------------------------------------------------------
# Decision rules: policy x clean/unclean x failure site
# ---------------------------------------------------------------------------


class Outcome(StrEnum):
    EXITED = "exited"  # leave it: EXITED, failures unchanged
    FATAL = "fatal"  # give up: FATAL, failures + 1
    RESTART = "restart"  # count the failure and restart (immediately or after a delay)
    REPLACE = "replace"  # count the failure and hot-swap at once (the process serves on)


ALWAYS, ON_FAILURE, NEVER = RestartPolicy.ALWAYS, RestartPolicy.ON_FAILURE, RestartPolicy.NEVER

# (state, event, policy, clean_exit) -> outcome; written as a specification.
# fmt: off
DECISIONS: dict[tuple[State, Event, RestartPolicy, bool], Outcome] = {
    # A ready process exited.
    (S.RUNNING, E.EXIT, ALWAYS, True):                 Outcome.RESTART,
    (S.RUNNING, E.EXIT, ALWAYS, False):                Outcome.RESTART,
    (S.RUNNING, E.EXIT, ON_FAILURE, True):             Outcome.EXITED,
    (S.RUNNING, E.EXIT, ON_FAILURE, False):            Outcome.RESTART,
    (S.RUNNING, E.EXIT, NEVER, True):                  Outcome.EXITED,
    (S.RUNNING, E.EXIT, NEVER, False):                 Outcome.EXITED,
    # A process exited before it was ready.
    (S.STARTING, E.EXIT, ALWAYS, True):                Outcome.RESTART,
    (S.STARTING, E.EXIT, ALWAYS, False):               Outcome.RESTART,
    (S.STARTING, E.EXIT, ON_FAILURE, True):            Outcome.EXITED,
    (S.STARTING, E.EXIT, ON_FAILURE, False):           Outcome.RESTART,
    (S.STARTING, E.EXIT, NEVER, True):                 Outcome.EXITED,
    (S.STARTING, E.EXIT, NEVER, False):                Outcome.FATAL,
    # Readiness failed (the process is still alive): clean_exit is irrelevant.
    (S.STARTING, E.NOT_READY, ALWAYS, True):           Outcome.RESTART,
    (S.STARTING, E.NOT_READY, ALWAYS, False):          Outcome.RESTART,
    (S.STARTING, E.NOT_READY, ON_FAILURE, True):       Outcome.RESTART,
    (S.STARTING, E.NOT_READY, ON_FAILURE, False):      Outcome.RESTART,
    (S.STARTING, E.NOT_READY, NEVER, True):            Outcome.FATAL,
    (S.STARTING, E.NOT_READY, NEVER, False):           Outcome.FATAL,
    # The process could not be created: clean_exit is irrelevant.
    (S.STARTING, E.SPAWN_FAILED, ALWAYS, True):        Outcome.RESTART,
    (S.STARTING, E.SPAWN_FAILED, ALWAYS, False):       Outcome.RESTART,
    (S.STARTING, E.SPAWN_FAILED, ON_FAILURE, True):    Outcome.RESTART,
    (S.STARTING, E.SPAWN_FAILED, ON_FAILURE, False):   Outcome.RESTART,
    (S.STARTING, E.SPAWN_FAILED, NEVER, True):         Outcome.FATAL,
    (S.STARTING, E.SPAWN_FAILED, NEVER, False):        Outcome.FATAL,
    # Liveness gave up on a running process (still alive): clean_exit is irrelevant.
    (S.RUNNING, E.UNHEALTHY, ALWAYS, True):            Outcome.REPLACE,
    (S.RUNNING, E.UNHEALTHY, ALWAYS, False):           Outcome.REPLACE,
    (S.RUNNING, E.UNHEALTHY, ON_FAILURE, True):        Outcome.REPLACE,
    (S.RUNNING, E.UNHEALTHY, ON_FAILURE, False):       Outcome.REPLACE,
    (S.RUNNING, E.UNHEALTHY, NEVER, True):             Outcome.FATAL,
    (S.RUNNING, E.UNHEALTHY, NEVER, False):            Outcome.FATAL,
    # The swap replacing it failed (the old process is still alive): stop, then start.
    (S.RUNNING, E.REPLACE_FAILED, ALWAYS, True):       Outcome.RESTART,
    (S.RUNNING, E.REPLACE_FAILED, ALWAYS, False):      Outcome.RESTART,
    (S.RUNNING, E.REPLACE_FAILED, ON_FAILURE, True):   Outcome.RESTART,
    (S.RUNNING, E.REPLACE_FAILED, ON_FAILURE, False):  Outcome.RESTART,
    (S.RUNNING, E.REPLACE_FAILED, NEVER, True):        Outcome.FATAL,
    (S.RUNNING, E.REPLACE_FAILED, NEVER, False):       Outcome.FATAL,
}
# fmt: on

# the failing process is still alive: it is killed first (an unhealthy one only when
# the instance gives up on it; otherwise it serves until its replacement is ready)
STILL_ALIVE = frozenset(
    {(S.STARTING, E.NOT_READY), (S.RUNNING, E.REPLACE_FAILED), (S.RUNNING, E.UNHEALTHY)}
)
REPLACED = (S.RUNNING, E.UNHEALTHY)


def prefix_of(pair: tuple[State, Event], fatal: bool) -> tuple[Action, ...]:
    """The KILL a transition for ``pair`` starts with (none for a replaced process)."""
    if pair not in STILL_ALIVE or (pair == REPLACED and not fatal):
        return ()
    return (A.KILL,)


CUSTOM_BACKOFF = BackoffConfig(initial=2.0, max=100.0, reset_after=60.0, max_retries=None)


def decision_id(key: tuple[State, Event, RestartPolicy, bool]) -> str:
    """Test id of a decision case, e.g. ``RUNNING-exit-on-failure-clean``."""
    state, event, policy, clean = key
    return f"{state.value}-{event.value}-{policy.value}-{'clean' if clean else 'unclean'}"


def test_decisions_cover_every_site_policy_and_exit_kind() -> None:
    """The decision spec covers each failure site x policy x clean/unclean exactly once."""
    want = {(s, e, p, c) for (s, e) in FAILURE_SITES for p in RestartPolicy for c in (True, False)}
    assert set(DECISIONS) == want


@pytest.mark.parametrize("key", list(DECISIONS), ids=decision_id)
def test_decision_first_failure(key: tuple[State, Event, RestartPolicy, bool]) -> None:
    """With no earlier failures the policy yields EXITED, FATAL, or an immediate respawn."""
    state, event, policy, clean = key
    outcome = DECISIONS[key]
    prefix = prefix_of((state, event), outcome is Outcome.FATAL)
    ctx = Context(policy=policy, backoff=CUSTOM_BACKOFF, failures=0, clean_exit=clean)
    got = transition(state, event, ctx)
    assert got.changed is True
    assert got.refused is None
    assert got.delay is None
    if outcome is Outcome.EXITED:
        assert got == Transition(S.EXITED, prefix, 0)
    elif outcome is Outcome.FATAL:
        assert got == Transition(S.FATAL, prefix, 1)
    elif outcome is Outcome.REPLACE:
        assert got == Transition(S.RUNNING, (A.REPLACE,), 1)
    else:
        assert got == Transition(S.STARTING, (*prefix, A.SPAWN), 1)


@pytest.mark.parametrize("key", list(DECISIONS), ids=decision_id)
def test_decision_repeated_failure(key: tuple[State, Event, RestartPolicy, bool]) -> None:
    """After two failures the policy yields EXITED, FATAL, BACKOFF with delay 2*initial, or
    (an unhealthy process) a replacement at once."""
    state, event, policy, clean = key
    outcome = DECISIONS[key]
    prefix = prefix_of((state, event), outcome is Outcome.FATAL)
    ctx = Context(policy=policy, backoff=CUSTOM_BACKOFF, failures=2, clean_exit=clean)
    got = transition(state, event, ctx)
    if outcome is Outcome.EXITED:
        assert got == Transition(S.EXITED, prefix, 2)
    elif outcome is Outcome.FATAL:
        assert got == Transition(S.FATAL, prefix, 3)
    elif outcome is Outcome.REPLACE:
        assert got == Transition(S.RUNNING, (A.REPLACE,), 3)
    else:
        # third consecutive failure: initial * 2 ** (3 - 2)
        assert got == Transition(S.BACKOFF, (*prefix, A.SCHEDULE_RETRY), 3, delay=4.0)


@pytest.mark.parametrize("pair", sorted(STILL_ALIVE - {REPLACED}), ids=pair_id)
@pytest.mark.parametrize("policy", list(RestartPolicy), ids=lambda p: str(p.value))
@pytest.mark.parametrize("failures", [0, 1, 2, 10])
def test_kill_comes_first_when_process_is_alive(
    pair: tuple[State, Event], policy: RestartPolicy, failures: int
) -> None:
    """When the failing process is still alive, KILL is the first action whatever follows."""
    state, event = pair
    got = transition(state, event, Context(policy=policy, failures=failures))
    assert got.actions[0] is A.KILL
    assert got.actions.count(A.KILL) == 1


@pytest.mark.parametrize("policy", [ALWAYS, ON_FAILURE], ids=lambda p: str(p.value))
@pytest.mark.parametrize("failures", [0, 1, 2, 10, 1000])
@pytest.mark.parametrize("ran_for", [0.0, 59.9, 60.0, 3600.0])
def test_unhealthy_process_is_replaced_before_it_is_killed(
    policy: RestartPolicy, failures: int, ran_for: float
) -> None:
    """Liveness giving up on a running process asks for a hot swap only: no KILL, no SPAWN,
    no backoff delay; the instance stays RUNNING on the old process meanwhile."""
    ctx = Context(policy=policy, backoff=CUSTOM_BACKOFF, failures=failures, ran_for=ran_for)
    got = transition(S.RUNNING, E.UNHEALTHY, ctx)
    assert got.state is S.RUNNING
    assert got.actions == (A.REPLACE,)
    assert got.delay is None
    assert got.failures == (1 if ran_for >= 60.0 else failures + 1)


@pytest.mark.parametrize("failures", [0, 1, 2, 10])
def test_failed_replacement_stops_then_starts(failures: int) -> None:
    """When the replacing swap fails, the old process is killed, then started afresh (at once
    or after backoff), counting the failed candidate as one more failure."""
    ctx = Context(backoff=CUSTOM_BACKOFF, failures=failures)
    got = transition(S.RUNNING, E.REPLACE_FAILED, ctx)
    assert got.actions[0] is A.KILL
    assert got.failures == failures + 1
    if failures == 0:
        assert got == Transition(S.STARTING, (A.KILL, A.SPAWN), 1)
    else:
        assert got.state is S.BACKOFF
        assert got.actions == (A.KILL, A.SCHEDULE_RETRY)


@pytest.mark.parametrize("pair", [p for p in FAILURE_SITES if p not in STILL_ALIVE], ids=pair_id)
@pytest.mark.parametrize("policy", list(RestartPolicy), ids=lambda p: str(p.value))
@pytest.mark.parametrize("clean", [True, False], ids=["clean", "unclean"])
def test_no_kill_when_process_is_gone(
    pair: tuple[State, Event], policy: RestartPolicy, clean: bool
) -> None:
    """After an exit or a failed spawn there is no process, so no KILL is issued."""
    state, event = pair
    for failures in (0, 1, 2, 10):
        ctx = Context(policy=policy, failures=failures, clean_exit=clean)
        assert A.KILL not in transition(state, event, ctx).actions


# ---------------------------------------------------------------------------
# Backoff arithmetic
# ---------------------------------------------------------------------------


def test_backoff_first_failure_is_immediate() -> None:
    """Zero or one consecutive failure gives a delay of 0, even with jitter."""
    cfg = BackoffConfig(initial=3.0, max=50.0)
    for failures in (0, 1):
        assert backoff_delay(failures, cfg) == 0.0
        assert backoff_delay(failures, cfg, 0.99) == 0.0


def test_backoff_doubles_from_initial_and_caps_at_max() -> None:
    """The delays run 0, initial, 2*initial, 4*initial ... and stay at max once they reach it."""
    cfg = BackoffConfig(initial=0.5, max=30.0)
    got = [backoff_delay(n, cfg) for n in range(1, 13)]
    assert got == [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0, 30.0]


def test_backoff_cap_below_initial() -> None:
    """A max smaller than initial caps even the first delayed restart."""
    cfg = BackoffConfig(initial=10.0, max=3.0)
    assert [backoff_delay(n, cfg) for n in range(2, 6)] == [3.0, 3.0, 3.0, 3.0]


def test_backoff_default_config_matches_docs() -> None:
    """The default BackoffConfig starts at 0.5s, caps at 30s, forgives at 60s, never gives up."""
    cfg = BackoffConfig()
    assert (cfg.initial, cfg.max, cfg.reset_after, cfg.max_retries) == (0.5, 30.0, 60.0, None)
    assert backoff_delay(2, cfg) == 0.5


@pytest.mark.parametrize("failures", [2, 3, 4, 7, 20])
def test_backoff_jitter_shortens_by_at_most_twenty_percent(failures: int) -> None:
    """Jitter in [0, 1) keeps the delay within (0.8 * base, base], with jitter 0 giving base."""
    cfg = BackoffConfig(initial=1.0, max=40.0)
    base = backoff_delay(failures, cfg, 0.0)
    assert base == min(40.0, 2.0 ** (failures - 2))
    rng = random.Random(failures)
    jitters = [0.0, 0.5, 0.9, 0.999, 0.999999, 1.0 - 1e-12, *(rng.random() for _ in range(50))]
    for j in jitters:
        d = backoff_delay(failures, cfg, j)
        assert 0.8 * base < d <= base, (j, d)
    assert backoff_delay(failures, cfg, 0.999999) == pytest.approx(0.8 * base, rel=1e-5)


def test_backoff_jitter_is_monotonic() -> None:
    """More jitter never lengthens the delay."""
    cfg = BackoffConfig(initial=1.0, max=40.0)
    js = [i / 100 for i in range(100)]
    delays = [backoff_delay(5, cfg, j) for j in js]
    assert delays == sorted(delays, reverse=True)


def test_transition_applies_jitter_to_the_delay() -> None:
    """The context's jitter reaches the SCHEDULE_RETRY delay of a transition."""
    ctx = Context(backoff=CUSTOM_BACKOFF, failures=3, jitter=0.5)
    got = transition(S.RUNNING, E.EXIT, ctx)
    assert got.state is S.BACKOFF
    assert got.delay == pytest.approx(8.0 * 0.9)  # 4th failure: 2 * 2**2, shortened by 10%


def test_transition_delays_follow_the_sequence() -> None:
    """Feeding back the failure count, successive crashes wait 0, initial, 2*initial ... max."""
    cfg = BackoffConfig(initial=0.5, max=30.0, reset_after=60.0)
    failures = 0
    delays: list[float] = []
    for _ in range(10):
        got = transition(S.RUNNING, E.EXIT, Context(backoff=cfg, failures=failures))
        delays.append(0.0 if got.delay is None else got.delay)
        assert got.state is (S.STARTING if got.delay is None else S.BACKOFF)
        failures = got.failures
    assert delays == [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert failures == 10


# ---------------------------------------------------------------------------
# reset_after
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("event", [E.EXIT, E.UNHEALTHY], ids=lambda e: str(e.value))
def test_long_run_restarts_immediately_after_many_failures(event: Event) -> None:
    """A ready process that ran >= reset_after seconds is restarted (or, unhealthy, replaced)
    at once, counting 1 failure."""
    for ran_for in (60.0, 60.0001, 3600.0):
        ctx = Context(backoff=CUSTOM_BACKOFF, failures=50, ran_for=ran_for)
        got = transition(S.RUNNING, event, ctx)
        if event is E.UNHEALTHY:
            assert got == Transition(S.RUNNING, (A.REPLACE,), 1)
        else:
            assert got == Transition(S.STARTING, (A.SPAWN,), 1)


@pytest.mark.parametrize("event", [E.EXIT, E.UNHEALTHY], ids=lambda e: str(e.value))
def test_short_run_keeps_counting(event: Event) -> None:
    """A ready process that ran just under reset_after keeps its failures: a crash backs off,
    an unhealthy process is still replaced at once (it serves until then)."""
    ctx = Context(backoff=CUSTOM_BACKOFF, failures=50, ran_for=59.999)
    got = transition(S.RUNNING, event, ctx)
    assert got.failures == 51
    if event is E.UNHEALTHY:
        assert got == Transition(S.RUNNING, (A.REPLACE,), 51)
    else:
        assert got.state is S.BACKOFF
        assert got.delay == 100.0


@pytest.mark.parametrize(
    "pair",
    [
        (S.STARTING, E.EXIT),
        (S.STARTING, E.NOT_READY),
        (S.STARTING, E.SPAWN_FAILED),
        (S.RUNNING, E.REPLACE_FAILED),
    ],
    ids=pair_id,
)
def test_failed_start_is_not_forgiven_by_time(pair: tuple[State, Event]) -> None:
    """A start that never became ready keeps counting failures however long it took (and
    however long the process that a failed replacement was to replace had run)."""
    ctx = Context(backoff=CUSTOM_BACKOFF, failures=5, ran_for=10_000.0)
    got = transition(*pair, ctx)
    assert got.state is S.BACKOFF
    assert got.failures == 6


def test_long_run_escapes_max_retries() -> None:
    """A long good run forgives failures even when they exceed max_retries."""
    cfg = BackoffConfig(initial=1.0, max=10.0, reset_after=30.0, max_retries=3)
    got = transition(S.RUNNING, E.EXIT, Context(backoff=cfg, failures=10, ran_for=30.0))
    assert got == Transition(S.STARTING, (A.SPAWN,), 1)


# ---------------------------------------------------------------------------
# max_retries
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("pair", FAILURE_SITES, ids=pair_id)
def test_max_retries_zero_is_fatal_on_first_failure(pair: tuple[State, Event]) -> None:
    """With max_retries=0 the very first failure gives up with FATAL (killing a live process)."""
    state, event = pair
    prefix = prefix_of(pair, fatal=True)
    cfg = BackoffConfig(max_retries=0)
    got = transition(state, event, Context(backoff=cfg, failures=0))
    assert got == Transition(S.FATAL, prefix, 1)


@pytest.mark.parametrize("pair", FAILURE_SITES, ids=pair_id)
def test_max_retries_limit_is_exact(pair: tuple[State, Event]) -> None:
    """With max_retries=3, failures 1..3 are retried (or replaced) and the 4th is FATAL."""
    state, event = pair
    prefix = prefix_of(pair, fatal=True)
    cfg = BackoffConfig(initial=1.0, max=10.0, max_retries=3)
    outcomes = [transition(state, event, Context(backoff=cfg, failures=n)) for n in range(5)]
    assert [t.failures for t in outcomes] == [1, 2, 3, 4, 5]
    retried = [S.RUNNING] * 3 if pair == REPLACED else [S.STARTING, S.BACKOFF, S.BACKOFF]
    assert [t.state for t in outcomes] == [*retried, S.FATAL, S.FATAL]
    assert outcomes[3].actions == prefix
    assert outcomes[3].delay is None


@pytest.mark.parametrize("pair", FAILURE_SITES, ids=pair_id)
def test_unlimited_retries_stay_at_max(pair: tuple[State, Event]) -> None:
    """With max_retries=None, even the 1001st failure backs off, by exactly max without jitter
    (an unhealthy process is replaced at once)."""
    state, event = pair
    prefix = prefix_of(pair, fatal=False)
    cfg = BackoffConfig(initial=0.5, max=30.0, max_retries=None)
    got = transition(state, event, Context(backoff=cfg, failures=1000))
    if pair == REPLACED:
        assert got == Transition(S.RUNNING, (A.REPLACE,), 1001)
    else:
        assert got == Transition(S.BACKOFF, (*prefix, A.SCHEDULE_RETRY), 1001, delay=30.0)
    assert backoff_delay(1000, cfg) == 30.0


def test_unlimited_retries_survive_very_long_crash_loops() -> None:
    """With max_retries=None, the delay stays at max however many failures have piled up."""
    cfg = BackoffConfig(initial=0.5, max=30.0, max_retries=None)
    got = transition(S.RUNNING, E.EXIT, Context(backoff=cfg, failures=1025))
    assert got.delay == 30.0


# ---------------------------------------------------------------------------
# Property-style random walks
# ---------------------------------------------------------------------------

WALK_BACKOFFS = [
    BackoffConfig(),
    BackoffConfig(initial=1.0, max=8.0, reset_after=10.0, max_retries=0),
    BackoffConfig(initial=0.1, max=5.0, reset_after=30.0, max_retries=3),
    BackoffConfig(initial=2.0, max=2.0, reset_after=1.0, max_retries=50),
]
EVENTS = list(Event)
POLICIES = list(RestartPolicy)


def random_context(rng: random.Random, failures: int) -> Context:
    """A random context, usually carrying the walk's failure count forward."""
    if rng.random() < 0.1:
        failures = rng.randrange(0, 200)
    return Context(
        policy=rng.choice(POLICIES),
        backoff=rng.choice(WALK_BACKOFFS),
        failures=failures,
        clean_exit=rng.random() < 0.5,
        ran_for=rng.choice([0.0, rng.uniform(0.0, 120.0)]),
        jitter=rng.random(),
    )


def check_step(before: State, ctx: Context, got: Transition) -> None:
    """Assert the invariants that every single transition must satisfy."""
    assert isinstance(got, Transition)
    assert isinstance(got.state, State)
    assert isinstance(got.actions, tuple)
    assert all(isinstance(a, Action) for a in got.actions)
    assert len(set(got.actions)) == len(got.actions)
    assert got.failures >= 0
    if A.SPAWN in got.actions:
        assert got.state not in AT_REST
        assert got.state is S.STARTING
    if A.KILL in got.actions:
        assert before in PROCESS_STATES
        assert got.actions[0] is A.KILL
    if A.REPLACE in got.actions:
        assert before is S.RUNNING and got.state is S.RUNNING
        assert got.actions == (A.REPLACE,)
    if A.CANCEL_RETRY in got.actions:
        assert before is S.BACKOFF
    if A.SCHEDULE_RETRY in got.actions:
        assert got.state is S.BACKOFF
        assert got.delay is not None
        assert 0.8 * min(ctx.backoff.initial, ctx.backoff.max) < got.delay <= ctx.backoff.max
    else:
        assert got.delay is None
    if not got.changed:
        assert got.state is before
        assert got.actions == ()
        assert got.failures == ctx.failures
    else:
        assert got.refused is None
        if got.state is S.STARTING:
            assert A.SPAWN in got.actions
        if got.state is S.STOPPING:
            assert A.KILL in got.actions
        if got.state is S.BACKOFF:
            assert A.SCHEDULE_RETRY in got.actions
    if got.state is S.FATAL and before is not S.FATAL:
        limit = ctx.backoff.max_retries
        assert ctx.policy is RestartPolicy.NEVER or (limit is not None and got.failures > limit)
        assert got.failures in (1, ctx.failures + 1)


@pytest.mark.parametrize("seed", [0, 1, 42, 2024])
def test_random_walk_invariants(seed: int) -> None:
    """Random 2000-event walks never raise, SPAWN into a resting state, or KILL with no process."""
    rng = random.Random(seed)
    state = rng.choice(list(State))
    failures = 0
    visited: set[State] = {state}
    for _ in range(2000):
        event = rng.choice(EVENTS)
        ctx = random_context(rng, failures)
        got = transition(state, event, ctx)
        check_step(state, ctx, got)
        state, failures = got.state, got.failures
        visited.add(state)
    assert visited == set(State)


# --------------------------------------------------------------------------- swap phases

ACTIVE = [p for p in SwapPhase if p is not SwapPhase.NONE]


def test_swap_table_has_an_entry_for_every_phase_and_event() -> None:
    assert set(SWAP_TABLE) == {(p, e) for p in SwapPhase for e in Event}
    assert all(during_swap(SwapPhase.NONE, e) is SwapRule.TABLE for e in Event)


@pytest.mark.parametrize("phase", ACTIVE)
def test_during_a_swap(phase: SwapPhase) -> None:
    """A second swap is refused; an exit is held for the swap to decide; a stop cancels
    the swap until g+1 is current, after which g's retirement finishes first."""
    assert during_swap(phase, Event.SWAP) is SwapRule.REFUSE
    assert during_swap(phase, Event.EXIT) is SwapRule.DEFER
    retiring = phase is SwapPhase.RETIRING
    assert during_swap(phase, Event.STOP) is (SwapRule.DEFER if retiring else SwapRule.CANCEL)
    unhealthy = during_swap(phase, Event.UNHEALTHY)
    assert unhealthy is (SwapRule.DEFER if retiring else SwapRule.FALL_BACK)


class _Actor:
    """A pure model of what instance_actor.py does with the two tables: the state, the swap
    phase, and the messages held while a swap runs."""

    def __init__(self) -> None:
        self.state = State.STOPPED
        self.phase = SwapPhase.NONE
        self.failures = 0
        self.held: list[Event] = []
        self.replace_on_failure = False

    def handle(self, event: Event) -> None:
        rule = during_swap(self.phase, event)
        if rule is SwapRule.DEFER:
            self.held.append(event)
            return
        if rule is SwapRule.REFUSE:
            return
        if rule is SwapRule.CANCEL:
            self.end_swap(ok=False)
        t = transition(self.state, event, Context(failures=self.failures))
        self.failures = t.failures
        self.state = t.state
        for action in t.actions:
            if action in (Action.SWAP, Action.REPLACE):
                if self.phase is SwapPhase.NONE:
                    self.phase = SwapPhase.BOOTING
                else:
                    self.replace_on_failure = True
            elif action is Action.KILL and self.state is State.STOPPING:
                self.state = transition(self.state, Event.EXIT).state

    def progress(self, ok: bool) -> None:
        """The swap task moves on: g+1 ready, promoted, g retired; or g+1 failed."""
        if self.phase is SwapPhase.BOOTING:
            self.phase = SwapPhase.READY if ok else SwapPhase.ROLLING_BACK
        elif self.phase is SwapPhase.READY:
            self.phase = SwapPhase.RETIRING
        elif self.phase is SwapPhase.RETIRING:
            self.end_swap(ok=True)
        elif self.phase is SwapPhase.ROLLING_BACK:
            self.end_swap(ok=False)

    def end_swap(self, ok: bool) -> None:
        self.phase = SwapPhase.NONE
        held, self.held = self.held, []
        fall_back, self.replace_on_failure = self.replace_on_failure, False
        for event in held:
            self.handle(event)
        if not ok and fall_back and Event.EXIT not in held and self.state is State.RUNNING:
            self.handle(Event.REPLACE_FAILED)


@pytest.mark.parametrize("seed", range(200))
def test_seeded_random_interleavings_keep_the_invariants(seed: int) -> None:
    """Operator commands, exits, health failures, readiness and swap progress in a
    random order: no event is ever lost (what a swap held is handled when it ends), a
    swap runs only over a RUNNING instance, and a second swap never starts inside one."""
    rng = random.Random(seed)
    actor = _Actor()
    events = [e for e in Event if e is not Event.REPLACE_FAILED]
    for _ in range(300):
        choice = rng.random()
        if choice < 0.25 and actor.phase is not SwapPhase.NONE:
            actor.progress(ok=rng.random() < 0.7)
        else:
            before = actor.phase
            event = rng.choice(events)
            actor.handle(event)
            if event is Event.SWAP and before is not SwapPhase.NONE:
                assert actor.phase is before, "a swap started inside a swap"
        if actor.phase is SwapPhase.NONE:
            assert actor.held == [], "a held message was never handled"
        else:
            assert actor.state is State.RUNNING, (seed, actor.state, actor.phase)
