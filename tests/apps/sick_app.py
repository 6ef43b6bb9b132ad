"""An HTTP app that falls sick on SIGUSR1 and writes down when things happen to it.

It serves on the socket passed as LISTEN_FDS (fd 3). GET /health answers 200 until
the process gets SIGUSR1, 503 after; with WATCHDOG_EVERY it sends WATCHDOG=1 that
often, until SIGUSR1 too. So one process falls sick while the next generation of its
instance is healthy. While the file $SICK_FILE exists, every process answers 503.
Into the directory $TIMES_DIR it writes, each as the wall-clock
time (time.time()) in a file named after its pid: ``healthy.PID`` when it first
answered /health with 200 (the supervisor's readiness check cannot pass before),
``term.PID`` when it got SIGTERM. On SIGTERM it stops accepting and exits.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType

TIMES_DIR = os.environ["TIMES_DIR"]
SICK = threading.Event()
HEALTHY_WRITTEN = threading.Event()


def write_time(name: str) -> None:
    path = os.path.join(TIMES_DIR, f"{name}.{os.getpid()}")
    with open(path + ".tmp", "w") as f:
        f.write(repr(time.time()))
    os.replace(path + ".tmp", path)


def notify(message: str) -> None:
    path = os.environ.get("NOTIFY_SOCKET")
    if path:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(path)
            s.send(message.encode())


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        sick = SICK.is_set() or os.path.exists(os.environ.get("SICK_FILE", "/nonexistent"))
        status = 503 if sick and self.path == "/health" else 200
        if status == 200 and self.path == "/health" and not HEALTHY_WRITTEN.is_set():
            write_time("healthy")  # before the answer leaves: readiness passes after this
            HEALTHY_WRITTEN.set()
        body = json.dumps({"pid": os.getpid()}).encode() + b"\n"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    sock = socket.socket(fileno=3)
    sock.setblocking(False)  # the socket is shared: another process may win an accept
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
    server.socket = sock
    server.daemon_threads = True

    def on_usr1(signum: int, frame: FrameType | None) -> None:
        SICK.set()

    def on_term(signum: int, frame: FrameType | None) -> None:
        write_time("term")
        server.socket.close()
        os._exit(0)

    signal.signal(signal.SIGUSR1, on_usr1)
    signal.signal(signal.SIGTERM, on_term)
    every = float(os.environ.get("WATCHDOG_EVERY", "0"))
    if every:

        def ping() -> None:
            while not SICK.is_set():
                notify("WATCHDOG=1")
                time.sleep(every)

        threading.Thread(target=ping, daemon=True).start()
    try:
        server.serve_forever(poll_interval=0.05)
    except OSError:
        pass


if __name__ == "__main__":
    main()
