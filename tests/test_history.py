"""The event history and the proof of zero downtime.

Unit tests of history.py (a real file in a temporary state dir) and backlog.py (real
listening sockets with connections nobody accepts), then a real daemon driven by
real ``supctl`` processes: commands recorded with the uid and pid of the supctl that
ran them, crashes, health failures, backoff and FATAL, the history surviving a
kill -9 of the daemon and an upgrade, and swaps recording their timings and the
accept queue of the supervisor-held socket (0 drops under load; the drops counted
when the backlog overflows during a swap).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import stat
import subprocess
from pathlib import Path
from typing import Any

from conftest import DaemonFactory
from helpers import PYTHON, REPO, RunningDaemon, app_cmd, free_port, py_app
from helpers.handover import INSTANCES, faulty_web, kill9_daemon, restart_daemon
from helpers.load import Load
from helpers.releases import make_release, make_root, web_app

from supervisord_lite.host import backlog
from supervisord_lite.state.history import FILE, History

# --------------------------------------------------------------------------- helpers


def supctl_proc(d: RunningDaemon, *args: str) -> tuple[int, subprocess.CompletedProcess[str]]:
    """Run ``supctl`` to completion; its pid (for SO_PEERCRED) and its outcome."""
    env = {k: v for k, v in os.environ.items() if k != "SUPCTL_SOCKET"}
    env["NO_COLOR"] = "1"
    argv = [PYTHON, "-m", "supervisord_lite.supctl", "-s", d.sock, *args]
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(REPO), env=env
    ) as proc:
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        return proc.pid, subprocess.CompletedProcess(argv, proc.returncode, out, err)


def history(d: RunningDaemon, *args: str) -> list[dict[str, Any]]:
    """``supctl --json history ARGS``: the events, newest first."""
    cp = d.supctl("history", *args, json_output=True)
    assert cp.returncode == 0, (cp.stdout, cp.stderr)
    final = json.loads(cp.stdout.splitlines()[-1])
    events: list[dict[str, Any]] = final["result"]["events"]
    return events


def find(events: list[dict[str, Any]], kind: str, **match: Any) -> dict[str, Any] | None:
    for event in events:
        if event["kind"] == kind and all(event.get(k) == v for k, v in match.items()):
            return event
    return None


def wait_event(d: RunningDaemon, kind: str, timeout: float = 10.0, **match: Any) -> dict[str, Any]:
    return d.wait_for(
        lambda: find(history(d, "-n", "200"), kind, **match), timeout, f"a {kind} event {match}"
    )


def web(port: int, **env: object) -> dict[str, Any]:
    """testapp as primary+backup on one supervisor-held socket, with a health check."""
    return {
        **app_cmd(**env),
        "instances": list(INSTANCES),
        "listen": f"127.0.0.1:{port}",
        "ready": {"http": "http://{host}:{port}/health", "timeout": 10},
        "health": {"http": "http://{host}:{port}/health", "interval": 0.2, "failures": 2},
        "stop": {"timeout": 5},
    }


# --------------------------------------------------------------------------- history.py


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


def test_events_persist_privately_and_numbering_continues(tmp_path: Path) -> None:
    """Events go to a 0600 file, one JSON line each with the common fields; a new
    History on the same dir reads them back and continues the ids."""
    first = History(str(tmp_path))
    one = first.record("command", "supctl stop web", app="web", uid=0, pid=42, result="ok")
    first.record("crash", "killed by SIGKILL", app="web", instance="primary", exit_status=-9)
    first.close()
    path = tmp_path / FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [json.loads(line)["id"] for line in _lines(path)] == [1, 2]
    assert set(one) >= {"id", "time", "ts", "kind", "app", "instance", "message", "uid", "pid"}
    assert one["time"].endswith("Z") and one["time"].startswith("20")
    again = History(str(tmp_path))
    assert [e["kind"] for e in again.recent()] == ["crash", "command"]  # newest first
    assert again.record("daemon", "started")["id"] == 3
    assert [e["id"] for e in again.recent("web")] == [2, 1]  # the daemon event has no app
    again.close()


def test_the_file_is_bounded_and_keeps_the_newest(tmp_path: Path) -> None:
    """Past twice ``keep`` lines the file is rewritten with the newest ``keep``: it stays
    bounded, and queries beyond the in-memory ring read the file."""
    h = History(str(tmp_path), keep=50, ring=10)
    for n in range(1, 501):
        h.record("command", f"event {n}", app="a" if n % 2 else "b")
    lines = _lines(tmp_path / FILE)
    assert 50 <= len(lines) <= 100
    assert json.loads(lines[-1])["id"] == 500
    ids = [e["id"] for e in h.recent(None, 50)]
    assert ids == list(range(500, 450, -1))  # more than the ring holds: from the file
    assert [e["id"] for e in h.recent("a", 5)] == [499, 497, 495, 493, 491]
    assert len(h.recent(None, 10_000)) == 50  # never more than `keep`
    assert not (tmp_path / (FILE + ".tmp")).exists()
    h.close()


def test_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    """A daemon killed mid-write leaves a partial line: the next one skips it, ends it
    with a newline, and its own events stay readable after it."""
    h = History(str(tmp_path))
    for n in range(3):
        h.record("command", f"event {n}")
    h.close()
    with open(tmp_path / FILE, "ab") as f:
        f.write(b'{"id": 4, "kind": "swa')
    again = History(str(tmp_path))
    assert [e["id"] for e in again.recent()] == [3, 2, 1]
    assert again.record("swap", "after the tear")["id"] == 4
    again.close()
    third = History(str(tmp_path))
    assert [e["message"] for e in third.recent(None, 2)] == ["after the tear", "event 2"]
    third.close()


def test_a_symlink_in_place_of_the_file_is_not_followed(tmp_path: Path) -> None:
    """O_NOFOLLOW: a symlink planted at history.jsonl is never written through; the
    history then lives in memory only."""
    target = tmp_path / "elsewhere"
    target.write_text("")
    (tmp_path / FILE).symlink_to(target)
    h = History(str(tmp_path))
    h.record("command", "supctl stop web")
    assert [e["message"] for e in h.recent()] == ["supctl stop web"]
    h.close()
    assert target.read_text() == ""


# --------------------------------------------------------------------------- backlog.py


def _pending(port: int, count: int) -> list[socket.socket]:
    clients = []
    for _ in range(count):
        c = socket.socket()
        c.setblocking(False)
        try:
            c.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass  # loopback: the kernel has queued it (or dropped its SYN) by now
        clients.append(c)
    return clients


def test_the_accept_queue_of_a_real_listener() -> None:
    """TCP_INFO of a listener tells its pending connections and its backlog; a watch's
    peak is the number of connections nobody accepted; a full queue counts drops."""
    with socket.create_server(("127.0.0.1", 0), backlog=8) as server:
        port = server.getsockname()[1]
        first = backlog.read_listener(server)
        assert first is not None and (first.queued, first.limit) == (0, 8)

        async def watch() -> backlog.BacklogFigures:
            w = backlog.BacklogWatch(server)
            assert w.start(asyncio.get_running_loop())
            clients.extend(_pending(port, 5))
            await asyncio.sleep(0.02)  # let it take a few samples
            return w.stop()

        clients: list[socket.socket] = []
        try:
            figures = asyncio.run(watch())
            assert figures.accept_queue_peak == 5
            assert figures.accept_queue_limit == 8
            assert figures.listen_drops == 0 and figures.drops_scope == "socket"
            assert figures.samples >= 2
            sample = backlog.read_listener(server)
            assert sample is not None and sample.queued == 5
        finally:
            for c in clients:
                c.close()
    with socket.create_server(("127.0.0.1", 0), backlog=1) as tiny:
        clients = _pending(tiny.getsockname()[1], 6)
        try:
            sample = backlog.read_listener(tiny)
            assert sample is not None and sample.queued == 2  # backlog + 1 fit
            assert sample.drops is not None and sample.drops >= 4  # the SYNs of the rest
        finally:
            for c in clients:
                c.close()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as unix:
        assert backlog.read_listener(unix) is None
    drops = backlog.host_listen_drops()
    assert drops is None or drops >= 0


# --------------------------------------------------------------------------- the daemon


def test_commands_are_recorded_with_the_uid_and_pid_of_supctl(
    make_daemon: DaemonFactory,
) -> None:
    """Each command that may change something is recorded with the peer's uid and pid
    (SO_PEERCRED), its arguments, result and duration; `history` shows them newest
    first (human and --json) and GET /events serves the same."""
    d = make_daemon({"web": web(free_port())})
    d.wait_running("web", *INSTANCES)
    pid, cp = supctl_proc(d, "restart", "web:backup")
    assert cp.returncode == 0, cp.stderr
    bad_pid, cp = supctl_proc(d, "stop", "nope")
    assert cp.returncode == 4
    d.supctl_ok("status")
    events = history(d, "-n", "20")
    restart = find(events, "command", command="restart")
    assert restart is not None, events
    assert (restart["pid"], restart["uid"], restart["gid"]) == (pid, os.getuid(), os.getgid())
    assert restart["args"] == {"target": "web:backup"}
    assert (restart["app"], restart["instance"], restart["result"]) == ("web", "backup", "ok")
    assert restart["duration_s"] > 0
    failed = find(events, "command", command="stop")
    assert failed is not None and failed["pid"] == bad_pid
    assert failed["result"] == "no_such_app" and "nope" in failed["error"]
    assert find(events, "command", command="status") is None  # read-only: not recorded
    assert events.index(failed) < events.index(restart)  # newest first
    ids = [e["id"] for e in events]
    assert ids == sorted(ids, reverse=True)

    human = d.supctl_ok("history", "web", "-n", "5").stdout.splitlines()
    assert any(
        "supctl restart web:backup" in line and f"pid={pid}" in line and "result=ok" in line
        for line in human
    ), human
    assert all(" nope" not in line for line in human)  # only web's events
    assert len(d.supctl_ok("history", "-n", "1").stdout.splitlines()) == 1

    code, body = d.http("/events?n=2")
    assert code == 200
    served = json.loads(body)["events"]
    assert [e["id"] for e in served] == ids[:2]
    assert d.http("/events?n=0")[0] == 400
    assert d.http("/events?n=x")[0] == 400
    assert d.supctl("history", "-n", "0").returncode == 2  # a usage error


def test_crashes_health_failures_backoff_and_fatal_are_recorded(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    """A kill -9 is a crash with its exit status and pid; failed health checks are a
    health failure; a crash-looping app records its backoff delays and its FATAL."""
    sick = tmp_path / "sick.{instance}"
    crashy = {
        **app_cmd(CRASH_AT_BOOT=3),
        "ready": {"delay": 3, "timeout": 5},
        "backoff": {"initial": 0.05, "max": 0.1, "max_retries": 2},
    }
    d = make_daemon({"web": web(free_port(), HEALTH_FILE=sick), "crashy": crashy})
    pids = d.wait_running("web", *INSTANCES)
    os.kill(pids["primary"], signal.SIGKILL)
    crash = wait_event(d, "crash", app="web", instance="primary")
    assert crash["exit_status"] == -signal.SIGKILL and crash["pid"] == pids["primary"]
    assert "SIGKILL" in crash["message"]

    d.wait_running("web", "primary")
    flag = tmp_path / "sick.backup"
    flag.touch()
    try:
        unhealthy = wait_event(d, "unhealthy", app="web", instance="backup")
    finally:
        flag.unlink()
    assert "failed health checks" in unhealthy["reason"]

    fatal = wait_event(d, "fatal", app="crashy", instance="primary")
    assert fatal["failures"] == 3 and "status 3" in fatal["message"]
    events = history(d, "crashy", "-n", "50")
    backoffs = [e for e in events if e["kind"] == "backoff"]
    assert backoffs and all(e["delay_s"] > 0 for e in backoffs)
    # 1 + max_retries attempts, each seen as an exit (or as its failed readiness)
    failures = [e for e in events if e["kind"] in ("crash", "start_failed")]
    assert len(failures) == 3
    assert all(e["exit_status"] == 3 for e in failures if e["kind"] == "crash")
    d.wait_running("web", *INSTANCES)


def test_the_history_survives_a_kill_9_and_an_upgrade(make_daemon: DaemonFactory) -> None:
    """A new daemon on the same state dir (after kill -9) and the re-executed image
    (after `supctl upgrade`) read the file: earlier events are still there, in order,
    and numbering continues."""
    d = make_daemon({"web": faulty_web(free_port())})
    pids = d.wait_running("web", *INSTANCES, timeout=30)
    d.supctl_ok("restart", "web:backup")
    pids = d.wait_running("web", *INSTANCES)
    before = history(d)
    kill9_daemon(d, pids=pids)
    restart_daemon(d)
    d.wait_running("web", *INSTANCES)
    after_crash = history(d)
    assert after_crash[-len(before) :] == before
    recovered = find(after_crash, "daemon", how="recovered")
    assert recovered is not None and recovered["adopted"] == 2

    cp = d.supctl("upgrade", timeout=90)
    assert cp.returncode == 0, (cp.stdout, cp.stderr)
    after_upgrade = history(d)
    assert after_upgrade[-len(after_crash) :] == after_crash
    assert find(after_upgrade, "command", command="upgrade", result="ok") is not None
    assert find(after_upgrade, "daemon", how="upgraded") is not None
    ids = [e["id"] for e in after_upgrade]
    assert ids == sorted(set(ids), reverse=True)
    assert stat.S_IMODE((d.state_dir / FILE).stat().st_mode) == 0o600


def test_a_reload_under_load_records_its_timings_and_no_drop(make_daemon: DaemonFactory) -> None:
    """Each instance's swap is recorded with spawned/ready/retired timings and the
    supervisor-held socket's accept queue: a peak, its limit, and 0 drops; the load
    saw no failure. /status carries the same figures in last_swap."""
    port = free_port()
    d = make_daemon({"web": faulty_web(port)})
    pids = d.wait_running("web", *INSTANCES, timeout=30)
    with Load(port) as load:
        load.wait_ok(50)
        d.supctl_ok("reload", "web", timeout=90)
        load.wait_ok(50)
    assert not load.failures, load.failures[:5]
    swaps = [e for e in history(d) if e["kind"] == "swap"]
    assert [e["instance"] for e in swaps] == ["primary", "backup"]  # backup swapped first
    for swap in swaps:
        assert swap["result"] == "ok" and swap["trigger"] == "command"
        assert swap["old_pid"] == pids[swap["instance"]] and swap["new_pid"] != swap["old_pid"]
        assert 0 <= swap["spawned_s"] <= swap["ready_s"] <= swap["retired_s"]
        assert swap["accept_queue_peak"] >= 0 and swap["accept_queue_limit"] == 2048
        assert swap["listen_drops"] == 0 and swap["drops_scope"] == "socket"
        assert swap["samples"] >= 1
    last = d.status()["apps"]["web"]["last_swap"]
    assert last["instance"] == "primary" and last["listen_drops"] == 0
    assert last["accept_queue_peak"] is not None and last["ready_s"] is not None


# An app that shrinks the shared socket's backlog to 1 and never accepts: ready when
# the file named by GO exists, so a test can hold a swap while connections arrive.
_DEAF = """
import os, signal, socket, time
socket.socket(fileno=3).listen(1)
while True:
    time.sleep(1)
