"""A misbehaving app for the fault and resilience tests: each fault is an env knob.

It serves HTTP on the socket passed as LISTEN_FDS (fd 3), or on $PORT, or not at all
when it has neither. Routes: ``/`` and ``/health`` answer JSON {pid, instance,
generation}; ``/say/WORD`` prints ``said WORD pid PID`` on stdout and answers only
once the line was written (500, then exit 32, if the write failed). SIGUSR1 prints
``usr1 pid PID n N`` (from a printer thread, never from the signal handler).

Env knobs:
- TICK_EVERY: print ``tick N pid PID`` every so many seconds; a failed write (EPIPE,
  ...) ends the process with status 32, so "still alive" means "printing works".
- IGNORE_TERM=1: ignore SIGTERM (only SIGKILL ends it).
- FORK_CHILDREN=N (at most 200): fork N children that sleep in our process group;
  CHILDREN_IGNORE_TERM=1 makes them ignore SIGTERM; their pids are written one a line
  to CHILD_PIDFILE (atomically, once all are forked).
- ESCAPE_PIDFILE=PATH: fork a child that forks a grandchild and exits at once; the
  grandchild calls setsid() (it leaves our session and process group, like a helper
  that daemonizes itself), writes its pid to PATH and sleeps.
- FLOOD_MB=N: at boot, write N MiB to stdout as fast as possible (lines of
  FLOOD_LINE bytes, default 1024, in 1 MiB writes), then print ``flood done pid PID``;
  with FLOOD_ON_USR2=1, do that (in a thread) on each SIGUSR2 instead of at boot.
- HOLD_FILE=PATH: keep booting (not accepting) while this file exists.
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

_usr1 = threading.Event()
_usr2 = threading.Event()


def _write_out(text: str) -> None:
    """Write one line to stdout; exit with status 32 if that fails (EPIPE and the like)."""
    try:
        os.write(1, text.encode() + b"\n")
    except OSError:
        os._exit(32)  # stderr is the same pipe: nothing else to tell


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path.startswith("/say/"):
            word = self.path[len("/say/") :]
            _write_out(f"said {word} pid {os.getpid()}")
        body = (
            json.dumps(
                {
                    "pid": os.getpid(),
                    "instance": os.environ.get("SUPERVISOR_INSTANCE"),
                    "generation": os.environ.get("SUPERVISOR_GENERATION"),
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


class Server(ThreadingHTTPServer):
    """Accepts without blocking: on a socket shared with other processes, the one that
    select() woke may lose the connection to another; a blocking accept() would then
    sleep in the kernel until the next connection, deaf to the stop signal."""

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, addr = self.socket.accept()  # BlockingIOError: handled by socketserver
        conn.setblocking(True)
        return conn, addr


def _listening_socket() -> socket.socket | None:
    if os.environ.get("LISTEN_PID") == str(os.getpid()) and os.environ.get("LISTEN_FDS"):
        return socket.socket(fileno=3)
    if os.environ.get("PORT"):
        return socket.create_server(("127.0.0.1", int(os.environ["PORT"])), reuse_port=True)
    return None


def _write_atomically(path: str, text: str) -> None:
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def _fork_children(count: int) -> None:
    ignore = bool(os.environ.get("CHILDREN_IGNORE_TERM"))
    pids = []
    for _ in range(min(count, 200)):  # bounded: this is a test, not a real fork bomb
        pid = os.fork()
        if pid == 0:
            if ignore:
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
            else:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
            time.sleep(3600)
            os._exit(0)
        pids.append(pid)
    path = os.environ.get("CHILD_PIDFILE")
    if path:
        _write_atomically(path, "".join(f"{p}\n" for p in pids))


def _escape(path: str) -> None:
    pid = os.fork()
    if pid == 0:
        if os.fork() == 0:
            os.setsid()  # a new session and process group: a group kill misses it
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            _write_atomically(path, f"{os.getpid()}\n")
            time.sleep(3600)
        os._exit(0)
    os.waitpid(pid, 0)  # the middle process exits at once: the grandchild is orphaned


def _flood(megabytes: int) -> None:
    width = max(16, int(os.environ.get("FLOOD_LINE", "1024")))
    line = b"f" * (width - 1) + b"\n"
    block = line * max(1, (1 << 20) // width)
    total = 0
    out = sys.stdout.buffer
    while total < megabytes << 20:
        out.write(block)
        out.flush()
        total += len(block)
    _write_out(f"flood done pid {os.getpid()} bytes {total}")


def _printer() -> None:
    n = 0
    while True:
        _usr1.wait()
        _usr1.clear()
        n += 1
        _write_out(f"usr1 pid {os.getpid()} n {n}")


def _flooder(megabytes: int) -> None:
    while True:
        _usr2.wait()
        _usr2.clear()
        _flood(megabytes)


def _ticker(every: float) -> None:
    n = 0
    while True:
        n += 1
        _write_out(f"tick {n} pid {os.getpid()}")
        time.sleep(every)


def main() -> None:
    _write_out(f"faulty {os.environ.get('SUPERVISOR_INSTANCE')} pid {os.getpid()} booting")
    signal.signal(signal.SIGUSR1, lambda s, f: _usr1.set())
    threading.Thread(target=_printer, daemon=True).start()
    if os.environ.get("IGNORE_TERM"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if os.environ.get("FORK_CHILDREN"):
        _fork_children(int(os.environ["FORK_CHILDREN"]))
    if os.environ.get("ESCAPE_PIDFILE"):
        _escape(os.environ["ESCAPE_PIDFILE"])
    if os.environ.get("FLOOD_MB") and os.environ.get("FLOOD_ON_USR2"):
        signal.signal(signal.SIGUSR2, lambda s, f: _usr2.set())
        threading.Thread(target=_flooder, args=(int(os.environ["FLOOD_MB"]),), daemon=True).start()
    elif os.environ.get("FLOOD_MB"):
        _flood(int(os.environ["FLOOD_MB"]))
    if os.environ.get("TICK_EVERY"):
        every = float(os.environ["TICK_EVERY"])
        threading.Thread(target=_ticker, args=(every,), daemon=True).start()
    hold = os.environ.get("HOLD_FILE")
    while hold and os.path.exists(hold):
        time.sleep(0.02)
    sock = _listening_socket()
    if sock is None:
        while True:
            signal.pause()
    server = Server(("127.0.0.1", 0), Handler, bind_and_activate=False)
    sock.setblocking(False)  # see Server
    server.socket = sock
    server.daemon_threads = False  # server_close() waits for requests in flight

    def on_term(signum: int, frame: FrameType | None) -> None:
        # stop accepting; the supervisor keeps the listening socket open for the others
        threading.Thread(target=server.shutdown, daemon=True).start()

    if not os.environ.get("IGNORE_TERM"):
        signal.signal(signal.SIGTERM, on_term)
    _write_out(f"faulty pid {os.getpid()} serving")
    server.serve_forever(poll_interval=0.05)
    server.server_close()
    os._exit(0)


if __name__ == "__main__":
    main()
