#!/usr/bin/env python3
"""A realistic fleet: web apps with liveness checks plus workers, four supervisors.

Not a test: a script that prints a table (one column per supervisor and load).

    .venv/bin/python tests/bench/bench_fleet.py [--apps 100] [--sleepers 800]
        [--conns 0,5000] [--window 30] [--only ours,supervisord,circus,pm2]

The workload, the same for every supervisor in one run:

* ``--apps`` web apps x primary+backup (tests/bench/httpapp.py, stdlib, one socket
  per app): ours runs both instances of an app on one socket it owns, with an HTTP
  readiness check and an HTTP liveness check every ``--interval`` s (attributed to
  the instance that accepted it: the sock_diag lookup); supervisord, circus and pm2
  have no socket shared by two programs (without fcgi-program / circus sockets and
  an app written for them), so each of their web processes binds a port of its own;
  none of them has an HTTP liveness check of its own (supervisord: only through the
  superlance plugin; circus: one HttpObserver *process* per URL; pm2: none), so they
  run without one, which the table says;
* ``--sleepers`` ``sleep 3600`` workers;
* with each count of ``--conns`` unrelated established loopback connections held
  open on the host (by helper processes of this bench, both ends on 127.0.0.1).

Measured, per supervisor and connection count: boot (launch -> every process up), the
daemon's CPU over ``--window`` s once settled (ours: also per probe), its RSS, the
status API (ours ``GET /status``, supervisord XML-RPC ``getAllProcessInfo``, circus
``list`` over ZeroMQ for every watcher, pm2 ``pm2 jlist``: it has no other API), the CLI
status wall time (median of 9, next to ``python -c pass``), and ``--rounds`` kill -9 of
web processes: kill -> new pid under the daemon (polled every 0.5 ms) and kill -> ready
(ours: its RUNNING log line for the new pid, after the readiness check; others: the new
pid answers HTTP on its port). With ``--conns``, the cost of one attribution lookup is
printed too: sock_diag against the former parse of /proc/net/tcp{,6}.

Bounded: every wait has a deadline; every process is ended by its pid (this script is
a child subreaper); pm2's daemon runs with its own PM2_HOME and is killed with
``pm2 kill`` and then by pid.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import xmlrpc.client
from collections.abc import Callable
from pathlib import Path
from typing import Any

from supervisord_lite.host import fds

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent.parent))

import bench_core as core  # noqa: E402
import bench_scale as scale  # noqa: E402

REPO = HERE.parent.parent
HTTP_APP = HERE / "httpapp.py"

_HOLDER = r"""
import socket, sys
n = int(sys.argv[1])
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1024)
keep = []
for _ in range(n):
    c = socket.create_connection(srv.getsockname())
    keep.append(c); keep.append(srv.accept()[0])
