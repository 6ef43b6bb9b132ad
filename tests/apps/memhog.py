"""An HTTP app whose memory grows after boot, for the ``max_memory`` tests.

It serves on the socket passed as LISTEN_FDS (fd 3), or on $PORT. ``/`` and
``/health`` answer JSON {pid, generation, rss_mb}. Env knobs:
- ALLOC_MB: once serving, allocate (and touch) this many MiB and keep them;
- ALLOC_GENERATION: allocate only in this generation (SUPERVISOR_GENERATION; default
  "1"), so that the replacement stays small; "*" allocates in every generation;
- ALLOC_AFTER: seconds between the start of serving and the allocation (default 0).
On SIGTERM it stops accepting, finishes the requests in flight and exits 0.

For checking the order of a hot swap it prints, with the wall-clock time, the first
``/health`` request it answers (``health pid P generation G at T``) and the SIGTERM it
gets (``term pid P generation G at T``).
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
from typing import Any

_hoard: list[bytes] = []
_first_health = threading.Lock()


def _say(what: str) -> None:
    gen = os.environ.get("SUPERVISOR_GENERATION")
    os.write(1, f"{what} pid {os.getpid()} generation {gen} at {time.time():.6f}\n".encode())


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / (1 << 20)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path.startswith("/health") and _first_health.acquire(blocking=False):
            _say("health")  # never released: only the first one is reported
        body = (
            json.dumps(
                {
                    "pid": os.getpid(),
                    "generation": os.environ.get("SUPERVISOR_GENERATION"),
                    "rss_mb": round(_rss_mb(), 1),
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


def _allocate(megabytes: int, after: float) -> None:
    time.sleep(after)
    for _ in range(megabytes):
        _hoard.append(b"m" * (1 << 20))  # written, so every page is resident
    print(f"memhog pid {os.getpid()} holds {megabytes} MiB, rss {_rss_mb():.0f} MiB", flush=True)


class Server(ThreadingHTTPServer):
    """Accepts without blocking: on a socket shared with other processes (the other
    generation during a hot swap), the one that select() woke may lose the connection;
    a blocking accept() would then sleep until the next connection, deaf to SIGTERM."""

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, addr = self.socket.accept()  # BlockingIOError: handled by socketserver
        conn.setblocking(True)
        return conn, addr


def main() -> None:
    if os.environ.get("LISTEN_PID") == str(os.getpid()) and os.environ.get("LISTEN_FDS"):
        sock = socket.socket(fileno=3)
    else:
        sock = socket.create_server(("127.0.0.1", int(os.environ["PORT"])), reuse_port=True)
    server = Server(("127.0.0.1", 0), Handler, bind_and_activate=False)
    sock.setblocking(False)  # see Server
    server.socket = sock
    server.daemon_threads = False  # server_close() waits for requests in flight

    def on_term(signum: int, frame: FrameType | None) -> None:
        _say("term")
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_term)
    wanted = os.environ.get("ALLOC_GENERATION", "1")
    megabytes = int(os.environ.get("ALLOC_MB", "0"))
    if megabytes and wanted in ("*", os.environ.get("SUPERVISOR_GENERATION")):
        after = float(os.environ.get("ALLOC_AFTER", "0"))
        threading.Thread(target=_allocate, args=(megabytes, after), daemon=True).start()
    print(f"memhog pid {os.getpid()} serving", flush=True)
    server.serve_forever(poll_interval=0.05)
    server.server_close()
    os._exit(0)


if __name__ == "__main__":
    main()
