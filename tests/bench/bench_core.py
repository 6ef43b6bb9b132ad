#!/usr/bin/env python3
"""Core figures of supervisord-lite next to supervisord, on the same workload, same run.

Not a test: a script that prints a table (``metric | supervisord-lite | supervisord``).
See ``tests/bench/README.md`` for what each figure means and how it is measured.

    .venv/bin/python tests/bench/bench_core.py [--instances 100] [--rounds 20]

Each supervisor is run twice, each time as a fresh daemon in the foreground with its
own state directory under /tmp:

* run A ("boot"): N sleepers (``sleep 3600``) start with the daemon; we time launch ->
  all N RUNNING (polling the status API every 10 ms), then, in a second boot that is
  not polled, launch -> last RUNNING from the daemon's own log, the daemon's idle CPU
  and RSS over ``--idle-seconds`` and the graceful shutdown.
* run B ("ops"): the sleepers are configured but not autostarted, plus one HTTP app
  (``httpapp.py``). We time start/stop of the N sleepers through the API and the
  CLI, then kill -9 ``--rounds`` sleepers (a different one each round) and the HTTP
  app ``--rounds`` times, and time exit noticed / replacement spawned / RUNNING /
  first request served by the new pid.

supervisord runs with ``startsecs=0`` (its fastest) and, unless ``--no-startsecs1``,
again with its default ``startsecs=1``. supervisord is installed into a separate
venv (``--peers-venv``, created with pip if missing).

Every process is ended by the pid we got for it: daemons get SIGTERM and are waited
for; the bench is a child subreaper, so anything a daemon leaves behind re-parents
to it, is reported as a leak and is killed by pid. Loops are bounded in count and time.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import importlib
import json
import math
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import xmlrpc.client
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

psutil: Any
try:
    psutil = importlib.import_module("psutil")
except ImportError:  # the figures come from /proc then (the same counters psutil reads)
    psutil = None

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
HZ = os.sysconf("SC_CLK_TCK")
HTTP_APP = HERE / "httpapp.py"
SLEEPERS = "sleepers"
WEB = "web"


# --------------------------------------------------------------------------- /proc


def proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (index 0 is the state)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def start_ticks(pid: int) -> int | None:
    """The kernel's start time of ``pid`` in clock ticks since boot (CLOCK_BOOTTIME)."""
    fields = proc_stat(pid)
    return int(fields[19]) if fields else None


def parent_of(pid: int) -> int | None:
    fields = proc_stat(pid)
    return int(fields[1]) if fields else None


def alive(pid: int, ticks: int | None = None) -> bool:
    """``pid`` exists, is not a zombie, and (if given) is the process that started then."""
    fields = proc_stat(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return False
    return ticks is None or int(fields[19]) == ticks


def children_of(pid: int) -> list[int]:
    pids: list[int] = []
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/children") as f:
                pids.extend(int(p) for p in f.read().split())
    return pids


def cpu_seconds(pid: int) -> float:
    """user + system CPU time of the whole process (all threads), in seconds."""
    if psutil is not None:
        t = psutil.Process(pid).cpu_times()
        return float(t.user + t.system)
    fields = proc_stat(pid)
    assert fields is not None
    return (int(fields[11]) + int(fields[12])) / HZ


def rss_bytes(pid: int) -> int:
    if psutil is not None:
        return int(psutil.Process(pid).memory_info().rss)
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def context_switches(pid: int) -> int:
    """Voluntary + involuntary context switches of all threads: roughly, wake-ups."""
    total = 0
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        total += int(line.split()[1])
    return total


def become_subreaper() -> None:
    """Orphans of the daemons re-parent to us, so that leaks are seen (and ended)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


# --------------------------------------------------------------------------- logs


@dataclass(frozen=True)
class LogEvent:
    t: float  # wall clock (time.time()) of the daemon's log line
    kind: str  # daemon_started | spawned | exited | running
    name: str  # instance / process name in the daemon's own scheme
    pid: int | None = None


def parse_ours(line: str) -> LogEvent | None:
    """One JSON line of supervisord-lite's log (µs timestamps, UTC)."""
    try:
        rec = json.loads(line)
    except ValueError:
        return None
    if not isinstance(rec, dict) or "timestamp" not in rec:
        return None
    t = datetime.datetime.fromisoformat(rec["timestamp"].replace("Z", "+00:00")).timestamp()
    event = rec.get("event")
    if event == "daemon_started":
        return LogEvent(t, "daemon_started", "", rec.get("pid"))
    if event == "spawned":
        return LogEvent(t, "spawned", rec["instance"], rec["pid"])
    if event == "instance_failed":
        return LogEvent(t, "exited", rec["instance"])
    if event == "instance_state" and rec.get("state") == "RUNNING":
        return LogEvent(t, "running", rec["instance"], rec.get("pid"))
    return None


_SUP_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) \w+ (.*)$")
_SUP_EVENTS = (
    (re.compile(r"^spawned: '([^']+)' with pid (\d+)"), "spawned"),
    (re.compile(r"^success: (\S+) entered RUNNING state"), "running"),
    (re.compile(r"^exited: (\S+) \("), "exited"),
    (re.compile(r"^supervisord started with pid (\d+)"), "daemon_started"),
)