sys.stdout.write("ready\n"); sys.stdout.flush()
sys.stdin.read()
"""


class Conns:
    """``n`` established loopback connections held by helper processes (4,000 each)."""

    def __init__(self, n: int) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        left = n
        while left > 0:
            k = min(4000, left)
            left -= k
            p = subprocess.Popen(
                [sys.executable, "-c", _HOLDER, str(k)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            self.procs.append(p)
        for p in self.procs:
            assert p.stdout is not None
            if p.stdout.readline().strip() != "ready":
                self.close()
                raise RuntimeError("connection holder failed")

    def pids(self) -> set[int]:
        return {p.pid for p in self.procs}

    def close(self) -> None:
        for p in self.procs:
            with contextlib.suppress(OSError):
                if p.stdin:
                    p.stdin.close()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        self.procs.clear()


def lookup_costs(rounds: int = 200) -> tuple[float, float]:
    """µs of CPU per attribution lookup of one real connection: (sock_diag, /proc)."""
    import socket

    from supervisord_lite.host import sockdiag

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    cli = socket.create_connection(srv.getsockname())
    conn, _ = srv.accept()
    try:
        local, peer = srv.getsockname(), cli.getsockname()
        t = time.process_time()
        for _ in range(rounds):
            assert sockdiag.server_inode(local, peer)
        a = (time.process_time() - t) / rounds
        t = time.process_time()
        for _ in range(max(1, rounds // 20)):
            assert fds._server_socket_inode(local[1], peer[1])
        b = (time.process_time() - t) / max(1, rounds // 20)
        return a * 1e6, b * 1e6
    finally:
        for s in (conn, cli, srv):
            s.close()


# --------------------------------------------------------------------------- daemons


class Fleet:
    title = ""
    kind = ""

    def __init__(self, d: Path, args: argparse.Namespace) -> None:
        self.dir = d
        self.dir.mkdir(parents=True, exist_ok=True)
        self.args = args
        self.apps: int = args.apps
        self.sleepers: int = args.sleepers
        self.base: int = args.base_port
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.dir / "daemon.log"
        self.tail = core.LogTail(self.log, core.parse_ours)
        self.write_config()

    @property
    def total(self) -> int:
        return 2 * self.apps + self.sleepers

    def web_port(self, app: int, backup: bool) -> int:
        """Peers: a port per process; ours: one per app (both instances on it)."""
        return self.base + app + (self.apps if backup else 0)

    def web_cmd(self, port: int | None) -> list[str]:
        cmd = [sys.executable, "-I", "-S", str(HTTP_APP)]
        return cmd + (["--port", str(port)] if port else [])

    def write_config(self) -> None:
        raise NotImplementedError

    def argv(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def daemon_pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def launch(self) -> None:
        out = open(self.dir / "daemon.out", "wb")  # noqa: SIM115 (closed with the daemon)
        self.proc = subprocess.Popen(
            self.argv(),
            stdout=out,
            stderr=out if self.kind != "ours" else open(self.log, "wb"),  # noqa: SIM115
            stdin=subprocess.DEVNULL,
            cwd=self.dir,
            env=self.env(),
            start_new_session=True,
        )
        out.close()

    def up(self) -> bool:
        """Every process exists (ours: every instance RUNNING, after its check)."""
        return len(core.children_of(self.daemon_pid())) >= self.total

    def status_once(self) -> int:
        """One status request; the number of processes it listed."""
        raise NotImplementedError

    def cli_status(self) -> list[str]:
        raise NotImplementedError

    def ready_after(self, victim: int, new_pid: int, port: int, deadline: float) -> float | None:
        """time.time() at which ``new_pid`` serves (peers: it answers on its port)."""
        while time.time() < deadline:
            with contextlib.suppress(OSError, ValueError):
                if core.http_pid(port, timeout=1.0) == new_pid:
                    return time.time()
            time.sleep(0.002)
        return None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class Ours(Fleet):
    title = "supervisord-lite"
    kind = "ours"

    def write_config(self) -> None:
        a = self.args
        text = f"""\
supervisor:
  state_dir: {self.dir / "state"}
  http: {{listen: "127.0.0.1:{self.base - 1}"}}
  log: {{format: json, level: info}}
  shutdown_timeout: 60
apps:
  sleepers:
    command: ["sleep", "3600"]
    instances: {self.sleepers}
    ready: {{delay: 0}}
    stop: {{signal: TERM, timeout: 10}}
"""
        for i in range(self.apps):
            text += f"""\
  web{i}:
    command: {json.dumps(self.web_cmd(None))}
    instances: [primary, backup]
    listen: "127.0.0.1:{self.web_port(i, False)}"
    ready: {{http: "http://{{host}}:{{port}}/", timeout: 10}}
    health: {{http: "http://{{host}}:{{port}}/", interval: {a.interval}, timeout: 2, failures: 3}}
    stop: {{signal: TERM, timeout: 5}}
"""
        (self.dir / "config.yaml").write_text(text)

    def argv(self) -> list[str]:
        return [
            str(REPO / ".venv" / "bin" / "supervisord-lite"),
            "-c",
            str(self.dir / "config.yaml"),
        ]

    def _status(self) -> dict[str, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.base - 1, timeout=60)
        try:
            conn.request("GET", "/status")
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200:
                raise RuntimeError(f"/status answered {resp.status}")
        finally:
            conn.close()
        doc: dict[str, Any] = json.loads(body)
        return doc

    def up(self) -> bool:
        try:
            doc = self._status()
        except (OSError, ValueError, RuntimeError):
            return False
        states = [i["state"] for a in doc["apps"].values() for i in a["instances"].values()]
        return len(states) == self.total and all(s == "RUNNING" for s in states)

    def status_once(self) -> int:
        doc = self._status()
        return sum(len(a["instances"]) for a in doc["apps"].values())

    def cli_status(self) -> list[str]:
        supctl = REPO / ".venv" / "bin" / "supctl"
        return [str(supctl), "-s", str(self.dir / "state" / "supctl.sock"), "status"]

    def ready_after(self, victim: int, new_pid: int, port: int, deadline: float) -> float | None:
        e = self.tail.wait_for(
            lambda e: e.kind == "running" and e.pid == new_pid, max(0.0, deadline - time.time())
        )
        return e.t if e else None


class Supervisord(Fleet):
    title = "supervisord"
    kind = "supervisord"

    @property
    def conf(self) -> str:
        return str(self.dir / "supervisord.conf")

    def write_config(self) -> None:
        (self.dir / "childlogs").mkdir(exist_ok=True)
        text = f"""\
