"""End-to-end sockets: socket activation, the supervisor holding sockets open, real servers.

The load tests send sequential HTTP GETs (each on a new connection) from a thread and
kill -9 the primary *between* two requests: a request that a process has already
accepted dies with it under any supervisor, so what is measured is only what the
supervisor is responsible for -- that the listening socket stays open and every new
connection is served (by the other instance, or by the replacement from the backlog).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from conftest import DaemonFactory
from helpers import (
    PYTHON,
    REPO,
    RunningDaemon,
    app_cmd,
    free_port,
    http_get,
    kill_dead,
    pid_alive,
)
from helpers.load import Load

READY = {"http": "http://{host}:{port}/health", "timeout": 5}


def read_report(path: Path, timeout: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} was never written"
        time.sleep(0.02)
    report: dict[str, Any] = json.loads(path.read_text())
    return report


def socket_inode(pid: int, fd: int = 3) -> str:
    return os.readlink(f"/proc/{pid}/fd/{fd}")


def new_running_pid(d: RunningDaemon, app: str, inst: str, old: int) -> int:
    def check() -> int | None:
        i = d.instance(app, inst, fast=True)
        return i["pid"] if i["state"] == "RUNNING" and i["pid"] not in (None, old) else None

    return d.wait_for(check, 10, f"a replacement {app}:{inst} to be RUNNING")


# --------------------------------------------------------------------------- activation


def test_shared_socket_is_passed_as_listen_fds(make_daemon: DaemonFactory, tmp_path: Path) -> None:
    """Primary and backup on one address get LISTEN_FDS=1, own LISTEN_PID, the socket at fd 3."""
    port = free_port()
    app = {
        **app_cmd(ENV_FILE=str(tmp_path / "env.{instance}.json")),
        "instances": ["primary", "backup"],
        "listen": f"127.0.0.1:{port}",
        "ready": READY,
    }
    d = make_daemon({"web": app})
    pids = d.wait_running("web", "primary", "backup")
    inodes = set()
    for inst, pid in pids.items():
        report = read_report(tmp_path / f"env.{inst}.json")
        env = report["env"]
        assert report["pid"] == pid
        assert env["LISTEN_FDS"] == "1", inst
        assert env["LISTEN_PID"] == str(pid), inst
        assert env.get("LISTEN_FDNAMES"), f"{inst}: no LISTEN_FDNAMES"
        assert report["fd3"] == {"sockname": ["127.0.0.1", port], "listening": True}, inst
        inodes.add(socket_inode(pid))
    assert len(inodes) == 1, f"primary and backup should share one socket: {inodes}"


def test_socket_per_instance(make_daemon: DaemonFactory, tmp_path: Path) -> None:
    """With a socket each, every instance gets its own address at fd 3 and serves on it."""
    a, b = free_port(), free_port()
    app = {
        **app_cmd(ENV_FILE=str(tmp_path / "env.{instance}.json")),
        "instances": ["primary", "backup"],
        "listen": {"primary": f"127.0.0.1:{a}", "backup": f"127.0.0.1:{b}"},
        "ready": READY,
    }
    d = make_daemon({"web": app})
    pids = d.wait_running("web", "primary", "backup")
    for inst, port in (("primary", a), ("backup", b)):
        report = read_report(tmp_path / f"env.{inst}.json")
        assert report["env"]["LISTEN_PID"] == str(pids[inst])
        assert report["env"]["PORT"] == str(port)
        assert report["fd3"]["sockname"] == ["127.0.0.1", port]
        status, body = http_get("127.0.0.1", port)
        assert status == 200 and json.loads(body)["pid"] == pids[inst]


def test_socket_activation_false_hands_port(make_daemon: DaemonFactory, tmp_path: Path) -> None:
    """With socket_activation: false the app gets $PORT, no LISTEN_FDS, and binds it itself."""
    port = free_port()
    app = {
        **app_cmd(ENV_FILE=str(tmp_path / "env.json")),
        "listen": f"127.0.0.1:{port}",
        "socket_activation": False,
        "ready": READY,
    }
    d = make_daemon({"web": app})
    pid = d.wait_running("web")["primary"]
    report = read_report(tmp_path / "env.json")
    assert report["env"]["PORT"] == str(port)
    assert "LISTEN_FDS" not in report["env"] and "LISTEN_PID" not in report["env"]
    status, body = http_get("127.0.0.1", port)
    assert status == 200 and json.loads(body)["pid"] == pid
    d.supctl_ok("stop", "web")  # the app held the port, not the supervisor: it is free again
    d.wait_for(lambda: _refused(port), 5, "the port to be closed once the app stopped")


def _refused(port: int) -> bool:
    try:
        http_get("127.0.0.1", port, timeout=1)
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    return False


# --------------------------------------------------------------------------- under load


def test_shared_socket_kill9_primary_under_load(make_daemon: DaemonFactory) -> None:
    """kill -9 of the primary on a shared socket under load fails no request."""
    port = free_port()
    app = {
        **app_cmd(),
        "instances": ["primary", "backup"],
        "listen": f"127.0.0.1:{port}",
        "ready": READY,
    }
    d = make_daemon({"web": app})
    pids = d.wait_running("web", "primary", "backup")
    with Load(port, threads=1, pause=0, max_seconds=25, max_requests=1000, timeout=5) as load:
        load.wait_ok(100)
        load.quiet(lambda: kill_dead(pids["primary"]))
        new = new_running_pid(d, "web", "primary", pids["primary"])
        load.wait_ok(200)
        load.stop()
    assert not load.failures, (
        f"{len(load.failures)} failed of {load.ok + len(load.failures)}: {load.failures[:5]}"
    )
    assert not pid_alive(pids["primary"])
    assert load.served_by[pids["backup"]] > 0
    assert set(load.served_by) <= {pids["primary"], pids["backup"], new}


def test_socket_per_instance_kill9_primary_under_load(make_daemon: DaemonFactory) -> None:
    """kill -9 of the primary with its own socket: clients wait in the backlog, none refused."""
    a, b = free_port(), free_port()
    app = {
        **app_cmd(),
        "instances": ["primary", "backup"],
        "listen": {"primary": f"127.0.0.1:{a}", "backup": f"127.0.0.1:{b}"},
        "ready": READY,
    }
    d = make_daemon({"web": app})
    pids = d.wait_running("web", "primary", "backup")
    with Load(a, threads=1, pause=0, max_seconds=25, max_requests=1000, timeout=5) as load:
        load.wait_ok(100)
        load.quiet(lambda: kill_dead(pids["primary"]))
        new = new_running_pid(d, "web", "primary", pids["primary"])
        load.wait_ok(100)
        load.stop()
    assert not load.failures, f"{len(load.failures)} failed: {load.failures[:5]}"
    assert set(load.served_by) == {pids["primary"], new}, load.served_by


# --------------------------------------------------------------------------- real servers


def test_gunicorn_serves_on_listen_fds(make_daemon: DaemonFactory) -> None:
    """A real gunicorn (2 workers, no --bind) serves on the supervisor's socket."""
    port = free_port()
    app = {
        "command": [PYTHON, "-m", "gunicorn", "tests.apps.wsgi_hello:app", "-w", "2"],
        "cwd": str(REPO),
        "listen": f"127.0.0.1:{port}",
        "ready": {"http": "http://{host}:{port}/", "timeout": 15},
        "stop": {"timeout": 5},
    }
    d = make_daemon({"gunicorn": app})
    master = d.wait_running("gunicorn", timeout=20)["primary"]
    cp = subprocess.run(
        ["curl", "-sS", "--max-time", "5", f"http://127.0.0.1:{port}/"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.startswith("hello from wsgi pid "), cp.stdout
    worker = int(cp.stdout.split()[-1])
    assert worker != master and os.getpgid(worker) == master, (
        "served by one of the master's workers"
    )
    d.record_tree()
    d.supctl_ok("stop", "gunicorn", timeout=15)
    assert not pid_alive(master) and not pid_alive(worker)


def test_uvicorn_serves_on_fd_3(make_daemon: DaemonFactory) -> None:
    """A real uvicorn started with --fd 3 serves on the supervisor's socket."""
    port = free_port()
    app = {
        "command": [
            PYTHON,
            "-m",
            "uvicorn",
            "tests.apps.asgi_hello:app",
            "--fd",
            "3",
            "--no-access-log",
        ],
        "cwd": str(REPO),
        "listen": f"127.0.0.1:{port}",
        "ready": {"http": "http://{host}:{port}/", "timeout": 15},
        "stop": {"timeout": 5},
    }
    d = make_daemon({"uvicorn": app})
    pid = d.wait_running("uvicorn", timeout=20)["primary"]
    cp = subprocess.run(
        ["curl", "-sS", "--max-time", "5", f"http://127.0.0.1:{port}/"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.strip() == f"hello from asgi pid {pid}", cp.stdout


# --------------------------------------------------------------------------- on stdin

# An inetd-style server: its listening socket is its standard input (fd 0). No braces:
# the command is a template ({port}).
STDIN_APP = """\
import json, os, signal, socket, sys, threading
from http.server import BaseHTTPRequestHandler, HTTPServer
try:
    listener = socket.socket(fileno=0)
    listener.getsockname()
except OSError as exc:
    print("stdin_app: no listening socket on standard input (%s)" % exc.strerror, flush=True)
    sys.exit(3)
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps(dict(pid=os.getpid(), env=sorted(os.environ))).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = HTTPServer(("127.0.0.1", 0), H, bind_and_activate=False)
server.socket = listener
# a graceful stop: accept nothing more (what waits in the shared socket's queue is the
# other instance's), finish what was accepted, exit
signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
print("serving on the socket at fd 0", flush=True)
server.serve_forever(poll_interval=0.05)
"""


def stdin_web(port: int, **extra: Any) -> dict[str, Any]:
    return {
        "command": [PYTHON, "-c", STDIN_APP],
        "instances": ["primary", "backup"],
        "listen": f"127.0.0.1:{port}",
        "socket_activation": "stdin",
        "ready": READY,
        **extra,
    }


def test_socket_on_stdin_is_kept_across_kill9_and_reload(make_daemon: DaemonFactory) -> None:
    """socket_activation: stdin: primary and backup share the supervisor's socket as
    their fd 0 (no LISTEN_FDS); a kill -9 of the primary and a reload under load fail
    no request."""
    port = free_port()
    d = make_daemon({"web": stdin_web(port)})
    pids = d.wait_running("web", "primary", "backup")
    listener = socket_inode(pids["primary"], 0)
    assert listener.startswith("socket:") and socket_inode(pids["backup"], 0) == listener
    status, body = http_get("127.0.0.1", port)
    assert status == 200
    assert not {"LISTEN_FDS", "LISTEN_PID"} & set(json.loads(body)["env"])
    with Load(port, threads=1, pause=0, max_seconds=40, max_requests=3000, timeout=5) as load:
        load.wait_ok(50)
        load.step = "kill -9 of the primary"
        load.quiet(lambda: kill_dead(pids["primary"]))
        new = new_running_pid(d, "web", "primary", pids["primary"])
        assert socket_inode(new, 0) == listener, "not the kept socket"
        load.step = "reload"
        assert d.supctl("reload", "web").returncode == 0
        load.wait_ok(100)
        load.stop()
    assert not load.failures, f"failed requests by step: {load.failed_steps()}"
    after = d.wait_running("web", "primary", "backup")
    assert after["primary"] != new and after["backup"] != pids["backup"]
    assert socket_inode(after["backup"], 0) == listener


def test_app_that_finds_no_socket_on_stdin_says_so_in_supctl(
    make_daemon: DaemonFactory,
) -> None:
    """The same app given LISTEN_FDS instead (fd 0 is /dev/null) exits at once: supctl's
    answer carries its own message."""
    port = free_port()
    app = stdin_web(port, socket_activation=True, instances=["primary"])
    app["backoff"] = {"max_retries": 0}
    d = make_daemon({"web": app}, start=True)
    cp = d.supctl("start", "web")
    assert cp.returncode == 1, (cp.stdout, cp.stderr)
    assert "stdin_app: no listening socket on standard input" in cp.stdout + cp.stderr
