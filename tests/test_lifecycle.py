"""End-to-end lifecycle: start, stop, restart, crashes, restart policies, what a child gets.

Every test runs a real daemon (tests/helpers/) with real children; teardown fails
a test whose daemon leaves any process behind.
"""

from __future__ import annotations

import json
import os
import signal
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from conftest import DaemonFactory
from helpers import (
    app_cmd,
    children_of,
    free_port,
    pid_alive,
    py_app,
)

READY_TIMEOUT = 5


def web(
    port: int, instances: tuple[str, ...] = ("primary", "backup"), **env: object
) -> dict[str, Any]:
    """A testapp with primary+backup on one shared socket, ready by HTTP."""
    return {
        **app_cmd(**env),
        "instances": list(instances),
        "listen": f"127.0.0.1:{port}",
        "ready": {"http": "http://{host}:{port}/health", "timeout": READY_TIMEOUT},
        "stop": {"timeout": 3},
        "backoff": {"initial": 0.2, "max": 1},
    }


def event_time(record: dict[str, Any]) -> float:
    return datetime.fromisoformat(record["timestamp"]).timestamp()


def spawn_count(d: Any, label: str) -> int:
    return len([e for e in d.events("spawned") if e.get("instance") == label])


def states_seen(d: Any, label: str) -> list[str]:
    return [e["state"] for e in d.events("instance_state") if e.get("instance") == label]