[inet_http_server]
port = 127.0.0.1:{self.base - 1}

[supervisord]
logfile = {self.log}
loglevel = info
pidfile = {self.dir / "supervisord.pid"}
childlogdir = {self.dir / "childlogs"}
nodaemon = true
minfds = 8192

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl = http://127.0.0.1:{self.base - 1}

[program:sleepers]
command = sleep 3600
process_name = %(program_name)s_%(process_num)d
numprocs = {self.sleepers}
startsecs = 0
redirect_stderr = true
"""
        for i in range(self.apps):
            for backup in (False, True):
                cmd = " ".join(self.web_cmd(self.web_port(i, backup)))
                text += f"""
[program:web{i}_{"backup" if backup else "primary"}]
command = {cmd}
startsecs = 0
redirect_stderr = true
"""
        Path(self.conf).write_text(text)

    def argv(self) -> list[str]:
        return [str(self.args.peers_venv / "bin" / "supervisord"), "-c", self.conf]

    def status_once(self) -> int:
        proxy = xmlrpc.client.ServerProxy(f"http://127.0.0.1:{self.base - 1}/RPC2")
        return len(list(proxy.supervisor.getAllProcessInfo()))  # type: ignore[arg-type]

    def cli_status(self) -> list[str]:
        return [str(self.args.peers_venv / "bin" / "supervisorctl"), "-c", self.conf, "status"]


_CIRCUS_LIST = r"""
import json, sys, time
from circus.client import CircusClient
c = CircusClient(endpoint=sys.argv[1], timeout=60)
times, n = [], 0
for _ in range(int(sys.argv[2])):
    t = time.perf_counter()
    r = c.call({"command": "status"})
    times.append(time.perf_counter() - t)
    n = len(r.get("statuses", {}))
print(json.dumps({"times": times, "n": n}))
"""


class Circus(Fleet):
    title = "circus"
    kind = "circus"

    @property
    def endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.base - 1}"

    def write_config(self) -> None:
        text = f"""\
[circus]
endpoint = {self.endpoint}
pubsub_endpoint = tcp://127.0.0.1:{self.base - 2}
stats_endpoint = tcp://127.0.0.1:{self.base - 3}
check_delay = 1

[watcher:sleepers]
cmd = sleep 3600
numprocesses = {self.sleepers}
warmup_delay = 0
"""
        for i in range(self.apps):
            for backup in (False, True):
                text += f"""
