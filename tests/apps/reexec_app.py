"""A server that re-executes itself on SIGUSR2, like a Unicorn or gunicorn master.

It serves HTTP on the socket passed as LISTEN_FDS (fd 3, when LISTEN_PID is its own
pid) or, after a re-exec, on the inherited fd named by REEXEC_FD. Once serving it
writes its pid to $PIDFILE (atomically). On SIGUSR2 it starts a new copy of itself
(fork + exec, in the same process group, with the listening fd inherited and
REEXEC_FD set) and keeps serving until it gets SIGTERM, on which it closes the
socket and exits 0. GET / answers JSON with its pid, parent pid and how many
re-execs led to it (``reexecs``). Env knobs: PIDFILE (required), REEXEC_FAIL=1
(a re-executed copy exits 4 at boot instead of serving), REEXEC_PIDFILE_SUFFIX (a
re-executed copy writes PIDFILE + this suffix instead, as gunicorn's writes PIDFILE.2).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = (
            json.dumps(
                {
                    "pid": os.getpid(),
                    "ppid": os.getppid(),
                    "reexecs": int(os.environ.get("REEXEC_COUNT", "0")),
                }
            ).encode()
            + b"\n"
        )
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def listening_socket() -> socket.socket:
    inherited = os.environ.get("REEXEC_FD")
    if inherited:
        return socket.socket(fileno=int(inherited))
    if os.environ.get("LISTEN_PID") == str(os.getpid()) and os.environ.get("LISTEN_FDS"):
        return socket.socket(fileno=3)
    raise SystemExit("reexec_app: no listening socket (neither LISTEN_FDS nor REEXEC_FD)")


def write_pidfile(path: str) -> None:
    with open(path + ".tmp", "w") as f:
        f.write(f"{os.getpid()}\n")
    os.replace(path + ".tmp", path)


def main() -> None:
    count = int(os.environ.get("REEXEC_COUNT", "0"))
    print(f"reexec_app pid {os.getpid()} booting (re-exec #{count})", flush=True)
    if count and os.environ.get("REEXEC_FAIL"):
        print("reexec_app: the new copy cannot start (simulated)", flush=True)
        sys.exit(4)
    sock = listening_socket()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
    server.socket = sock
    server.daemon_threads = True

    started: list[subprocess.Popen[bytes]] = []

    def reexec(signum: int, frame: FrameType | None) -> None:
        fd = sock.fileno()
        env = dict(os.environ, REEXEC_FD=str(fd), REEXEC_COUNT=str(count + 1))
        for name in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
            env.pop(name, None)
        child = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__)], env=env, pass_fds=(fd,)
        )
        started.append(child)  # never waited for: it outlives us, re-parented to the supervisor
        print(f"reexec_app pid {os.getpid()}: SIGUSR2, started new master {child.pid}", flush=True)

    def terminate(signum: int, frame: FrameType | None) -> None:
        print(f"reexec_app pid {os.getpid()}: SIGTERM, exiting", flush=True)
        sock.close()
        os._exit(0)

    signal.signal(signal.SIGUSR2, reexec)
    signal.signal(signal.SIGTERM, terminate)
    suffix = os.environ.get("REEXEC_PIDFILE_SUFFIX", "") if count else ""
    write_pidfile(os.environ["PIDFILE"] + suffix)
    print(f"reexec_app pid {os.getpid()} serving", flush=True)
    server.serve_forever(poll_interval=0.05)


if __name__ == "__main__":
    main()
