"""Benchmark: a canary deploy end to end, through a real nginx under steady load.

Not a test: it prints figures. The app is the tests' web app (primary and backup, a
socket each, HTTP ready and health checks, ``release: {keep: 2, settle: 1}``) whose
releases boot in about 1 s (testapp.py with BOOT_DELAY=1). For each run it deploys
the next release with ``supctl --json deploy`` while a few clients send GET / through
nginx, and reports the deploy's wall-clock duration (and its phases, from the
progress events as they arrive), the requests served and failed meanwhile, and their
latency.

    .venv/bin/python tests/bench/bench_deploy.py [--runs 5] [--threads 3] [--settle 1]

Needs nginx (``nginx`` on PATH or /usr/sbin/nginx). Ports are taken in 20000-30000.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))

from helpers import PYTHON, RunningDaemon, free_port  # noqa: E402
from helpers.load import Load  # noqa: E402
from helpers.nginx import Nginx, nginx_binary  # noqa: E402
from helpers.releases import APP, make_release, make_root, web_app  # noqa: E402


def timed_deploy(d: RunningDaemon, release: str) -> tuple[float, int, list[tuple[float, str]]]:
    """Run ``supctl --json deploy``; (seconds, exit status, [(t, progress message)])."""
    argv = [PYTHON, "-m", "supervisord_lite.supctl", "-s", d.sock, "--json", "deploy", APP, release]
    events: list[tuple[float, str]] = []
    began = time.monotonic()
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(TESTS.parent)
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        t = time.monotonic() - began
        try:
            msg: dict[str, Any] = json.loads(line)
        except ValueError:
            continue
        if "ok" in msg:
            text = "ok" if msg["ok"] else f"failed: {msg.get('error')}"
        else:
            text = str(msg.get("message") or msg)
        events.append((t, text))
    proc.wait(120)
    seconds = time.monotonic() - began
    if proc.stderr is not None:
        proc.stderr.close()
    proc.stdout.close()
    return seconds, proc.returncode, events


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values) or [0.0]
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5, help="deploys to time (default 5)")
    parser.add_argument("--threads", type=int, default=3, help="load clients (default 3)")
    parser.add_argument("--settle", type=float, default=1.0, help="release.settle (default 1)")
    parser.add_argument("--verbose", action="store_true", help="print each progress event")
    opts = parser.parse_args()

    binary = nginx_binary()
    if binary is None:
        print("nginx is not installed; nothing to measure", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="bench-deploy-") as tmp:
        work = Path(tmp)
        root = make_root(work, "r0", kind="slow")
        primary, backup = free_port(), free_port()
        daemon = RunningDaemon(
            work / "daemon", {APP: web_app(root, primary, backup, settle=opts.settle)}
        )
        nginx = Nginx(binary, work / "nginx", primary, backup)
        rows: list[tuple[float, int, Load, list[tuple[float, str]]]] = []
        try:
            t0 = time.monotonic()
            daemon.start()
            daemon.wait_running(APP, "primary", "backup", timeout=30)
            print(
                f"daemon up, both instances ready on r0 in {time.monotonic() - t0:.2f}s "
                f"(release boot ~1 s)"
            )
            nginx.start()
            for run in range(1, opts.runs + 1):
                name = f"r{run}"
                make_release(root, name, "slow")
                load = Load(
                    nginx.port, threads=opts.threads, pause=0.005, max_seconds=60, timeout=30
                ).start()
                load.wait_ok(20)
                seconds, code, events = timed_deploy(daemon, name)
                load.wait_ok(20)
                result = load.stop()
                rows.append((seconds, code, result, events))
                served = {k: v for k, v in sorted(result.releases.items())}
                print(
                    f"run {run}: deploy r{run - 1} -> {name}: exit {code}, "
                    f"{seconds:.2f}s; load {result.ok} ok / {result.failed} failed "
                    f"(served {served}); latency p50 "
                    f"{statistics.median(result.latencies or [0.0]) * 1000:.1f} ms, "
                    f"p99 {percentile(result.latencies, 0.99) * 1000:.1f} ms, "
                    f"max {max(result.latencies or [0.0]) * 1000:.1f} ms"
                )
                if opts.verbose or code != 0:
                    for t, text in events:
                        print(f"    {t:6.2f}s  {text}")
                if result.failures:
                    print(f"    failures: {result.failures}")
            st = daemon.http_status()["apps"][APP]
            releases = {n: i["release"] for n, i in st["instances"].items()}
            print(
                f"final: current -> {os.readlink(root / 'current')}, instances {releases}, "
                f"on disk {sorted(os.listdir(root / 'releases'))}"
            )
        finally:
            nginx.stop()
            daemon.close()

    durations = [r[0] for r in rows if r[1] == 0]
    failed = sum(r[2].failed for r in rows)
    total = sum(r[2].ok + r[2].failed for r in rows)
    latencies = [x for r in rows for x in r[2].latencies]
    print()
    print(
        f"settle {opts.settle:g}s, release boot ~1 s, {opts.threads} load clients "
        f"through nginx, {len(rows)} deploys ({len(durations)} succeeded)"
    )
    if durations:
        print(
            f"deploy duration: min {min(durations):.2f}s, median "
            f"{statistics.median(durations):.2f}s, max {max(durations):.2f}s"
        )
    print(
        f"requests during the deploys: {total}, failed {failed}; latency p50 "
        f"{statistics.median(latencies or [0.0]) * 1000:.1f} ms, p99 "
        f"{percentile(latencies, 0.99) * 1000:.1f} ms, max "
        f"{max(latencies or [0.0]) * 1000:.1f} ms"
    )
    return 0 if failed == 0 and len(durations) == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
