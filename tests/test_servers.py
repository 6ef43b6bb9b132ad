"""Real app servers as operators run them, and the replacement of a sick instance.

- a listener with TCP_DEFER_ACCEPT (tests/apps/deferred_accept.py sets it on fd 3, as
  Unicorn does on every listener) starts, reloads and passes health checks;
- Unicorn from Debian with a stock unicorn.rb (pidfile, the classic ``.oldbin`` QUIT
  recipe) reloads by USR2 under wrk load with no failed request, on its own port and
  by LISTEN_FDS; a failed re-exec whose recipe already stopped the old master says
  the instance was restarted cold;
- Puma from Debian by LISTEN_FDS with sd_notify;
- an instance whose liveness check or watchdog fails is replaced by a hot swap: the
  replacement is ready before the old process gets its stop signal.

The real servers are skipped (saying which package is missing) only when their binary
is not installed; tests/run.sh installs them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import DaemonFactory
from helpers import (
    APPS_DIR,
    PYTHON,
    RunningDaemon,
    children_of,
    free_port,
    http_get,
    parent_of,
    pid_alive,
    proc_state,
    py_app,
)
from helpers.load import WRK, Wrk

UNICORN = shutil.which("unicorn")
PUMA = shutil.which("puma")
RACK_DIR = APPS_DIR / "unicorn"  # unicorn.rb and the config.ru both servers run
INSTANCES = ("primary", "backup")

needs_unicorn = pytest.mark.skipif(
    UNICORN is None or WRK is None,
    reason="needs the Debian packages unicorn and wrk (tests/run.sh installs them)",
)


def _has_sd_notify() -> bool:
    if shutil.which("ruby") is None:
        return False
    cp = subprocess.run(
        ["ruby", "-e", "require 'sd_notify'"], capture_output=True, timeout=30, check=False
    )
    return cp.returncode == 0


needs_puma = pytest.mark.skipif(
    PUMA is None or not _has_sd_notify(),
    reason="needs the Debian packages puma and ruby-sd-notify (tests/run.sh installs them)",
)


# --------------------------------------------------------------------------- helpers


def instances(d: RunningDaemon, app: str) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = d.http_status()["apps"][app]["instances"]
    return result


def running(
    d: RunningDaemon, app: str, names: tuple[str, ...] = INSTANCES, timeout: float = 20.0
) -> dict[str, dict[str, Any]]:
    return {n: d.wait_state(app, n, "RUNNING", timeout) for n in names}


def get_json(port: int, path: str = "/") -> dict[str, Any]:
    code, body = http_get("127.0.0.1", port, path)
    assert code == 200, (code, body)
    result: dict[str, Any] = json.loads(body)
    return result


def live_children(d: RunningDaemon) -> set[int]:
    """The daemon's direct children that are alive (app masters, after re-parenting)."""
    return {p for p in children_of(d.pid_of_daemon) if pid_alive(p)}


def swap_events(d: RunningDaemon, label: str, **match: Any) -> list[dict[str, Any]]:
    return [
        e
        for e in d.events("swap_finished")
        if e.get("instance") == label and all(e.get(k) == v for k, v in match.items())
    ]


# --------------------------------------------------------------------------- deferred accept


@pytest.mark.parametrize("probe", ["http", "tcp"])
def test_deferred_accept_listener_starts_reloads_and_passes_health_checks(
    make_daemon: DaemonFactory, probe: str
) -> None:
    """An attributed probe on a TCP_DEFER_ACCEPT listener sends data first, so the kernel
    hands its connection over: start, reload and liveness checks all pass."""
    port = free_port()
    check: dict[str, Any] = (
        {"http": "http://{host}:{port}/health"} if probe == "http" else {"tcp": "{host}:{port}"}
    )
    app = {
        "command": [PYTHON, str(APPS_DIR / "deferred_accept.py")],
        "instances": list(INSTANCES),
        "listen": f"127.0.0.1:{port}",
        "ready": {**check, "timeout": 5},
        "health": {**check, "interval": 0.2, "timeout": 3, "failures": 3},
        "stop": {"timeout": 5},
    }
    d = make_daemon({"web": app})
    before = running(d, "web", timeout=10)

    def healthy() -> bool:
        now = instances(d, "web")
        return all(now[n]["healthy"] is True and now[n]["state"] == "RUNNING" for n in INSTANCES)

    d.wait_for(healthy, 5, "both instances to pass a health check")
    cp = d.supctl("reload", "web")
    assert cp.returncode == 0, f"stdout: {cp.stdout}\nstderr: {cp.stderr}"
    after = instances(d, "web")
    for name in INSTANCES:
        assert after[name]["pid"] != before[name]["pid"], name
        assert after[name]["generation"] == before[name]["generation"] + 1, name
    d.wait_for(healthy, 5, "the new generations to pass a health check")
    assert get_json(port)["pid"] in {after[n]["pid"] for n in INSTANCES}
    assert not any(e["instance"].startswith("web:") for e in d.events("instance_unhealthy"))


