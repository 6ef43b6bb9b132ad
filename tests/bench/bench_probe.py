"""CPU of one attributed HTTP probe, alone and in company (the prober's own CPU).

Runs ``probes.probe_http`` the way the daemon does (owner given: sock_diag, then the
owner's fds) against ``httpapp.py`` servers on listening sockets this process holds,
in three patterns at the same rate: back to back; one probe every 25 ms (40 a
second, each one waking an idle process); and four at once every 100 ms (the same
40 a second, as the shared grid of ticks in ``instance_liveness`` lines checks up).
Prints the median over rounds of the CPU per probe (user + system), which is why
liveness checks share ticks: a lone probe pays a wake-up and cold caches.

    .venv/bin/python tests/bench/bench_probe.py [--rounds 6] [--per-round 80]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from supervisord_lite.instance import probes  # noqa: E402

HTTP_APP = Path(__file__).with_name("httpapp.py")
RATE = 40.0  # probes a second: 200 web instances checked every 5 s
GROUP = 4
# the child takes the listener as fd 3 with LISTEN_PID naming itself (exec keeps it)
_EXEC_WITH_FD3 = (
    "import os, sys; os.dup2(int(sys.argv[1]), 3); "
    "os.environ.update(LISTEN_FDS='1', LISTEN_PID=str(os.getpid())); "
    "os.execv(sys.executable, [sys.executable, '-I', '-S', sys.argv[2]])"
)


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Servers:
    def __init__(self, n: int) -> None:
        self.listeners: list[socket.socket] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        for _ in range(n):
            lst = socket.socket()
            lst.bind(("127.0.0.1", 0))
            lst.listen(128)
            self.listeners.append(lst)
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", _EXEC_WITH_FD3, str(lst.fileno()), str(HTTP_APP)],
                    pass_fds=(lst.fileno(),),
                )
            )

    async def probe(self, i: int) -> bool:
        port = self.listeners[i].getsockname()[1]
        pid = self.procs[i].pid
        result = await probes.probe_http(f"http://127.0.0.1:{port}/", 2.0, lambda: iter([pid]))
        return result.ok

    def close(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()
        for s in self.listeners:
            s.close()


async def _back_to_back(s: Servers, n: int) -> tuple[float, int]:
    c0, failed = _cpu(), 0
    for j in range(n):
        failed += not await s.probe(j % GROUP)
    return (_cpu() - c0) / n, failed


async def _spaced(s: Servers, n: int) -> tuple[float, int]:
    c0, failed = _cpu(), 0
    for j in range(n):
        await asyncio.sleep(1 / RATE)
        failed += not await s.probe(j % GROUP)
    return (_cpu() - c0) / n, failed


async def _grouped(s: Servers, n: int) -> tuple[float, int]:
    c0, failed = _cpu(), 0
    for _ in range(n // GROUP):
        await asyncio.sleep(GROUP / RATE)
        oks = await asyncio.gather(*(s.probe(i) for i in range(GROUP)))
        failed += oks.count(False)
    return (_cpu() - c0) / (n // GROUP * GROUP), failed


async def _run(s: Servers, rounds: int, per_round: int) -> list[tuple[str, float, int]]:
    deadline = time.monotonic() + 30
    while not all([await s.probe(i) for i in range(GROUP)]):
        if time.monotonic() > deadline:
            raise RuntimeError("the servers did not answer within 30 s")
        await asyncio.sleep(0.05)
    patterns = [
        ("back to back", _back_to_back),
        (f"alone, {RATE:g}/s", _spaced),
        (f"{GROUP} at once, {RATE:g}/s", _grouped),
    ]
    seen: dict[str, list[float]] = {name: [] for name, _ in patterns}
    failures: dict[str, int] = dict.fromkeys(seen, 0)
    for _ in range(rounds):  # interleaved: the machine's noise hits every pattern alike
        for name, pattern in patterns:
            cpu, failed = await pattern(s, per_round)
            seen[name].append(cpu)
            failures[name] += failed
    return [(name, statistics.median(seen[name]), failures[name]) for name, _ in patterns]


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--per-round", type=int, default=80)
    args = p.parse_args()
    if not (1 <= args.rounds <= 50 and GROUP <= args.per_round <= 2000):
        p.error(f"--rounds 1..50, --per-round {GROUP}..2000")
    servers = Servers(GROUP)
    try:
        rows = asyncio.run(_run(servers, args.rounds, args.per_round))
    finally:
        servers.close()
    print(
        f"supervisord-lite probe CPU, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; "
        f"median of {args.rounds} rounds of {args.per_round} probes"
    )
    print("| pattern | CPU per probe | failed |")
    print("| --- | --- | --- |")
    for name, cpu, failed in rows:
        print(f"| {name} | {cpu * 1e6:.0f} µs | {failed} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
