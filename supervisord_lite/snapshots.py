"""Frozen status snapshots shared by the control socket, the HTTP API and /metrics.

The supervisor builds these on request; readers never touch live objects, so a
slow HTTP client cannot observe (or hold up) a half-updated instance.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Final

from .instance.state import State

# Upper bounds (seconds) of the swap and deploy duration histograms: a swap takes an
# app's boot time (under a second to a few minutes), a deploy a few swaps and a settle.
DURATION_BUCKETS: Final = (0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


@dataclass(frozen=True)
class Histogram:
    """Durations observed: ``buckets[i]`` counts those <= ``DURATION_BUCKETS[i]``
    (cumulative, as Prometheus exposes them); ``count`` is the +Inf bucket."""

    buckets: tuple[int, ...] = (0,) * len(DURATION_BUCKETS)
    count: int = 0
    sum: float = 0.0

    def observe(self, seconds: float) -> Histogram:
        bounds = zip(self.buckets, DURATION_BUCKETS, strict=True)
        buckets = tuple(n + (seconds <= b) for n, b in bounds)
        return Histogram(buckets, self.count + 1, self.sum + seconds)


@dataclass(frozen=True)
class DeployStats:
    """Finished deploys of one app since the daemon started (for /metrics)."""

    ok: int = 0
    failed: int = 0
    seconds: Histogram = field(default_factory=Histogram)

    def observe(self, ok: bool, seconds: float) -> DeployStats:
        return DeployStats(self.ok + ok, self.failed + (not ok), self.seconds.observe(seconds))


@dataclass(frozen=True, slots=True)
class InstanceStatus:
    app: str
    name: str
    state: str  # one of states.State's values
    pid: int | None
    generation: int
    uptime_s: float | None
    restarts: int
    exit_status: int | None  # last exit: code >= 0, or -SIGNUM when killed by a signal
    ready: bool
    healthy: bool | None  # None when no health check is configured
    release: str | None
    listen: str | None
    rss_bytes: int | None
    cpu_percent: float | None
    health_failures: int = 0  # failed liveness checks since the daemon started
    last_error: str | None = None  # why the last start, check or swap failed
    swapping: bool = False  # a hot swap of this instance is in progress
    status_text: str | None = None  # the app's last STATUS= (sd_notify), at most 512 chars
    # for /metrics only (not in /status):
    cpu_seconds: float | None = None  # CPU used by the current process tree
    ready_since: float | None = None  # Unix time the current process became ready
    memory_replacements: int = 0  # swaps because RSS stayed above max_memory

    def to_json(self) -> dict[str, Any]:
        # by hand: dataclasses.asdict deep-copies, which dominated /status at 1000 instances
        return {name: getattr(self, name) for name in _INSTANCE_WIRE_FIELDS}


_INSTANCE_WIRE_FIELDS = tuple(
    f.name
    for f in fields(InstanceStatus)
    if f.name not in ("app", "name", "cpu_seconds", "ready_since", "memory_replacements")
)


@dataclass(frozen=True)
class SwapRecord:
    """One finished hot swap (reload, deploy step or memory replacement)."""

    app: str
    instance: str
    ok: bool
    duration_s: float
    reason: str | None
    finished_at: float
    # seconds from the swap's start until the candidate was spawned, was ready, and the
    # old generation was retired (None when the swap did not get that far)
    spawned_s: float | None = None
    ready_s: float | None = None
    retired_s: float | None = None
    # the supervisor-held listener while the swap ran (None: no TCP listener): the
    # longest accept queue seen, its limit, and connections the kernel dropped
    accept_queue_peak: int | None = None
    accept_queue_limit: int | None = None
    listen_drops: int | None = None


@dataclass(frozen=True)
class AppStatus:
    name: str
    state: str  # worst-of summary of its instances' states
    release: str | None
    instances: dict[str, InstanceStatus]
    should_run: bool = True
    deploy: dict[str, Any] | None = None  # a deploy in progress or paused
    last_swap: SwapRecord | None = None
    deploys: DeployStats = field(default_factory=DeployStats)  # for /metrics only

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "release": self.release,
            "should_run": self.should_run,
            "deploy": self.deploy,
            "last_swap": asdict(self.last_swap) if self.last_swap else None,
            "instances": {name: inst.to_json() for name, inst in self.instances.items()},
        }


@dataclass(frozen=True)
class SupervisorInfo:
    pid: int
    version: str
    uptime_s: float
    state: str  # starting | running | reloading | stopping
    config: str | None


@dataclass(frozen=True)
class Counters:
    """Cumulative counters for /metrics."""

    swaps_ok: int = 0
    swaps_failed: int = 0
    swap_seconds: Histogram = field(default_factory=Histogram)
    # over every swap: connections the listeners dropped while a swap ran, and the
    # longest accept queue seen during one
    swap_listen_drops: int = 0
    swap_accept_queue_peak: int = 0


@dataclass(frozen=True)
class SupervisorStatus:
    supervisor: SupervisorInfo
    apps: dict[str, AppStatus]
    counters: Counters = field(default_factory=Counters)

    def to_json(self) -> dict[str, Any]:
        return {
            "supervisor": asdict(self.supervisor),
            "apps": {name: app.to_json() for name, app in self.apps.items()},
        }

    def unhealthy(self) -> list[str]:
        """``app:instance STATE`` of every instance that should run and does not, or
        runs unhealthy. An instance an operator stopped (`supctl stop web:backup`) is
        not expected to run: STOPPED is only ever reached by intent."""
        found = []
        for app in self.apps.values():
            if not app.should_run:
                continue
            for inst in app.instances.values():
                if inst.state == State.STOPPED:
                    continue
                if inst.state != State.RUNNING:
                    found.append(f"{app.name}:{inst.name} {inst.state}")
                elif inst.healthy is False:
                    found.append(f"{app.name}:{inst.name} {State.RUNNING} (unhealthy)")
        return found

    def healthy(self) -> bool:
        """True when every instance that should run is RUNNING and not unhealthy."""
        return not self.unhealthy()
