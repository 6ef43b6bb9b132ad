"""End-to-end daemon: dependency order, shutdown, the state_dir lock, --check, logs, HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
from conftest import DaemonFactory
from helpers import (
    PYTHON,
    REPO,
    RunningDaemon,
    app_cmd,
    children_of,
    free_port,
    pid_alive,
    py_app,
)

READY = {"http": "http://{host}:{port}/health", "timeout": 5}


def event_time(record: dict[str, Any]) -> float:
    return datetime.fromisoformat(record["timestamp"]).timestamp()


def when(d: RunningDaemon, event: str, label: str, **match: Any) -> float:
    for e in d.events(event):
        if e.get("instance") == label and all(e.get(k) == v for k, v in match.items()):
            return event_time(e)
    raise AssertionError(f"no {event} {match} for {label} in the daemon's log:\n{d.output(40)}")


def web(**env: object) -> dict[str, Any]:
    return {
        **app_cmd(**env),
        "listen": f"127.0.0.1:{free_port()}",
        "ready": READY,
        "stop": {"timeout": 2},
    }


# --------------------------------------------------------------------------- order


def test_depends_on_orders_start_and_stop(make_daemon: DaemonFactory) -> None:
    """A dependent is first spawned after its dependency is RUNNING, and stopped before it."""
    db = web(BOOT_DELAY=0.7)
    api = {**web(), "depends_on": ["db"]}
    d = make_daemon({"api": api, "db": db})  # listed first, started second
    db_pid = d.wait_running("db")["primary"]
    api_pid = d.wait_running("api")["primary"]
    assert when(d, "spawned", "api:primary") >= when(
        d, "instance_state", "db:primary", state="RUNNING"
    )
    assert d.terminate() == 0
    assert not pid_alive(db_pid) and not pid_alive(api_pid)
    api_stopped = when(d, "instance_state", "api:primary", state="STOPPED")
    db_stopping = when(d, "instance_state", "db:primary", state="STOPPING")
    assert api_stopped <= db_stopping, "db was stopped while api (which needs it) still ran"


# --------------------------------------------------------------------------- shutdown, lock


def test_sigterm_stops_everything_and_exits_0(make_daemon: DaemonFactory) -> None:
    """SIGTERM stops every app (even TERM-ignoring and forking ones), exits 0, leaves no process."""
    stubborn = {**web(IGNORE_TERM=1), "stop": {"timeout": 1}}
    forky = {**web(GRANDCHILD=1), "stop": {"timeout": 1}}
    pair = {**web(), "instances": ["primary", "backup"]}
    d = make_daemon({"stubborn": stubborn, "forky": forky, "pair": pair})
    pids = [
        d.wait_running("stubborn")["primary"],
        d.wait_running("forky")["primary"],
        *d.wait_running("pair", "primary", "backup").values(),
    ]
    pids += d.wait_for(lambda: children_of(pids[1]), 5, "forky's grandchild")
    d.record_tree()
    started = time.monotonic()
    assert d.terminate() == 0, d.output(30)
    assert time.monotonic() - started < 8
    assert [p for p in pids if pid_alive(p)] == []
    assert d.leftovers() == []
    assert '"daemon_stopped"' in d.output()


def test_shutdown_leaves_no_inherited_orphan(make_daemon: DaemonFactory) -> None:
    """A helper that left its app's process group (setsid) does not outlive the daemon."""
    d = make_daemon({"web": {**web(ESCAPE_CHILD=1), "stop": {"timeout": 1}}})
    pid = d.wait_running("web")["primary"]
    helpers = d.wait_for(lambda: children_of(pid), 5, "the detached helper")
    d.record_tree()
    try:
        assert d.terminate() == 0
        assert [h for h in helpers if pid_alive(h)] == [], "the daemon exited leaving its child"
    finally:
        for h in helpers:  # so that the expected failure is the one above, not a leak
            if pid_alive(h):
                os.kill(h, signal.SIGKILL)