NODELAY_APP = """
import socket
listener = socket.socket(fileno=3)
while True:
    conn, _ = listener.accept()
    conn.sendall(b"%d" % conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
    conn.recv(1)  # until the client closes: a probe must find the connection held by us
    conn.close()
"""


def test_accepted_connections_have_tcp_nodelay(make_daemon: DaemonFactory) -> None:
    """A server that never sets TCP_NODELAY (like uvicorn --fd 3) still gets it on every
    connection it accepts: the supervisor sets it on the listener it binds."""
    port = free_port()
    d = make_daemon({"raw": {**py_app(NODELAY_APP), "listen": f"127.0.0.1:{port}"}})
    d.wait_running("raw")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        assert conn.recv(16) == b"1"


# --------------------------------------------------------------------------- Unicorn


def unicorn_web(tmp_path: Path, own_port: bool, **env: str) -> dict[str, Any]:
    """Unicorn primary + backup with the stock unicorn.rb. On its own port each instance
    binds a port of its own (``-l``), ready by an HTTP check; by LISTEN_FDS both share
    the supervisor's socket, ready by the default (attributed TCP) check."""
    listen: Any
    if own_port:
        listen = {n: f"127.0.0.1:{free_port()}" for n in INSTANCES}
        ready: dict[str, Any] = {"http": "http://{host}:{port}/", "timeout": 15}
    else:
        listen = f"127.0.0.1:{free_port()}"
        ready = {"timeout": 15}
    assert UNICORN is not None
    command = [UNICORN, "-c", str(RACK_DIR / "unicorn.rb"), "-E", "production"]
    if own_port:
        command += ["-l", "{host}:{port}"]
    return {
        "command": [*command, str(RACK_DIR / "config.ru")],
        "cwd": str(tmp_path),
        "env": {
            "UNICORN_PID": str(tmp_path / "unicorn.{instance}.pid"),
            "UNICORN_LOG": str(tmp_path / "unicorn.{instance}.log"),
            **env,
        },
        "instances": list(INSTANCES),
        "listen": listen,
        "socket_activation": not own_port,
        "ready": ready,
        "reload": {"signal": "USR2", "pidfile": str(tmp_path / "unicorn.{instance}.pid")},
        "stop": {"signal": "QUIT", "timeout": 10},
        "backoff": {"initial": 0.2, "max": 1},
    }


def ports_of(app: dict[str, Any]) -> dict[str, int]:
    listen = app["listen"]
    if isinstance(listen, str):
        return {n: int(listen.rsplit(":", 1)[1]) for n in INSTANCES}
    return {n: int(a.rsplit(":", 1)[1]) for n, a in listen.items()}