def parse_supervisord(line: str) -> LogEvent | None:
    """One line of supervisord's log file (ms timestamps, local time)."""
    m = _SUP_LINE.match(line)
    if not m:
        return None
    # the ms are truncated: take the middle of the millisecond (unbiased, +-0.5 ms)
    whole = time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S"))
    t = whole + (int(m.group(2)) + 0.5) / 1000
    for pattern, kind in _SUP_EVENTS:
        e = pattern.match(m.group(3))
        if e is None:
            continue
        if kind == "daemon_started":
            return LogEvent(t, kind, "", int(e.group(1)))
        pid = int(e.group(2)) if kind == "spawned" else None
        return LogEvent(t, kind, e.group(1), pid)
    return None


class LogTail:
    """Reads a daemon's log file as it grows; keeps the parsed events."""

    def __init__(self, path: Path, parse: Callable[[str], LogEvent | None]) -> None:
        self.path = path
        self.parse = parse
        self.offset = 0
        self.partial = ""
        self.events: list[LogEvent] = []

    def poll(self) -> list[LogEvent]:
        try:
            with open(self.path, encoding="utf-8", errors="replace") as f:
                f.seek(self.offset)
                text = f.read()
                self.offset = f.tell()
        except FileNotFoundError:
            return []
        lines = (self.partial + text).split("\n")
        self.partial = lines.pop()
        new = [e for e in map(self.parse, lines) if e is not None]
        self.events.extend(new)
        return new

    def wait_for(
        self, match: Callable[[LogEvent], bool], timeout: float, since: int = 0
    ) -> LogEvent | None:
        """The first event from index ``since`` on that matches, waiting up to ``timeout``."""
        deadline = time.monotonic() + timeout
        checked = since
        for _ in range(int(timeout / 0.001) + 2):
            self.poll()
            for e in self.events[checked:]:
                if match(e):
                    return e
            checked = len(self.events)
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.001)
        return None


# --------------------------------------------------------------------------- daemons


