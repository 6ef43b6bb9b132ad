"""``/metrics``: a :class:`~supervisord_lite.model.SupervisorStatus` as Prometheus metrics.

Written in the text exposition format (version 0.0.4) with the stdlib: the daemon
does not import prometheus_client (about 2.5 MiB of its RSS, and a render ten times
slower); the tests parse the output with it and lint it with ``promtool``. Nothing
is registered and nothing kept: each scrape renders one status snapshot (the same
snapshot ``/status`` shows), so a scrape never sees a half-updated instance.

Names follow Prometheus's conventions: base units (seconds, bytes), ``_total`` on
counters, durations as histograms (so they aggregate across hosts), start times
rather than uptimes. The instance label is ``app_instance``: Prometheus sets
``instance`` on every scraped series itself (the target's address) and would rename
ours to ``exported_instance``. The daemon's own ``process_*`` metrics (CPU, memory,
fds, start time) come from ``procs.own_figures`` under prometheus_client's names.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from supervisord_lite import snapshots
from supervisord_lite.instance.state import State

from ..host import procs

__all__ = ["CONTENT_TYPE_METRICS", "INSTANCE_STATES", "render"]

# Supervisor's well-known vocabulary; one 0/1 sample per state, so that dashboards
# can sum by state without knowing which states ever occurred.
INSTANCE_STATES: Final = tuple(s.value for s in State)

# The classic text format. Prometheus 2.x does not know version=1.0.0.
CONTENT_TYPE_METRICS: Final = "text/plain; version=0.0.4; charset=utf-8"
PREFIX: Final = "supervisord_lite_"


def render(status: snapshots.SupervisorStatus) -> bytes:
    """``status`` plus the daemon's own ``process_*`` metrics, in the text format."""
    out: list[str] = []
    _status_metrics(out, status)
    _process_metrics(out)
    out.append("")
    return "\n".join(out).encode()


def _value(v: float) -> str:
    # Go's float formatting as Prometheus reads it: 1 -> "1.0", inf -> "+Inf"
    f = float(v)
    if f != f:
        return "NaN"
    if f in (float("inf"), float("-inf")):
        return "+Inf" if f > 0 else "-Inf"
    return repr(f)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{k}="{_label(v)}"' for k, v in pairs)
    return "{" + inner + "}" if inner else ""


def _family(out: list[str], name: str, kind: str, doc: str) -> None:
    doc = doc.replace("\\", "\\\\").replace("\n", "\\n")
    out.append(f"# HELP {name} {doc}")
    out.append(f"# TYPE {name} {kind}")


def _histogram(out: list[str], name: str, labels: str, h: snapshots.Histogram) -> None:
    # labels: the family's own pairs, already rendered without braces ("" for none)
    sep = "," if labels else ""
    for bound, n in zip(snapshots.DURATION_BUCKETS, h.buckets, strict=True):
        out.append(f'{name}_bucket{{{labels}{sep}le="{float(bound)}"}} {_value(n)}')
    out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {_value(h.count)}')
    braces = "{" + labels + "}" if labels else ""
    out.append(f"{name}_count{braces} {_value(h.count)}")
    out.append(f"{name}_sum{braces} {_value(h.sum)}")


# (name, type, help, attribute of InstanceStatus): one sample per instance that has
# a value; unknown values are omitted, never invented
_PER_INSTANCE: Final = (
    ("instance_restarts_total", "counter", "Times the instance was restarted.", "restarts"),
    (
        "instance_resident_memory_bytes",
        "gauge",
        "Resident memory of the instance's process tree in bytes.",
        "rss_bytes",
    ),
    (
        "instance_cpu_seconds_total",
        "counter",
        "CPU time (user and system) used by the instance's current process tree.",
        "cpu_seconds",
    ),
    (
        "instance_start_time_seconds",
        "gauge",
        "Unix time the instance's current process became ready.",
        "ready_since",
    ),
    ("instance_ready", "gauge", "1 when the instance is ready to serve, else 0.", "ready"),
    (
        "instance_healthy",
        "gauge",
        "1 when the instance's last liveness check passed, 0 when it failed.",
        "healthy",
    ),
    (
        "instance_generation",
        "gauge",
        "Generation of the instance's current process (bumped on every replacement).",
        "generation",
    ),
    (
        "instance_health_check_failures_total",
        "counter",
        "Failed liveness checks of the instance since the supervisor started.",
        "health_failures",
    ),
    (
        "instance_memory_replacements_total",
        "counter",
        "Hot swaps of the instance because its RSS stayed above max_memory.",
        "memory_replacements",
    ),
)


