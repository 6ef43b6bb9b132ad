#!/usr/bin/env python3
"""Scale: supervisord-lite, supervisord and circus with 1,000 instances, same run.

Not a test: a script that prints a table (one column per supervisor and size).

    .venv/bin/python tests/bench/bench_scale.py [--sizes 100,1000] [--rounds 20]
    .venv/bin/python tests/bench/bench_scale.py --only ours --profile /tmp/prof

For every supervisor and every size N (default 100 and 1000, so that each figure
can be compared with the same figure at a tenth of the load), one fresh daemon runs
in the foreground with N sleepers (``sleep 3600``, output captured by the
supervisor) that start with it:

* start: daemon launch -> the last of the N "running" log lines (ours:
  ``instance_state`` RUNNING, ``ready: {delay: 0}``; supervisord: ``success: ...
  entered RUNNING state``, ``startsecs=0``; circus has no readiness: its "running
  sleepers process [pid N]" line, written once the process exists). Also launch ->
  the daemon's first log line, and launch -> N children seen in /proc.
* idle: after 2 s of settling, the daemon's CPU (user+system, all threads) and
  context switches over ``--idle-seconds``, then its RSS and open fds.
* status API: ``--status-requests`` sequential requests, p50/p99/max; ours
  ``GET /status`` (every instance with pid, state, RSS and CPU), supervisord XML-RPC
  ``getAllProcessInfo``, circus ``list sleepers`` (pids only) over its ZeroMQ
  endpoint (from a helper run with the peers venv's Python).
* CLI status: wall time of ``supctl status`` / ``supervisorctl status`` /
  ``circusctl list sleepers`` (median of 3; includes the client's start-up).
* crash -> respawn: ``--rounds`` times, kill -9 one instance (never the same one
  twice, so no backoff is involved), then time until the replacement appears:
  from the daemon's log (ours: ``spawned``, written after exec; supervisord:
  ``spawned: ... with pid``, after fork; circus: ``running ... process [pid]``, after
  exec) and, for all three, until a new pid shows in the daemon's
  ``/proc/PID/task/*/children`` (polled every 0.5 ms). The daemon's CPU used per
  crash (over the idle rate) is reported too: it shows per-crash work that grows
  with N.
* graceful shutdown: SIGTERM -> exit; processes left behind are counted and killed.

supervisord and circus run with their defaults where the workload allows it
(supervisord ``startsecs=0``; circus ``check_delay`` 1 s, ``warmup_delay`` 0);
both come from ``--peers-venv`` (created with pip when missing: supervisor, circus
and py-spy). Log timestamps: ours µs; supervisord ms (truncated, +-0.5 ms); circus
via a logging config with ``%(created).6f`` (µs).

``--profile DIR`` attaches ``py-spy record`` (raw collapsed stacks, non-blocking)
to our daemon during the boot, the status requests and the kill rounds, and
prints the functions with the most samples (self and inclusive) for each phase.

RLIMIT_NOFILE is raised to its hard limit before the daemons are launched (they
inherit it). Loopback only; every loop is bounded; every process is ended by the
pid we got for it (this script is a child subreaper, so orphans come to it).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import http.client
import json
import os
import random
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import xmlrpc.client
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_core as core  # noqa: E402  (the sibling benchmark: /proc and log helpers)

sys.path.insert(0, str(HERE.parent.parent))
from supervisord_lite.supervisor import sampler  # noqa: E402  (its watch window, declared once)

REPO = HERE.parent.parent
SLEEPERS = "sleepers"

# --------------------------------------------------------------------------- circus


def parse_circus(line: str) -> core.LogEvent | None:
    """One line of circusd's log, written with our logging config (epoch µs first)."""
    head, _, rest = line.partition(" ")
    try:
        t = float(head)
    except ValueError:
        return None
    _, _, msg = rest.partition(" ")
    m = re.match(r"running (\S+) process \[pid (\d+)\]", msg)
    if m:
        return core.LogEvent(t, "spawned", m.group(1), int(m.group(2)))
    m = re.match(r"reaping process (\d+) \[(\S+)\]", msg)
    if m:
        return core.LogEvent(t, "exited", m.group(2), int(m.group(1)))
    m = re.match(r"Starting master on pid (\d+)", msg)
    if m:
        return core.LogEvent(t, "daemon_started", "", int(m.group(1)))
    return None