[watcher:web{i}_{"backup" if backup else "primary"}]
cmd = {" ".join(self.web_cmd(self.web_port(i, backup)))}
numprocesses = 1
warmup_delay = 0
"""
        (self.dir / "circus.ini").write_text(text)

    def argv(self) -> list[str]:
        return [str(self.args.peers_venv / "bin" / "circusd"), str(self.dir / "circus.ini")]

    def status_times(self, count: int) -> list[float]:
        r = subprocess.run(
            [
                str(self.args.peers_venv / "bin" / "python"),
                "-c",
                _CIRCUS_LIST,
                self.endpoint,
                str(count),
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if r.returncode != 0:
            raise RuntimeError(f"circus client: {r.stderr[-300:]}")
        return [float(x) for x in json.loads(r.stdout)["times"]]

    def cli_status(self) -> list[str]:
        return [
            str(self.args.peers_venv / "bin" / "circusctl"),
            "--endpoint",
            self.endpoint,
            "status",
        ]


class Pm2(Fleet):
    title = "pm2"
    kind = "pm2"

    @property
    def home(self) -> Path:
        return self.dir / "pm2home"

    def env(self) -> dict[str, str]:
        return {**os.environ, "PM2_HOME": str(self.home)}

    def write_config(self) -> None:
        apps: list[dict[str, Any]] = []
        for i in range(self.sleepers):
            apps.append(
                {
                    "name": f"sleeper{i}",
                    "script": "sleep",
                    "args": "3600",
                    "interpreter": "none",
                    "autorestart": True,
                }
            )
        for i in range(self.apps):
            for backup in (False, True):
                cmd = self.web_cmd(self.web_port(i, backup))
                apps.append(
                    {
                        "name": f"web{i}_{'backup' if backup else 'primary'}",
                        "script": cmd[0],
                        "args": cmd[1:],
                        "interpreter": "none",
                        "autorestart": True,
                    }
                )
        (self.dir / "ecosystem.json").write_text(json.dumps({"apps": apps}))

    def pm2(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.args.pm2), *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def launch(self) -> None:
        self.home.mkdir(exist_ok=True)
        r = self.pm2("start", str(self.dir / "ecosystem.json"), timeout=600)
        if r.returncode != 0:
            raise RuntimeError(f"pm2 start: {r.stderr[-300:]}")

    def daemon_pid(self) -> int:
        return int((self.home / "pm2.pid").read_text())

    def status_times(self, count: int) -> list[float]:
        times = []
        for _ in range(count):
            t = time.perf_counter()
            r = self.pm2("jlist", timeout=120)
            times.append(time.perf_counter() - t)
            if r.returncode != 0:
                raise RuntimeError("pm2 jlist failed")
        return times

    def cli_status(self) -> list[str]:
        return [str(self.args.pm2), "status"]

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            pid = self.daemon_pid()
            self.pm2("kill", timeout=120)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


# --------------------------------------------------------------------------- phases


def web_children(pid: int, among: set[int] | None = None) -> dict[int, int]:
    """pid -> port of the daemon's web children (ours: the app's shared port)."""
    out: dict[int, int] = {}
    for p in among if among is not None else core.children_of(pid):
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if any(a.endswith(b"httpapp.py") for a in argv):
            port = int(argv[argv.index(b"--port") + 1]) if b"--port" in argv else 0
            if not port:
                with contextlib.suppress(OSError), open(f"/proc/{p}/environ", "rb") as f:
                    for kv in f.read().split(b"\0"):
                        if kv.startswith(b"PORT="):
                            port = int(kv[5:])
            out[p] = port
    return out


def _active_opens() -> int:
    """The host's count of TCP connects so far (/proc/net/snmp, Tcp: ActiveOpens)."""
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Tcp:")]
    return int(rows[1][rows[0].index("ActiveOpens")])