def read_report(path: Path, timeout: float = 5.0) -> dict[str, Any]:
    """The JSON report testapp writes with ENV_FILE (waits for it to appear)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} was never written"
        time.sleep(0.02)
    report: dict[str, Any] = json.loads(path.read_text())
    return report


# --------------------------------------------------------------------------- start/stop


def test_start_stop_restart_app_and_instance(make_daemon: DaemonFactory) -> None:
    """start/stop/restart of one instance and of the whole app change states and pids as asked."""
    d = make_daemon({"web": web(free_port())})
    pids = d.wait_running("web", "primary", "backup")

    d.supctl_ok("stop", "web:backup")
    backup = d.instance("web", "backup")
    assert backup["state"] == "STOPPED" and backup["pid"] is None
    assert not pid_alive(pids["backup"])
    assert d.pid("web", "primary") == pids["primary"], "stopping the backup touched the primary"

    d.supctl_ok("start", "web:backup")
    backup = d.instance("web", "backup")
    assert backup["state"] == "RUNNING"
    assert backup["pid"] not in (None, pids["backup"])
    pids["backup"] = backup["pid"]

    d.supctl_ok("restart", "web:primary")
    primary = d.instance("web", "primary")
    assert primary["state"] == "RUNNING" and primary["pid"] != pids["primary"]
    assert not pid_alive(pids["primary"])
    assert d.pid("web", "backup") == pids["backup"], "restarting the primary touched the backup"
    pids["primary"] = primary["pid"]

    d.supctl_ok("stop", "web")
    app = d.status()["apps"]["web"]
    assert {i["state"] for i in app["instances"].values()} == {"STOPPED"}
    assert not any(pid_alive(p) for p in pids.values())

    d.supctl_ok("start", "web")
    app = d.status()["apps"]["web"]
    assert {i["state"] for i in app["instances"].values()} == {"RUNNING"}
    new = {n: i["pid"] for n, i in app["instances"].items()}
    assert not set(new.values()) & set(pids.values())

    d.supctl_ok("restart", "web")
    app = d.status()["apps"]["web"]
    assert {i["state"] for i in app["instances"].values()} == {"RUNNING"}
    assert not {i["pid"] for i in app["instances"].values()} & set(new.values())
    assert not d.zombie_children()


def test_start_of_app_crashing_at_boot_fails_with_reason(make_daemon: DaemonFactory) -> None:
    """`supctl start` of an app crashing at boot exits 1 at once with the reason and its output."""
    app = {
        **app_cmd(CRASH_AT_BOOT=3),
        "autostart": False,
        "ready": {"delay": 3, "timeout": READY_TIMEOUT},  # a crash ends the wait early
        "backoff": {"initial": 2, "max": 2},
    }
    d = make_daemon({"db-app": app})
    started = time.monotonic()
    cp = d.supctl("start", "db-app")
    elapsed = time.monotonic() - started
    assert cp.returncode == 1, (cp.returncode, cp.stdout, cp.stderr)
    assert elapsed < READY_TIMEOUT, f"took {elapsed:.1f}s, longer than the readiness deadline"
    assert "exited with status 3" in cp.stderr, cp.stderr
    assert "fatal: cannot connect to the database" in cp.stderr, cp.stderr
    assert d.instance("db-app", "primary")["state"] in ("BACKOFF", "STARTING")


# --------------------------------------------------------------------------- crashes


def test_kill9_of_running_instance_is_respawned(make_daemon: DaemonFactory) -> None:
    """A kill -9 of a RUNNING instance is respawned at once: new pid, restarts+1, RUNNING again."""
    d = make_daemon({"web": web(free_port())})
    pids = d.wait_running("web", "primary", "backup")
    os.kill(pids["primary"], signal.SIGKILL)
    info = d.wait_for(
        lambda: (
            i
            if (i := d.instance("web", "primary", fast=True))["state"] == "RUNNING"
            and i["pid"] != pids["primary"]
            else None
        ),
        timeout=5,
        what="a new RUNNING primary",
    )
    assert info["restarts"] == 1
    assert info["exit_status"] == -signal.SIGKILL
    assert d.pid("web", "backup") == pids["backup"]
    assert d.instance("web", "backup")["restarts"] == 0
    d.wait_for(lambda: not d.zombie_children(), 2, "no zombie children of the daemon")


def test_second_quick_crash_goes_through_backoff(make_daemon: DaemonFactory) -> None:
    """A second crash soon after the first waits in BACKOFF before the next spawn."""
    app = web(free_port(), instances=("primary",))
    app["backoff"] = {"initial": 1.0, "max": 5, "reset_after": 60}
    d = make_daemon({"web": app})
    first = d.wait_running("web")["primary"]
    os.kill(first, signal.SIGKILL)
    second = d.wait_for(
        lambda: (
            i["pid"]
            if (i := d.instance("web", "primary", fast=True))["state"] == "RUNNING"
            and i["pid"] != first
            else None
        ),
        5,
        "the first respawn",
    )
    assert "BACKOFF" not in states_seen(d, "web:primary"), "the first crash should respawn at once"
    os.kill(second, signal.SIGKILL)
    d.wait_state("web", "primary", "BACKOFF", timeout=3)
    info = d.wait_state("web", "primary", "RUNNING", timeout=5)
    moves = [e for e in d.events("instance_state") if e.get("instance") == "web:primary"]
    i = next(n for n, e in enumerate(moves) if e["state"] == "BACKOFF")
    assert moves[i + 1]["state"] == "STARTING", moves
    waited = event_time(moves[i + 1]) - event_time(moves[i])
    assert waited >= 0.8 * 1.0 - 0.01, f"BACKOFF lasted {waited:.2f}s with backoff.initial 1"
    assert info["pid"] not in (first, second)
    assert info["restarts"] == 2
    assert spawn_count(d, "web:primary") == 3


def test_max_retries_ends_in_fatal(make_daemon: DaemonFactory) -> None:
    """A crash-at-boot app with max_retries: 2 is tried 1+2 times and ends in FATAL."""
    app = {
        **app_cmd(CRASH_AT_BOOT=1),
        "ready": {"delay": 3, "timeout": READY_TIMEOUT},  # a crash ends the wait early
        "backoff": {"initial": 0.1, "max": 0.2, "max_retries": 2},
    }
    d = make_daemon({"crashy": app})
    info = d.wait_state("crashy", "primary", "FATAL", timeout=8)
    assert info["pid"] is None
    assert info["exit_status"] == 1
    assert "exited with status 1" in (info["last_error"] or "")
    assert spawn_count(d, "crashy:primary") == 3
    assert d.status()["apps"]["crashy"]["state"] == "FATAL"


def test_restart_never_leaves_exited(make_daemon: DaemonFactory) -> None:
    """With restart: never, a killed RUNNING instance stays EXITED and is not respawned."""
    app = {**web(free_port(), instances=("primary",)), "restart": "never"}
    d = make_daemon({"web": app})
    pid = d.wait_running("web")["primary"]
    os.kill(pid, signal.SIGKILL)
    d.wait_for(
        lambda: d.instance("web", "primary", fast=True)["pid"] != pid, 5, "the exit to be seen"
    )
    info = d.instance("web", "primary")
    assert info["state"] == "EXITED", info
    assert info["pid"] is None
    assert info["exit_status"] == -signal.SIGKILL
    assert spawn_count(d, "web:primary") == 1


def test_on_failure_policy(make_daemon: DaemonFactory) -> None:
    """restart: on-failure leaves a clean exit EXITED and restarts a failing one."""
    code = "import os, sys, time; time.sleep(0.6); sys.exit(int(os.environ['CODE']))"
    policy = {
        "restart": "on-failure",
        "ready": {"delay": 0.1, "timeout": 5},
        "backoff": {"initial": 0.1, "max": 0.2},
    }
    clean = {**py_app(code, CODE=0), **policy}
    failing = {**py_app(code, CODE=7), **policy}
    d = make_daemon({"clean": clean, "failing": failing})
    info = d.wait_state("clean", "primary", "EXITED", timeout=5)
    assert info["exit_status"] == 0 and info["pid"] is None
    assert spawn_count(d, "clean:primary") == 1
    d.wait_for(
        lambda: d.instance("failing", "primary", fast=True)["restarts"] >= 1,
        5,
        "the failing app to be restarted",
    )
    assert d.instance("failing", "primary")["exit_status"] == 7


# --------------------------------------------------------------------------- what a child gets


def test_child_gets_env_cwd_supervisor_vars_and_port(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    """env (with placeholders), cwd, SUPERVISOR_* and PORT reach the child."""
    port = free_port()
    workdir = tmp_path / "work dir"
    workdir.mkdir()
    app = web(
        port,
        instances=("primary",),
        GREETING="hello {app}/{instance}",
        ENV_FILE=str(tmp_path / "env.{instance}.json"),
    )
    app["cwd"] = str(workdir)
    d = make_daemon({"web": app})
    pid = d.wait_running("web")["primary"]
    report = read_report(tmp_path / "env.primary.json")
    env = report["env"]
    assert report["pid"] == pid
    assert report["cwd"] == str(workdir)
    assert env["GREETING"] == "hello web/primary"
    assert env["SUPERVISOR_APP"] == "web"
    assert env["SUPERVISOR_INSTANCE"] == "primary"
    assert env["SUPERVISOR_GENERATION"] == "1"
    assert "SUPERVISOR_RELEASE" in env
    assert env["PORT"] == str(port)
    assert "NOTIFY_SOCKET" not in env, "NOTIFY_SOCKET is only for notify/watchdog apps"


def test_child_is_session_leader_with_umask(make_daemon: DaemonFactory, tmp_path: Path) -> None:
    """The child leads its own session and process group, and gets the configured umask."""
    app = {
        **web(free_port(), instances=("primary",), ENV_FILE=str(tmp_path / "env.json")),
        "umask": "027",
    }
    d = make_daemon({"web": app})
    pid = d.wait_running("web")["primary"]
    report = read_report(tmp_path / "env.json")
    assert report["pid"] == pid
    assert report["pgid"] == pid and report["sid"] == pid
    assert os.getpgid(pid) == pid and os.getsid(pid) == pid
    assert report["umask"] == 0o027


# --------------------------------------------------------------------------- stop


def test_stop_sigkills_app_ignoring_term_after_timeout(make_daemon: DaemonFactory) -> None:
    """An app that ignores SIGTERM is SIGKILLed once stop.timeout has passed."""
    app = {**web(free_port(), instances=("primary",), IGNORE_TERM=1), "stop": {"timeout": 1}}
    d = make_daemon({"stubborn": app})
    pid = d.wait_running("stubborn")["primary"]
    started = time.monotonic()
    d.supctl_ok("stop", "stubborn", timeout=10)
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 6, f"stop took {elapsed:.2f}s with stop.timeout 1"
    assert not pid_alive(pid)
    info = d.instance("stubborn", "primary")
    assert info["state"] == "STOPPED"
    assert info["exit_status"] == -signal.SIGKILL
    assert not d.zombie_children()


def test_stop_leaves_no_grandchild(make_daemon: DaemonFactory) -> None:
    """Stopping an app whose child forked a TERM-ignoring helper leaves no grandchild."""
    app = {**web(free_port(), instances=("primary",), GRANDCHILD=1), "stop": {"timeout": 1}}
    d = make_daemon({"forky": app})
    pid = d.wait_running("forky")["primary"]
    grandchildren = d.wait_for(lambda: children_of(pid), 5, "the grandchild to be forked")
    d.supctl_ok("stop", "forky", timeout=10)
    assert not pid_alive(pid)
    d.wait_for(lambda: not any(pid_alive(g) for g in grandchildren), 3, "the grandchild to be gone")
    d.wait_for(lambda: not d.zombie_children(), 2, "no zombie children of the daemon")


def test_crash_kills_leftovers_of_the_dead_generation(make_daemon: DaemonFactory) -> None:
    """When a child dies, what is left of its process group (a forked helper) is killed too."""
    app = {**web(free_port(), instances=("primary",), GRANDCHILD=1), "stop": {"timeout": 1}}
    d = make_daemon({"forky": app})
    pid = d.wait_running("forky")["primary"]
    grandchildren = d.wait_for(lambda: children_of(pid), 5, "the grandchild to be forked")
    try:
        os.kill(pid, signal.SIGKILL)
        d.wait_for(
            lambda: d.instance("forky", "primary", fast=True)["pid"] not in (None, pid),
            5,
            "a respawned primary",
        )
        d.wait_for(
            lambda: not any(pid_alive(g) for g in grandchildren),
            3,
            "the dead generation's grandchild to be killed",
        )
        d.wait_for(lambda: not d.zombie_children(), 2, "no zombie children of the daemon")
    finally:
        for g in grandchildren:  # so that the expected failure is this one, not a leak
            if pid_alive(g):
                os.kill(g, signal.SIGKILL)