_CIRCUS_CLIENT = r"""
import json, sys, time
from circus.client import CircusClient
endpoint, n = sys.argv[1], int(sys.argv[2])
c = CircusClient(endpoint=endpoint, timeout=60)
times, pids = [], 0
for _ in range(n):
    t = time.perf_counter()
    r = c.call({"command": "list", "properties": {"name": "sleepers"}})
    times.append(time.perf_counter() - t)
    if r.get("status") != "ok":
        raise SystemExit(f"circus list failed: {r}")
    pids = len(r.get("pids", []))
print(json.dumps({"times": times, "pids": pids}))
"""


# --------------------------------------------------------------------------- daemons


class Scaled(core.Daemon):
    """One supervisor with N sleepers that start with it."""

    kind = ""

    def __init__(self, workdir: Path, n: int, port: int, venv: Path) -> None:
        self.n = n
        self.port = port
        self.venv = venv
        layout = core.Layout(n, False, True, port, 0)
        super().__init__(workdir, layout)

    def running_kind(self) -> str:
        """The log event that means "this instance is up"."""
        return "running"

    def status_times(self, count: int) -> tuple[list[float], int, str]:
        """``count`` sequential status requests: (seconds each, instances seen, note)."""
        raise NotImplementedError

    def cli_status(self) -> list[str]:
        raise NotImplementedError


class Ours(Scaled):
    title = "supervisord-lite"
    kind = "ours"

    def __init__(self, workdir: Path, n: int, port: int, venv: Path, binary: str) -> None:
        self.binary = binary
        self.supctl = str(Path(binary).with_name("supctl"))
        super().__init__(workdir, n, port, venv)

    def write_config(self) -> None:
        (self.dir / "config.yaml").write_text(
            f"""\
supervisor:
  state_dir: {self.dir / "state"}
  http: {{listen: "127.0.0.1:{self.port}"}}
  log: {{format: json, level: info}}
  shutdown_timeout: 60
apps:
  {SLEEPERS}:
    command: ["sleep", "3600"]
    instances: {self.n}
    ready: {{delay: 0}}
    stop: {{signal: TERM, timeout: 10}}
"""
        )

    def parse_line(self, line: str) -> core.LogEvent | None:
        return core.parse_ours(line)

    def argv(self) -> list[str]:
        return [self.binary, "-c", str(self.dir / "config.yaml")]

    def status_times(self, count: int) -> tuple[list[float], int, str]:
        times: list[float] = []
        body = b""
        for _ in range(count):
            t = time.perf_counter()
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            try:
                conn.request("GET", "/status")
                resp = conn.getresponse()
                body = resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"/status answered {resp.status}")
            finally:
                conn.close()
            times.append(time.perf_counter() - t)
        doc = json.loads(body)
        seen = sum(
            1
            for a in doc["apps"].values()
            for i in a["instances"].values()
            if i["state"] == "RUNNING"
        )
        return times, seen, f"GET /status ({len(body) // 1024} KiB)"

    def cli_status(self) -> list[str]:
        return [self.supctl, "-s", str(self.dir / "state" / "supctl.sock"), "status"]


class Supervisord(Scaled):
    title = "supervisord"
    kind = "supervisord"
    logs_to_stderr = False

    @property
    def conf(self) -> str:
        return str(self.dir / "supervisord.conf")

    def write_config(self) -> None:
        (self.dir / "childlogs").mkdir(exist_ok=True)
        Path(self.conf).write_text(
            f"""\
[inet_http_server]
port = 127.0.0.1:{self.port}

[supervisord]
logfile = {self.log_path}
loglevel = info
pidfile = {self.dir / "supervisord.pid"}
childlogdir = {self.dir / "childlogs"}
nodaemon = true
minfds = 8192

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl = http://127.0.0.1:{self.port}

[program:{SLEEPERS}]
command = sleep 3600
process_name = %(program_name)s_%(process_num)d
numprocs = {self.n}
autostart = true
autorestart = true
startsecs = 0
stopsignal = TERM
stopwaitsecs = 10
redirect_stderr = true
"""
        )

    def parse_line(self, line: str) -> core.LogEvent | None:
        return core.parse_supervisord(line)

    def argv(self) -> list[str]:
        return [str(self.venv / "bin" / "supervisord"), "-c", self.conf]

    def status_times(self, count: int) -> tuple[list[float], int, str]:
        times: list[float] = []
        infos: list[dict[str, Any]] = []
        for _ in range(count):
            t = time.perf_counter()
            proxy = xmlrpc.client.ServerProxy(f"http://127.0.0.1:{self.port}/RPC2")
            infos = list(proxy.supervisor.getAllProcessInfo())  # type: ignore[arg-type]
            times.append(time.perf_counter() - t)
        seen = sum(1 for i in infos if i["statename"] == "RUNNING")
        return times, seen, "XML-RPC getAllProcessInfo"

    def cli_status(self) -> list[str]:
        return [str(self.venv / "bin" / "supervisorctl"), "-c", self.conf, "status"]