def http_pid(port: int, timeout: float = 5.0) -> int:
    """GET / from httpapp.py: the pid of the process that served it."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"GET / HTTP/1.0\r\nHost: bench\r\n\r\n")
        data = b""
        for _ in range(64):
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.0 200"):
        raise OSError(f"unexpected answer {data[:60]!r}")
    return int(body)


@dataclass
class Layout:
    instances: int
    with_web: bool
    autostart_sleepers: bool
    api_port: int  # ours: HTTP /status; supervisord: inet_http_server (XML-RPC)
    web_port: int


class Daemon:
    """One supervisor under test, run in the foreground from a config we write."""

    title = ""
    logs_to_stderr = True  # ours logs to stderr; supervisord writes its own log file

    def __init__(self, workdir: Path, layout: Layout) -> None:
        self.dir = workdir
        self.layout = layout
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self.launched_at = 0.0
        self.log_path = self.dir / "daemon.log"
        self.tail = LogTail(self.log_path, self.parse_line)
        self._out: IO[bytes] | None = None
        self.write_config()

    # per supervisor
    def parse_line(self, line: str) -> LogEvent | None:
        raise NotImplementedError

    def write_config(self) -> None:
        raise NotImplementedError

    def argv(self) -> list[str]:
        raise NotImplementedError

    def sleeper(self, i: int) -> str:
        raise NotImplementedError

    def web(self) -> str:
        raise NotImplementedError

    def status(self) -> dict[str, tuple[str, int | None]]:
        """name -> (state, pid) of every process, from the daemon's status API."""
        raise NotImplementedError

    def api_start_sleepers(self) -> None:
        raise NotImplementedError

    def api_stop_sleepers(self) -> None:
        raise NotImplementedError

    def cli_start_sleepers(self) -> list[str]:
        raise NotImplementedError

    def cli_noop(self) -> list[str]:
        raise NotImplementedError

    # common
    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def launch(self) -> float:
        out = open(self.dir / "daemon.stdout", "wb")  # noqa: SIM115 (closed in stop)
        self._out = out
        err = open(self.log_path, "wb") if self.logs_to_stderr else out  # noqa: SIM115
        self.launched_at = time.time()
        self.proc = subprocess.Popen(
            self.argv(),
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            cwd=self.dir,
            start_new_session=True,
        )
        if err is not out:
            err.close()
        return self.launched_at

    def running_sleepers(self, st: dict[str, tuple[str, int | None]]) -> int:
        names = {self.sleeper(i) for i in range(self.layout.instances)}
        return sum(1 for n, (s, _) in st.items() if n in names and s == "RUNNING")

    def stopped_sleepers(self, st: dict[str, tuple[str, int | None]]) -> int:
        names = {self.sleeper(i) for i in range(self.layout.instances)}
        return sum(1 for n, (s, _) in st.items() if n in names and s == "STOPPED")

    def wait_status(
        self,
        pred: Callable[[dict[str, tuple[str, int | None]]], bool],
        timeout: float,
        interval: float = 0.01,
    ) -> float | None:
        """Poll the status API until ``pred`` holds; the time.time() it was seen, or None."""
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / interval) + 2):
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.title} exited early (status {self.proc.returncode}); see {self.dir}"
                )
            try:
                if pred(self.status()):
                    return time.time()
            except (OSError, ValueError, xmlrpc.client.Error):
                pass  # not up yet
            if time.monotonic() >= deadline:
                return None
            time.sleep(interval)
        return None

    def stop(self, timeout: float = 60.0) -> float | None:
        """SIGTERM and wait; the seconds the graceful shutdown took (None: killed)."""
        took: float | None = None
        if self.proc is not None and self.proc.poll() is None:
            t0 = time.monotonic()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
                took = time.monotonic() - t0
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self._out is not None:
            self._out.close()
            self._out = None
        return took


class Ours(Daemon):
    title = "supervisord-lite"

    def __init__(self, workdir: Path, layout: Layout, binary: str) -> None:
        self.binary = binary
        self.supctl = str(Path(binary).with_name("supctl"))
        super().__init__(workdir, layout)

    @property
    def socket(self) -> str:
        return str(self.dir / "state" / "supctl.sock")

    def write_config(self) -> None:
        lay = self.layout
        text = f"""\
supervisor:
  state_dir: {self.dir / "state"}
  http: {{listen: "127.0.0.1:{lay.api_port}"}}
  log: {{format: json, level: info}}
  shutdown_timeout: 30
apps:
  {SLEEPERS}:
    command: ["sleep", "3600"]
    instances: {lay.instances}
    autostart: {"true" if lay.autostart_sleepers else "false"}
    ready: {{delay: 0}}
    stop: {{signal: TERM, timeout: 10}}
"""
        if lay.with_web:
            text += f"""\
  {WEB}:
    command: [{json.dumps(sys.executable)}, "-I", "-S", {json.dumps(str(HTTP_APP))}]
    listen: "127.0.0.1:{lay.web_port}"
    ready: {{tcp: "{{host}}:{{port}}", timeout: 10}}
    backoff: {{reset_after: 0.5}}
    stop: {{signal: TERM, timeout: 5}}
"""
        (self.dir / "config.yaml").write_text(text)

    def parse_line(self, line: str) -> LogEvent | None:
        return parse_ours(line)

    def argv(self) -> list[str]:
        return [self.binary, "-c", str(self.dir / "config.yaml")]

    def sleeper(self, i: int) -> str:
        return f"{SLEEPERS}:{i}"

    def web(self) -> str:
        return f"{WEB}:primary"

    def status(self) -> dict[str, tuple[str, int | None]]:
        url = f"http://127.0.0.1:{self.layout.api_port}/status"
        with urllib.request.urlopen(url, timeout=10) as r:
            doc = json.load(r)
        out: dict[str, tuple[str, int | None]] = {}
        for app, a in doc["apps"].items():
            for inst, i in a["instances"].items():
                out[f"{app}:{inst}"] = (i["state"], i["pid"])
        return out

    def request(self, command: str, args: dict[str, Any], timeout: float = 120.0) -> Any:
        """One request on the control socket; its result (events are skipped)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(self.socket)
            s.sendall(json.dumps({"id": 1, "command": command, "args": args}).encode() + b"\n")
            with s.makefile("rb") as lines:
                for raw in lines:
                    msg = json.loads(raw)
                    if "event" in msg:
                        continue
                    if not msg.get("ok"):
                        raise RuntimeError(f"{command} failed: {msg.get('error')}")
                    return msg.get("result")
        raise RuntimeError(f"{command}: no answer")

    def api_start_sleepers(self) -> None:
        self.request("start", {"target": SLEEPERS})

    def api_stop_sleepers(self) -> None:
        self.request("stop", {"target": SLEEPERS})

    def cli_start_sleepers(self) -> list[str]:
        return [self.supctl, "-s", self.socket, "start", SLEEPERS]

    def cli_noop(self) -> list[str]:
        return [self.supctl, "-s", self.socket, "status", WEB]


class Supervisord(Daemon):
    title = "supervisord"
    logs_to_stderr = False  # it writes its own log file (nodaemon also echoes to stdout)

    def __init__(self, workdir: Path, layout: Layout, venv: Path, startsecs: int) -> None:
        self.venv = venv
        self.startsecs = startsecs
        super().__init__(workdir, layout)

    @property
    def conf(self) -> str:
        return str(self.dir / "supervisord.conf")

    def write_config(self) -> None:
        lay = self.layout
        (self.dir / "childlogs").mkdir(exist_ok=True)
        text = f"""\
