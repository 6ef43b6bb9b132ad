#!/usr/bin/env python3
"""How fast the control plane answers with many instances, next to supervisord.

Not a test: a script that prints a table. For each size N (default 100 and 1000) it
runs a fresh supervisord-lite with one app of ``instances: N`` sleepers (``sleep
3600``, ``ready: {delay: 0}``) and a fresh supervisord with one program of
``numprocs=N`` (``startsecs=0``), each in its own directory under /tmp, and measures:

* ``supctl status`` / ``supervisorctl status``: wall time of the whole command (a
  new process each run, as an operator types it), ``--cli-runs`` runs;
* ``GET /status`` on supervisord-lite's HTTP API / XML-RPC ``getAllProcessInfo`` on
  supervisord's HTTP server: latency of one request on a kept-alive connection,
  ``--http-runs`` requests.

Median and p99 (nearest rank: with 30 runs p99 is the slowest run). With
``--profile`` (or by itself when our median ``GET /status`` at the largest N is
above ``--profile-above`` ms) it samples the supervisord-lite daemon with py-spy
while a client hammers ``GET /status`` and prints the functions that take the time.

    .venv/bin/python tests/bench/bench_control.py [--sizes 100 1000] [--profile]

supervisord and py-spy are installed into a separate venv (``--venv``, created with
pip when missing). The daemons get RLIMIT_NOFILE raised for N instances. Every
process is ended by its pid: daemons get SIGTERM and are waited for, then every
child pid they reported is checked; the bench is a child subreaper, so anything
left behind re-parents to it and is killed by pid and reported.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import ctypes
import http.client
import json
import math
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import xmlrpc.client
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
DEFAULT_VENV = Path("/tmp/sl-bench-control-venv")
BOOT_DEADLINE = 180.0  # all N instances RUNNING within this
STOP_DEADLINE = 120.0


# --------------------------------------------------------------------------- processes


def become_subreaper() -> None:
    """Orphans of the daemons re-parent to us, so none can escape the final check."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def our_children() -> list[int]:
    pids: list[int] = []
    me = os.getpid()
    for tid in os.listdir(f"/proc/{me}/task"):
        with contextlib.suppress(OSError), open(f"/proc/{me}/task/{tid}/children") as f:
            pids.extend(int(p) for p in f.read().split())
    return pids


def reap_leftovers(known: set[int]) -> list[int]:
    """Kill (by pid) and reap every child of ours not in ``known``; the ones that lived."""
    leaked: list[int] = []
    for pid in our_children():
        if pid in known:
            continue
        if alive(pid):
            leaked.append(pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    return leaked


def nofile_for(instances: int) -> int:
    """File descriptors a supervisor of ``instances`` children may need (pipes, pidfds...)."""
    return max(4096, 8 * instances + 1024)


def raise_nofile(limit: int) -> Callable[[], None]:
    """A preexec_fn that raises RLIMIT_NOFILE to ``limit`` (the hard limit too, as root)."""

    def apply() -> None:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and hard < limit:
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
                return
            limit_now = hard
        else:
            limit_now = limit
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, limit_now), hard))

    return apply


def free_port() -> int:
    """A free TCP port on 127.0.0.1 in 20000-30000."""
    for port in range(20000 + os.getpid() % 9000, 30000):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-30000")


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    pause = 0.02
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(pause)
        pause = min(pause * 1.5, 0.5)


# --------------------------------------------------------------------------- statistics


@dataclass
class Figures:
    samples: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def p99(self) -> float:
        ordered = sorted(self.samples)
        return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


def time_command(argv: list[str], runs: int, env: dict[str, str], budget: float) -> Figures:
    """Wall time of ``argv`` (which must exit 0): ``runs`` runs, fewer if ``budget`` s run out."""
    figures = Figures()
    subprocess.run(argv, capture_output=True, env=env, check=True, timeout=120)  # warm caches
    stop_at = time.monotonic() + budget
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(argv, capture_output=True, env=env, check=True, timeout=120)
        figures.samples.append(time.perf_counter() - t0)
        if time.monotonic() > stop_at and len(figures.samples) >= 5:
            break
    return figures


def time_calls(call: Callable[[], object], runs: int, budget: float) -> Figures:
    """Latency of ``call``: ``runs`` calls, fewer if ``budget`` s run out."""
    figures = Figures()
    call()  # warm up (connection, first cpu_percent sample)
    stop_at = time.monotonic() + budget
    for _ in range(runs):
        t0 = time.perf_counter()
        call()
        figures.samples.append(time.perf_counter() - t0)
        if time.monotonic() > stop_at and len(figures.samples) >= 10:
            break
    return figures


