"""End-to-end readiness and liveness: what "started" means, health checks, the watchdog."""

from __future__ import annotations

import os
import signal
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import DaemonFactory
from helpers import RunningDaemon, app_cmd, free_port, pid_alive, py_app

BOOT_DELAY = 1.0


def event_time(record: dict[str, Any]) -> float:
    return datetime.fromisoformat(record["timestamp"]).timestamp()


def first_event(d: RunningDaemon, event: str, label: str, **match: Any) -> dict[str, Any]:
    for e in d.events(event):
        if e.get("instance") == label and all(e.get(k) == v for k, v in match.items()):
            return e
    raise AssertionError(f"no {event} {match} for {label} in the daemon's log")


def ever_running(d: RunningDaemon, label: str) -> bool:
    return any(
        e.get("instance") == label and e.get("state") == "RUNNING"
        for e in d.events("instance_state")
    )


def replaced(d: RunningDaemon, app: str, old: int, timeout: float) -> dict[str, Any]:
    """Wait until ``app:primary`` runs a process other than ``old``; its status."""

    def check() -> dict[str, Any] | None:
        i = d.instance(app, "primary", fast=True)
        return i if i["state"] == "RUNNING" and i["pid"] not in (None, old) else None

    return d.wait_for(check, timeout, f"{app}:primary to be replaced")


# --------------------------------------------------------------------------- gating


GATES: dict[str, dict[str, Any]] = {
    "http": {"env": {"BOOT_DELAY": BOOT_DELAY}, "ready": {"http": "http://{host}:{port}/health"}},
    "tcp": {"env": {"BOOT_DELAY": BOOT_DELAY}, "ready": {"tcp": "{host}:{port}"}},
    "exec": {
        "env": {"BOOT_DELAY": BOOT_DELAY},
        "ready": {
            "exec": [
                "curl",
                "-sf",
                "--max-time",
                "0.3",
                "-o",
                "/dev/null",
                "http://{host}:{port}/health",
            ]
        },
    },
    "notify": {"env": {"BOOT_DELAY": BOOT_DELAY, "NOTIFY_READY": 1}, "ready": {"notify": True}},
    "delay": {"env": {}, "ready": {"delay": BOOT_DELAY}},
}


@pytest.mark.parametrize("kind", list(GATES))
def test_ready_check_gates_running(make_daemon: DaemonFactory, kind: str) -> None:
    """Each kind of ready check keeps the instance STARTING until it passes, then RUNNING."""
    gate = GATES[kind]
    app = {
        **app_cmd(**gate["env"]),
        "listen": f"127.0.0.1:{free_port()}",
        "ready": {**gate["ready"], "timeout": 10},
    }
    d = make_daemon({"web": app})
    d.wait_running("web", timeout=10)
    spawned = event_time(first_event(d, "spawned", "web:primary"))
    running = event_time(first_event(d, "instance_state", "web:primary", state="RUNNING"))
    assert running - spawned >= BOOT_DELAY, f"RUNNING after {running - spawned:.2f}s only"
    assert running - spawned < BOOT_DELAY + 5
    assert "STARTING" in [e["state"] for e in d.events("instance_state")]


def test_notify_without_ready_fails_naming_ready1(make_daemon: DaemonFactory) -> None:
    """`notify: true` with an app that never sends READY=1 fails within ready.timeout, saying so."""
    app = {
        **app_cmd(),
        "listen": f"127.0.0.1:{free_port()}",
        "autostart": False,
        "ready": {"notify": True, "timeout": 1.5},
        "backoff": {"initial": 5, "max": 5},
    }
    d = make_daemon({"mute": app})
    started = time.monotonic()
    cp = d.supctl("start", "mute")
    elapsed = time.monotonic() - started
    assert cp.returncode == 1, (cp.stdout, cp.stderr)
    assert "READY=1" in cp.stderr, cp.stderr
    assert 1.4 <= elapsed < 4.5, f"failed after {elapsed:.2f}s with ready.timeout 1.5"
    assert not ever_running(d, "mute:primary")


def test_health_503_never_becomes_running(make_daemon: DaemonFactory) -> None:
    """With HEALTH_STATUS=503 and an http ready check, the start fails and it is never RUNNING."""
    app = {
        **app_cmd(HEALTH_STATUS=503),
        "listen": f"127.0.0.1:{free_port()}",
        "autostart": False,
        "ready": {"http": "http://{host}:{port}/health", "timeout": 1.5},
        "backoff": {"initial": 5, "max": 5},
    }
    d = make_daemon({"sick": app})
    cp = d.supctl("start", "sick")
    assert cp.returncode == 1, (cp.stdout, cp.stderr)
    assert "503" in cp.stderr, cp.stderr
    assert d.instance("sick", "primary")["state"] != "RUNNING"
    assert not ever_running(d, "sick:primary")