def _status_metrics(out: list[str], status: snapshots.SupervisorStatus) -> None:
    pre = PREFIX
    insts = [i for app in status.apps.values() for i in app.instances.values()]
    # each instance's label pairs, escaped once for its ~20 samples
    ids = [f'app="{_label(i.app)}",app_instance="{_label(i.name)}"' for i in insts]

    _family(out, pre + "up", "gauge", "1 while the supervisor is answering.")
    out.append(pre + "up 1.0")
    _family(out, pre + "info", "gauge", "Always 1; labels name the version and state.")
    sup = status.supervisor
    out.append(f"{pre}info{_labels((('version', sup.version), ('state', sup.state)))} 1.0")

    name = pre + "instance_state"
    _family(out, name, "gauge", "1 for the instance's current state, 0 for the other states.")
    for i, lab in zip(insts, ids, strict=True):
        for st in INSTANCE_STATES:
            out.append(f'{name}{{{lab},state="{st}"}} {"1.0" if i.state == st else "0.0"}')
        if i.state not in INSTANCE_STATES:  # never silently drop a new state
            out.append(f'{name}{{{lab},state="{_label(i.state)}"}} 1.0')

    for suffix, kind, doc, attr in _PER_INSTANCE:
        name = pre + suffix
        _family(out, name, kind, doc)
        for i, lab in zip(insts, ids, strict=True):
            value = getattr(i, attr)
            if value is not None:
                out.append(f"{name}{{{lab}}} {_value(value)}")

    name = pre + "instance_info"
    _family(out, name, "gauge", "Always 1; the release label names the release the instance runs.")
    for i, lab in zip(insts, ids, strict=True):
        out.append(f'{name}{{{lab},release="{_label(i.release or "")}"}} 1.0')

    c = status.counters
    name = pre + "swaps_total"
    doc = "Finished hot swaps (reloads, deploy steps, memory replacements) by result."
    _family(out, name, "counter", doc)
    out.append(f'{name}{{result="ok"}} {_value(c.swaps_ok)}')
    out.append(f'{name}{{result="failed"}} {_value(c.swaps_failed)}')
    name = pre + "swap_duration_seconds"
    _family(out, name, "histogram", "Duration of finished hot swaps.")
    _histogram(out, name, "", c.swap_seconds)

    name = pre + "deploys_total"
    doc = "Finished deploys and rollbacks by app and result (failed: rolled back)."
    _family(out, name, "counter", doc)
    for app in status.apps.values():
        lab = f'app="{_label(app.name)}"'
        out.append(f'{name}{{{lab},result="ok"}} {_value(app.deploys.ok)}')
        out.append(f'{name}{{{lab},result="failed"}} {_value(app.deploys.failed)}')
    name = pre + "deploy_duration_seconds"
    doc = "Duration of finished deploys (a paused canary's wait excluded)."
    _family(out, name, "histogram", doc)
    for app in status.apps.values():
        _histogram(out, name, f'app="{_label(app.name)}"', app.deploys.seconds)


def _process_metrics(out: list[str]) -> None:
    """prometheus_client's ProcessCollector: the daemon's own figures (host.procs)."""
    own = procs.own_figures()
    if own is None:
        return  # /proc hidden: no process metrics rather than wrong ones
    rows: list[tuple[str, str, str, float]] = [
        ("virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", own.virtual_bytes),
        ("resident_memory_bytes", "gauge", "Resident memory size in bytes.", own.resident_bytes),
        (
            "start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            own.start_time,
        ),
        (
            "cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            own.cpu_seconds,
        ),
        ("open_fds", "gauge", "Number of open file descriptors.", own.open_fds),
        ("max_fds", "gauge", "Maximum number of open file descriptors.", own.max_fds),
    ]
    for suffix, kind, doc, value in rows:
        _family(out, "process_" + suffix, kind, doc)
        out.append(f"process_{suffix} {_value(value)}")