class KeepAliveGet:
    """GET one path again and again on one HTTP/1.1 connection; returns the body size."""

    def __init__(self, port: int, path: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.path = path

    def __call__(self) -> int:
        self.conn.request("GET", self.path)
        resp = self.conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"GET {self.path}: {resp.status}")
        return len(body)

    def close(self) -> None:
        self.conn.close()


# --------------------------------------------------------------------------- the daemons


@dataclass
class Result:
    boot_s: float
    cli: Figures
    http: Figures
    http_bytes: int
    leaked: list[int]
    profile: list[str] = field(default_factory=list)


class Lite:
    """supervisord-lite with N sleepers."""

    name = "supervisord-lite"

    def __init__(self, workdir: Path, instances: int) -> None:
        self.workdir = workdir
        self.instances = instances
        self.state_dir = workdir / "state"
        self.sock = str(self.state_dir / "supctl.sock")
        self.port = free_port()
        config = {
            "supervisor": {
                "state_dir": str(self.state_dir),
                "http": {"listen": f"127.0.0.1:{self.port}"},
                "log": {"format": "json", "level": "warning"},
                "shutdown_timeout": 60,
            },
            "apps": {
                "sleepers": {
                    "command": ["sleep", "3600"],
                    "instances": instances,
                    "ready": {"delay": 0},
                    "stop": {"timeout": 10},
                }
            },
        }
        self.config = workdir / "supervisord-lite.yaml"
        self.config.write_text(json.dumps(config, indent=2))  # JSON is YAML
        self.proc: subprocess.Popen[bytes] | None = None
        self.child_pids: set[int] = set()

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("SUPCTL_SOCKET", "NOTIFY_SOCKET")}
        env["NO_COLOR"] = "1"
        return env

    def start(self) -> float:
        t0 = time.monotonic()
        with open(self.workdir / "daemon.out", "wb") as out:
            self.proc = subprocess.Popen(
                [PYTHON, "-m", "supervisord_lite.cli", "-c", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=str(REPO),
                env=self.env(),
                preexec_fn=raise_nofile(nofile_for(self.instances)),
            )
        wait_until(self._all_running, BOOT_DEADLINE, f"{self.instances} instances RUNNING")
        return time.monotonic() - t0

    def _status(self) -> dict[str, Any] | None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"supervisord-lite exited with {self.proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            conn.request("GET", "/status")
            body = conn.getresponse().read()
            conn.close()
        except OSError:
            return None
        result: dict[str, Any] = json.loads(body)
        return result

    def _all_running(self) -> bool:
        status = self._status()
        if status is None:
            return False
        insts = status["apps"]["sleepers"]["instances"].values()
        self.child_pids |= {i["pid"] for i in insts if i["pid"]}
        return sum(1 for i in insts if i["state"] == "RUNNING") == self.instances

    def cli(self) -> list[str]:
        script = Path(PYTHON).parent / "supctl"
        head = [str(script)] if script.exists() else [PYTHON, "-m", "supervisord_lite.supctl"]
        return [*head, "-s", self.sock, "status"]

    def http_call(self) -> KeepAliveGet:
        return KeepAliveGet(self.port, "/status")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_DEADLINE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError("supervisord-lite did not stop within the deadline") from None


class Supervisord:
    """supervisord (from ``venv``) with one program of numprocs=N sleepers."""

    name = "supervisord"

    def __init__(self, workdir: Path, instances: int, venv: Path) -> None:
        self.workdir = workdir
        self.instances = instances
        self.venv = venv
        self.port = free_port()
        self.sock = workdir / "supervisor.sock"
        self.config = workdir / "supervisord.conf"
        self.config.write_text(
            f"""[unix_http_server]
file={self.sock}

[inet_http_server]
port=127.0.0.1:{self.port}

[supervisord]
nodaemon=true
logfile={workdir}/supervisord.log
pidfile={workdir}/supervisord.pid
childlogdir={workdir}
loglevel=warn
minfds={nofile_for(instances)}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{self.sock}

[program:sleepers]
command=sleep 3600
process_name=%(program_name)s_%(process_num)04d
numprocs={instances}
startsecs=0
stopwaitsecs=10
autorestart=true
"""
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.child_pids: set[int] = set()
        self.rpc = xmlrpc.client.ServerProxy(f"http://127.0.0.1:{self.port}/RPC2")

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def start(self) -> float:
        t0 = time.monotonic()
        with open(self.workdir / "daemon.out", "wb") as out:
            self.proc = subprocess.Popen(
                [str(self.venv / "bin" / "supervisord"), "-n", "-c", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=str(self.workdir),
                preexec_fn=raise_nofile(nofile_for(self.instances)),
            )
        wait_until(self._all_running, BOOT_DEADLINE, f"{self.instances} processes RUNNING")
        return time.monotonic() - t0

    def _all_running(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"supervisord exited with {self.proc.returncode}")
        try:
            infos: list[dict[str, Any]] = self.rpc.supervisor.getAllProcessInfo()  # type: ignore[assignment]
        except (OSError, xmlrpc.client.Fault):
            return False
        self.child_pids |= {i["pid"] for i in infos if i["pid"]}
        return sum(1 for i in infos if i["statename"] == "RUNNING") == self.instances

    def cli(self) -> list[str]:
        return [str(self.venv / "bin" / "supervisorctl"), "-c", str(self.config), "status"]

    def http_call(self) -> Callable[[], object]:
        rpc = xmlrpc.client.ServerProxy(f"http://127.0.0.1:{self.port}/RPC2")

        def call() -> object:
            return rpc.supervisor.getAllProcessInfo()

        return call

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_DEADLINE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError("supervisord did not stop within the deadline") from None


Daemon = Lite | Supervisord


@contextlib.contextmanager
def running(daemon: Daemon) -> Iterator[Daemon]:
    try:
        yield daemon
    finally:
        daemon.stop()


def measure(
    daemon: Daemon, cli_runs: int, http_runs: int, profile: Path | None, budget: float = 60.0
) -> Result:
    with running(daemon):
        boot = daemon.start()
        cli = time_command(daemon.cli(), cli_runs, daemon.env(), budget)
        call = daemon.http_call()
        size = 0
        if isinstance(call, KeepAliveGet):
            size = call()
            figures = time_calls(call, http_runs, budget)
            call.close()
        else:
            answer: Any = call()
            size = len(xmlrpc.client.dumps((answer,), methodresponse=True))
            figures = time_calls(call, http_runs, budget)
        lines: list[str] = []
        if profile is not None and isinstance(daemon, Lite):
            lines = profile_status(daemon, profile)
    leaked = [pid for pid in daemon.child_pids if alive(pid)]
    for pid in leaked:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    leaked += reap_leftovers(set())
    return Result(boot, cli, figures, size, sorted(set(leaked)), lines)


# --------------------------------------------------------------------------- profiling


def profile_status(daemon: Lite, py_spy: Path, seconds: float = 5.0) -> list[str]:
    """Sample the daemon with py-spy while a client hammers GET /status; top functions."""
    assert daemon.proc is not None
    out = daemon.workdir / "profile.txt"
    spy = subprocess.Popen(
        [
            *(str(py_spy), "record", "-p", str(daemon.proc.pid), "-d", f"{seconds:g}"),
            *("-r", "250", "-f", "raw", "-o", str(out), "--nonblocking"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    call = daemon.http_call()
    try:
        while spy.poll() is None:
            call()
    finally:
        call.close()
        if spy.poll() is None:
            spy.kill()
        spy.wait()
    if not out.exists():
        return ["(py-spy produced no profile; is ptrace allowed here?)"]
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()  # the innermost frame: self time
    total = 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        seen: set[str] = set()
        key = ""
        for frame in stack.split(";"):
            name, _, where = frame.partition(" (")
            key = f"{name} ({Path(where.split(':')[0]).name})"
            if key not in seen:
                seen.add(key)
                inclusive[key] += n
        own[key] += n
    interesting = [
        (key, n)
        for key, n in inclusive.most_common()
        if not key.startswith(("<module>", "main (", "run (", "_run", "Runner", "BaseEventLoop"))
        and "Handle._run" not in key
    ]
    shown = [f"{100 * n / total:5.1f}%  {key}" for key, n in interesting[:16]]
    hottest = [f"{100 * n / total:5.1f}%  {key}" for key, n in own.most_common(8)]
    return [
        f"py-spy: {total} samples over {seconds:g}s of back-to-back GET /status",
        "inclusive (the function and what it calls):",
        *shown,
        "self (the innermost frame):",
        *hottest,
    ]


# --------------------------------------------------------------------------- setup


def ensure_venv(venv: Path, want_py_spy: bool) -> None:
    """supervisord (and py-spy) in their own venv, so they never touch ours."""
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    need = [] if (venv / "bin" / "supervisord").exists() else ["supervisor"]
    if want_py_spy and not (venv / "bin" / "py-spy").exists():
        need.append("py-spy")
    if need:
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", *need],
            check=True,
        )


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--cli-runs", type=int, default=30)
    parser.add_argument("--http-runs", type=int, default=200)
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    parser.add_argument(
        "--budget",
        type=float,
        default=60.0,
        help="seconds per measurement; a slow peer gets fewer runs (shown as n=...)",
    )
    parser.add_argument("--no-supervisord", action="store_true", help="only supervisord-lite")
    parser.add_argument("--profile", action="store_true", help="always profile the largest N")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument(
        "--profile-above",
        type=float,
        default=50.0,
        help="profile when our median GET /status at the largest N exceeds this (ms)",
    )
    args = parser.parse_args()
    become_subreaper()
    if not args.no_supervisord or not args.no_profile:
        ensure_venv(args.venv, want_py_spy=not args.no_profile)
    py_spy = args.venv / "bin" / "py-spy"
    results: dict[tuple[str, int], Result] = {}
    with tempfile.TemporaryDirectory(prefix="sl-bench-control-") as tmp:
        for n in args.sizes:
            lite_dir = Path(tmp) / f"lite-{n}"
            lite_dir.mkdir()
            print(f"supervisord-lite, {n} instances ...", file=sys.stderr, flush=True)
            profile = py_spy if args.profile and n == max(args.sizes) else None
            results[("lite", n)] = measure(
                Lite(lite_dir, n), args.cli_runs, args.http_runs, profile
            )
            if (
                profile is None
                and not args.no_profile
                and n == max(args.sizes)
                and results[("lite", n)].http.median * 1000 > args.profile_above
                and py_spy.exists()
            ):
                print("  slow: profiling with py-spy ...", file=sys.stderr, flush=True)
                again = Path(tmp) / f"lite-{n}-profile"
                again.mkdir()
                results[("lite", n)].profile = measure(Lite(again, n), 1, 1, py_spy).profile
            if args.no_supervisord:
                continue
            sd_dir = Path(tmp) / f"supervisord-{n}"
            sd_dir.mkdir()
            print(f"supervisord, {n} processes ...", file=sys.stderr, flush=True)
            daemon = Supervisord(sd_dir, n, args.venv)
            results[("sd", n)] = measure(daemon, args.cli_runs, args.http_runs, None, args.budget)
    print_table(args, results)
    leaks = {k: r.leaked for k, r in results.items() if r.leaked}
    if leaks:
        print(f"\nLEAKED processes (killed): {leaks}")
        return 1
    return 0


def print_table(args: argparse.Namespace, results: dict[tuple[str, int], Result]) -> None:
    sd_version = "-"
    if not args.no_supervisord:
        cp = subprocess.run(
            [str(args.venv / "bin" / "supervisord"), "--version"], capture_output=True, text=True
        )
        sd_version = cp.stdout.strip()
    print(
        f"\nsupctl status vs supervisorctl status ({args.cli_runs} runs each, wall time of "
        f"the command);\nGET /status vs XML-RPC getAllProcessInfo ({args.http_runs} requests, "
        f"one kept-alive connection).\nsupervisord {sd_version}; {os.cpu_count()} CPUs; "
        f"load average {os.getloadavg()[0]:.2f} at the end.\n"
    )
    header = ("N", "metric", "supervisord-lite", "supervisord")
    rows: list[tuple[str, ...]] = []

    def figure(r: Result | None, which: str, stat: str, asked: int) -> str:
        if r is None:
            return "-"
        figs: Figures = getattr(r, which)
        text = ms(getattr(figs, stat))
        return text if len(figs.samples) >= asked else f"{text} (n={len(figs.samples)})"

    for n in args.sizes:
        lite = results[("lite", n)]
        sd = results.get(("sd", n))
        for label, which, stat, asked in (
            ("CLI status, median", "cli", "median", args.cli_runs),
            ("CLI status, p99", "cli", "p99", args.cli_runs),
            ("HTTP status, median", "http", "median", args.http_runs),
            ("HTTP status, p99", "http", "p99", args.http_runs),
        ):
            rows.append(
                (str(n), label, figure(lite, which, stat, asked), figure(sd, which, stat, asked))
            )
        rows.append(
            (
                str(n),
                "HTTP status, body",
                f"{lite.http_bytes / 1024:.0f} KiB",
                f"{sd.http_bytes / 1024:.0f} KiB" if sd else "-",
            )
        )
        rows.append(
            (
                str(n),
                "boot to all RUNNING",
                f"{lite.boot_s:.1f} s",
                f"{sd.boot_s:.1f} s" if sd else "-",
            )
        )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    for n in args.sizes:
        for line in results[("lite", n)].profile:
            print(line if line.startswith(("py-spy", "inclusive", "self")) else f"  {line}")


if __name__ == "__main__":
    sys.exit(main())
