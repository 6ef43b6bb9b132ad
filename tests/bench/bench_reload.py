"""Reload benchmark: supervisord-lite's hot swap vs supervisord's restart vs circus's reload.

Not a test: it prints a table. Each system runs the same real gunicorn app
(tests/apps/wsgi_hello.py, 2 sync workers, --graceful-timeout 5) on a loopback port
under steady load from ``wrk -t2 -c32`` (or, when wrk is missing, a Python asyncio
client with 32 connections), first with nothing happening (steady), then during N
reloads (default 20), one after another, each waiting until the previous one is over.

- **supervisord-lite**: primary + backup on one supervisor-held socket (LISTEN_FDS),
  ready by an HTTP check; ``supctl reload web``.
- **supervisord**: one ``[program:web]`` (gunicorn binds the port itself);
  ``supervisorctl restart web``.
- **circus**: one watcher using a circus-managed socket (``--bind fd://$(circus.sockets.web)``);
  ``circusctl reload web`` (graceful: new processes first, then the old ones are stopped).

Columns: requests served during the reloads; failed requests (connect/read/write errors,
timeouts, non-2xx); the longest time during which no response at all arrived; p99
latency while steady and during the reloads; and the time from the reload command to
the old generation's processes being gone (median / max over the reloads).

Run: ``.venv/bin/python tests/bench/bench_reload.py [--reloads 20]
[--systems lite,supervisord,circus] [--client auto|wrk|python]``.
supervisor and circus are installed by this script into a separate venv under /tmp
(created when missing); wrk comes from the OS (``apt-get install -y wrk``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable  # the dev venv's python: it has gunicorn and supervisord-lite
OTHERS_VENV = Path(tempfile.gettempdir()) / "supervisord-lite-bench-venv"
GUNICORN = [PY, "-m", "gunicorn", "tests.apps.wsgi_hello:app", "-w", "2",
            "--graceful-timeout", "5", "--no-control-socket"]  # fmt: skip
CONNECTIONS = 32
READY_DEADLINE = 60.0  # seconds a system may take to serve after it starts
RELOAD_DEADLINE = 60.0  # seconds one reload (and the old generation's exit) may take


# --------------------------------------------------------------------------- utilities


def free_port() -> int:
    for _ in range(1000):
        port = random.randint(20000, 30000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-30000")


def wait_until(what: str, predicate: Callable[[], object], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.02)


def serves(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def gunicorn_masters(supervisor_pid: int) -> set[int]:
    """The supervisor's direct children that run gunicorn (one per instance/process)."""
    found: set[int] = set()
    try:
        children = psutil.Process(supervisor_pid).children()
    except psutil.Error:
        return found
    for child in children:
        try:
            if "gunicorn" in " ".join(child.cmdline()) and child.status() != psutil.STATUS_ZOMBIE:
                found.add(child.pid)
        except psutil.Error:
            continue
    return found


def run(argv: list[str], timeout: float = RELOAD_DEADLINE) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                          cwd=str(REPO))  # fmt: skip


def ensure_others_venv() -> Path:
    """A venv with supervisor and circus (kept apart from the project's dev venv)."""
    bin_dir = OTHERS_VENV / "bin"
    if (bin_dir / "supervisord").exists() and (bin_dir / "circusd").exists():
        return bin_dir
    print(f"creating {OTHERS_VENV} with supervisor and circus (pip)...", flush=True)
    subprocess.run(["python3", "-m", "venv", str(OTHERS_VENV)], check=True)
    subprocess.run([str(bin_dir / "pip"), "install", "-q", "--disable-pip-version-check",
                    "supervisor", "circus"], check=True)  # fmt: skip
    return bin_dir


# --------------------------------------------------------------------------- load clients


@dataclass
class LoadResult:
    requests: int
    failures: int
    max_gap_ms: float
    p99_ms: float
    detail: str = ""
    seconds: float = 0.0  # how long the load ran

    @property
    def rate(self) -> float:
        return (self.requests - self.failures) / self.seconds if self.seconds else 0.0


WRK_SCRIPT = r"""
-- Records which milliseconds saw a response (per thread), for the longest gap.
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts)  -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000 + math.floor(tonumber(ts.tv_nsec) / 1000000)
end

local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) seen = {} end
function response(status, headers, body) seen[now_ms()] = true end

function done(summary, latency, requests)
  local all, keys = {}, {}
  for _, t in ipairs(threads) do
    for ms, _ in pairs(t:get("seen")) do
      if not all[ms] then all[ms] = true; table.insert(keys, ms) end
    end
  end
  table.sort(keys)
  local gap = 0
  for i = 2, #keys do
    if keys[i] - keys[i - 1] > gap then gap = keys[i] - keys[i - 1] end
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %d, "connect": %d, "read": %d, "write": %d, "timeout": %d, ' ..
    '"status": %d, "p99_us": %d, "gap_ms": %d}\n',
    summary.requests, e.connect, e.read, e.write, e.timeout, e.status,
    latency:percentile(99.0), gap))
end
"""