def test_stopping_a_dependency_stops_its_dependents_first(make_daemon: DaemonFactory) -> None:
    """`supctl stop DEP` stops the apps that depend on it first, then DEP."""
    d = make_daemon({"db": web(), "api": {**web(), "depends_on": ["db"]}})
    d.wait_running("db")
    d.wait_running("api")
    d.supctl_ok("stop", "db")
    status = d.status()["apps"]
    assert status["db"]["instances"]["primary"]["state"] == "STOPPED"
    assert status["api"]["instances"]["primary"]["state"] == "STOPPED"
    assert when(d, "instance_state", "api:primary", state="STOPPED") <= when(
        d, "instance_state", "db:primary", state="STOPPING"
    )
    cp = d.supctl("start", "api")
    assert cp.returncode == 1 and "db" in cp.stderr, cp.stderr


def test_second_daemon_on_same_state_dir_refuses(make_daemon: DaemonFactory) -> None:
    """A second daemon on the same state_dir exits 1 naming the other; the first is unharmed."""
    first = make_daemon({"web": web()})
    pid = first.wait_running("web")["primary"]
    second = make_daemon(
        {"other": web()}, start=False, supervisor={"state_dir": str(first.state_dir)}
    )
    second.start(wait=False)
    assert second.proc is not None
    code = second.proc.wait(15)
    assert code == 1, second.output()
    assert "another supervisord-lite" in second.output(), second.output()
    second.expected_exit = 1
    # the first daemon still answers, keeps its pidfile and its app
    assert (first.state_dir / "supervisord-lite.pid").read_text().strip() == str(
        first.pid_of_daemon
    )
    assert first.pid("web") == pid
    assert "other" not in first.status()["apps"]


def test_pidfile_holds_the_daemon_pid(make_daemon: DaemonFactory) -> None:
    """STATE_DIR/supervisord-lite.pid holds the daemon's pid while it runs."""
    d = make_daemon({})
    assert (d.state_dir / "supervisord-lite.pid").read_text().strip() == str(d.pid_of_daemon)


def test_check_config(tmp_path: Path) -> None:
    """`--check` exits 0 on a good config and 2 with file:line on a bad one."""
    good = tmp_path / "good.yaml"
    good.write_text(
        f"supervisor:\n  state_dir: {tmp_path / 'state'}\n"
        f"apps:\n  web:\n    command: [{PYTHON}, app.py]\n"
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        f"supervisor:\n  state_dir: {tmp_path / 'state'}\n"
        "apps:\n  web:\n    command: [true]\n    stop:\n      timeout: -1\n"
    )

    def check(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PYTHON, "-m", "supervisord_lite.cli", "-c", str(path), "--check"],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=str(REPO),
            check=False,
        )

    ok = check(good)
    assert ok.returncode == 0, ok.stderr
    ko = check(bad)
    assert ko.returncode == 2, (ko.stdout, ko.stderr)
    assert f"{bad}:7:" in ko.stderr, ko.stderr
    assert "apps.web.stop.timeout" in ko.stderr
    assert not (tmp_path / "state").exists(), "--check must not create the state_dir"


# --------------------------------------------------------------------------- logs


def rotation_files(d: RunningDaemon, app: str, n: int) -> list[Path]:
    """The current log file and its rotated copies .1 .. .n, oldest first."""
    log = d.log_file(app, "primary")
    return [*(Path(f"{log}.{k}") for k in range(n, 0, -1)), log]


def read_all(paths: list[Path]) -> str:
    return "".join(p.read_text() for p in paths if p.exists())


