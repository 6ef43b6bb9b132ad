"""JVM warm-up benchmark: the first 3 s after a swap against steady, for a Ring/Jetty app.

Not a test: it prints a table. tests/jvm/app.clj (Clojure, Ring, Jetty 9.4 from Debian;
the JVM's default tiered JIT) runs as primary and backup under ``wrk -t2 -c8`` in two
layouts:

- **kept socket**: ``socket_activation: stdin``, one address shared by both instances
  (Jetty's inherited channel), wrk straight at it; ``supctl reload`` hot-swaps each;
- **nginx**: Jetty binding its own port per instance (``socket_activation: false``, so
  ``reload: restart``), nginx in front with the backup marked ``backup``, wrk at nginx.

Each layout runs cold (the new generation takes traffic as soon as its health check
passes) and warmed (``WARMUP=command``: the app's connector first listens on a private
loopback port, ``$WARM_PORT``; the app runs that load generator against it, waits for
the JIT's queue to empty, then swaps in the real channel; :func:`warm_up` says what
it sends). Per run: 8 s of load to warm the first generation; 3 s of wrk; then
``supctl reload web``, and as soon as it returns (every instance is the new
generation) **after swap**: 3 s of wrk; 5 s more, and 3 s of wrk again. **Steady**
is the mean of the window before the swap and that last one. Columns: p99 latency
and requests/s of each, and their ratios (target: after-swap p99 within 1.5x of
steady).

Each configuration runs ``--runs`` times (3) and the table ends with the median ratios:
on a busy 2-core machine one run's p99 says more about the neighbours than the JVM.

Run: ``.venv/bin/python tests/bench/bench_jvm.py [--layout L] [--runs N] [--warmup CMD]``.
Needs the packages tests/run.sh installs (java, clojure, libring-jetty-adapter-clojure,
wrk, nginx).
The load average is printed: on a busy machine the figures say more about the others.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))

from helpers import RunningDaemon, free_port  # noqa: E402
from helpers.jvm import APP_CLJ, CLASSPATH, JAVA  # noqa: E402
from helpers.nginx import UPSTREAM, Nginx, nginx_binary  # noqa: E402

from supervisord_lite.instance.probes import PROBE_HEADERS  # noqa: E402

WRK = shutil.which("wrk")
WINDOW_S = 3


def warm_up(shape: str) -> str:
    """The WARMUP command (as etc/clojure-jetty.yaml): 60,000 requests from outside the
    JVM, 8 at a time, with ``shape`` (curl's options) making them the very requests the
    layout's traffic sends the JVM; between every 20,000, 20 of the supervisor's
    readiness probe (``GET /health``, HTTP/1.1, its PROBE_HEADERS). The probe is the first
    request a JVM answers after it goes live: warmed without it, that one request threw
    away the compiled request path (16 methods). A count, not a duration: the JIT
    compiles after so many calls, and on a shared machine a duration buys fewer calls
    while the other instance serves."""
    curl = "curl --fail --no-progress-meter -o /dev/null"
    traffic = (
        f"{curl} --fail-early --parallel --parallel-max 8 {shape}"
        ' "http://127.0.0.1:$WARM_PORT/#[1-20000]"'
    )
    headers = " ".join(f'-H "{name}: {value}"' for name, value in PROBE_HEADERS.items())
    probe = f'{curl} {headers} -H "Accept:" "http://127.0.0.1:$WARM_PORT/health#[1-20]"'
    return f"for round in 1 2 3; do {traffic} && {probe} || exit; done"


# wrk sends ``GET / HTTP/1.1`` with a Host header and nothing else, keep-alive; nginx
# (the fixture's defaults) sends it upstream as HTTP/1.0, Host the upstream's name,
# Connection: close. (curl drops the ``#...`` that numbers the requests: every one is
# ``GET /``.)
WARMUPS = {
    "kept socket": warm_up('-H "User-Agent:" -H "Accept:"'),
    "nginx": warm_up(
        f'--http1.0 -H "Connection: close" -H "Host: {UPSTREAM}" -H "User-Agent:" -H "Accept:"'
    ),
}
LAYOUTS = ("kept socket", "nginx")


@dataclass
class Sample:
    p99_ms: float
    rps: float


def wrk(port: int, seconds: int) -> Sample:
    assert WRK is not None
    out = subprocess.run(
        [WRK, "-t2", "-c8", f"-d{seconds}s", "--latency", f"http://127.0.0.1:{port}/"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert p99 and rps, out
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    return Sample(float(p99.group(1)) * scale, float(rps.group(1)))


def app_config(layout: str, root: Path, warmup: str, ports: dict[str, int]) -> dict[str, Any]:
    assert JAVA is not None
    env = {"WARMUP": warmup} if warmup else {}
    cfg: dict[str, Any] = {
        "command": [JAVA, "-XX:+UseSerialGC", "-Xmx512m", "-cp", CLASSPATH, "clojure.main",
                    str(APP_CLJ)],
        "cwd": str(root),
        "instances": ["primary", "backup"],
        "ready": {"http": "http://{host}:{port}/health", "timeout": 120},
        "stop": {"timeout": 20},
    }  # fmt: skip
    if layout == "kept socket":
        cfg.update(
            env={**env, "SOCKET": "stdin"},
            listen=f"127.0.0.1:{ports['primary']}",
            socket_activation="stdin",
        )
    else:
        cfg.update(
            env=env,
            listen={name: f"127.0.0.1:{port}" for name, port in ports.items()},
            socket_activation=False,
        )
    return cfg


def run(layout: str, warmup: str, work: Path) -> tuple[Sample, Sample]:
    ports = {"primary": free_port(), "backup": free_port()}
    root = work / f"{layout.replace(' ', '-')}-{'warm' if warmup else 'cold'}"
    (root / "v1").mkdir(parents=True)
    d = RunningDaemon(root / "daemon", {"web": app_config(layout, root / "v1", warmup, ports)})
    nginx: Nginx | None = None
    try:
        d.start()
        d.wait_running("web", "primary", "backup", timeout=240)
        front = ports["primary"]
        if layout == "nginx":
            binary = nginx_binary()
            assert binary is not None
            nginx = Nginx(binary, root / "nginx", ports["primary"], ports["backup"]).start()
            front = nginx.port
        wrk(front, 8)  # the first generation warms under load
        steady = wrk(front, WINDOW_S)
        cp = d.supctl("reload", "web")
        assert cp.returncode == 0, cp.stderr
        after = wrk(front, WINDOW_S)
        wrk(front, 5)
        late = wrk(front, WINDOW_S)  # the new generation, warm by now
        # a busy machine's neighbours move p99 by several times within seconds: steady
        # is the mean of a window before the swap and one after it has settled
        return Sample((steady.p99_ms + late.p99_ms) / 2, (steady.rps + late.rps) / 2), after
    finally:
        if nginx is not None:
            nginx.stop()
        d.close()


def row(layout: str, warm: str, steady: Sample, after: Sample) -> str:
    return (
        f"| {layout} | {warm} | {steady.p99_ms:.1f} ms | {steady.rps:,.0f} "
        f"| {after.p99_ms:.1f} ms | {after.rps:,.0f} "
        f"| {after.p99_ms / steady.p99_ms:.2f}x | {after.rps / steady.rps:.2f}x |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layout", choices=LAYOUTS, action="append", help="default: both")
    parser.add_argument("--runs", type=int, default=3, help="runs of each (default 3)")
    parser.add_argument(
        "--warmup", help="the WARMUP command of the warmed runs (default: per layout)"
    )
    args = parser.parse_args()
    if JAVA is None or WRK is None or nginx_binary() is None:
        raise SystemExit("needs java, wrk and nginx (tests/run.sh installs them)")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"JVM warm-up after a swap: wrk -t2 -c8, {WINDOW_S} s windows; {os.cpu_count()} CPUs,")
    print(f"load average before: {load}. WARMUP commands:")
    for layout in args.layout or LAYOUTS:
        print(f"- {layout}: {args.warmup or WARMUPS[layout]}")
    print(
        "\n| layout | warm-up | steady p99 | steady req/s | after swap p99 | after swap req/s "
        "| p99 ratio | req/s ratio |"
    )
    print("|" + "---|" * 8)
    medians = []
    with tempfile.TemporaryDirectory(prefix="bench-jvm-") as tmp:
        for layout in args.layout or LAYOUTS:
            for warmup in ("", args.warmup or WARMUPS[layout]):
                warm = "WARMUP" if warmup else "none"
                p99s, rpss = [], []
                for n in range(args.runs):
                    steady, after = run(layout, warmup, Path(tmp) / str(n))
                    p99s.append(after.p99_ms / steady.p99_ms)
                    rpss.append(after.rps / steady.rps)
                    print(row(layout, warm, steady, after), flush=True)
                medians.append(
                    f"| {layout} | {warm} | median of {args.runs} | | | "
                    f"| **{statistics.median(p99s):.2f}x** | **{statistics.median(rpss):.2f}x** |"
                )
    print("\n".join(["", "| layout | warm-up | | | | | p99 ratio | req/s ratio |"]))
    print("|" + "---|" * 8)
    print("\n".join(medians))
    print(f"\nload average after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