class WrkLoad:
    """``wrk -t2 -c32`` until stopped (SIGINT makes it report)."""

    def __init__(self, port: int, workdir: Path) -> None:
        script = workdir / "bench.lua"
        script.write_text(WRK_SCRIPT)
        self.proc = subprocess.Popen(
            ["wrk", "-t2", f"-c{CONNECTIONS}", "-d600s", "--timeout", "10s", "-s", str(script),
             f"http://127.0.0.1:{port}/"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip

    def stop(self) -> LoadResult:
        self.proc.send_signal(signal.SIGINT)
        out, _ = self.proc.communicate(timeout=60)
        line = next((x for x in out.splitlines() if x.startswith("BENCH ")), None)
        if line is None:
            raise RuntimeError(f"wrk printed no result:\n{out}")
        r = json.loads(line[6:])
        socket_errors = r["connect"] + r["read"] + r["write"] + r["timeout"]
        failures = socket_errors + r["status"]  # summary.requests counts responses only
        detail = ", ".join(f"{k} {r[k]}" for k in ("connect", "read", "write", "timeout",
                                                   "status") if r[k])  # fmt: skip
        total = r["requests"] + socket_errors
        return LoadResult(total, failures, float(r["gap_ms"]), r["p99_us"] / 1000, detail)


class PythonLoad:
    """32 asyncio connections (a new connection per request) in a thread, until stopped."""

    def __init__(self, port: int, workdir: Path) -> None:
        self.port = port
        self.stamps: list[float] = []
        self.latencies: list[float] = []
        self.errors: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self._thread.start()

    async def _one(self) -> None:
        request = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", self.port), 10
                )
                writer.write(request)
                data = await asyncio.wait_for(reader.read(), 10)
                writer.close()
                status = data.split(b" ", 2)[1] if data.startswith(b"HTTP/") else b"none"
                error = None if status == b"200" else f"status {status.decode()}"
            except (OSError, TimeoutError) as exc:
                error = type(exc).__name__
            now = time.monotonic()
            if error is None:
                self.stamps.append(now)
                self.latencies.append(now - t0)
            else:
                self.errors[error] = self.errors.get(error, 0) + 1
                await asyncio.sleep(0.001)

    async def _main(self) -> None:
        await asyncio.gather(*(self._one() for _ in range(CONNECTIONS)))

    def stop(self) -> LoadResult:
        self._stop.set()
        self._thread.join(30)
        stamps = sorted(self.stamps)
        gap = max((b - a for a, b in itertools.pairwise(stamps)), default=0.0)
        lat = sorted(self.latencies)
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float("nan")
        failures = sum(self.errors.values())
        detail = ", ".join(f"{k} {v}" for k, v in self.errors.items())
        return LoadResult(len(lat) + failures, failures, gap * 1000, p99 * 1000, detail)


# --------------------------------------------------------------------------- the systems


class System:
    name = ""
    reload_command = ""

    def __init__(self, workdir: Path, port: int) -> None:
        self.workdir = workdir
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        raise NotImplementedError

    def reload(self) -> None:
        raise NotImplementedError

    def settled(self) -> bool:
        """The reload is over (the new generation serves; no swap in progress)."""
        return True

    def masters(self) -> set[int]:
        assert self.proc is not None
        return gunicorn_masters(self.proc.pid)

    def _spawn(self, argv: list[str]) -> None:
        log = open(self.workdir / "daemon.out", "wb")  # noqa: SIM115 (kept open by the child)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LISTEN_", "NOTIFY_"))}
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO),
                                     env=env, start_new_session=True)  # fmt: skip
        log.close()

    def wait_serving(self, expected_masters: int) -> None:
        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                out = (self.workdir / "daemon.out").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{out}")
            return len(self.masters()) == expected_masters and serves(self.port) and self.settled()

        wait_until(f"{self.name} to serve", ready, READY_DEADLINE)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        everything = [self.proc.pid]
        with contextlib.suppress(psutil.Error):
            everything += [p.pid for p in psutil.Process(self.proc.pid).children(recursive=True)]
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        for pid in everything:  # only what we started, by pid
            if alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


