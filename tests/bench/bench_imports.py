#!/usr/bin/env python3
"""What each import costs: peak RSS (and wall time) of ``python -c 'import X'`` over a
bare interpreter, median of ``--repeat`` runs, each in a fresh process; then the RSS
of a live daemon with ``--instances`` ``sleep`` instances, HTTP API on and off, and
the wall time of ``supctl status`` against that daemon next to ``python -c pass`` on
the same interpreter (``--timing`` runs of each, interleaved; medians and their ratio;
the target is at most 1.5x).

    .venv/bin/python tests/bench/bench_imports.py [--repeat 5] [--instances 100] [--timing 21]

Not a test: a script that prints tables. ``supervisord_lite.daemon.main`` is the daemon's
own import graph (what ``supervisord-lite`` loads before it reads its config); with
the HTTP API on it also loads ``supervisord_lite.httpapi.server``. The live daemon's RSS is
read once all instances run, after one ``GET /status`` and one ``GET /metrics``
(with the API off: after one ``supctl status``). The package is byte-compiled first,
as an installed one is (``PYTHONDONTWRITEBYTECODE`` would make every ``supctl``
compile our sources). Loopback only; the daemon is stopped by its pid.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent

MODULES = [
    "asyncio",
    "json",
    "aiohttp.web",
    "yaml",
    "psutil",
    "structlog",
    "prometheus_client",
    "sdnotify",
    "supervisord_lite.log",
    "supervisord_lite.config.parser",
    "supervisord_lite.supctl.main",
    "supervisord_lite.daemon.main",
    "supervisord_lite.httpapi.server",
    "supervisord_lite.daemon.main, supervisord_lite.httpapi.server",
]

_PROBE = (
    "import resource, sys\n"
    "{imp}\n"
    "rss = [int(x.split()[1]) for x in open('/proc/self/status') if x.startswith('VmRSS')][0]\n"
    "sys.stdout.write(f'{{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}} {{rss}}')\n"
)


def measure(module: str | None, repeat: int) -> tuple[float, float, float] | None:
    """(peak RSS KiB, wall ms, RSS KiB after the import) medians, None when the module
    is not installed."""
    rss: list[int] = []
    now: list[int] = []
    wall: list[float] = []
    for _ in range(repeat):
        imp = f"import {module}" if module else "pass"
        t0 = time.perf_counter()
        r = subprocess.run(
            [sys.executable, "-c", _PROBE.format(imp=imp)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        wall.append((time.perf_counter() - t0) * 1000)
        if r.returncode != 0:
            return None
        peak, cur = r.stdout.split()
        rss.append(int(peak))
        now.append(int(cur))
    return statistics.median(rss), statistics.median(wall), statistics.median(now)


def _get(port: int, path: str) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{path} answered {resp.status}")
        return body
    finally:
        conn.close()


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(x.split()[1]) for x in f if x.startswith("VmRSS"))


def supctl_timing(sock: str, runs: int) -> tuple[float, float]:
    """Median wall ms of ``supctl status`` and of ``python -c pass``, ``runs`` each,
    interleaved so that the machine's load weighs on both alike."""
    supctl: list[float] = []
    bare: list[float] = []
    for _ in range(runs):
        for argv, into in (
            ([str(BIN / "supctl"), "-s", sock, "status"], supctl),
            ([sys.executable, "-c", "pass"], bare),
        ):
            t0 = time.perf_counter()
            subprocess.run(argv, stdout=subprocess.DEVNULL, timeout=60, check=False)
            into.append((time.perf_counter() - t0) * 1000)
    return statistics.median(supctl), statistics.median(bare)


def daemon_rss(n: int, with_http: bool, timing: int = 0) -> float:
    """RSS (MiB) of a daemon running ``n`` sleepers, after one status (and metrics);
    with ``timing``, also prints ``supctl status`` against ``python -c pass``."""
    with tempfile.TemporaryDirectory(prefix="bench-imports-") as tmp:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        http = f'{{listen: "127.0.0.1:{port}"}}' if with_http else "null"
        conf = Path(tmp) / "config.yaml"
        conf.write_text(
            f"supervisor:\n  state_dir: {tmp}/state\n  http: {http}\n"
            f"  log: {{format: json, level: warning}}\n"
            f"apps:\n  sleepers:\n    command: [sleep, '3600']\n    instances: {n}\n"
            f"    ready: {{delay: 0}}\n"
        )
        proc = subprocess.Popen([str(BIN / "supervisord-lite"), "-c", str(conf)])
        sock = f"{tmp}/state/supctl.sock"
        try:
            deadline = time.monotonic() + 120
            while True:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the daemon did not bring up its instances")
                r = subprocess.run(
                    [str(BIN / "supctl"), "-s", sock, "--json", "status"],
                    capture_output=True,
                    text=True,
                    timeout=60,
                    check=False,
                )
                if r.returncode == 0 and r.stdout.count('"RUNNING"') >= n:
                    break
                time.sleep(0.2)
            if with_http:
                json.loads(_get(port, "/status"))
                _get(port, "/metrics")
            rss = _rss_kib(proc.pid) / 1024
            if timing:
                ms, bare = supctl_timing(sock, timing)
                print(
                    f"supctl status at {n} instances: {ms:.1f} ms, python -c pass {bare:.1f} ms: "
                    f"{ms / bare:.2f}x (median of {timing}, interleaved)"
                )
            return rss
        finally:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(timeout=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--instances", type=int, default=100)
    p.add_argument("--timing", type=int, default=21)
    args = p.parse_args()
    if not 1 <= args.instances <= 2000 or not 1 <= args.repeat <= 50:
        p.error("--instances within 1..2000, --repeat within 1..50")
    if not 0 <= args.timing <= 200:
        p.error("--timing within 0..200")
    package = Path(__file__).resolve().parents[2] / "supervisord_lite"
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(package)], check=False)
    bare = measure(None, args.repeat)
    assert bare is not None
    print(
        f"python {sys.version.split()[0]}: bare interpreter {bare[0] / 1024:.1f} MiB peak RSS, "
        f"{bare[1]:.0f} ms"
    )
    print(f"| {'import':<26} | {'+peak RSS MiB':>13} | {'+RSS MiB':>8} | {'+ms':>6} |")
    print(f"|{'-' * 28}|{'-' * 14}:|{'-' * 9}:|{'-' * 7}:|")
    for m in MODULES:
        got = measure(m, args.repeat)
        if got is None:
            print(f"| {m:<26} | {'absent':>13} | {'':>8} | {'':>6} |")
            continue
        peak, cur = (got[0] - bare[0]) / 1024, (got[2] - bare[2]) / 1024
        print(f"| {m:<26} | {peak:>13.1f} | {cur:>8.1f} | {got[1] - bare[1]:>6.0f} |")
    print(f"\ndaemon with {args.instances} sleep instances (RSS, MiB):")
    for with_http in (True, False):
        label = "HTTP API on, after GET /status + /metrics" if with_http else "http: null"
        rss = daemon_rss(args.instances, with_http, 0 if with_http else args.timing)
        print(f"| {label:<42} | {rss:6.1f} |")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