def test_output_lands_in_log_file_and_rotates(make_daemon: DaemonFactory) -> None:
    """Output goes to STATE_DIR/logs/APP.INSTANCE.log, rotated at max_bytes, `backups` kept."""
    app = {**web(PRINT_LINES=150, PRINT_EVERY=0.004), "logs": {"max_bytes": 2000, "backups": 3}}
    d = make_daemon({"chatty": app})
    pid = d.wait_running("chatty")["primary"]
    files = rotation_files(d, "chatty", 3)
    log = files[-1]
    d.wait_for(lambda: f"testapp pid {pid} serving" in read_all(files), 5, "the serving line")
    assert log.parent == d.state_dir / "logs" and log.name == "chatty.primary.log"
    assert all(p.exists() for p in files), sorted(os.listdir(log.parent))
    assert not Path(f"{log}.4").exists(), "more than `backups` rotated files kept"
    for p in files[:-1]:  # rotated at a line end, never past max_bytes
        assert 1500 <= p.stat().st_size <= 2000, (p.name, p.stat().st_size)
    text = read_all(files)
    assert "line 000149" in text  # the newest lines are kept, the oldest rotated away
    assert "line 000000" not in text
    numbers = [int(line.split()[1]) for line in text.splitlines() if line.startswith("line ")]
    assert numbers == list(range(numbers[0], 150)), "lines lost or reordered across rotations"


def test_log_file_never_grows_far_past_max_bytes(make_daemon: DaemonFactory) -> None:
    """A burst of output larger than max_bytes is still split into files of about max_bytes."""
    code = (
        "import os, time\n"
        "os.write(1, b''.join(b'line %06d ' % n + b'x' * 60 + b'\\n' for n in range(300)))\n"
        "os.write(1, b'done\\n')\n"
        "time.sleep(3600)\n"
    )
    app = {
        **py_app(code),
        "ready": {"delay": 0.2, "timeout": 5},
        "logs": {"max_bytes": 2000, "backups": 20},
    }
    d = make_daemon({"burst": app})
    d.wait_running("burst")
    files = rotation_files(d, "burst", 20)
    d.wait_for(lambda: "done" in read_all(files), 5, "the output to be written")
    sizes = {p.name: p.stat().st_size for p in files if p.exists()}
    assert max(sizes.values()) <= 2000 + 200, sizes  # max_bytes plus at most about one line


def test_sigusr1_reopens_log_files(make_daemon: DaemonFactory) -> None:
    """After logrotate renamed the file, SIGUSR1 makes the daemon write a new one."""
    d = make_daemon({"web": web()})
    d.wait_running("web")
    log = d.log_file("web", "primary")
    d.wait_for(lambda: log.exists() and "serving" in log.read_text(), 5, "the first output")
    moved = log.with_name(log.name + ".rotated")
    os.rename(log, moved)
    os.kill(d.pid_of_daemon, signal.SIGUSR1)
    d.wait_for(log.exists, 5, "a new log file after SIGUSR1")
    d.supctl_ok("restart", "web")
    new_pid = d.pid("web")
    d.wait_for(
        lambda: f"testapp pid {new_pid} serving" in log.read_text(),
        5,
        "the new process's output in the new file",
    )
    assert str(new_pid) not in moved.read_text()


def test_supctl_logs_shows_last_lines(make_daemon: DaemonFactory) -> None:
    """`supctl logs APP:INST -n 5` prints the last 5 lines of the app's output."""
    d = make_daemon({"web": web(PRINT_LINES=50)})
    pid = d.wait_running("web")["primary"]
    log = d.log_file("web", "primary")
    d.wait_for(lambda: log.exists() and "serving" in log.read_text(), 5, "the serving line")
    cp = d.supctl_ok("logs", "web:primary", "-n", "5")
    lines = cp.stdout.splitlines()
    assert lines == log.read_text().splitlines()[-5:], cp.stdout
    assert lines[-1] == f"testapp pid {pid} serving"
    assert lines[0].startswith("line 000046 ")


# --------------------------------------------------------------------------- HTTP