def run_one(f: Fleet, conns: int, args: argparse.Namespace, col: dict[str, Any]) -> None:
    t0 = time.time()
    f.launch()
    deadline = t0 + args.boot_timeout
    while time.time() < deadline:
        if f.proc is not None and f.proc.poll() is not None:
            raise RuntimeError(f"{f.title} exited at start; see {f.dir}")
        with contextlib.suppress(OSError, ValueError):
            if f.up():
                break
        time.sleep(0.2)
    else:
        raise RuntimeError(f"{f.title}: not all up within {args.boot_timeout:g} s")
    col["boot_s"] = time.time() - t0
    pid = f.daemon_pid()
    time.sleep(args.settle)
    c0, w0, o0 = core.cpu_seconds(pid), time.monotonic(), _active_opens()
    time.sleep(args.window)
    c1, w1, o1 = core.cpu_seconds(pid), time.monotonic(), _active_opens()
    col["cpu_pct"] = 100.0 * (c1 - c0) / (w1 - w0)
    if f.kind == "ours":
        probes = 2 * f.apps * (w1 - w0) / args.interval
        col["cpu_per_probe_ms"] = 1000.0 * (c1 - c0) / probes
        # host-wide connects in the window (the probes are nearly all of them here):
        # how many connections one verdict took. A probe the other instance accepted
        # is credited to that one, which then needs no connection of its own, and the
        # shared grid of ticks delays each check by up to a tick (0.25 s): below 1 is
        # possible. Hence CPU per connection too.
        col["conns_per_verdict"] = (o1 - o0) / probes
        if o1 > o0:
            col["cpu_per_conn_ms"] = 1000.0 * (c1 - c0) / (o1 - o0)
    col["rss_mib"] = core.rss_bytes(pid) / 2**20
    if isinstance(f, Circus | Pm2):
        times = f.status_times(args.status_requests)
    else:
        times = []
        for _ in range(args.status_requests):
            t = time.perf_counter()
            f.status_once()
            times.append(time.perf_counter() - t)
    col["status_p50"], col["status_p99"] = core.pct(times, 0.5), core.pct(times, 0.99)
    cli = []
    for _ in range(9):
        t = time.perf_counter()
        subprocess.run(f.cli_status(), capture_output=True, env=f.env(), timeout=300, check=False)
        cli.append(time.perf_counter() - t)
    col["cli_s"] = statistics.median(cli)
    respawn: list[float] = []
    ready: list[float] = []
    killed: set[int] = set()
    for r in range(args.rounds):
        webs = web_children(pid)
        candidates = sorted(p for p in webs if p not in killed)
        if not candidates:
            break
        victim = candidates[(r * 7919) % len(candidates)]
        port = webs[victim]
        before = set(core.children_of(pid))
        f.tail.poll()
        t_kill = time.time()
        os.kill(victim, signal.SIGKILL)
        killed.add(victim)
        new_pid = None
        for _ in range(20000):  # 0.5 ms steps, 10 s
            fresh = set(core.children_of(pid)) - before
            new = [p for p in fresh if p in web_children(pid, fresh)] if fresh else []
            if new:
                new_pid = new[0]
                respawn.append(time.time() - t_kill)
                break
            time.sleep(0.0005)
        if new_pid is None:
            col.setdefault("notes", []).append(f"round {r}: no respawn within 10 s")
            continue
        killed.add(new_pid)
        t_ready = f.ready_after(victim, new_pid, port, t_kill + 15)
        if t_ready is not None:
            ready.append(t_ready - t_kill)
        time.sleep(0.3)
    col["respawn"], col["ready"] = respawn, ready


def cleanup(f: Fleet, keep: set[int]) -> int:
    """Stop the daemon; kill (by pid) whatever it left; the count of leftovers."""
    pids: set[int] = set()
    with contextlib.suppress(Exception):
        dp = f.daemon_pid()
        pids = {dp, *core.children_of(dp)}
    f.stop()
    left = [p for p in pids if core.alive(p)]
    for p in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)
    # orphans re-parented to us (we are a subreaper), but not our connection holders
    for _ in range(50):
        orphans = [p for p in core.children_of(os.getpid()) if p not in keep]
        if not orphans:
            break
        for p in orphans:
            if core.alive(p) and p not in left:
                left.append(p)
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(p, os.WNOHANG)
        time.sleep(0.05)
    return len(left)


def dist(v: list[float] | None) -> str:
    if not v:
        return "-"
    return f"{1000 * statistics.median(v):.1f} / {1000 * core.pct(v, 0.99):.1f} ms"