@needs_unicorn
@pytest.mark.parametrize("mode", ["own_port", "listen_fds"])
def test_stock_unicorn_reloads_under_load(
    make_daemon: DaemonFactory, tmp_path: Path, mode: str
) -> None:
    """USR2 re-execs of a stock Unicorn (primary + backup) under wrk: exit 0, no failed
    request, the new masters in /status and no old one left; then USR1 reopens its logs,
    a kill -9 of a new master is restarted, and stop leaves no process."""
    app = unicorn_web(tmp_path, own_port=mode == "own_port")
    ports = ports_of(app)
    d = make_daemon({"web": app})
    before = running(d, "web")
    loads = [Wrk(p) for p in sorted(set(ports.values()))]
    for w in loads:
        w.__enter__()
    try:
        cp = d.supctl("reload", "web")
    finally:
        for w in loads:
            w.__exit__(None, None, None)
    assert cp.returncode == 0, f"stdout: {cp.stdout}\nstderr: {cp.stderr}"
    for w in loads:
        assert w.result is not None and w.result.requests > 0, w.result
        assert w.result.failed == 0, w.result.summary

    after = instances(d, "web")
    masters = set()
    for name in INSTANCES:
        new, old = after[name]["pid"], before[name]["pid"]
        assert after[name]["state"] == "RUNNING" and new != old, after[name]
        assert after[name]["generation"] == before[name]["generation"] + 1
        assert (tmp_path / f"unicorn.{name}.pid").read_text().strip() == str(new)
        d.wait_for(lambda: proc_state(old) is None, 10, f"the old {name} master to go")  # noqa: B023
        masters.add(new)
    d.wait_for(lambda: live_children(d) == masters, 10, "only the new masters to be left")
    for name in INSTANCES:
        assert get_json(ports[name])["ppid"] in masters
        assert swap_events(d, f"web:{name}", kind="reload", method="reexec", ok=True)

    # USR1: Unicorn reopens its log files (after a logrotate-style rename)
    for name in INSTANCES:
        (tmp_path / f"unicorn.{name}.log").rename(tmp_path / f"unicorn.{name}.log.1")
    d.supctl_ok("signal", "web", "USR1")
    for name in INSTANCES:
        log = tmp_path / f"unicorn.{name}.log"
        d.wait_for(
            lambda: log.exists() and "done reopening logs" in log.read_text(),  # noqa: B023
            10,
            f"the {name} master to reopen its log",
        )

    # kill -9 of the new primary master: restarted, serving again
    primary = after["primary"]["pid"]
    os.kill(primary, signal.SIGKILL)

    def respawned() -> dict[str, Any] | None:
        now = d.instance("web", "primary", fast=True)
        return now if now["state"] == "RUNNING" and now["pid"] not in (None, primary) else None

    again = d.wait_for(respawned, 20, "the killed master to be restarted")
    assert again["restarts"] == 1
    assert parent_of(again["pid"]) == d.pid_of_daemon
    d.wait_for(
        lambda: get_json(ports["primary"])["ppid"] in (again["pid"], after["backup"]["pid"]),
        10,
        "the restarted master to serve",
    )

    d.supctl_ok("stop", "web")
    d.wait_for(lambda: not d.record_tree(), 10, "no process left under the daemon")
    assert all(not pid_alive(p) for p in d.seen_pids)


