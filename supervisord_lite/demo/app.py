"""The demo app: answers HTTP on the socket it receives as LISTEN_FDS (fd 3).

``/`` says which instance, generation and pid answered; ``/health`` is its
readiness and liveness endpoint.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = (
            json.dumps(
                {
                    "app": os.environ.get("SUPERVISOR_APP"),
                    "instance": os.environ.get("SUPERVISOR_INSTANCE"),
                    "generation": os.environ.get("SUPERVISOR_GENERATION"),
                    "pid": os.getpid(),
                    "path": self.path,
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
        sys.stdout.write(f"{self.address_string()} {format % args}\n")
        sys.stdout.flush()


def listening_socket() -> socket.socket:
    if os.environ.get("LISTEN_PID") == str(os.getpid()) and os.environ.get("LISTEN_FDS"):
        sock = socket.socket(fileno=3)
    else:
        port = int(os.environ.get("PORT", "8180"))
        sock = socket.create_server(("127.0.0.1", port), reuse_port=True)
    # non-blocking accept: primary and backup share the socket, and the one that loses
    # the race for a connection must not block in accept() (deaf to SIGTERM)
    sock.setblocking(False)
    return sock


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
    server.socket = listening_socket()
    server.daemon_threads = True

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    print(f"demo app {os.environ.get('SUPERVISOR_INSTANCE')} pid {os.getpid()} serving", flush=True)
    try:
        server.serve_forever(poll_interval=3600)
    except SystemExit:
        pass
    finally:
        print("demo app stopping", flush=True)


if __name__ == "__main__":
    main()