[inet_http_server]
port = 127.0.0.1:{lay.api_port}

[supervisord]
logfile = {self.log_path}
loglevel = info
pidfile = {self.dir / "supervisord.pid"}
childlogdir = {self.dir / "childlogs"}
nodaemon = true

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl = http://127.0.0.1:{lay.api_port}

[program:{SLEEPERS}]
command = sleep 3600
process_name = %(program_name)s_%(process_num)d
numprocs = {lay.instances}
autostart = {"true" if lay.autostart_sleepers else "false"}
autorestart = true
startsecs = {self.startsecs}
stopsignal = TERM
stopwaitsecs = 10
redirect_stderr = true
"""
        if lay.with_web:
            text += f"""
[program:{WEB}]
command = {sys.executable} -I -S {HTTP_APP} --port {lay.web_port}
autostart = true
autorestart = true
startsecs = {self.startsecs}
stopsignal = TERM
stopwaitsecs = 5
redirect_stderr = true
"""
        Path(self.conf).write_text(text)

    def parse_line(self, line: str) -> LogEvent | None:
        return parse_supervisord(line)

    def argv(self) -> list[str]:
        return [str(self.venv / "bin" / "supervisord"), "-c", self.conf]

    def sleeper(self, i: int) -> str:
        return f"{SLEEPERS}_{i}"

    def web(self) -> str:
        return WEB

    def rpc(self) -> Any:
        url = f"http://127.0.0.1:{self.layout.api_port}/RPC2"
        return xmlrpc.client.ServerProxy(url).supervisor

    def status(self) -> dict[str, tuple[str, int | None]]:
        infos = self.rpc().getAllProcessInfo()
        return {i["name"]: (i["statename"], i["pid"] or None) for i in infos}

    def api_start_sleepers(self) -> None:
        self.rpc().startProcessGroup(SLEEPERS, True)

    def api_stop_sleepers(self) -> None:
        self.rpc().stopProcessGroup(SLEEPERS, True)

    def cli_start_sleepers(self) -> list[str]:
        return [str(self.venv / "bin" / "supervisorctl"), "-c", self.conf, "start", f"{SLEEPERS}:*"]

    def cli_noop(self) -> list[str]:
        return [str(self.venv / "bin" / "supervisorctl"), "-c", self.conf, "pid"]


# --------------------------------------------------------------------------- measuring


@dataclass
class Results:
    """metric -> list of samples (seconds, or a unit given in the row definition)."""

    samples: dict[str, list[float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, metric: str, value: float | None) -> None:
        if value is not None:
            self.samples.setdefault(metric, []).append(value)


class Tracker:
    """Every process the bench caused to exist, with its start time, for the cleanup."""

    def __init__(self) -> None:
        self.seen: dict[int, int | None] = {}

    def note(self, pid: int | None) -> None:
        if pid and pid not in self.seen:
            self.seen[pid] = start_ticks(pid)

    def leftovers(self) -> list[int]:
        return [p for p, t in self.seen.items() if t is not None and alive(p, t)]


def reap_orphans() -> list[int]:
    """Orphans re-parented to us (we are a subreaper): SIGKILL the live ones, reap all."""
    me = os.getpid()
    found: list[int] = []
    for _ in range(50):
        kids = children_of(me)
        if not kids:
            break
        for pid in kids:
            if alive(pid):
                found.append(pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    return found


def settle(d: Daemon, res: Results, tracker: Tracker, label: str) -> None:
    """Stop ``d`` gracefully; record the time it took and whether anything was left."""
    for e in d.tail.events:
        if e.kind == "spawned":
            tracker.note(e.pid)
    took = d.stop()
    if took is None:
        res.notes.append(f"{d.title} ({label}): did not stop within 60 s; killed")
    leftover = tracker.leftovers()
    leftover += [p for p in reap_orphans() if p not in leftover]
    if leftover:
        res.notes.append(
            f"{d.title} ({label}): {len(leftover)} process(es) outlived the daemon "
            f"(killed by pid): {leftover[:10]}"
        )
        for pid in leftover:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    res.add("shutdown_s", took)
    res.add("leftover_processes", float(len(leftover)))


def boot_run(d: Daemon, res: Results, tracker: Tracker, poll: bool, idle_s: float) -> None:
    n = d.layout.instances
    t0 = d.launch()
    try:
        if poll:
            seen = d.wait_status(lambda st: d.running_sleepers(st) == n, timeout=60, interval=0.01)
            if seen is None:
                raise RuntimeError(f"{d.title}: {n} instances not RUNNING within 60 s")
            res.add("boot_status_s", seen - t0)
        for _ in range(60000):  # wait for N RUNNING lines in the log (bounded: 60 s)
            d.tail.poll()
            running = {e.name for e in d.tail.events if e.kind == "running"}
            if len(running) >= n or time.time() - t0 > 60:
                break
            time.sleep(0.001)
        cpu = cpu_seconds(d.pid)  # CPU time used by the daemon to boot and start N
        runs = [e.t for e in d.tail.events if e.kind == "running"]
        started = [e.t for e in d.tail.events if e.kind == "daemon_started"]
        spawns = [e.t for e in d.tail.events if e.kind == "spawned"]
        if len(runs) < n:
            raise RuntimeError(f"{d.title}: only {len(runs)} RUNNING lines in {d.log_path}")
        suffix = "polled" if poll else "quiet"
        res.add(f"boot_log_{suffix}_s", max(runs) - t0)
        if started:
            res.add(f"boot_init_{suffix}_s", started[0] - t0)
        if spawns:
            res.add(f"boot_spawn_span_{suffix}_s", max(spawns) - min(spawns))
        if not poll:
            res.add("boot_cpu_s", cpu)
            idle(d, res, idle_s)
    finally:
        settle(d, res, tracker, "boot")


def idle(d: Daemon, res: Results, seconds: float) -> None:
    time.sleep(2.0)  # let start-up work (log flushes, first timers) settle
    c0, s0, t0 = cpu_seconds(d.pid), context_switches(d.pid), time.monotonic()
    time.sleep(seconds)
    c1, s1, t1 = cpu_seconds(d.pid), context_switches(d.pid), time.monotonic()
    res.add("idle_cpu_pct", 100.0 * (c1 - c0) / (t1 - t0))
    res.add("idle_cpu_ms", 1000.0 * (c1 - c0))
    res.add("idle_wakeups_per_s", (s1 - s0) / (t1 - t0))
    res.add("rss_mib", rss_bytes(d.pid) / 2**20)
    res.add("children", float(len(children_of(d.pid))))


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.monotonic()
    fn()
    return time.monotonic() - t0


def run_cli(argv: list[str]) -> float:
    t0 = time.monotonic()
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=120)
    took = time.monotonic() - t0
    if r.returncode != 0:
        tail = (r.stdout[-500:] + r.stderr[-500:]).decode(errors="replace")
        raise RuntimeError(f"{argv} failed ({r.returncode}): {tail}")
    return took


def kill_round(
    d: Daemon, name: str, res: Results, tracker: Tracker, prefix: str, http_port: int | None
) -> float | None:
    """kill -9 the process of ``name``; time exit noticed, respawn, RUNNING, served.

    Returns the wall time the replacement was spawned (from the log), or None.
    """
    state, old = d.status()[name]
    if state != "RUNNING" or not old:
        res.notes.append(f"{d.title}: {name} was {state}, not RUNNING, before a kill; skipped")
        return None
    d.tail.poll()
    since = len(d.tail.events)
    t_kill = time.time()
    b_kill = time.clock_gettime(time.CLOCK_BOOTTIME)
    os.kill(old, signal.SIGKILL)
    if http_port is not None:
        served = None
        for _ in range(100000):  # bounded: 15 s
            try:
                if http_pid(http_port) != old:
                    served = time.time()
                    break
            except (OSError, ValueError):
                time.sleep(0.0005)
            if time.time() - t_kill > 15:
                break
        if served is None:
            res.notes.append(f"{d.title}: {name} never served a request after a kill")
        else:
            res.add(f"{prefix}_served_s", served - t_kill)
    spawned = d.tail.wait_for(
        lambda e: e.kind == "spawned" and e.name == name and e.pid != old, timeout=15, since=since
    )
    if spawned is None or spawned.pid is None:
        res.notes.append(f"{d.title}: no respawn of {name} logged within 15 s")
        return None
    tracker.note(spawned.pid)
    running = d.tail.wait_for(
        lambda e: e.kind == "running" and e.name == name, timeout=15, since=since
    )
    exited = next((e for e in d.tail.events[since:] if e.kind == "exited" and e.name == name), None)
    ticks = start_ticks(spawned.pid)
    if ticks is not None and parent_of(spawned.pid) == d.pid:
        # the tick count floors the start time: report the upper end of its 10 ms window
        res.add(f"{prefix}_spawned_proc_s", max(0.0, (ticks + 1) / HZ - b_kill))
    res.add(f"{prefix}_exit_seen_s", exited.t - t_kill if exited else None)
    res.add(f"{prefix}_spawned_s", spawned.t - t_kill)
    res.add(f"{prefix}_running_s", running.t - t_kill if running else None)
    return spawned.t


def ops_run(d: Daemon, res: Results, tracker: Tracker, rounds: int) -> None:
    n = d.layout.instances
    d.launch()
    try:
        web_up = d.wait_status(lambda st: st.get(d.web(), ("", None))[0] == "RUNNING", timeout=60)
        if web_up is None:
            raise RuntimeError(f"{d.title}: the HTTP app is not RUNNING within 60 s")
        for _ in range(1000):  # bounded: the app answers within a few seconds
            try:
                http_pid(d.layout.web_port)
                break
            except (OSError, ValueError):
                time.sleep(0.01)

        def all_running(st: dict[str, tuple[str, int | None]]) -> bool:
            return d.running_sleepers(st) == n

        def all_stopped(st: dict[str, tuple[str, int | None]]) -> bool:
            return d.stopped_sleepers(st) == n

        cpu0 = cpu_seconds(d.pid)
        res.add("api_start_s", timed(d.api_start_sleepers))
        res.add("api_start_cpu_s", cpu_seconds(d.pid) - cpu0)
        if d.wait_status(all_running, timeout=30) is None:
            raise RuntimeError(f"{d.title}: start via the API did not leave {n} RUNNING")
        res.add("api_stop_s", timed(d.api_stop_sleepers))
        if d.wait_status(all_stopped, timeout=30) is None:
            raise RuntimeError(f"{d.title}: stop via the API did not leave {n} STOPPED")
        res.add("cli_start_s", run_cli(d.cli_start_sleepers()))
        if d.wait_status(all_running, timeout=30) is None:
            raise RuntimeError(f"{d.title}: start via the CLI did not leave {n} RUNNING")
        for _ in range(3):
            res.add("cli_noop_s", run_cli(d.cli_noop()))
        for _, pid in d.status().values():
            tracker.note(pid)

        for r in range(rounds):
            kill_round(d, d.sleeper(r % n), res, tracker, "kill", None)
            time.sleep(0.02)
        for _ in range(rounds):
            spawned_at = kill_round(d, d.web(), res, tracker, "web", d.layout.web_port)
            # wait for RUNNING and past the backoff reset (0.5 s; supervisord: startsecs)
            d.wait_status(lambda st: st.get(d.web(), ("", None))[0] == "RUNNING", timeout=15)
            if spawned_at is not None:
                time.sleep(max(0.0, spawned_at + 0.7 - time.time()))
    finally:
        settle(d, res, tracker, "ops")


# --------------------------------------------------------------------------- report


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(values)
    return s[max(0, math.ceil(q * len(s)) - 1)]


def fmt(values: list[float] | None, unit: str) -> str:
    if not values:
        return "-"
    scale, suffix, digits = {
        "ms": (1000.0, " ms", 1),
        "s": (1.0, " s", 3),
        "%": (1.0, " %", 2),
        "MiB": (1.0, " MiB", 1),
        "n": (1.0, "", 0),
        "/s": (1.0, "/s", 1),
        "cpu_ms": (1.0, " ms", 0),
    }[unit]
    med = statistics.median(values) * scale
    if len(values) == 1:
        return f"{med:.{digits}f}{suffix}"
    p90 = pct(values, 0.9) * scale
    return f"{med:.{digits}f} / {p90:.{digits}f}{suffix}"


ROWS: list[tuple[str, str, str]] = [
    # (key, unit, label)
    ("kill_exit_seen_s", "ms", "kill -9 -> exit noticed (log)"),
    ("kill_spawned_s", "ms", "kill -9 -> replacement spawned (log)"),
    ("kill_spawned_proc_s", "ms", "kill -9 -> replacement spawned (/proc, 10 ms ticks)"),
    ("kill_running_s", "ms", "kill -9 -> RUNNING again (log)"),
    ("web_spawned_s", "ms", "HTTP app: kill -9 -> replacement spawned (log)"),
    ("web_running_s", "ms", "HTTP app: kill -9 -> RUNNING again (log)"),
    ("web_served_s", "ms", "HTTP app: kill -9 -> request served by new pid"),
    ("boot_status_s", "s", "launch -> status shows all N RUNNING (10 ms poll)"),
    ("boot_log_polled_s", "s", "  same boot: launch -> last RUNNING (log)"),
    ("boot_log_quiet_s", "s", "launch -> last RUNNING (log, no polling)"),
    ("boot_init_quiet_s", "s", "  of which launch -> daemon's first log line"),
    ("boot_spawn_span_quiet_s", "s", "  first -> last spawn of the N"),
    ("boot_cpu_s", "s", "  daemon CPU time (user+sys) to boot and start N"),
    ("api_start_s", "s", "start N via API (daemon up, autostart off)"),
    ("api_start_cpu_s", "s", "  daemon CPU time (user+sys) for that start"),
    ("cli_start_s", "s", "start N via CLI (supctl/supervisorctl start)"),
    ("cli_noop_s", "s", "  CLI round trip of a no-op, for reference"),
    ("api_stop_s", "s", "stop N via API"),
    ("idle_cpu_pct", "%", "idle CPU of the daemon (N running, no checks)"),
    ("idle_cpu_ms", "cpu_ms", "  CPU time used in the idle window"),
    ("idle_wakeups_per_s", "/s", "  context switches per second while idle"),
    ("rss_mib", "MiB", "daemon RSS with N running"),
    ("shutdown_s", "s", "graceful shutdown (SIGTERM -> daemon exit)"),
    ("leftover_processes", "n", "processes left after shutdown (max)"),
]


def print_table(
    columns: list[tuple[str, Results]], n: int, rounds: int, header_lines: list[str]
) -> None:
    header = ["metric (median / p90)", *[c for c, _ in columns]]
    rows = [header]
    for key, unit, label in ROWS:
        label = re.sub(r"\bN\b", str(n), label)
        cells = []
        for _, res in columns:
            vals = res.samples.get(key)
            if key == "leftover_processes" and vals:
                cells.append(str(int(max(vals))))
            else:
                cells.append(fmt(vals, unit))
        rows.append([label, *cells])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    line = "+".join("-" * (w + 2) for w in widths)
    print()
    print(f"supervisord-lite vs supervisord: {n} instances, {rounds} kill rounds per figure")
    for text in header_lines:
        print(f"  {text}")
    print(line)
    for i, r in enumerate(rows):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
        if i == 0:
            print(line)
    print(line)
    for title, res in columns:
        for note in res.notes:
            print(f"note [{title}]: {note}")


# --------------------------------------------------------------------------- main


def ensure_peers_venv(venv: Path) -> None:
    if (venv / "bin" / "supervisord").exists():
        return
    print(f"creating {venv} and installing supervisor into it ...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "supervisor"], check=True, timeout=600
    )


def our_version() -> str:
    """The commit under test (read-only git), and whether the tree has local changes."""
    try:
        git = ["git", "-C", str(REPO)]
        head = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=30
        ).stdout.strip()
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--", "supervisord_lite"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "(unknown commit)"
    return f"{head}{' + uncommitted changes in supervisord_lite/' if dirty else ''}"


def peer_version(venv: Path) -> str:
    r = subprocess.run(
        [str(venv / "bin" / "supervisord"), "--version"], capture_output=True, text=True, timeout=60
    )
    return r.stdout.strip()


@contextlib.contextmanager
def all_cleaned(daemons: list[Daemon]) -> Iterator[None]:
    try:
        yield
    finally:
        for d in daemons:
            with contextlib.suppress(Exception):
                d.stop(timeout=30)
        reap_orphans()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--instances", type=int, default=100)
    p.add_argument("--rounds", type=int, default=20, help="kill -9 rounds per figure")
    p.add_argument("--idle-seconds", type=float, default=10.0)
    p.add_argument(
        "--peers-venv",
        type=Path,
        default=Path("/tmp/bench-venv"),
        help="venv with supervisor (created with pip if missing)",
    )
    p.add_argument(
        "--ours",
        default=str(REPO / ".venv" / "bin" / "supervisord-lite"),
        help="the supervisord-lite executable",
    )
    p.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where configs, state and logs go (default: a new dir under /tmp)",
    )
    p.add_argument(
        "--base-port", type=int, default=19100, help="loopback ports base .. base+39 are used"
    )
    p.add_argument(
        "--no-startsecs1",
        action="store_true",
        help="skip the second supervisord run with its default startsecs=1",
    )
    p.add_argument("--only", choices=["ours", "supervisord"], default=None)
    p.add_argument(
        "--nice",
        type=int,
        default=0,
        help="change the script's niceness (inherited by both daemons and their children), "
        "e.g. -10 as root to shield the figures from other load on a busy machine",
    )
    args = p.parse_args(argv)
    if not 1 <= args.instances <= 1000 or not 1 <= args.rounds <= 1000:
        p.error("--instances and --rounds must be within 1..1000")
    if not 1024 <= args.base_port <= 32768 - 40:
        p.error("--base-port must leave base..base+39 below 32768")

    if args.nice:
        os.nice(args.nice)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-core-", dir="/tmp"))
    become_subreaper()
    if args.only != "ours":
        ensure_peers_venv(args.peers_venv)
    n, base = args.instances, args.base_port

    def layouts(k: int) -> tuple[Layout, Layout]:
        boot = Layout(n, False, True, base + 10 * k, base + 10 * k + 1)
        ops = Layout(n, True, False, base + 10 * k + 2, base + 10 * k + 3)
        return boot, ops

    plan: list[tuple[str, Callable[[str, Layout], Daemon]]] = []
    if args.only != "supervisord":
        plan.append(
            ("supervisord-lite", lambda sub, lay: Ours(workdir / "ours" / sub, lay, args.ours))
        )
    if args.only != "ours":
        plan.append(
            (
                "supervisord (startsecs=0)",
                lambda sub, lay: Supervisord(
                    workdir / "supervisord-0" / sub, lay, args.peers_venv, 0
                ),
            )
        )
        if not args.no_startsecs1:
            plan.append(
                (
                    "supervisord (startsecs=1)",
                    lambda sub, lay: Supervisord(
                        workdir / "supervisord-1" / sub, lay, args.peers_venv, 1
                    ),
                )
            )

    header = [
        f"supervisord-lite {our_version()}",
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f} at start, niceness {os.nice(0)}",
    ]
    if args.only != "ours":
        header.append(f"supervisord {peer_version(args.peers_venv)} from {args.peers_venv}")
    print(f"workdir {workdir}; psutil {'yes' if psutil else 'no (/proc)'}", file=sys.stderr)
    columns: list[tuple[str, Results]] = []
    tracker = Tracker()
    for k, (title, make) in enumerate(plan):
        res = Results()
        columns.append((title, res))
        boot_layout, ops_layout = layouts(k)
        daemons: list[Daemon] = []
        try:
            with all_cleaned(daemons):
                for sub, poll in (("boot-polled", True), ("boot-quiet", False)):
                    d = make(sub, boot_layout)
                    daemons.append(d)
                    print(f"{title}: {sub} ...", file=sys.stderr)
                    boot_run(d, res, tracker, poll, args.idle_seconds)
                d = make("ops", ops_layout)
                daemons.append(d)
                print(
                    f"{title}: start/stop, {args.rounds}+{args.rounds} kill rounds ...",
                    file=sys.stderr,
                )
                ops_run(d, res, tracker, args.rounds)
        except Exception as exc:  # report what was measured so far, and why it stopped
            res.notes.append(f"aborted: {exc}")
    header.append(f"load average {os.getloadavg()[0]:.2f} at the end")
    print_table(columns, n, args.rounds, header)
    print(f"(logs and configs: {workdir})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
