"""The messages an instance's actor takes from its queue, the replies it owes, and
what it says of failures.

A :class:`Msg` is an operator command (with its reply future) or an event about one
generation; a swap's parameters travel with its request. :class:`Waiters` are the
replies that wait on a state: a start until it is ready (or failed), ``wait_for``
until a predicate holds. The texts here are what ``last_error``, the log and a
failed ``supctl start`` say about a failure.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..config.settings import AppConfig
from ..errors import OperationFailed
from ..host import exits
from ..log import Logger
from .generation import Generation
from .state import State
from .states import Event

_FAILURES = (Event.EXIT, Event.NOT_READY, Event.SPAWN_FAILED, Event.UNHEALTHY, Event.REPLACE_FAILED)


@dataclass
class Msg:
    event: Event
    gen: Generation | None = None  # None for operator commands
    reply: asyncio.Future[Any] | None = None
    reason: str = ""
    exit_status: exits.ExitStatus | None = None
    output: list[str] | None = None  # the generation's last lines, with a failure
    # a swap's parameters travel with its request: what it applies, and why
    cfg: AppConfig | None = None
    release: str | None = None
    kind: str | None = None

    @property
    def is_failure(self) -> bool:
        return self.event in _FAILURES

    def fail(self, exc: Exception) -> None:
        """Answer the command (if it is one) with an error."""
        if self.reply is not None and not self.reply.done():
            self.reply.set_exception(exc)


def failure_text(msg: Msg, state: State) -> str | None:
    """The ``last_error`` a failure sets (``state``: the one it happened in), or None
    to keep the one there is."""
    if msg.event is Event.EXIT and msg.exit_status is not None:
        phase = "while starting" if state is State.STARTING else "while running"
        return f"{msg.exit_status.describe()} {phase}"
    return msg.reason or None


def report_failure(
    msg: Msg,
    state: State,
    name: str,
    log: Logger,
    last_error: str | None,
    on_event: Callable[..., None],
) -> None:
    """Log a failure of instance ``name`` and hand it to the history (``on_event``:
    Runtime.on_event)."""
    if msg.event is Event.UNHEALTHY:
        log.warning("instance_unhealthy", reason=msg.reason)
    else:
        log.warning(
            "instance_failed",
            trigger=msg.event.value,
            reason=last_error,
            state=state.value,
        )
    on_event(
        "failure",
        name,
        trigger=msg.event.value,
        reason=msg.reason or last_error,
        exit_status=msg.exit_status.as_int if msg.exit_status else None,
        pid=msg.gen.pid if msg.gen else None,
        generation=msg.gen.number if msg.gen else None,
        state=state.value,
        output=msg.output,
    )


_THEN = {
    State.BACKOFF: "retrying with backoff",
    State.STARTING: "retrying now",
    State.FATAL: "gave up (FATAL)",
    State.EXITED: "not restarted (EXITED)",
}


def start_failure(
    label: str, state: State, last_error: str | None, output: list[str]
) -> OperationFailed | None:
    """What the waiters of a start attempt are told: None when it is RUNNING."""
    if state is State.RUNNING:
        return None
    if state in (State.STOPPING, State.STOPPED):
        return OperationFailed(f"{label}: stopped before it became ready")
    reason = last_error or "did not become ready"
    return OperationFailed(
        f"{label} failed to start: {reason}; {_THEN.get(state, state.value)}",
        output=output,
        state=state.value,
    )


@dataclass(slots=True)
class Waiters:
    """Replies waiting on the instance's state."""

    starts: list[asyncio.Future[None]] = field(default_factory=list)
    states: list[tuple[Callable[[State], bool], asyncio.Future[State]]] = field(
        default_factory=list
    )

    def settle_starts(self, exc: Exception | None) -> None:
        """Answer everyone waiting on a start attempt: ready (None), or why not."""
        waiters, self.starts = self.starts, []
        for w in waiters:
            if w.done():
                continue
            if exc is None:
                w.set_result(None)
            else:
                w.set_exception(exc)

    def state_changed(self, state: State) -> None:
        still_waiting = []
        for predicate, fut in self.states:
            if fut.done():
                continue
            if predicate(state):
                fut.set_result(state)
            else:
                still_waiting.append((predicate, fut))
        self.states = still_waiting
