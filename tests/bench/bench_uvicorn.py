"""Keep-alive latency of uvicorn ``--fd 3`` under supervisord-lite vs uvicorn on its own port.

Not a test: it prints a table. The same ASGI app (tests/apps/asgi_hello.py) runs under
one uvicorn process, three ways:

- **own port**: ``uvicorn --host 127.0.0.1 --port P`` binds its own socket;
- **--fd 3, listener without TCP_NODELAY**: a small launcher binds the socket as any
  supervisor that does not set the option would, and execs ``uvicorn --fd 3`` (what
  supervisord-lite did before it set TCP_NODELAY on the sockets it binds);
- **--fd 3, listener with TCP_NODELAY**: the same launcher, setting the option (the
  fix alone, without the supervisor);
- **--fd 3 under supervisord-lite**: a real daemon binds the socket and hands it over
  by LISTEN_FDS (``socket_activation: true``, one instance).

Each is measured with ``wrk --latency`` on keep-alive connections, one connection
(where Nagle's algorithm meeting the client's delayed ACK shows whole: uvicorn writes
the headers and the body of a response separately, and with ``--fd`` it wraps the
socket as AF_UNIX, so asyncio never sets TCP_NODELAY on the accepted connections)
and then 16 connections. Columns: p50, p99 and requests per second.

Run: ``.venv/bin/python tests/bench/bench_uvicorn.py [--seconds 5]``; wrk comes from
the OS (``apt-get install -y wrk``). Loopback only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable
UVICORN = [PY, "-m", "uvicorn", "tests.apps.asgi_hello:app", "--no-access-log"]
DEADLINE = 30.0

# binds the socket the way a supervisor would (TCP_NODELAY when argv[2] is "1"), puts
# it at fd 3 and execs uvicorn --fd 3 (same pid)
LAUNCHER = """
import os, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, int(sys.argv[2]))
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(2048)
if s.fileno() == 3:
    os.set_inheritable(3, True)
else:
    os.dup2(s.fileno(), 3)
os.execv(sys.executable, [sys.executable, *sys.argv[3:]])
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until(what: str, predicate: Callable[[], bool], timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def serves(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


@dataclass
class Result:
    p50_ms: float
    p99_ms: float
    rps: float


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(port: int, connections: int, seconds: int) -> Result:
    wrk_bin = shutil.which("wrk")
    assert wrk_bin is not None
    threads = min(2, connections)
    out = subprocess.run(
        [wrk_bin, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency",
         f"http://127.0.0.1:{port}/"],
        capture_output=True, text=True, timeout=seconds + 30, check=True,
    ).stdout  # fmt: skip
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not (p50 and p99 and rps):
        raise SystemExit(f"cannot read wrk's output:\n{out}")
    return Result(_ms(p50.group(1)), _ms(p99.group(1)), float(rps.group(1)))


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def own_port(port: int, workdir: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*UVICORN, "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def fd3_launched(nodelay: bool) -> Callable[[int, Path], subprocess.Popen[bytes]]:
    def start(port: int, workdir: Path) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [PY, "-c", LAUNCHER, str(port), str(int(nodelay)), *UVICORN[1:], "--fd", "3"],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    return start


def fd3_supervised(port: int, workdir: Path) -> subprocess.Popen[bytes]:
    config = {
        "supervisor": {
            "state_dir": str(workdir / "state"),
            "http": {"listen": None},
            "log": {"format": "json", "level": "warning"},
        },
        "apps": {
            "web": {
                "command": [*UVICORN, "--fd", "3"],
                "cwd": str(REPO),
                "listen": f"127.0.0.1:{port}",
                "ready": {"http": "http://{host}:{port}/", "timeout": 30},
            }
        },
    }
    path = workdir / "supervisord-lite.yaml"
    path.write_text(json.dumps(config))
    return subprocess.Popen(
        [PY, "-m", "supervisord_lite.cli", "-c", str(path)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


SETUPS: dict[str, Callable[[int, Path], subprocess.Popen[bytes]]] = {
    "uvicorn on its own port": own_port,
    "uvicorn --fd 3, listener without TCP_NODELAY": fd3_launched(False),
    "uvicorn --fd 3, listener with TCP_NODELAY": fd3_launched(True),
    "uvicorn --fd 3 under supervisord-lite": fd3_supervised,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5, help="wrk duration per cell")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: apt-get install -y wrk")
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    print(f"# bench_uvicorn at {commit}, load average {os.getloadavg()[0]:.2f}")
    rows: list[tuple[str, Result, Result]] = []
    with tempfile.TemporaryDirectory(prefix="bench-uvicorn-") as tmp:
        for name, setup in SETUPS.items():
            workdir = Path(tmp) / str(len(rows))
            workdir.mkdir()
            port = free_port()
            proc = setup(port, workdir)
            try:
                wait_until(f"{name} to serve", lambda: serves(port))  # noqa: B023
                rows.append((name, wrk(port, 1, args.seconds), wrk(port, 16, args.seconds)))
            finally:
                stop(proc)
    print(f"load average after: {os.getloadavg()[0]:.2f}\n")
    print("| setup | 1 conn p50 / p99 | 1 conn req/s | 16 conns p50 / p99 | 16 conns req/s |")
    print("| --- | --- | --- | --- | --- |")
    for name, one, many in rows:
        print(
            f"| {name} | {one.p50_ms:.2f} / {one.p99_ms:.2f} ms | {one.rps:,.0f} "
            f"| {many.p50_ms:.2f} / {many.p99_ms:.2f} ms | {many.rps:,.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