class Lite(System):
    name = "supervisord-lite"
    reload_command = "supctl reload web"

    def start(self) -> None:
        self.http_port = free_port()
        self.sock = str(self.workdir / "state" / "supctl.sock")
        config = {
            "supervisor": {
                "state_dir": str(self.workdir / "state"),
                "http": {"listen": f"127.0.0.1:{self.http_port}"},
                "log": {"format": "json", "level": "warning"},
            },
            "apps": {
                "web": {
                    "command": GUNICORN,
                    "cwd": str(REPO),
                    "instances": ["primary", "backup"],
                    "listen": f"127.0.0.1:{self.port}",
                    "ready": {"http": "http://{host}:{port}/", "timeout": 60},
                    "stop": {"timeout": 10},
                }
            },
        }
        path = self.workdir / "supervisord-lite.yaml"
        path.write_text(json.dumps(config, indent=2))
        self._spawn([PY, "-m", "supervisord_lite.cli", "-c", str(path)])
        self.wait_serving(2)

    def settled(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/status/web") as r:
                status = json.load(r)
        except OSError:
            return False
        app = status["apps"]["web"] if "apps" in status else status
        return all(i["state"] == "RUNNING" and not i.get("swapping")
                   for i in app["instances"].values())  # fmt: skip

    def reload(self) -> None:
        cp = run([PY, "-m", "supervisord_lite.supctl", "-s", self.sock, "reload", "web"])
        if cp.returncode != 0:
            raise RuntimeError(f"supctl reload exited {cp.returncode}: {cp.stderr}")


class Supervisord(System):
    name = "supervisord"
    reload_command = "supervisorctl restart web"

    def __init__(self, workdir: Path, port: int, bin_dir: Path) -> None:
        super().__init__(workdir, port)
        self.bin_dir = bin_dir
        self.conf = workdir / "supervisord.conf"

    def start(self) -> None:
        w = self.workdir
        command = " ".join([*GUNICORN, "--bind", f"127.0.0.1:{self.port}"])
        self.conf.write_text(
            textwrap.dedent(f"""\
            [unix_http_server]
            file={w}/supervisor.sock
            [supervisord]
            logfile={w}/supervisord.log
            pidfile={w}/supervisord.pid
            childlogdir={w}
            nodaemon=true
            {"user=root" if os.geteuid() == 0 else ""}
            [rpcinterface:supervisor]
            supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
            [supervisorctl]
            serverurl=unix://{w}/supervisor.sock
            [program:web]
            command={command}
            directory={REPO}
            startsecs=1
            stopsignal=TERM
            stopwaitsecs=10
            stopasgroup=true
            killasgroup=true
            """)
        )
        self._spawn([str(self.bin_dir / "supervisord"), "-c", str(self.conf)])
        self.wait_serving(1)

    def reload(self) -> None:
        cp = run([str(self.bin_dir / "supervisorctl"), "-c", str(self.conf), "restart", "web"])
        if cp.returncode != 0 or "ERROR" in cp.stdout:
            raise RuntimeError(f"supervisorctl restart: {cp.stdout} {cp.stderr}")

    def settled(self) -> bool:
        cp = run([str(self.bin_dir / "supervisorctl"), "-c", str(self.conf), "status", "web"])
        return "RUNNING" in cp.stdout


class Circus(System):
    name = "circus"
    reload_command = "circusctl reload web"

    def __init__(self, workdir: Path, port: int, bin_dir: Path) -> None:
        super().__init__(workdir, port)
        self.bin_dir = bin_dir
        self.endpoint = f"tcp://127.0.0.1:{free_port()}"

    def start(self) -> None:
        command = " ".join([*GUNICORN, "--bind", "fd://$(circus.sockets.web)"])
        ini = self.workdir / "circus.ini"
        ini.write_text(
            textwrap.dedent(f"""\
            [circus]
            endpoint = {self.endpoint}
            pubsub_endpoint = tcp://127.0.0.1:{free_port()}
            statsd = False
            check_delay = 5
            [watcher:web]
            cmd = {command}
            working_dir = {REPO}
            use_sockets = True
            copy_env = True
            numprocesses = 1
            graceful_timeout = 10
            [socket:web]
            host = 127.0.0.1
            port = {self.port}
            """)
        )
        self._spawn([str(self.bin_dir / "circusd"), str(ini)])
        self.wait_serving(1)

    def reload(self) -> None:
        cp = run([str(self.bin_dir / "circusctl"), "--endpoint", self.endpoint, "reload", "web"])
        if cp.returncode != 0:
            raise RuntimeError(f"circusctl reload exited {cp.returncode}: {cp.stdout} {cp.stderr}")

    def settled(self) -> bool:
        return len(self.masters()) == 1


# --------------------------------------------------------------------------- the measurement


@dataclass
class Row:
    system: str
    command: str
    reloads: int
    steady: LoadResult
    during: LoadResult
    old_gone_s: list[float]


def measure(system: System, reloads: int, steady_s: float, use_wrk: bool) -> Row:
    def load() -> WrkLoad | PythonLoad:
        return (
            WrkLoad(system.port, system.workdir)
            if use_wrk
            else PythonLoad(system.port, system.workdir)
        )

    print(f"[{system.name}] starting", flush=True)
    system.start()
    try:
        print(f"[{system.name}] steady load for {steady_s:g}s", flush=True)
        client, t0 = load(), time.monotonic()
        time.sleep(steady_s)  # the steady phase is a measurement window, not a wait
        steady = client.stop()
        steady.seconds = time.monotonic() - t0
        print(f"[{system.name}] {reloads} reloads under load", flush=True)
        client, started = load(), time.monotonic()
        time.sleep(1.0)  # let the load reach its steady rate before the first reload
        old_gone: list[float] = []
        for n in range(reloads):
            old = system.masters()
            t0 = time.monotonic()
            system.reload()

            def old_gone_now(old: set[int] = old) -> bool:
                return not any(alive(p) for p in old)

            wait_until("the old generation to be gone", old_gone_now, RELOAD_DEADLINE)
            old_gone.append(time.monotonic() - t0)
            wait_until("the reload to settle", system.settled, RELOAD_DEADLINE)
            print(f"  reload {n + 1}: old generation gone after {old_gone[-1]:.2f}s", flush=True)
        time.sleep(1.0)
        during = client.stop()
        during.seconds = time.monotonic() - started
    finally:
        system.stop()
    return Row(system.name, system.reload_command, reloads, steady, during, old_gone)


def table(rows: list[Row], client: str) -> str:
    head = ["system (reload command)", "reloads", "ok/s steady", "ok/s reloads", "failed",
            "longest gap", "p99 steady", "p99 reloads", "old gone (median / max)"]  # fmt: skip
    lines = []
    for r in rows:
        lines.append([
            f"{r.system} ({r.command})",
            str(r.reloads),
            f"{r.steady.rate:.0f}",
            f"{r.during.rate:.0f} ({r.during.seconds:.0f} s)",
            str(r.during.failures) + (f" ({r.during.detail})" if r.during.detail else ""),
            f"{r.during.max_gap_ms:.0f} ms",
            f"{r.steady.p99_ms:.1f} ms",
            f"{r.during.p99_ms:.1f} ms",
            f"{statistics.median(r.old_gone_s):.2f} s / {max(r.old_gone_s):.2f} s",
        ])  # fmt: skip
    widths = [max(len(x) for x in col) for col in zip(head, *lines, strict=False)]
    out = [f"load: {client}, {CONNECTIONS} connections; app: gunicorn -w 2 (sync), wsgi_hello"]
    for row in [head, ["-" * w for w in widths], *lines]:
        out.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reloads", type=int, default=20)
    parser.add_argument("--steady", type=float, default=8.0, help="seconds of steady load")
    parser.add_argument("--systems", default="lite,supervisord,circus")
    parser.add_argument("--client", choices=["auto", "wrk", "python"], default="auto")
    args = parser.parse_args()

    use_wrk = args.client != "python" and shutil.which("wrk") is not None
    if args.client == "wrk" and not use_wrk:
        print("wrk is not installed: `apt-get install -y wrk` (as root)", file=sys.stderr)
        return 2
    if not use_wrk and args.client == "auto":
        print("wrk not found (install it with `apt-get install -y wrk`); "
              "using the Python asyncio client instead", flush=True)  # fmt: skip
    wanted = args.systems.split(",")
    bin_dir = ensure_others_venv() if {"supervisord", "circus"} & set(wanted) else Path()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-reload-") as tmp:
        for name in wanted:
            workdir = Path(tmp) / name
            workdir.mkdir()
            port = free_port()
            system: System
            if name == "lite":
                system = Lite(workdir, port)
            elif name == "supervisord":
                system = Supervisord(workdir, port, bin_dir)
            elif name == "circus":
                system = Circus(workdir, port, bin_dir)
            else:
                parser.error(f"unknown system {name!r}")
            rows.append(measure(system, args.reloads, args.steady, use_wrk))
    print()
    print(table(rows, "wrk -t2 -c32" if use_wrk else "python asyncio"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
