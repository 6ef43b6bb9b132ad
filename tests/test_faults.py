"""End-to-end faults: apps and environments that misbehave, and what the daemon does.

Stubborn children, a (bounded) fork bomb, a grandchild that escapes the session, an
output flood, a readiness that never comes, a full log filesystem, a deleted config
file and a deleted state directory. Each test runs a real daemon (tests/helpers/)
with tests/apps/faulty.py or testapp.py; waits poll a condition with a deadline, and
teardown fails a test that leaves any process behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import DaemonFactory
from helpers import (
    APPS_DIR,
    PYTHON,
    RunningDaemon,
    app_cmd,
    children_of,
    free_port,
    http_get,
    parent_of,
    pid_alive,
    wait_until,
)

FAULTY = APPS_DIR / "faulty.py"


def faulty(**env: object) -> dict[str, Any]:
    """tests/apps/faulty.py with env knobs, one instance, no socket (ready after 1 s up)."""
    return {
        "command": [PYTHON, str(FAULTY)],
        "env": {k: str(v) for k, v in env.items()},
        "stop": {"timeout": 1},
    }


def faulty_web(port: int, **env: object) -> dict[str, Any]:
    """faulty.py serving HTTP on a supervisor-held socket, ready by HTTP."""
    return {
        **faulty(**env),
        "listen": f"127.0.0.1:{port}",
        "ready": {"http": "http://{host}:{port}/health", "timeout": 10},
    }


def read_pids(path: Path, timeout: float = 10.0) -> list[int]:
    """The pids faulty.py wrote (atomically) to ``path``."""
    wait_until(path.exists, timeout, f"{path.name} to be written")
    return [int(p) for p in path.read_text().split()]


def pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def log_files(d: RunningDaemon, app: str, backups: int) -> list[Path]:
    """The instance's log file and its rotated copies that exist (.1 .. .backups+2)."""
    base = d.log_file(app, "primary")
    candidates = [base, *(Path(f"{base}.{n}") for n in range(1, backups + 3))]
    return [p for p in candidates if p.exists()]


def timed_status(d: RunningDaemon, timeout: float) -> float:
    """Run `supctl status` (must exit 0 within ``timeout``); how long it took."""
    started = time.monotonic()
    cp = d.supctl("status", timeout=timeout)
    took = time.monotonic() - started
    assert cp.returncode == 0, (cp.returncode, cp.stdout, cp.stderr)
    return took


# --------------------------------------------------------------------------- stopping