ROWS: list[tuple[str, str, Callable[[Any], str]]] = [
    ("checks", "liveness checks", str),
    ("boot_s", "launch -> all up", lambda v: f"{v:.1f} s"),
    ("cpu_pct", "daemon CPU (settled window)", lambda v: f"{v:.2f} %"),
    ("cpu_per_probe_ms", "  daemon CPU per probe", lambda v: f"{v:.2f} ms"),
    ("conns_per_verdict", "  connections per verdict", lambda v: f"{v:.2f}"),
    ("cpu_per_conn_ms", "  daemon CPU per connection", lambda v: f"{v:.2f} ms"),
    ("rss_mib", "daemon RSS", lambda v: f"{v:.1f} MiB"),
    ("status_p50", "status API p50", lambda v: f"{1000 * v:.1f} ms"),
    ("status_p99", "status API p99", lambda v: f"{1000 * v:.1f} ms"),
    ("cli_s", "CLI status (wall, median of 9)", lambda v: f"{1000 * v:.0f} ms"),
    ("respawn", "kill -9 -> respawn med / p99", dist),
    ("ready", "kill -9 -> ready med / p99", dist),
    ("leftover", "processes left after stop", str),
]


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--apps", type=int, default=100)
    p.add_argument("--sleepers", type=int, default=800)
    p.add_argument("--conns", default="0,5000", help="comma-separated counts")
    p.add_argument("--interval", type=float, default=5.0)
    p.add_argument("--window", type=float, default=30.0)
    p.add_argument("--settle", type=float, default=10.0)
    p.add_argument("--status-requests", type=int, default=50)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--boot-timeout", type=float, default=240.0)
    p.add_argument("--only", default="ours,supervisord,circus,pm2")
    p.add_argument("--peers-venv", type=Path, default=Path("/tmp/bench-venv"))
    p.add_argument("--pm2", type=Path, default=Path("/tmp/pm2-prefix/bin/pm2"))
    p.add_argument("--base-port", type=int, default=24001, help="uses base-3 .. base+2*apps")
    args = p.parse_args()
    kinds = [k for k in args.only.split(",") if k]
    counts = [int(c) for c in args.conns.split(",") if c.strip()]
    if not (1 <= args.apps <= 500 and 0 <= args.sleepers <= 2000 and args.rounds <= 100):
        p.error("--apps 1..500, --sleepers 0..2000, --rounds <= 100")
    if any(not 0 <= c <= 20000 for c in counts) or not 1 <= args.window <= 600:
        p.error("--conns each 0..20000, --window 1..600")
    want = [pkg for k, pkg in (("supervisord", "supervisor"), ("circus", "circus")) if k in kinds]
    scale.ensure_peers_venv(args.peers_venv, want)
    limits = scale.raise_nofile()
    # bytecode as an installed package has it (this environment may set
    # PYTHONDONTWRITEBYTECODE, which would make every daemon start compile our sources)
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(REPO / "supervisord_lite")], check=False
    )
    core.become_subreaper()
    workdir = Path(tempfile.mkdtemp(prefix="bench-fleet-", dir="/tmp"))
    classes = {"ours": Ours, "supervisord": Supervisord, "circus": Circus, "pm2": Pm2}
    head = [
        f"supervisord-lite {core.our_version()}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"{args.apps} apps x 2 web + {args.sleepers} sleepers; checks every {args.interval:g} s; "
        f"{args.window:g} s window; {args.rounds} kills; {limits}",
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f} at start",
    ]
    bare: list[float] = []
    for _ in range(9):
        t = time.perf_counter()
        subprocess.run([str(REPO / ".venv" / "bin" / "python"), "-c", "pass"], check=False)
        bare.append(time.perf_counter() - t)
    head.append(
        f"python -c pass (the interpreter supctl runs on): {1000 * statistics.median(bare):.0f} ms"
        " (median of 9)"
    )
    cols: list[tuple[str, dict[str, Any]]] = []
    lookups: list[str] = []
    for n in counts:
        conns = Conns(n) if n else None
        try:
            if n:
                a, b = lookup_costs()
                lookups.append(f"{n} connections: sock_diag {a:.0f} µs, /proc/net/tcp {b:.0f} µs")
            for k in kinds:
                col: dict[str, Any] = {
                    "checks": f"HTTP every {args.interval:g}s" if k == "ours" else "none (has none)"
                }
                title = f"{classes[k].title} {n // 1000}k conns" if n else f"{classes[k].title}"
                print(f"{title} ...", file=sys.stderr)
                f = classes[k](workdir / f"{k}-{n}", args)
                try:
                    run_one(f, n, args, col)
                except Exception as exc:  # report what was measured and why it stopped
                    col.setdefault("notes", []).append(f"aborted: {exc}")
                finally:
                    col["leftover"] = cleanup(f, conns.pids() if conns else set())
                cols.append((title, col))
        finally:
            if conns is not None:
                conns.close()
    head.append(f"load average {os.getloadavg()[0]:.2f} at the end")
    rows = [["metric", *[t for t, _ in cols]]]
    for key, label, fmt in ROWS:
        rows.append([label, *[("-" if c.get(key) in (None, []) else fmt(c[key])) for _, c in cols]])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print()
    for h in head:
        print(h)
    for i, r in enumerate(rows):
        print("| " + " | ".join(x.ljust(w) for x, w in zip(r, widths, strict=True)) + " |")
        if i == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for line in lookups:
        print(f"attribution lookup with {line} (CPU per lookup)")
    for title, c in cols:
        for note in c.get("notes", []):
            print(f"note [{title}]: {note}")
    print(f"(configs and logs: {workdir})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