def test_http_status_and_healthz(make_daemon: DaemonFactory) -> None:
    """/status has real pids, rss, restarts; /healthz is 200 when all run, 503 on a BACKOFF."""
    good = {**web(), "instances": ["primary", "backup"]}
    bad = {
        **app_cmd(CRASH_AT_BOOT=1),
        "autostart": False,
        "ready": {"delay": 3, "timeout": 5},  # a crash ends the wait early
        "backoff": {"initial": 10, "max": 10},
    }
    d = make_daemon({"good": good, "bad": bad})
    pids = d.wait_running("good", "primary", "backup")
    code, body = d.http("/status")
    assert code == 200
    status = json.loads(body)
    assert status["supervisor"]["pid"] == d.pid_of_daemon
    for name, pid in pids.items():
        inst = status["apps"]["good"]["instances"][name]
        assert inst["pid"] == pid
        assert pid in children_of(d.pid_of_daemon)
        assert inst["rss_bytes"] > 0
        assert inst["restarts"] == 0
    code, _ = d.http("/healthz")
    assert code == 200

    os.kill(pids["primary"], signal.SIGKILL)
    d.wait_for(
        lambda: (
            d.instance("good", "primary", fast=True)["pid"] not in (None, pids["primary"])
            and d.instance("good", "primary", fast=True)["state"] == "RUNNING"
        ),
        5,
        "a respawn",
    )
    inst = json.loads(d.http("/status/good")[1])["instances"]["primary"]
    assert inst["restarts"] == 1

    assert d.supctl("start", "bad").returncode == 1
    d.wait_state("bad", "primary", "BACKOFF", timeout=5)
    code, body = d.http("/healthz")
    assert code == 503, body


def test_a_taken_http_port_ends_the_daemon_with_one_line_and_nothing_left(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    """The HTTP address is in use: the daemon exits 1 with one line naming the address
    (no traceback), before it started any app, and leaves no process, socket or pidfile."""
    marker = tmp_path / "the app started"
    port = free_port()
    with socket.create_server(("127.0.0.1", port)):  # the port is taken (and listening)
        d = make_daemon(
            {"web": py_app(f"open({str(marker)!r}, 'w'); import signal; signal.pause()")},
            start=False,
        )
        d.config["supervisor"]["http"]["listen"] = f"127.0.0.1:{port}"
        d.write_config()
        d.expected_exit = 1
        d.start(wait=False)
        assert d.proc is not None
        assert d.proc.wait(30) == 1, d.output()
    assert d.output().splitlines() == [
        f"supervisord-lite: cannot serve HTTP on 127.0.0.1:{port}: Address already in use"
    ]
    assert not marker.exists()
    running = [
        p.pid for p in psutil.process_iter(["cmdline"]) if str(marker) in (p.info["cmdline"] or [])
    ]
    assert not running, running
    left = sorted(p.name for p in d.state_dir.iterdir()) if d.state_dir.exists() else []
    assert not {"supctl.sock", "notify.sock", "supervisord-lite.pid"} & set(left), left


# A loop that is not draining its self-pipe (a busy daemon) while signals keep coming,
# as when hundreds of children exit at once. With asyncio's default, a full pipe makes
# CPython's C signal handler queue a warning through a lock (the deadlock of a
# shutdown seen at 400 instances); the daemon turns that off. The warning, printed
# when Python runs its pending calls, shows that the lock-taking path ran.
FULL_WAKEUP_PIPE = """
import asyncio, os, signal, sys
from supervisord_lite.daemon.main import silence_full_wakeup_fd
loop = asyncio.new_event_loop()
loop.add_signal_handler(signal.SIGCHLD, lambda: None)
if sys.argv[1] == "daemon":
    silence_full_wakeup_fd()
for _ in range(20000):  # far more bytes than a socketpair's buffer holds
    os.kill(os.getpid(), signal.SIGCHLD)
loop.close()
print("survived")
"""


def test_a_full_signal_wakeup_pipe_takes_no_lock_in_the_signal_handler() -> None:
    results = {
        how: subprocess.run(
            [PYTHON, "-c", FULL_WAKEUP_PIPE, how],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
        )
        for how in ("asyncio", "daemon")
    }
    for how, cp in results.items():
        assert cp.returncode == 0 and cp.stdout == "survived\n", (how, cp.stdout, cp.stderr)
    # asyncio's own setting takes the lock-taking path (else this test proves nothing)
    assert "signal wakeup fd" in results["asyncio"].stderr, results["asyncio"].stderr
    assert "signal wakeup fd" not in results["daemon"].stderr, results["daemon"].stderr