def test_tree_ignoring_sigterm_is_sigkilled_after_stop_timeout(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    """An app and its children that all ignore SIGTERM are SIGKILLed once stop.timeout
    has passed, every one of them."""
    pidfile = tmp_path / "children"
    app = faulty(IGNORE_TERM=1, FORK_CHILDREN=3, CHILDREN_IGNORE_TERM=1, CHILD_PIDFILE=pidfile)
    d = make_daemon({"stubborn": app})
    pid = d.wait_running("stubborn")["primary"]
    children = read_pids(pidfile)
    assert all(pgid(c) == pid for c in children)
    d.record_tree()
    started = time.monotonic()
    d.supctl_ok("stop", "stubborn", timeout=20)
    took = time.monotonic() - started
    assert 0.9 <= took < 6, f"stop took {took:.2f}s with stop.timeout 1"
    assert not pid_alive(pid) and not any(pid_alive(c) for c in children)
    info = d.instance("stubborn", "primary")
    assert info["state"] == "STOPPED" and info["exit_status"] == -signal.SIGKILL, info
    d.wait_for(lambda: not d.zombie_children(), 5, "no zombie child of the daemon")


def test_fork_bomb_in_its_group_leaves_nothing_after_stop(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    """A parent with 50 TERM-ignoring children in its group: the parent exits on TERM, the
    lingering children are SIGKILLed at stop.timeout, and none is left (nor a zombie)."""
    pidfile = tmp_path / "children"
    app = faulty(FORK_CHILDREN=50, CHILDREN_IGNORE_TERM=1, CHILD_PIDFILE=pidfile)
    d = make_daemon({"bomb": app})
    pid = d.wait_running("bomb")["primary"]
    children = read_pids(pidfile)
    assert len(children) == 50 and all(pgid(c) == pid for c in children)
    d.record_tree()
    started = time.monotonic()
    d.supctl_ok("stop", "bomb", timeout=20)
    took = time.monotonic() - started
    assert 0.9 <= took < 6, f"stop took {took:.2f}s with stop.timeout 1"
    alive = [c for c in children if pid_alive(c)]
    assert not alive and not pid_alive(pid), f"{len(alive)} children left: {alive[:5]}"
    assert d.instance("bomb", "primary")["exit_status"] == -signal.SIGTERM  # it obeyed TERM
    d.wait_for(lambda: not d.zombie_children(), 5, "no zombie child of the daemon")


def test_grandchild_escaping_the_session_is_stopped_with_its_app(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    """A grandchild that calls setsid() leaves its app's process group, but it carries
    the instance's marker and is re-parented to the daemon (subreaper): `supctl stop`
    stops it with its app."""
    pidfile = tmp_path / "escaped"
    d = make_daemon({"escapee": faulty(ESCAPE_PIDFILE=pidfile)})
    pid = d.wait_running("escapee")["primary"]
    [escaped] = read_pids(pidfile)
    d.remember([escaped])  # so that the harness would report it as a leftover
    try:
        assert parent_of(escaped) == d.pid_of_daemon, "not re-parented to the daemon (subreaper)"
        assert pgid(escaped) == escaped != pid and os.getsid(escaped) == escaped
        d.supctl_ok("stop", "escapee", timeout=20)
        assert not pid_alive(pid)
        assert not pid_alive(escaped), "the escaped grandchild outlived its app's stop"
        assert d.events("stopped_escaped_processes"), "the daemon's log does not say so"
    finally:
        if pid_alive(escaped):
            os.kill(escaped, signal.SIGKILL)


def test_grandchild_holding_the_socket_goes_with_its_generation_on_reload(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    """The old generation's escaped grandchild (it left the session, and holds the
    listening socket it inherited) is stopped when a reload retires that generation,
    so it serves no request of the new one's."""
    pidfile = tmp_path / "escaped"
    port = free_port()
    d = make_daemon({"escapee": faulty_web(port, ESCAPE_PIDFILE=pidfile)})
    d.wait_running("escapee")
    [first] = read_pids(pidfile)
    d.remember([first])
    try:
        held = [os.readlink(f"/proc/{first}/fd/{fd}") for fd in os.listdir(f"/proc/{first}/fd")]
        assert any(link.startswith("socket:") for link in held), "it holds no socket"
        pidfile.unlink()
        d.supctl_ok("reload", "escapee", timeout=30)
        [second] = read_pids(pidfile)
        d.remember([second])
        assert second != first
        assert not pid_alive(first), "the old generation's grandchild outlived the reload"
        assert pid_alive(second), "the new generation's grandchild was stopped too"
    finally:
        if pid_alive(first):
            os.kill(first, signal.SIGKILL)


# --------------------------------------------------------------------------- output


def test_output_flood_keeps_daemon_responsive_and_logs_bounded(
    make_daemon: DaemonFactory,
) -> None:
    """An app writing 50 MB to stdout as fast as it can: `supctl status` (and GET /status)
    keep answering during the flood, and the log files stay within max_bytes each, so
    within max_bytes * (backups + 1) in all."""
    max_bytes, backups = 1_000_000, 3
    app = {
        **faulty(FLOOD_MB=50, FLOOD_LINE=100, FLOOD_ON_USR2=1),
        "logs": {"max_bytes": max_bytes, "backups": backups},
    }
    d = make_daemon({"flood": app})
    pid = d.wait_running("flood")["primary"]

    def flood_done() -> bool:
        for path in log_files(d, "flood", backups):
            try:
                with open(path, "rb") as f:
                    f.seek(max(0, os.fstat(f.fileno()).st_size - 300))
                    if b"flood done pid" in f.read():
                        return True
            except OSError:
                continue
        return False

    supctl_took: list[float] = []
    http_took: list[float] = []
    os.kill(pid, signal.SIGUSR2)
    started = time.monotonic()
    while not flood_done():
        assert time.monotonic() - started < 90, f"the flood did not end: {supctl_took}"
        supctl_took.append(timed_status(d, timeout=30))
        for _ in range(5):
            t = time.monotonic()
            d.http_status()
            http_took.append(time.monotonic() - t)
    flood_took = time.monotonic() - started
    assert supctl_took, f"the flood ended before it could be measured ({flood_took:.2f}s)"
    assert max(supctl_took) < 5, f"supctl status took up to {max(supctl_took):.2f}s"
    assert max(http_took) < 5, f"GET /status took up to {max(http_took):.2f}s"
    info = d.instance("flood", "primary")
    assert info["pid"] == pid and info["state"] == "RUNNING" and info["restarts"] == 0

    files = log_files(d, "flood", backups)
    sizes = {p.name: p.stat().st_size for p in files}
    assert len(files) <= backups + 1, f"more than `backups` rotated files: {sorted(sizes)}"
    assert max(sizes.values()) <= max_bytes, sizes
    assert sum(sizes.values()) <= max_bytes * (backups + 1), sizes
    assert sum(sizes.values()) >= backups * max_bytes * 0.99, f"output was lost: {sizes}"


def test_full_log_filesystem_drops_output_and_app_keeps_running(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    """logs.dir on a full 64 KiB tmpfs: output is dropped, the app keeps running and
    printing, and `supctl status` and `supctl logs` still answer."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    cp = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    if cp.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {cp.stderr.strip()}")
    try:
        port = free_port()
        app = {
            **faulty_web(port, FLOOD_MB=1, TICK_EVERY=0.01),
            "logs": {"dir": str(mnt), "max_bytes": "10MiB", "backups": 1},
        }
        d = make_daemon({"web": app})
        pid = d.wait_running("web")["primary"]
        log = mnt / "web.primary.log"
        d.wait_for(lambda: shutil.disk_usage(mnt).free < 4096, 10, "the tmpfs to be full")
        for n in range(5):
            status, _ = http_get("127.0.0.1", port, f"/say/disk-full-{n}")
            assert status == 200
        d.wait_for(
            lambda: "said disk-full-4" in d.supctl_ok("logs", "web", "-n", "50").stdout,
            10,
            "the app's output in `supctl logs` despite the full disk",
        )
        assert timed_status(d, timeout=10) < 5
        info = d.instance("web", "primary")
        assert info["state"] == "RUNNING" and info["pid"] == pid and info["restarts"] == 0
        assert pid_alive(pid)
        assert log.stat().st_size <= 64 * 1024
        assert "said disk-full" not in log.read_text(errors="replace")
        d.close()
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


# --------------------------------------------------------------------------- readiness


def test_readiness_slower_than_timeout_ends_in_backoff_with_reason(
    make_daemon: DaemonFactory,
) -> None:
    """An app that boots longer than ready.timeout: `supctl start` exits 1 with the reason,
    the slow process is killed, and the instance waits in BACKOFF with that reason."""
    port = free_port()
    app = {
        **app_cmd(BOOT_DELAY=30),
        "listen": f"127.0.0.1:{port}",
        "ready": {"http": "http://{host}:{port}/health", "timeout": 1},
        "backoff": {"initial": 30, "max": 60},
        "stop": {"timeout": 1},
        "autostart": False,
    }
    d = make_daemon({"slow": app})
    cp = d.supctl("start", "slow", timeout=20)
    assert cp.returncode == 1, (cp.stdout, cp.stderr)
    assert "not ready within 1s" in cp.stdout + cp.stderr, cp.stdout + cp.stderr
    info = d.wait_state("slow", "primary", "BACKOFF", timeout=10)
    assert "not ready within 1s" in (info["last_error"] or ""), info
    assert info["pid"] is None
    spawned = [e["pid"] for e in d.events("spawned") if e["instance"] == "slow:primary"]
    assert len(spawned) == 2, spawned  # a failed start is retried at once, then backs off
    d.wait_for(lambda: not any(pid_alive(p) for p in spawned), 5, "the slow processes killed")


# --------------------------------------------------------------------------- environment


def test_deleted_config_file_update_exits_2_and_changes_nothing(
    make_daemon: DaemonFactory,
) -> None:
    """With its config file deleted, `supctl update` exits 2 naming the file, and nothing
    changes; once the file is back, update works again."""
    port = free_port()
    d = make_daemon({"web": faulty_web(port)})
    pid = d.wait_running("web")["primary"]
    config_before = d.status()["supervisor"]["config"]
    d.config_path.unlink()
    cp = d.supctl("update", timeout=20)
    assert cp.returncode == 2, (cp.stdout, cp.stderr)
    message = cp.stdout + cp.stderr
    assert "cannot read config" in message and str(d.config_path) in message, message
    after = d.status()
    assert after["supervisor"]["config"] == config_before and list(after["apps"]) == ["web"]
    info = after["apps"]["web"]["instances"]["primary"]
    assert info["pid"] == pid and info["state"] == "RUNNING" and info["generation"] == 1
    assert not d.events("update_done")
    d.write_config()
    d.supctl_ok("update", timeout=20)
    assert d.pid("web") == pid


def test_state_dir_removed_while_running(make_daemon: DaemonFactory) -> None:
    """With its state_dir deleted, supctl cannot connect (exit 3) while the apps keep
    serving; SIGTERM to the daemon still stops everything cleanly (exit 0)."""
    port = free_port()
    d = make_daemon({"web": faulty_web(port)})
    pid = d.wait_running("web")["primary"]
    d.record_tree()
    shutil.rmtree(d.state_dir)
    cp = d.supctl("status", timeout=20)
    assert cp.returncode == 3, (cp.returncode, cp.stdout, cp.stderr)
    for n in range(5):
        status, _ = http_get("127.0.0.1", port, f"/say/no-state-dir-{n}")
        assert status == 200
    assert d.http_status()["apps"]["web"]["instances"]["primary"]["pid"] == pid
    assert children_of(d.pid_of_daemon) == [pid]
    assert d.terminate() == 0
    assert not pid_alive(pid)