@pytest.mark.parametrize("kind", ["http", "tcp"])
def test_shared_socket_readiness_is_attributed(
    make_daemon: DaemonFactory, tmp_path: Path, kind: str
) -> None:
    """On a shared socket, the primary's answers never make a booting/unhealthy backup RUNNING."""
    port = free_port()
    if kind == "http":  # the backup answers /health with 503 while its file exists
        knob = {"HEALTH_FILE": str(tmp_path / "block.{instance}")}
        ready: dict[str, Any] = {"http": "http://{host}:{port}/health"}
    else:  # the backup does not accept at all while its file exists
        knob = {"HOLD_FILE": str(tmp_path / "block.{instance}")}
        ready = {"tcp": "{host}:{port}"}
    block = tmp_path / "block.backup"
    block.touch()
    app = {
        **app_cmd(**knob),
        "instances": ["primary", "backup"],
        "listen": f"127.0.0.1:{port}",
        "ready": {**ready, "timeout": 1.5},
        "backoff": {"initial": 0.3, "max": 0.3},
        "stop": {"timeout": 2},
    }
    d = make_daemon({"web": app})
    d.wait_running("web", "primary")
    # the backup's first attempt must run out its whole ready timeout, and fail
    d.wait_for(
        lambda: "not ready" in (d.instance("web", "backup", fast=True)["last_error"] or ""),
        6,
        "the backup's ready check to time out",
    )
    assert not ever_running(d, "web:backup"), (
        "the backup was declared ready by the primary's answer"
    )
    assert d.instance("web", "backup")["state"] != "RUNNING"
    block.unlink()
    d.wait_running("web", "backup", timeout=8)


# --------------------------------------------------------------------------- liveness


def test_sigstopped_instance_is_restarted_after_failed_checks(make_daemon: DaemonFactory) -> None:
    """An instance that stops answering (SIGSTOP) is replaced after `failures` failed checks."""
    app = {
        **app_cmd(),
        "listen": f"127.0.0.1:{free_port()}",
        "ready": {"http": "http://{host}:{port}/health", "timeout": 5},
        "health": {
            "http": "http://{host}:{port}/health",
            "interval": 0.2,
            "timeout": 0.5,
            "failures": 2,
        },
        "stop": {"timeout": 1},
    }
    d = make_daemon({"web": app})
    pid = d.wait_running("web")["primary"]
    d.wait_for(
        lambda: d.instance("web", "primary", fast=True)["healthy"] is True,
        5,
        "the first passing health check",
    )
    os.kill(pid, signal.SIGSTOP)
    try:
        info = replaced(d, "web", pid, timeout=10)
    finally:
        if pid_alive(pid):
            os.kill(pid, signal.SIGCONT)
    assert info["restarts"] >= 1
    assert info["health_failures"] >= 2
    d.wait_for(lambda: not pid_alive(pid), 5, "the hung process to be gone")


def test_sigstopped_primary_on_shared_socket_is_restarted(make_daemon: DaemonFactory) -> None:
    """A primary that stops accepting on a socket shared with its backup is still replaced."""
    app = {
        **app_cmd(),
        "instances": ["primary", "backup"],
        "listen": f"127.0.0.1:{free_port()}",
        "ready": {"http": "http://{host}:{port}/health", "timeout": 5},
        "health": {
            "http": "http://{host}:{port}/health",
            "interval": 0.2,
            "timeout": 0.5,
            "failures": 2,
        },
        "stop": {"timeout": 1},
    }
    d = make_daemon({"web": app})
    pids = d.wait_running("web", "primary", "backup")
    os.kill(pids["primary"], signal.SIGSTOP)
    try:
        replaced(d, "web", pids["primary"], timeout=4)
    finally:
        if pid_alive(pids["primary"]):
            os.kill(pids["primary"], signal.SIGCONT)
    assert d.pid("web", "backup") == pids["backup"]


# answers and hangs up: its status line ends at its close (no line end), so the
# daemon has the answer only once the process no longer holds the connection it
# accepted (a fast server that closes right after its answer, made deterministic)
FAST_CLOSING_APP = """
import os, socket, time
sock = socket.socket(fileno=3)
while os.path.exists(os.environ["HOLD_FILE"]):
    time.sleep(0.05)
while True:
    conn, _ = sock.accept()
    conn.recv(4096)
    conn.sendall(b"HTTP/1.0 200 OK")
    conn.close()
"""


def _held_backup(
    tmp_path: Path, ready: dict[str, Any], fast_closing: bool = False
) -> dict[str, Any]:
    """Primary and backup on one socket; the backup keeps booting (not accepting) while
    its hold file exists, so every probe of the backup is accepted by the primary. The
    liveness interval is an hour: a passed check can only be a credited one."""
    (tmp_path / "hold.backup").touch()
    hold = str(tmp_path / "hold.{instance}")
    return {
        **(py_app(FAST_CLOSING_APP, HOLD_FILE=hold) if fast_closing else app_cmd(HOLD_FILE=hold)),
        "instances": ["primary", "backup"],
        "listen": f"127.0.0.1:{free_port()}",
        "ready": ready,
        "health": {"http": "http://{host}:{port}/health", "interval": 3600, "failures": 2},
        "stop": {"timeout": 2},
    }


