#!/usr/bin/env python3
"""What each import costs: peak RSS (and wall time) of ``python -c 'import X'`` over a
bare interpreter, median of ``--repeat`` runs, each in a fresh process.

    .venv/bin/python tests/bench/bench_imports.py [--repeat 5]

Not a test: a script that prints a table. ``supervisord_lite.daemon`` is the daemon's
own import graph (what ``supervisord-lite`` loads before it reads its config).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

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
    "supervisord_lite.config",
    "supervisord_lite.supctl",
    "supervisord_lite.daemon",
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
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


if __name__ == "__main__":
    main()
