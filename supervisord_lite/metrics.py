"""``/metrics``: a :class:`~supervisord_lite.model.SupervisorStatus` as Prometheus metrics.

The only prometheus_client import. Nothing is registered globally: each scrape
builds a collector over one status snapshot (the same snapshot ``/status`` shows),
so a scrape never sees a half-updated instance and nothing here keeps state.

Names follow Prometheus's conventions: base units (seconds, bytes), ``_total`` on
counters, durations as histograms (so they aggregate across hosts), start times
rather than uptimes. The instance label is ``app_instance``: Prometheus sets
``instance`` on every scraped series itself (the target's address) and would rename
ours to ``exported_instance``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from prometheus_client import ProcessCollector
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from supervisord_lite import model

__all__ = ["CONTENT_TYPE_METRICS", "INSTANCE_STATES", "StatusCollector", "render"]

# Supervisor's well-known vocabulary; one 0/1 sample per state, so that dashboards
# can sum by state without knowing which states ever occurred.
INSTANCE_STATES: Final = (
    "STOPPED",
    "STARTING",
    "RUNNING",
    "BACKOFF",
    "STOPPING",
    "EXITED",
    "FATAL",
)

# The classic text format, which generate_latest() writes. Set verbatim: newer
# prometheus_client's CONTENT_TYPE_LATEST says version=1.0.0, which Prometheus 2.x
# does not know.
CONTENT_TYPE_METRICS: Final = "text/plain; version=0.0.4; charset=utf-8"
PREFIX: Final = "supervisord_lite_"
IDS: Final = ("app", "app_instance")


def render(status: model.SupervisorStatus) -> bytes:
    """``status`` plus the daemon's own ``process_*`` metrics, in the text format."""
    return generate_latest(_Scrape(status))


class _Scrape:
    """What generate_latest() needs of a registry: one collect() over both sources."""

    def __init__(self, status: model.SupervisorStatus) -> None:
        self._status = status

    def collect(self) -> Iterator[Metric]:
        yield from StatusCollector(self._status).collect()
        # the daemon's own CPU, memory, fds and start time, under the standard names
        yield from ProcessCollector(registry=None).collect()


def _histogram(family: HistogramMetricFamily, labels: list[str], h: model.Histogram) -> None:
    buckets = [(str(b), n) for b, n in zip(model.DURATION_BUCKETS, h.buckets, strict=True)]
    family.add_metric(labels, [*buckets, ("+Inf", h.count)], h.sum)


class StatusCollector:
    """Metric families of one snapshot; unknown values are omitted, never invented."""

    def __init__(self, status: model.SupervisorStatus) -> None:
        self._status = status

    def collect(self) -> Iterator[Metric]:
        status = self._status
        insts = [i for app in status.apps.values() for i in app.instances.values()]

        def gauge(name: str, doc: str, labels: tuple[str, ...] = IDS) -> GaugeMetricFamily:
            return GaugeMetricFamily(PREFIX + name, doc, labels=labels)

        def counter(name: str, doc: str, labels: tuple[str, ...] = IDS) -> CounterMetricFamily:
            # prometheus_client appends the _total itself
            return CounterMetricFamily(PREFIX + name, doc, labels=labels)

        up = gauge("up", "1 while the supervisor is answering.", ())
        up.add_metric([], 1)
        yield up
        info = gauge("info", "Always 1; labels name the version and state.", ("version", "state"))
        info.add_metric([status.supervisor.version, status.supervisor.state], 1)
        yield info

        state = gauge(
            "instance_state",
            "1 for the instance's current state, 0 for the other states.",
            (*IDS, "state"),
        )
        for i in insts:
            for name in INSTANCE_STATES:
                state.add_metric([i.app, i.name, name], int(i.state == name))
            if i.state not in INSTANCE_STATES:  # never silently drop a new state
                state.add_metric([i.app, i.name, i.state], 1)
        yield state

        per_instance: list[tuple[GaugeMetricFamily | CounterMetricFamily, str]] = [
            (counter("instance_restarts", "Times the instance was restarted."), "restarts"),
            (
                gauge(
                    "instance_resident_memory_bytes",
                    "Resident memory of the instance's process tree in bytes.",
                ),
                "rss_bytes",
            ),
            (
                counter(
                    "instance_cpu_seconds",
                    "CPU time (user and system) used by the instance's current process tree.",
                ),
                "cpu_seconds",
            ),
            (
                gauge(
                    "instance_start_time_seconds",
                    "Unix time the instance's current process became ready.",
                ),
                "ready_since",
            ),
            (gauge("instance_ready", "1 when the instance is ready to serve, else 0."), "ready"),
            (
                gauge(
                    "instance_healthy",
                    "1 when the instance's last liveness check passed, 0 when it failed.",
                ),
                "healthy",
            ),
            (
                gauge(
                    "instance_generation",
                    "Generation of the instance's current process (bumped on every replacement).",
                ),
                "generation",
            ),
            (
                counter(
                    "instance_health_check_failures",
                    "Failed liveness checks of the instance since the supervisor started.",
                ),
                "health_failures",
            ),
            (
                counter(
                    "instance_memory_replacements",
                    "Hot swaps of the instance because its RSS stayed above max_memory.",
                ),
                "memory_replacements",
            ),
        ]
        for family, attr in per_instance:
            for i in insts:
                value = getattr(i, attr)
                if value is not None:
                    family.add_metric([i.app, i.name], float(value))
            yield family

        release = gauge(
            "instance_info",
            "Always 1; the release label names the release the instance runs.",
            (*IDS, "release"),
        )
        for i in insts:
            release.add_metric([i.app, i.name, i.release or ""], 1)
        yield release

        c = status.counters
        swaps = counter(
            "swaps",
            "Finished hot swaps (reloads, deploy steps, memory replacements) by result.",
            ("result",),
        )
        swaps.add_metric(["ok"], c.swaps_ok)
        swaps.add_metric(["failed"], c.swaps_failed)
        yield swaps
        swap_seconds = HistogramMetricFamily(
            PREFIX + "swap_duration_seconds", "Duration of finished hot swaps.", labels=()
        )
        _histogram(swap_seconds, [], c.swap_seconds)
        yield swap_seconds

        deploys = counter(
            "deploys",
            "Finished deploys and rollbacks by app and result (failed: rolled back).",
            ("app", "result"),
        )
        deploy_seconds = HistogramMetricFamily(
            PREFIX + "deploy_duration_seconds",
            "Duration of finished deploys (a paused canary's wait excluded).",
            labels=("app",),
        )
        for app in status.apps.values():
            deploys.add_metric([app.name, "ok"], app.deploys.ok)
            deploys.add_metric([app.name, "failed"], app.deploys.failed)
            _histogram(deploy_seconds, [app.name], app.deploys.seconds)
        yield deploys
        yield deploy_seconds