@pytest.mark.parametrize("fast_closing", [False, True], ids=["testapp", "fast-closing"])
def test_probe_answered_by_the_other_instance_is_credited_to_it(
    make_daemon: DaemonFactory, tmp_path: Path, fast_closing: bool
) -> None:
    """On a shared socket, a probe of the backup that the primary accepts and answers
    well counts as the primary's passed liveness check (it proves the primary serves),
    also when the primary has closed that connection by the time its answer is read."""
    ready = {"http": "http://{host}:{port}/health", "timeout": 30}
    d = make_daemon({"web": _held_backup(tmp_path, ready, fast_closing)})
    d.wait_running("web", "primary")

    def credited() -> dict[str, Any] | None:
        info = d.instance("web", "primary", fast=True)
        return info if info["healthy"] is True else None

    primary = d.wait_for(credited, 10, "the primary to be credited with the backup's probes")
    assert primary["health_failures"] == 0
    assert d.instance("web", "backup", fast=True)["state"] == "STARTING"
    (tmp_path / "hold.backup").unlink()
    d.wait_running("web", "primary", "backup")


def test_answer_to_another_check_is_not_credited(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    """A probe that asks something else than the liveness check (here the backup's TCP
    readiness check, which the primary accepts) is not credited to the primary."""
    ready = {"tcp": "{host}:{port}", "timeout": 2}
    app = {**_held_backup(tmp_path, ready), "backoff": {"initial": 30, "max": 30}}
    d = make_daemon({"web": app})
    d.wait_running("web", "primary")
    d.wait_for(
        lambda: d.instance("web", "backup", fast=True)["state"] == "BACKOFF",
        15,
        "the backup's readiness (all its probes accepted by the primary) to fail",
    )
    assert d.instance("web", "primary", fast=True)["healthy"] is None


def test_health_file_makes_instance_be_restarted(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    """When /health starts failing (HEALTH_FILE appears), the instance is restarted."""
    sick = tmp_path / "sick"
    app = {
        **app_cmd(HEALTH_FILE=str(sick)),
        "listen": f"127.0.0.1:{free_port()}",
        "ready": {"http": "http://{host}:{port}/", "timeout": 5},
        "health": {
            "http": "http://{host}:{port}/health",
            "interval": 0.2,
            "timeout": 1,
            "failures": 2,
        },
        "backoff": {"initial": 0.2, "max": 0.5},
    }
    d = make_daemon({"web": app})
    pid = d.wait_running("web")["primary"]
    d.wait_for(
        lambda: d.instance("web", "primary", fast=True)["healthy"] is True,
        5,
        "the first passing health check",
    )
    sick.touch()
    info = replaced(d, "web", pid, timeout=10)
    assert info["restarts"] >= 1
    assert "health" in (info["last_error"] or ""), info["last_error"]
    sick.unlink()
    d.wait_for(
        lambda: d.instance("web", "primary", fast=True)["healthy"] is True,
        5,
        "the replacement to be healthy",
    )


def test_watchdog(make_daemon: DaemonFactory) -> None:
    """With `watchdog: 1`, an app that never pings is replaced and one pinging every 0.2 s stays."""
    base = {
        "ready": {"delay": 0.1, "timeout": 5},
        "watchdog": 1,
        "backoff": {"initial": 0.2, "max": 0.5},
        "stop": {"timeout": 1},
    }
    silent = {**app_cmd(), "listen": f"127.0.0.1:{free_port()}", **base}
    pinging = {**app_cmd(WATCHDOG_EVERY=0.2), "listen": f"127.0.0.1:{free_port()}", **base}
    d = make_daemon({"silent": silent, "pinging": pinging})
    silent_pid = d.wait_running("silent")["primary"]
    pinging_pid = d.wait_running("pinging")["primary"]
    info = replaced(d, "silent", silent_pid, timeout=5)
    assert "watchdog" in (info["last_error"] or ""), info["last_error"]
    # the pinging app has now outlived the silent one's deadline; keep watching it a while
    until = time.monotonic() + 2.0
    while time.monotonic() < until:
        pinger = d.instance("pinging", "primary", fast=True)
        assert pinger["pid"] == pinging_pid and pinger["state"] == "RUNNING", pinger
        time.sleep(0.1)
    assert d.instance("pinging", "primary")["restarts"] == 0


@pytest.mark.parametrize(
    ("sent", "shown"), [("serving 3 workers", "serving 3 workers"), ("x" * 2000, "x" * 512)]
)
def test_status_text_of_the_app_is_shown_and_bounded(
    make_daemon: DaemonFactory, sent: str, shown: str
) -> None:
    """The app's STATUS= is in /status (its own words, cut at 512 characters)."""
    app = {
        **app_cmd(NOTIFY_READY=1, NOTIFY_STATUS=sent),
        "listen": f"127.0.0.1:{free_port()}",
        "ready": {"notify": True, "timeout": 10},
    }
    d = make_daemon({"web": app})
    d.wait_running("web", timeout=10)
    d.wait_for(lambda: d.instance("web", "primary")["status_text"] == shown, 10, "the STATUS= text")