"""


def test_an_overflow_during_a_swap_is_recorded(make_daemon: DaemonFactory, tmp_path: Path) -> None:
    """Connections the listener could not queue while a swap ran are counted: with a
    backlog of 1 and nobody accepting, 2 wait in the queue and the rest are dropped."""
    go = tmp_path / "go"
    go.touch()
    port = free_port()
    app = {
        **py_app(_DEAF),
        "listen": f"127.0.0.1:{port}",
        "ready": {"exec": ["test", "-e", str(go)], "timeout": 20},
        "stop": {"timeout": 2},
    }
    d = make_daemon({"deaf": app})
    d.wait_running("deaf")
    go.unlink()
    clients: list[socket.socket] = []
    env = {k: v for k, v in os.environ.items() if k != "SUPCTL_SOCKET"}
    argv = [PYTHON, "-m", "supervisord_lite.supctl", "-s", d.sock, "reload", "deaf"]
    with subprocess.Popen(argv, cwd=str(REPO), env=env, stdout=subprocess.DEVNULL) as reload:
        try:
            d.wait_for(lambda: d.instance("deaf", "primary", fast=True)["swapping"], 10, "swap")
            clients = _pending(port, 8)
            go.touch()
            assert reload.wait(30) == 0
        finally:
            if reload.poll() is None:
                reload.kill()
            for c in clients:
                c.close()
    swap = find(history(d), "swap", app="deaf")
    assert swap is not None and swap["result"] == "ok"
    assert swap["accept_queue_limit"] == 1 and swap["accept_queue_peak"] == 2
    assert swap["listen_drops"] >= 6
    assert "dropped" in swap["message"]


def test_a_memory_replacement_is_recorded(make_daemon: DaemonFactory) -> None:
    """An instance above max_memory is recorded (RSS, limit), then its automatic swap."""
    app = {
        "command": [PYTHON, str(REPO / "tests" / "apps" / "memhog.py")],
        "env": {"ALLOC_MB": "120"},
        "listen": f"127.0.0.1:{free_port()}",
        "ready": {"http": "http://{host}:{port}/health", "timeout": 10},
        "max_memory": "60MiB",
        "stop": {"timeout": 5},
    }
    d = make_daemon({"hog": app})
    pid = d.wait_running("hog")["primary"]
    memory = wait_event(d, "memory", timeout=20, app="hog", pid=pid)
    assert memory["rss"] > memory["limit"] == 60 * 1024**2
    swap = wait_event(d, "swap", timeout=20, app="hog", trigger="auto")
    assert swap["result"] == "ok" and swap["old_pid"] == pid and swap["listen_drops"] == 0


def test_deploys_and_rollbacks_are_recorded(make_daemon: DaemonFactory, tmp_path: Path) -> None:
    """A deploy that works, one that fails (and is undone) and a rollback are recorded
    with their releases, result and duration, each next to the swaps it made."""
    root = make_root(tmp_path)
    make_release(root, "v2")
    make_release(root, "bad", "crash")
    d = make_daemon({"web": web_app(root, free_port(), free_port(), settle=0)})
    d.wait_running("web", *INSTANCES)
    d.supctl_ok("deploy", "web", "v2", timeout=90)
    assert d.supctl("deploy", "web", "bad", timeout=90).returncode == 1
    d.supctl_ok("rollback", "web", timeout=90)
    events = history(d, "web", "-n", "100")
    ok = find(events, "deploy", release="v2")
    assert ok is not None and ok["result"] == "ok" and ok["previous"] == "v1"
    failed = find(events, "deploy", release="bad")
    assert failed is not None and failed["result"] == "failed"
    assert "every instance is back" in failed["reason"]
    rollback = find(events, "rollback")
    assert rollback is not None and rollback["result"] == "ok"
    assert (rollback["release"], rollback["previous"]) == ("v1", "v2")
    assert all(e["duration_s"] > 0 for e in (ok, failed, rollback))
    swaps = [e for e in events if e["kind"] == "swap"]
    assert any(e["result"] == "failed" for e in swaps)  # the bad release's canary