class Circus(Scaled):
    title = "circus"
    kind = "circus"
    logs_to_stderr = False

    @property
    def conf(self) -> str:
        return str(self.dir / "circus.ini")

    @property
    def endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def running_kind(self) -> str:
        return "spawned"  # circus has no readiness notion: a live process is it

    def write_config(self) -> None:
        logging_conf = {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"us": {"format": "%(created).6f %(levelname)s %(message)s"}},
            "handlers": {
                "file": {
                    "class": "logging.FileHandler",
                    "filename": str(self.log_path),
                    "formatter": "us",
                }
            },
            "loggers": {"circus": {"level": "DEBUG", "handlers": ["file"], "propagate": False}},
        }
        (self.dir / "logging.json").write_text(json.dumps(logging_conf))
        Path(self.conf).write_text(
            f"""\
[circus]
endpoint = {self.endpoint}
pubsub_endpoint = tcp://127.0.0.1:{self.port + 1}
stats_endpoint = tcp://127.0.0.1:{self.port + 2}
check_delay = 1
loggerconfig = {self.dir / "logging.json"}

[watcher:{SLEEPERS}]
cmd = sleep 3600
numprocesses = {self.n}
warmup_delay = 0
graceful_timeout = 10
stdout_stream.class = FileStream
stdout_stream.filename = {self.dir / "sleepers.stdout.log"}
stderr_stream.class = FileStream
stderr_stream.filename = {self.dir / "sleepers.stderr.log"}
"""
        )

    def parse_line(self, line: str) -> core.LogEvent | None:
        return parse_circus(line)

    def argv(self) -> list[str]:
        return [str(self.venv / "bin" / "circusd"), self.conf]

    def status_times(self, count: int) -> tuple[list[float], int, str]:
        r = subprocess.run(
            [str(self.venv / "bin" / "python"), "-c", _CIRCUS_CLIENT, self.endpoint, str(count)],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if r.returncode != 0:
            raise RuntimeError(f"circus client failed: {r.stderr[-500:]}")
        doc = json.loads(r.stdout)
        return [float(x) for x in doc["times"]], int(doc["pids"]), "ZeroMQ list sleepers (pids)"

    def cli_status(self) -> list[str]:
        return [
            str(self.venv / "bin" / "circusctl"),
            "--endpoint",
            self.endpoint,
            "list",
            SLEEPERS,
        ]


# --------------------------------------------------------------------------- profiling


class Profiler:
    """py-spy record on our daemon for one phase (raw collapsed stacks)."""

    def __init__(self, pyspy: Path, outdir: Path | None) -> None:
        self.pyspy = pyspy
        self.outdir = outdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.path: Path | None = None

    def start(self, pid: int, name: str) -> None:
        if self.outdir is None:
            return
        self.outdir.mkdir(parents=True, exist_ok=True)
        self.path = self.outdir / f"{name}.txt"
        log = open(self.outdir / f"{name}.pyspy.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                str(self.pyspy),
                "record",
                "--pid",
                str(pid),
                "--format",
                "raw",
                "--rate",
                "250",
                "--nonblocking",
                "-o",
                str(self.path),
            ],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        time.sleep(0.3)  # attach

    def stop(self) -> Path | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None
        return self.path


def summarize_profile(path: Path, top: int = 12) -> list[str]:
    """Self and inclusive sample counts per function from py-spy's raw output."""
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return [f"(no profile: {exc})"]
    for line in text.splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        own[_short(frames[-1])] += count
        for fr in dict.fromkeys(_short(f) for f in frames):
            incl[fr] += count
    if not total:
        return ["(no samples)"]
    out = [f"{total} samples"]
    out.append("  self:")
    out += [f"    {100 * c / total:5.1f}%  {f}" for f, c in own.most_common(top)]
    out.append("  inclusive (supervisord_lite frames):")
    ours = [(f, c) for f, c in incl.most_common() if "supervisord_lite" in f]
    out += [f"    {100 * c / total:5.1f}%  {f}" for f, c in ours[:top]]
    return out


def _short(frame: str) -> str:
    """``func (/long/path/pkg/mod.py:123)`` -> ``func (pkg/mod.py:123)``."""
    m = re.match(r"(.*) \((.*):(\d+)\)$", frame)
    if not m:
        return frame
    path = m.group(2)
    parts = path.split("/")
    short = "/".join(parts[-2:]) if len(parts) >= 2 else path
    return f"{m.group(1)} ({short}:{m.group(3)})"


# --------------------------------------------------------------------------- measuring


@dataclass
class Col:
    title: str
    values: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    profiles: dict[str, list[str]] = field(default_factory=dict)


def alive_children(pid: int) -> set[int]:
    return {p for p in core.children_of(pid) if core.alive(p)}


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def boot(d: Scaled, col: Col, prof: Profiler) -> None:
    n = d.n
    t0 = d.launch()
    if d.kind == "ours":
        prof.start(d.pid, f"boot-{n}")
    kind = d.running_kind()
    t_children: float | None = None
    running: set[str] = set()
    for _ in range(60000):  # bounded: 10 ms steps, 180 s
        if d.proc is not None and d.proc.poll() is not None:
            raise RuntimeError(f"{d.title} exited at start (status {d.proc.returncode})")
        if t_children is None and len(core.children_of(d.pid)) >= n:
            t_children = time.time()
        for e in d.tail.poll():
            if e.kind == kind:
                running.add(e.name if d.kind != "circus" else str(e.pid))
        if len(running) >= n or time.time() - t0 > 180:
            break
        time.sleep(0.01)
    if d.kind == "ours":
        path = prof.stop()
        if path:
            col.profiles[f"boot ({n})"] = summarize_profile(path)
    runs = [e.t for e in d.tail.events if e.kind == kind]
    if len(runs) < n:
        raise RuntimeError(f"{d.title}: only {len(runs)} of {n} up within 180 s")
    first = min((e.t for e in d.tail.events), default=None)
    spawns = [e.t for e in d.tail.events if e.kind == "spawned"]
    col.values["start_s"] = max(runs) - t0
    col.values["first_log_s"] = (first - t0) if first else None
    col.values["spawn_span_s"] = (max(spawns) - min(spawns)) if spawns else None
    col.values["children_s"] = (t_children - t0) if t_children else None


def idle(d: Scaled, col: Col, seconds: float) -> float:
    """The idle window; returns the idle CPU rate (CPU seconds per second)."""
    time.sleep(2.0)
    c0, s0, t0 = core.cpu_seconds(d.pid), core.context_switches(d.pid), time.monotonic()
    time.sleep(seconds)
    c1, s1, t1 = core.cpu_seconds(d.pid), core.context_switches(d.pid), time.monotonic()
    rate = (c1 - c0) / (t1 - t0)
    col.values["idle_cpu_pct"] = 100.0 * rate
    col.values["idle_wakeups"] = (s1 - s0) / (t1 - t0)
    col.values["rss_mib"] = core.rss_bytes(d.pid) / 2**20
    col.values["fds"] = open_fds(d.pid)
    return rate


def status(d: Scaled, col: Col, count: int, prof: Profiler) -> None:
    if d.kind == "ours":
        prof.start(d.pid, f"status-{d.n}")
    c0 = core.cpu_seconds(d.pid)
    times, seen, what = d.status_times(count)
    c1 = core.cpu_seconds(d.pid)
    if d.kind == "ours":
        path = prof.stop()
        if path:
            col.profiles[f"{count} x GET /status ({d.n})"] = summarize_profile(path)
    if seen != d.n:
        col.notes.append(f"status showed {seen} of {d.n} instances up")
    col.values["status_p50"] = core.pct(times, 0.5)
    col.values["status_p99"] = core.pct(times, 0.99)
    col.values["status_max"] = max(times)
    col.values["status_cpu_ms"] = 1000.0 * (c1 - c0) / count
    col.notes.append(f"status API: {what}")
    cli = []
    for _ in range(3):
        t = time.monotonic()
        r = subprocess.run(d.cli_status(), capture_output=True, timeout=300, check=False)
        cli.append(time.monotonic() - t)
        if r.returncode not in (0, 3):  # supervisorctl status exits 3 when not all RUNNING
            col.notes.append(f"{d.cli_status()[0]} exited {r.returncode}")
    col.values["cli_status_s"] = statistics.median(cli)


def crashes(
    d: Scaled, col: Col, rounds: int, idle_rate: float, tracker: core.Tracker, prof: Profiler
) -> None:
    rng = random.Random(1234)  # the same pauses for every supervisor
    replaced: set[int] = set()
    log_lat: list[float] = []
    proc_lat: list[float] = []
    exit_lat: list[float] = []
    if d.kind == "ours":
        # the status phase just before started our usage sampler, which samples every
        # instance once a second until statuses have not been asked for a while: that
        # is the cost of being watched (see status CPU), not of a crash
        time.sleep(sampler.WATCHED + 1.0)
        prof.start(d.pid, f"crash-{d.n}")
    c0, w0 = core.cpu_seconds(d.pid), time.monotonic()
    for r in range(rounds):
        before = set(core.children_of(d.pid))
        candidates = sorted(alive_children(d.pid) - replaced)
        if not candidates:
            col.notes.append("ran out of never-killed instances")
            break
        victim = candidates[(r * 7919) % len(candidates)]
        d.tail.poll()
        since = len(d.tail.events)
        t_kill = time.time()
        os.kill(victim, signal.SIGKILL)
        t_proc: float | None = None
        spawned: core.LogEvent | None = None
        exited: core.LogEvent | None = None
        for _ in range(20000):  # bounded: 0.5 ms steps, 10 s
            if t_proc is None:
                # only the children list: reading 1,000 /proc/PID/stat files per poll
                # would take tens of ms (a new pid is alive when it first appears)
                new = set(core.children_of(d.pid)) - before
                if new:
                    t_proc = time.time()
                    replaced |= new
                    for p in new:
                        tracker.note(p)
            if spawned is None or exited is None:
                d.tail.poll()
                for e in d.tail.events[since:]:
                    if spawned is None and e.kind == "spawned" and e.pid != victim:
                        spawned = e
                    if exited is None and e.kind == "exited":
                        exited = e
            if (t_proc is not None and spawned is not None) or time.time() - t_kill > 10:
                break
            time.sleep(0.0005)
        if t_proc is not None:
            proc_lat.append(t_proc - t_kill)
        if spawned is not None:
            log_lat.append(spawned.t - t_kill)
        else:
            col.notes.append(f"round {r}: no respawn logged within 10 s")
        if exited is not None:
            exit_lat.append(exited.t - t_kill)
        time.sleep(0.1 + rng.uniform(0.0, 0.5))
    c1, w1 = core.cpu_seconds(d.pid), time.monotonic()
    if d.kind == "ours":
        path = prof.stop()
        if path:
            col.profiles[f"{rounds} crashes ({d.n})"] = summarize_profile(path)
    col.values["respawn_log"] = log_lat
    col.values["respawn_proc"] = proc_lat
    col.values["exit_seen_log"] = exit_lat
    if log_lat or proc_lat:
        extra = (c1 - c0) - idle_rate * (w1 - w0)
        col.values["crash_cpu_ms"] = 1000.0 * max(0.0, extra) / max(1, len(proc_lat))


def shutdown(d: Scaled, col: Col, tracker: core.Tracker) -> None:
    for p in core.children_of(d.pid):
        tracker.note(p)
    took = d.stop(timeout=120)
    col.values["shutdown_s"] = took
    left = tracker.leftovers()
    left += [p for p in core.reap_orphans() if p not in left]
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    col.values["leftover"] = len(left)
    if left:
        col.notes.append(f"{len(left)} process(es) outlived the daemon (killed by pid)")
    tracker.seen.clear()


def run_one(d: Scaled, args: argparse.Namespace, prof: Profiler, tracker: core.Tracker) -> Col:
    col = Col(f"{d.title} {d.n}")
    print(f"{col.title}: start ...", file=sys.stderr)
    try:
        boot(d, col, prof)
        print(f"{col.title}: idle {args.idle_seconds:g}s ...", file=sys.stderr)
        rate = idle(d, col, args.idle_seconds)
        print(f"{col.title}: {args.status_requests} status requests ...", file=sys.stderr)
        status(d, col, args.status_requests, prof)
        print(f"{col.title}: {args.rounds} kill -9 rounds ...", file=sys.stderr)
        crashes(d, col, args.rounds, rate, tracker, prof)
    except Exception as exc:  # report what was measured, and why it stopped
        col.notes.append(f"aborted: {exc}")
    finally:
        prof.stop()
        with contextlib.suppress(Exception):
            shutdown(d, col, tracker)
    return col


# --------------------------------------------------------------------------- report


def ms(v: float | None) -> str:
    return "-" if v is None else f"{1000 * v:.1f} ms"


def dist(values: list[float] | None) -> str:
    if not values:
        return "-"
    return (
        f"{1000 * statistics.median(values):.1f} / {1000 * core.pct(values, 0.9):.1f} / "
        f"{1000 * max(values):.1f} ms"
    )


ROWS: list[tuple[str, str, Callable[[Any], str]]] = [
    ("start_s", "launch -> all N up (log)", lambda v: f"{v:.2f} s"),
    ("first_log_s", "  launch -> daemon's first log line", lambda v: f"{v:.2f} s"),
    ("spawn_span_s", "  first -> last spawn", lambda v: f"{v:.2f} s"),
    ("children_s", "  launch -> N children in /proc (10 ms poll)", lambda v: f"{v:.2f} s"),
    ("idle_cpu_pct", "idle CPU (10 s window)", lambda v: f"{v:.2f} %"),
    ("idle_wakeups", "  context switches/s while idle", lambda v: f"{v:.1f}"),
    ("rss_mib", "daemon RSS", lambda v: f"{v:.1f} MiB"),
    ("fds", "daemon open fds", lambda v: f"{v}"),
    ("status_p50", "status API p50", ms),
    ("status_p99", "status API p99", ms),
    ("status_max", "status API max", ms),
    ("status_cpu_ms", "  daemon CPU per status request", lambda v: f"{v:.1f} ms"),
    ("cli_status_s", "CLI status (wall, median of 3)", ms),
    ("respawn_log", "kill -9 -> respawn (log) med/p90/max", dist),
    ("respawn_proc", "kill -9 -> new pid in /proc med/p90/max", dist),
    ("exit_seen_log", "kill -9 -> exit logged med/p90/max", dist),
    ("crash_cpu_ms", "daemon CPU per crash (above idle)", lambda v: f"{v:.1f} ms"),
    ("shutdown_s", "graceful shutdown (SIGTERM -> exit)", lambda v: f"{v:.2f} s"),
    ("leftover", "processes left after shutdown", lambda v: f"{v}"),
]


def print_table(cols: list[Col], header: list[str], rounds: int, status_n: int) -> None:
    rows = [["metric", *[c.title for c in cols]]]
    for key, label, fmt_fn in ROWS:
        cells = []
        for c in cols:
            v = c.values.get(key)
            cells.append("-" if v is None or v == [] else fmt_fn(v))
        rows.append([label, *cells])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    line = "+".join("-" * (w + 2) for w in widths)
    print()
    print(
        f"supervisord-lite vs supervisord vs circus: N sleepers; {rounds} kill rounds, "
        f"{status_n} status requests"
    )
    for h in header:
        print(f"  {h}")
    print(line)
    for i, r in enumerate(rows):
        print("| " + " | ".join(x.ljust(w) for x, w in zip(r, widths, strict=True)) + " |")
        if i == 0:
            print(line)
    print(line)
    for c in cols:
        for note in dict.fromkeys(c.notes):
            print(f"note [{c.title}]: {note}")
    ours = sorted(
        (c for c in cols if c.title.startswith("supervisord-lite ")),
        key=lambda c: int(c.title.split()[-1]),
    )
    if len(ours) >= 2 and ours[0].values.get("start_s") and ours[-1].values.get("start_s"):
        a, b = ours[0], ours[-1]
        na, nb = int(a.title.split()[-1]), int(b.title.split()[-1])
        print(f"ours, {nb} vs {na} instances ({nb / na:g}x):")
        for key in ("start_s", "spawn_span_s", "rss_mib", "status_p99", "crash_cpu_ms"):
            va, vb = a.values.get(key), b.values.get(key)
            if va and vb:
                print(f"  {key}: {vb / va:.1f}x")
        la, lb = a.values.get("respawn_log"), b.values.get("respawn_log")
        if la and lb:
            print(f"  respawn_log median: {statistics.median(lb) / statistics.median(la):.1f}x")
    for c in cols:
        for phase, lines in c.profiles.items():
            print(f"\npy-spy [{c.title}] {phase}:")
            for ln in lines:
                print(f"  {ln}")


# --------------------------------------------------------------------------- main


def ensure_peers_venv(venv: Path, want: list[str]) -> None:
    needed = {"supervisor": "supervisord", "circus": "circusd", "py-spy": "py-spy"}
    missing = [pkg for pkg in want if not (venv / "bin" / needed[pkg]).exists()]
    if not missing:
        return
    if not (venv / "bin" / "pip").exists():
        print(f"creating {venv} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    print(f"installing {', '.join(missing)} into {venv} ...", file=sys.stderr)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *missing], check=True, timeout=900)


def raise_nofile() -> str:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    soft2, hard2 = resource.getrlimit(resource.RLIMIT_NOFILE)
    return f"RLIMIT_NOFILE {soft} -> {soft2} (hard {hard2})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--sizes", default="100,1000", help="comma-separated instance counts")
    p.add_argument("--rounds", type=int, default=20, help="kill -9 rounds per daemon")
    p.add_argument("--idle-seconds", type=float, default=10.0)
    p.add_argument("--status-requests", type=int, default=200)
    p.add_argument("--only", default="ours,supervisord,circus")
    p.add_argument("--peers-venv", type=Path, default=Path("/tmp/bench-venv"))
    p.add_argument("--ours", default=str(REPO / ".venv" / "bin" / "supervisord-lite"))
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--base-port", type=int, default=19400, help="uses base .. base+59")
    p.add_argument("--profile", type=Path, default=None, help="py-spy our daemon; output dir")
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    kinds = [k.strip() for k in args.only.split(",") if k.strip()]
    if not sizes or not all(1 <= s <= 2000 for s in sizes):
        p.error("--sizes: each within 1..2000")
    if not 1 <= args.rounds <= 200 or not 1 <= args.status_requests <= 2000:
        p.error("--rounds within 1..200, --status-requests within 1..2000")
    if not set(kinds) <= {"ours", "supervisord", "circus"}:
        p.error("--only: ours, supervisord, circus")
    if not 1024 <= args.base_port <= 32768 - 60:
        p.error("--base-port must leave base..base+59 below 32768")

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-scale-", dir="/tmp"))
    want = [pkg for k, pkg in (("supervisord", "supervisor"), ("circus", "circus")) if k in kinds]
    if args.profile is not None:
        want.append("py-spy")
    ensure_peers_venv(args.peers_venv, want)
    limits = raise_nofile()
    # bytecode as an installed package has it (this environment may set
    # PYTHONDONTWRITEBYTECODE, which would make every daemon start compile our sources)
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(REPO / "supervisord_lite")], check=False
    )
    core.become_subreaper()
    prof = Profiler(args.peers_venv / "bin" / "py-spy", args.profile)
    header = [
        f"supervisord-lite {core.our_version()}",
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {limits}",
        f"load average {os.getloadavg()[0]:.2f} at start",
    ]
    if "supervisord" in kinds:
        header.append(f"supervisord {core.peer_version(args.peers_venv)}")
    if "circus" in kinds:
        r = subprocess.run(
            [str(args.peers_venv / "bin" / "circusd"), "--version"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        header.append(f"circus {(r.stdout or r.stderr).strip()}")
    print(f"workdir {workdir}", file=sys.stderr)

    cols: list[Col] = []
    tracker = core.Tracker()
    slot = 0
    for kind in kinds:
        for n in sizes:
            port = args.base_port + 10 * slot
            slot += 1
            sub = workdir / f"{kind}-{n}"
            d: Scaled
            if kind == "ours":
                d = Ours(sub, n, port, args.peers_venv, args.ours)
            elif kind == "supervisord":
                d = Supervisord(sub, n, port, args.peers_venv)
            else:
                d = Circus(sub, n, port, args.peers_venv)
            cols.append(run_one(d, args, prof, tracker))
    header.append(f"load average {os.getloadavg()[0]:.2f} at the end")
    print_table(cols, header, args.rounds, args.status_requests)
    print(f"(configs and logs: {workdir})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
