"""What one hot swap did and when: the one structured event the daemon logs for it.

Every replacement of a running generation by a new one -- a reload (a swap beside
the old one, or the app's own re-exec), an update, a deploy step, a replacement of
an unhealthy or oversized process -- ends in exactly one ``swap_finished`` event:
its kind, how it was done, its outcome, the pids and generations, and the times
(seconds after the swap began) at which the candidate was spawned, became ready,
and the old generation was gone.

Outcomes: ``ok``; ``kept_old`` (the candidate failed and the old generation serves
on); ``cold_restart`` (the candidate failed and the old generation was gone too --
a re-exec recipe that stops the old master early, or a crash during the swap -- so
the instance is started afresh); ``cancelled`` (a stop came first).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..log import get_logger

log = get_logger("swap")

OK = "ok"
KEPT_OLD = "kept_old"
COLD_RESTART = "cold_restart"
CANCELLED = "cancelled"
COLD_NOTE = "the old generation had exited too: restarted cold"


@dataclass
class SwapReport:
    instance: str  # app:instance
    kind: str  # reload | update | deploy | max_memory | replace
    method: str  # swap (beside the old one) | reexec (the app's own, by signal)
    old_pid: int | None
    old_generation: int
    release: str | None = None
    started: float = field(default_factory=time.monotonic)
    new_pid: int | None = None
    generation: int | None = None
    spawned: float | None = None
    ready: float | None = None
    retired: float | None = None

    def spawned_now(self, pid: int, generation: int) -> None:
        self.new_pid, self.generation = pid, generation
        self.spawned = time.monotonic()

    def ready_now(self) -> None:
        self.ready = time.monotonic()

    def retired_now(self) -> None:
        self.retired = time.monotonic()

    def _after(self, when: float | None) -> float | None:
        return None if when is None else round(when - self.started, 4)

    def finish(self, outcome: str, reason: str | None) -> float:
        """Log the event; the swap's duration in seconds."""
        duration = time.monotonic() - self.started
        fields = {
            "instance": self.instance,
            "kind": self.kind,
            "method": self.method,
            "ok": outcome == OK,
            "outcome": outcome,
            "reason": reason,
            "old_pid": self.old_pid,
            "old_generation": self.old_generation,
            "pid": self.new_pid,
            "generation": self.generation,
            "release": self.release,
            "spawned_after_s": self._after(self.spawned),
            "ready_after_s": self._after(self.ready),
            "retired_after_s": self._after(self.retired),
            "duration_s": round(duration, 4),
        }
        if outcome == OK:
            log.info("swap_finished", **fields)
        elif outcome == COLD_RESTART:
            log.error("swap_finished", **fields)
        else:
            log.warning("swap_finished", **fields)
        return duration


def failure_message(label: str, reason: str | None, old_pid: int | None, old_gone: bool) -> str:
    """What the operator reads when a swap's candidate failed: whether anything serves."""
    head = f"{label}: new generation failed: {reason}"
    if not old_gone:
        return f"{head}; the old generation keeps serving"
    return (
        f"{head}; the old generation (pid {old_pid}) exited during the swap too, so nothing "
        "was left serving: the instance is restarted cold (a fresh start, not a swap)"
    )