@needs_unicorn
def test_failed_unicorn_reexec_after_the_recipe_stopped_the_old_master_says_so(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    """The new master QUITs the old one as it forks, then fails readiness: nothing is left
    serving, and supctl says the instance was restarted cold (exit 1), not that the old
    generation keeps serving; the daemon logs the outcome and counts the restart."""
    sick = tmp_path / "sick"
    app = unicorn_web(tmp_path, own_port=False, SICK_FILE=str(sick))
    app.update(instances=["primary"], ready={"http": "http://{host}:{port}/health", "timeout": 2})
    d = make_daemon({"web": app})
    old = running(d, "web", ("primary",))["primary"]
    sick.touch()

    cp = d.supctl("reload", "web")

    assert cp.returncode == 1, f"stdout: {cp.stdout}\nstderr: {cp.stderr}"
    assert "restarted cold" in cp.stderr, cp.stderr
    assert "the old generation keeps serving" not in cp.stderr, cp.stderr
    assert f"pid {old['pid']}" in cp.stderr, cp.stderr
    (event,) = swap_events(d, "web:primary", kind="reload")
    assert event["outcome"] == "cold_restart" and event["ok"] is False, event
    assert event["level"] == "error", event
    last = d.http_status()["apps"]["web"]["last_swap"]
    assert last["ok"] is False and "restarted cold" in last["reason"], last
    sick.unlink()
    now = d.wait_state("web", "primary", "RUNNING", 15)
    assert now["restarts"] == 1 and now["pid"] != old["pid"], now
    assert not pid_alive(old["pid"])


# --------------------------------------------------------------------------- Puma


@needs_puma
def test_puma_by_listen_fds_with_sd_notify_reloads(make_daemon: DaemonFactory) -> None:
    """Puma (single mode) takes the shared socket by LISTEN_FDS, says READY=1 through
    sd_notify, and a reload swaps primary and backup."""
    port = free_port()
    assert PUMA is not None
    puma = [PUMA, "-b", "tcp://{host}:{port}", "-e", "production", "-t", "1:4"]
    app = {
        "command": [*puma, str(RACK_DIR / "config.ru")],
        "instances": list(INSTANCES),
        "listen": f"127.0.0.1:{port}",
        "ready": {"notify": True, "timeout": 15},
        "stop": {"timeout": 10},
    }
    d = make_daemon({"web": app})
    before = running(d, "web")
    for name in INSTANCES:
        log = d.log_file("web", name).read_text()
        assert f"Activated tcp://127.0.0.1:{port}" in log, log  # the socket it was given
    cp = d.supctl("reload", "web")
    assert cp.returncode == 0, f"stdout: {cp.stdout}\nstderr: {cp.stderr}"
    after = instances(d, "web")
    pids = {after[n]["pid"] for n in INSTANCES}
    for name in INSTANCES:
        assert after[name]["state"] == "RUNNING" and after[name]["pid"] != before[name]["pid"]
    assert get_json(port)["pid"] in pids


# --------------------------------------------------------------------------- replacement


def read_time(path: Path) -> float:
    return float(path.read_text())


def sick_web(times: Path, **extra: Any) -> dict[str, Any]:
    return {
        "command": [PYTHON, str(APPS_DIR / "sick_app.py")],
        "env": {"TIMES_DIR": str(times)},
        "listen": f"127.0.0.1:{free_port()}",
        "ready": {"http": "http://{host}:{port}/health", "timeout": 5},
        "stop": {"timeout": 5},
        "backoff": {"initial": 0.2, "max": 0.5},
        **extra,
    }


TRIGGERS: dict[str, dict[str, Any]] = {
    "health": {
        "health": {
            "http": "http://{host}:{port}/health",
            "interval": 0.2,
            "timeout": 1,
            "failures": 2,
        }
    },
    "watchdog": {"watchdog": 1},
}


@pytest.mark.parametrize("trigger", list(TRIGGERS))
def test_unhealthy_instance_is_replaced_before_it_is_stopped(
    make_daemon: DaemonFactory, tmp_path: Path, trigger: str
) -> None:
    """A failed liveness check (or a silent watchdog) replaces the instance by a hot swap:
    the replacement answered its readiness check before the old process got SIGTERM,
    and the instance never left RUNNING."""
    times = tmp_path / "times"
    times.mkdir()
    app = sick_web(times, **TRIGGERS[trigger])
    if trigger == "watchdog":
        app["env"]["WATCHDOG_EVERY"] = "0.2"
    d = make_daemon({"web": app})
    old = d.wait_running("web")["primary"]
    os.kill(old, signal.SIGUSR1)  # this process falls sick; its successors will not

    def replaced() -> dict[str, Any] | None:
        now = d.instance("web", "primary", fast=True)
        return now if now["state"] == "RUNNING" and now["pid"] not in (None, old) else None

    new = d.wait_for(replaced, 10, "the sick instance to be replaced")
    term = d.wait_for(lambda: (times / f"term.{old}").exists(), 10, "the old one's SIGTERM")
    assert term
    new_ready, old_stopped = (
        read_time(times / f"healthy.{new['pid']}"),
        read_time(times / f"term.{old}"),
    )
    assert new_ready < old_stopped, (
        f"the old process got SIGTERM {new_ready - old_stopped:.3f}s before its replacement "
        "answered a readiness check"
    )
    (event,) = d.wait_for(
        lambda: swap_events(d, "web:primary", kind="replace"), 10, "the swap_finished event"
    )
    assert event["ok"] is True and event["old_pid"] == old and event["pid"] == new["pid"], event
    assert 0 <= event["spawned_after_s"] <= event["ready_after_s"] <= event["retired_after_s"]
    assert event["retired_after_s"] <= event["duration_s"]
    assert new["restarts"] == 1, new
    assert trigger in (new["last_error"] or ""), new["last_error"]
    states = [e["state"] for e in d.events("instance_state") if e["instance"] == "web:primary"]
    assert states == ["STARTING", "RUNNING"], f"left RUNNING while being replaced: {states}"
    d.wait_for(lambda: not pid_alive(old), 5, "the old process to be gone")


def test_failed_replacement_falls_back_to_stop_then_start(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    """When the replacing swap fails (the candidate never gets ready), the sick process is
    stopped and only then a new one started, and the daemon's log says so."""
    times = tmp_path / "times"
    times.mkdir()
    sick = times / "sick"
    app = sick_web(times, **TRIGGERS["health"])
    app["env"]["SICK_FILE"] = str(sick)
    app["ready"]["timeout"] = 1
    d = make_daemon({"web": app})
    old = d.wait_running("web")["primary"]
    sick.touch()  # the running process and every candidate answer /health with 503

    def failed_swap() -> list[dict[str, Any]]:
        return swap_events(d, "web:primary", kind="replace", outcome="kept_old")

    d.wait_for(failed_swap, 10, "the replacing swap to fail")
    sick.unlink()
    d.wait_for(lambda: (times / f"term.{old}").exists(), 10, "the old one's SIGTERM")
    assert any(
        e["instance"] == "web:primary" and e["trigger"] == "replace_failed"
        for e in d.events("instance_failed")
    ), d.output(40)

    def restarted() -> dict[str, Any] | None:
        now = d.instance("web", "primary", fast=True)
        return now if now["state"] == "RUNNING" and now["pid"] not in (None, old) else None

    new = d.wait_for(restarted, 15, "a fresh start after the fallback")
    assert read_time(times / f"term.{old}") < read_time(times / f"healthy.{new['pid']}")
