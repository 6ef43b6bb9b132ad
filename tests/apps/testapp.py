"""A configurable HTTP app for the tests: what a real web app does, on demand.

It serves on the socket passed as LISTEN_FDS (fd 3), or binds $PORT itself. Env knobs:
BOOT_DELAY (seconds before serving), CRASH_AT_BOOT (exit status, after printing a
reason), HEALTH_STATUS (status of /health), HEALTH_FILE (while this file exists
/health says 503), NOTIFY_READY=1 (send READY=1 once serving; with
NOTIFY_STATUS, STATUS= of that text in the same message), WATCHDOG_EVERY
(seconds between WATCHDOG=1 pings), IGNORE_TERM=1, GRANDCHILD=1 (fork a sleeping
child into the same process group), TERM_DELAY (seconds of draining after TERM),
WORKERS (pre-fork N children that accept, like gunicorn). ENV_FILE (at boot, write
a JSON report of the environment, cwd, pid, pgid, sid and umask to this path),
PRINT_LINES (print this many numbered lines of output at boot, PRINT_EVERY seconds
apart), HOLD_FILE (after BOOT_DELAY, keep booting -- not accepting -- while this file
exists), ESCAPE_CHILD=1 (fork a sleeping child that leaves the process group with
setsid(), like a helper that daemonizes itself).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any


def env_float(name: str, default: float = 0.0) -> float:
    return float(os.environ.get(name, default))


IN_FLIGHT = [0]  # connections accepted and not yet closed (a stop waits for them)
IN_FLIGHT_LOCK = threading.Lock()


class Server(ThreadingHTTPServer):
    """Counts connections from accept() to close, so a graceful stop can wait for them."""

    def process_request(self, request: Any, client_address: Any) -> None:
        with IN_FLIGHT_LOCK:
            IN_FLIGHT[0] += 1
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        super().shutdown_request(request)
        with IN_FLIGHT_LOCK:
            IN_FLIGHT[0] -= 1


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        status = 200
        if self.path.startswith("/health"):
            status = int(os.environ.get("HEALTH_STATUS", "200"))
            health_file = os.environ.get("HEALTH_FILE")
            if health_file and os.path.exists(health_file):
                status = 503
        body = (
            json.dumps(
                {
                    "instance": os.environ.get("SUPERVISOR_INSTANCE"),
                    "generation": os.environ.get("SUPERVISOR_GENERATION"),
                    "release": os.environ.get("SUPERVISOR_RELEASE"),
                    "pid": os.getpid(),
                }
            ).encode()
            + b"\n"
        )
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def notify(message: str) -> None:
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.connect(path)
        s.send(message.encode())


def listening_socket() -> socket.socket:
    if os.environ.get("LISTEN_PID") == str(os.getpid()) and os.environ.get("LISTEN_FDS"):
        sock = socket.socket(fileno=3)
    else:
        sock = socket.create_server(("127.0.0.1", int(os.environ["PORT"])), reuse_port=True)
    # non-blocking accept: on a shared socket another process may win the connection
    # that woke us, and a blocking accept() would then sit there deaf to SIGTERM
    sock.setblocking(False)
    return sock


def write_report(path: str) -> None:
    """What this process was started with, written atomically as JSON."""
    mask = os.umask(0)
    os.umask(mask)
    report: dict[str, object] = {
        "env": dict(os.environ),
        "cwd": os.getcwd(),
        "pid": os.getpid(),
        "pgid": os.getpgid(0),
        "sid": os.getsid(0),
        "umask": mask,
        "fd3": None,
    }
    try:  # what sits at fd 3 (a dup, so the real fd stays untouched)
        with socket.fromfd(3, socket.AF_INET, socket.SOCK_STREAM) as s:
            report["fd3"] = {
                "sockname": list(s.getsockname()),
                "listening": bool(s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)),
            }
    except OSError:
        pass
    with open(path + ".tmp", "w") as f:
        json.dump(report, f)
    os.replace(path + ".tmp", path)


def main() -> None:
    print(f"testapp {os.environ.get('SUPERVISOR_INSTANCE')} pid {os.getpid()} booting", flush=True)
    if os.environ.get("ENV_FILE"):
        write_report(os.environ["ENV_FILE"])
    for n in range(int(os.environ.get("PRINT_LINES", "0"))):
        print(f"line {n:06d} " + "x" * 60, flush=True)
        time.sleep(env_float("PRINT_EVERY"))
    crash = os.environ.get("CRASH_AT_BOOT")
    if crash:
        print("fatal: cannot connect to the database (simulated)", flush=True)
        sys.exit(int(crash))
    if os.environ.get("IGNORE_TERM"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if os.environ.get("GRANDCHILD") and os.fork() == 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a stubborn helper process
        time.sleep(3600)
        os._exit(0)
    if os.environ.get("ESCAPE_CHILD") and os.fork() == 0:
        os.setsid()  # out of our process group: a group kill no longer reaches it
        time.sleep(3600)
        os._exit(0)
    time.sleep(env_float("BOOT_DELAY"))
    hold = os.environ.get("HOLD_FILE")
    while hold and os.path.exists(hold):
        time.sleep(0.02)
    sock = listening_socket()
    workers = int(os.environ.get("WORKERS", "0"))
    server = Server(("127.0.0.1", 0), Handler, bind_and_activate=False)
    server.socket = sock
    server.daemon_threads = True
    if workers:
        for _ in range(workers):
            if os.fork() == 0:
                serve(server)
                os._exit(0)
        notify("READY=1") if os.environ.get("NOTIFY_READY") else None

        def stop_workers(signum: int, frame: FrameType | None) -> None:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            os.killpg(0, signal.SIGTERM)
            sys.exit(0)

        signal.signal(signal.SIGTERM, stop_workers)
        while True:
            signal.pause()
    if os.environ.get("NOTIFY_READY"):
        status = os.environ.get("NOTIFY_STATUS")
        notify("READY=1" + (f"\nSTATUS={status}" if status else ""))
    serve(server)


def serve(server: ThreadingHTTPServer) -> None:
    every = env_float("WATCHDOG_EVERY")
    if every:

        def ping() -> None:
            while True:
                notify("WATCHDOG=1")
                time.sleep(every)

        threading.Thread(target=ping, daemon=True).start()
    drain = env_float("TERM_DELAY")
    stopping = threading.Event()

    def on_term(signum: int, frame: FrameType | None) -> None:
        # a graceful stop, like a real server's: stop accepting, finish the requests in
        # flight (at most 5 s), then exit; TERM_DELAY keeps serving that long first
        def finish() -> None:
            time.sleep(drain)
            # the serve loop ends after its current turn, so a connection it has just
            # accepted is counted in flight before we look (closing the socket under a
            # running loop could exit between its accept and the count: a reset)
            server.shutdown()
            server.socket.close()
            deadline = time.monotonic() + 5.0
            while IN_FLIGHT[0] > 0 and time.monotonic() < deadline:
                time.sleep(0.005)
            os._exit(0)

        stopping.set()
        threading.Thread(target=finish, daemon=True).start()

    if not os.environ.get("IGNORE_TERM"):
        signal.signal(signal.SIGTERM, on_term)
    print(f"testapp pid {os.getpid()} serving", flush=True)
    try:
        server.serve_forever(poll_interval=0.05)
    except OSError:
        pass
    if stopping.is_set():  # the graceful stop ends the process once its requests are done
        threading.Event().wait()


if __name__ == "__main__":
    main()
