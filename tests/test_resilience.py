"""End-to-end resilience: the daemon's own upgrade and death, memory limits, watchdog.

Every test runs a real daemon (``python -m supervisord_lite.cli -c CONFIG``, through
tests/helpers/) with real children, under real HTTP load where a request could be
lost. The load is bounded (threads stop after a deadline or a number of requests)
and is paused before anything kills a serving process on purpose: a request that a
process has already accepted dies with it under any supervisor, so what is measured
is what the supervisor is responsible for -- that nobody is refused while it
upgrades, dies, is restarted or replaces an instance.

Waits poll a condition with a deadline; no fixed sleeps. Teardown (the make_daemon
fixture) fails a test that leaves any process behind.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import DaemonFactory
from helpers import (
    APPS_DIR,
    PYTHON,
    REPO,
    RunningDaemon,
    app_cmd,
    children_of,
    free_port,
    http_get,
    parent_of,
    pid_alive,
    wait_until,
)
from helpers.handover import (
    INSTANCES,
    faulty_web,
    kill9_daemon,
    recorded,
    restart_daemon,
    rewrite_record,
)
from helpers.load import Load, pid_in

MEMHOG = APPS_DIR / "memhog.py"

HAVE_GUNICORN = (APPS_DIR / "wsgi_hello.py").exists() and (
    importlib.util.find_spec("gunicorn") is not None
)


# --------------------------------------------------------------------------- apps


def gunicorn_web(port: int) -> dict[str, Any]:
    """A real gunicorn (2 workers each) as primary+backup taking the socket by LISTEN_FDS."""
    return {
        "command": [PYTHON, "-m", "gunicorn", "tests.apps.wsgi_hello:app", "-w", "2"],
        "cwd": str(REPO),
        "instances": list(INSTANCES),
        "listen": f"127.0.0.1:{port}",
        "ready": {"http": "http://{host}:{port}/", "timeout": 30},
        "stop": {"timeout": 10},
    }


# --------------------------------------------------------------------------- load


# --------------------------------------------------------------------------- helpers


def listening_socket(port: int) -> str:
    """``socket:[INODE]`` of the one socket listening on 127.0.0.1:PORT (/proc/net/tcp)."""
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                return f"socket:[{fields[9]}]"
    raise AssertionError(f"nothing listens on port {port}")


def holds(pid: int, target: str) -> bool:
    """``pid`` has an fd open on ``target`` (e.g. a listening socket's ``socket:[INODE]``)."""
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                return True
        except OSError:
            continue
    return False


def instances(d: RunningDaemon, app: str) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = d.status()["apps"][app]["instances"]
    return result


def logs_text(d: RunningDaemon, target: str, n: int = 200) -> str:
    cp = d.supctl_ok("logs", target, "-n", str(n), timeout=20)
    return cp.stdout


def wait_log_line(d: RunningDaemon, target: str, needle: str, timeout: float = 10.0) -> str:
    """Wait until ``supctl logs TARGET`` shows a line containing ``needle``; that line."""

    def find() -> str | None:
        for line in logs_text(d, target).splitlines():
            if needle in line:
                return line
        return None

    return d.wait_for(find, timeout, f"{needle!r} in `supctl logs {target}`")


def new_running_pid(d: RunningDaemon, app: str, inst: str, old: int, timeout: float = 15) -> int:
    def check() -> int | None:
        i = d.instance(app, inst, fast=True)
        return i["pid"] if i["state"] == "RUNNING" and i["pid"] not in (None, old) else None

    return d.wait_for(check, timeout, f"a replacement {app}:{inst} RUNNING")


def event_index(d: RunningDaemon, event: str, **match: Any) -> int:
    """Position of the first daemon log record ``event`` whose fields match (-1: none)."""
    for n, rec in enumerate(d.events()):
        if rec.get("event") == event and all(rec.get(k) == v for k, v in match.items()):
            return n
    return -1


# --------------------------------------------------------------------------- upgrade


UPGRADE_VARIANTS = [
    pytest.param("faulty", id="python-app"),
    pytest.param(
        "gunicorn",
        id="gunicorn",
        marks=[
            pytest.mark.slow,
            pytest.mark.skipif(not HAVE_GUNICORN, reason="gunicorn or wsgi_hello.py missing"),
        ],
    ),
]


@pytest.mark.parametrize("server", UPGRADE_VARIANTS)
def test_upgrade_twice_under_load_keeps_children_and_sockets(
    make_daemon: DaemonFactory, server: str
) -> None:
    """Two `supctl upgrade`s in a row under load: same daemon pid, same children, no failed
    request, and afterwards logs, respawns and stop all still work."""
    port = free_port()
    app = faulty_web(port) if server == "faulty" else gunicorn_web(port)
    d = make_daemon({"web": app})
    daemon_pid = d.pid_of_daemon
    pids = d.wait_running("web", *INSTANCES, timeout=40)
    sock = listening_socket(port)
    assert all(holds(p, sock) for p in pids.values())

    fds: list[int] = []
    with Load(port) as load:
        load.wait_ok(50)
        for n in (1, 2):
            started = time.monotonic()
            cp = d.supctl("upgrade", timeout=90)
            assert cp.returncode == 0, f"upgrade {n}: {cp.returncode}\n{cp.stdout}\n{cp.stderr}"
            assert f"upgraded: daemon pid {daemon_pid}" in cp.stderr, cp.stderr
            info = d.status()["supervisor"]
            assert info["pid"] == daemon_pid
            assert info["uptime_s"] < time.monotonic() - started + 1, "not a new image"
            fds.append(len(os.listdir(f"/proc/{daemon_pid}/fd")))
            load.wait_ok(50)
        load.stop()
    load.assert_no_failure()

    assert d.proc is not None and d.proc.poll() is None
    d.wait_for(
        lambda: len(os.listdir(f"/proc/{daemon_pid}/fd")) <= fds[0],
        5,
        f"the daemon's open fds not to grow across upgrades (after each: {fds})",
    )
    assert len(d.events("reexec")) == 2
    assert [e["adopted"] for e in d.events("daemon_started")] == [0, 2, 2]
    now = instances(d, "web")
    for inst in INSTANCES:
        assert now[inst]["state"] == "RUNNING"
        assert now[inst]["pid"] == pids[inst], f"{inst} changed pid across the upgrade"
        assert parent_of(pids[inst]) == daemon_pid, f"{inst} is no longer the daemon's child"
        assert now[inst]["restarts"] == 0
    assert listening_socket(port) == sock, "the upgrade replaced the listening socket"

    # the output pipes came along: what the apps print now still reaches `supctl logs`
    if server == "faulty":
        for inst in INSTANCES:
            d.supctl_ok("signal", f"web:{inst}", "USR1")
            wait_log_line(d, f"web:{inst}", f"usr1 pid {pids[inst]} n 1")
    else:
        d.supctl_ok("signal", "web:primary", "TTIN")  # gunicorn logs "Booting worker"
        wait_log_line(d, "web:primary", "Booting worker with pid", timeout=20)

    # a crash after the upgrade is seen (pidfd) and respawned on the same socket
    workers = children_of(pids["primary"])  # gunicorn's; faulty.py has none
    os.kill(pids["primary"], signal.SIGKILL)
    new = new_running_pid(d, "web", "primary", pids["primary"], timeout=40)
    assert parent_of(new) == daemon_pid
    assert holds(new, sock), "the replacement did not get the same socket"

    def old_workers_gone() -> bool:
        # a crashed master's workers go too (the daemon signals what is left of its
        # group, and gunicorn's workers notice their master died once a request wakes them)
        status, _ = http_get("127.0.0.1", port, "/")
        assert status == 200
        return not any(pid_alive(w) for w in workers)

    d.wait_for(old_workers_gone, 30, "the dead master's workers to exit")

    d.record_tree()
    d.supctl_ok("stop", "web", timeout=60)
    assert not pid_alive(new) and not pid_alive(pids["backup"])
    assert all(i["state"] == "STOPPED" for i in instances(d, "web").values())


def test_upgrade_is_refused_during_a_reload_or_with_a_broken_config(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    """`supctl upgrade` exits 1 and changes nothing while a reload's new generation is
    still booting ("in progress") and while the config fails the new code's check;
    otherwise it works."""
    port = free_port()
    hold = tmp_path / "hold"
    d = make_daemon({"web": faulty_web(port, HOLD_FILE=hold)})
    pids = d.wait_running("web", *INSTANCES)
    hold.write_text("booting")  # the next generation keeps booting while this exists
    reload = subprocess.Popen(
        [PYTHON, "-m", "supervisord_lite.supctl", "-s", d.sock, "reload", "web"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=str(REPO),
    )
    try:
        d.wait_for(
            lambda: d.instance("web", "backup", fast=True)["swapping"], 10, "the backup's swap"
        )
        uptime = d.status()["supervisor"]["uptime_s"]
        cp = d.supctl("upgrade", timeout=30)
        assert cp.returncode == 1, (cp.returncode, cp.stdout, cp.stderr)
        assert "in progress" in cp.stdout + cp.stderr, cp.stdout + cp.stderr
        assert not d.events("reexec")
        assert d.status()["supervisor"]["uptime_s"] >= uptime, "the daemon re-executed anyway"
    finally:
        hold.unlink()
        out, _ = reload.communicate(timeout=60)
    assert reload.returncode == 0, out
    now = instances(d, "web")
    assert all(now[i]["pid"] != pids[i] and now[i]["generation"] == 2 for i in INSTANCES), now

    d.config["apps"]["web"]["stop"]["timeout"] = -1
    d.write_config()
    cp = d.supctl("upgrade", timeout=90)
    assert cp.returncode == 1, (cp.stdout, cp.stderr)
    assert "failed its check" in cp.stdout + cp.stderr, cp.stdout + cp.stderr
    assert "apps.web.stop.timeout" in cp.stdout + cp.stderr, "the check's output is not shown"
    assert not d.events("reexec")
    d.config["apps"]["web"]["stop"]["timeout"] = 5
    d.write_config()
    cp = d.supctl("upgrade", timeout=90)
    assert cp.returncode == 0, (cp.stdout, cp.stderr)
    assert {i: v["pid"] for i, v in instances(d, "web").items()} == {
        i: now[i]["pid"] for i in INSTANCES
    }


def test_upgrade_keeps_stopped_instances_stopped(make_daemon: DaemonFactory) -> None:
    """An instance and an app that an operator stopped are still stopped after an upgrade."""
    port, other_port = free_port(), free_port()
    d = make_daemon(
        {
            "web": faulty_web(port),
            "other": {**faulty_web(other_port), "instances": ["primary"]},
        }
    )
    pids = d.wait_running("web", *INSTANCES)
    d.wait_running("other")
    d.supctl_ok("stop", "web:backup")
    d.supctl_ok("stop", "other")
    d.supctl_ok("upgrade", timeout=90)
    d.wait_for(lambda: len(d.events("ready")) == 2, 15, "the new image to finish its boot")
    now = d.status()["apps"]
    assert now["web"]["instances"]["primary"]["pid"] == pids["primary"]
    states = {f"{a}:{i}": v["state"] for a in now for i, v in now[a]["instances"].items()}
    assert states == {
        "web:primary": "RUNNING",
        "web:backup": "STOPPED",
        "other:primary": "STOPPED",
    }, states


def test_config_change_pending_at_upgrade_is_applied_by_update(
    make_daemon: DaemonFactory,
) -> None:
    """A config change saved before an upgrade (not yet applied) is applied by the next
    `supctl update`: the running process gets the new environment."""
    port = free_port()
    d = make_daemon({"web": {**faulty_web(port, FOO="old"), "instances": ["primary"]}})
    pid = d.wait_running("web")["primary"]
    d.config["apps"]["web"]["env"]["FOO"] = "new"
    d.write_config()
    d.supctl_ok("upgrade", timeout=90)
    assert d.pid("web") == pid
    cp = d.supctl_ok("update", timeout=60)
    current = d.wait_running("web")["primary"]
    with open(f"/proc/{current}/environ") as f:
        env = f.read().split("\0")
    assert "FOO=new" in env, f"the running process still has {[e for e in env if 'FOO' in e]}"
    assert "unchanged: web" not in cp.stdout, cp.stdout


# --------------------------------------------------------------------------- crash


@pytest.mark.slow
def test_kill9_of_daemon_apps_keep_serving_and_are_adopted(make_daemon: DaemonFactory) -> None:
    """After kill -9 of the daemon the apps serve and print on; a new daemon adopts them,
    respawns a killed one on the same socket, and its shutdown leaves nothing behind."""
    port = free_port()
    d = make_daemon({"web": faulty_web(port, TICK_EVERY=0.02)})
    pids = d.wait_running("web", *INSTANCES)
    sock = listening_socket(port)
    start_times = {i: psutil.Process(p).create_time() for i, p in pids.items()}

    with Load(port) as load:
        load.wait_ok(50)
        kill9_daemon(d, pids=pids)
        assert all(pid_alive(p) for p in pids.values())
        # no daemon: they keep serving, and keep printing into their pipes (no EPIPE)
        load.wait_ok(100)
        for n in range(6):
            status, _ = http_get("127.0.0.1", port, f"/say/orphaned-{n}")
            assert status == 200
        load.wait_ok(50)
        assert all(pid_alive(p) for p in pids.values()), "an app died while no daemon ran"
        restart_daemon(d)
        load.wait_ok(100)
        load.stop()
    load.assert_no_failure()
    assert set(load.served_by) == set(pids.values()), load.served_by

    assert event_index(d, "recovering_after_crash") >= 0
    now = d.http_status()["apps"]["web"]["instances"]
    for inst in INSTANCES:
        assert now[inst]["state"] == "RUNNING", now
        assert now[inst]["pid"] == pids[inst], f"{inst} was not adopted: {now[inst]}"
        assert psutil.Process(pids[inst]).create_time() == start_times[inst]
    assert {i: v["state"] for i, v in instances(d, "web").items()} == dict.fromkeys(
        INSTANCES, "RUNNING"
    )
    # the pipes were taken back: what they printed while no daemon ran is in the logs,
    # and what they print now still arrives
    text = logs_text(d, "web", 2000)
    assert sum(f"said orphaned-{n} " in text for n in range(6)) == 6, text[-2000:]
    for inst in INSTANCES:
        d.supctl_ok("signal", f"web:{inst}", "USR1")
        wait_log_line(d, f"web:{inst}", f"usr1 pid {pids[inst]} n 1")

    # kill -9 of an adopted instance (not our child): seen, respawned, on the same socket
    os.kill(pids["primary"], signal.SIGKILL)
    new = new_running_pid(d, "web", "primary", pids["primary"])
    assert parent_of(new) == d.pid_of_daemon
    assert listening_socket(port) == sock
    assert holds(new, sock), "the replacement did not get the app's socket"
    info = d.instance("web", "primary")
    assert info["exit_status"] is None, "an adopted process's exit status cannot be known"
    assert info["restarts"] == 1

    def served_by_new() -> bool:
        status, body = http_get("127.0.0.1", port, "/")
        return status == 200 and pid_in(body) == new

    d.wait_for(served_by_new, 15, f"a request served by the replacement pid {new}")

    d.supctl_ok("shutdown", timeout=30)
    assert d.proc is not None
    assert d.proc.wait(30) == 0
    left = (new, pids["backup"])
    wait_until(lambda: not any(pid_alive(p) for p in left), 10, f"{left} to be gone")


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_GUNICORN, reason="gunicorn or wsgi_hello.py missing")
def test_kill9_of_daemon_gunicorn_is_adopted(make_daemon: DaemonFactory) -> None:
    """After kill -9 of the daemon, a new daemon adopts real gunicorn masters (same pids,
    their sockets taken back)."""
    port = free_port()
    d = make_daemon({"web": gunicorn_web(port)})
    pids = d.wait_running("web", *INSTANCES, timeout=40)
    kill9_daemon(d, pids=pids)
    restart_daemon(d)
    assert not d.events("adopt_fds_failed"), d.events("adopt_fds_failed")
    assert not d.events("evicting_unadoptable"), d.events("evicting_unadoptable")
    now = {i: d.wait_state("web", i, "RUNNING", timeout=40)["pid"] for i in INSTANCES}
    assert now == pids, "the gunicorn masters were not adopted"


SIGNAL_RECORDER = """
import signal, sys, time
path = sys.argv[1]
def on(signum, frame):
    with open(path, "a") as f:
        f.write(f"{signum}\\n")
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
          signal.SIGUSR2, signal.SIGCONT, signal.SIGWINCH):
    signal.signal(s, on)
open(path, "a").close()
while True:
    time.sleep(1)
"""


def test_reused_pid_is_never_adopted_or_signalled(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    """A state.json record whose pid now belongs to an unrelated process (start time
    differs) is neither adopted nor signalled; that instance is started afresh."""
    port = free_port()
    d = make_daemon({"web": faulty_web(port)})
    pids = d.wait_running("web", *INSTANCES)
    kill9_daemon(d, pids=pids)
    # the backup dies too, and its pid is (as if) reused by an unrelated process of ours
    os.kill(pids["backup"], signal.SIGKILL)
    wait_until(lambda: not pid_alive(pids["backup"]), 10, "the old backup to be gone")
    received = tmp_path / "signals"
    stranger = subprocess.Popen(
        [PYTHON, "-c", SIGNAL_RECORDER, str(received)], start_new_session=True
    )
    try:
        wait_until(received.exists, 10, "the unrelated process to be up")
        state = recorded(d)
        rec = state.apps["web"].instances["backup"]
        assert rec.pid == pids["backup"]
        rec.pid = rec.pgid = stranger.pid
        rec.start_time -= 1000.0  # the recorded process started long before this one
        rec.marker = None  # and it does not carry the backup's marker
        rewrite_record(d, state)

        restart_daemon(d)
        now = {i: d.wait_state("web", i, "RUNNING", timeout=15) for i in INSTANCES}
        assert now["primary"]["pid"] == pids["primary"], "the primary was not adopted"
        assert now["backup"]["pid"] not in (stranger.pid, pids["backup"])
        assert parent_of(now["backup"]["pid"]) == d.pid_of_daemon, (
            "the backup was not started fresh"
        )
        assert event_index(d, "not_adopted", instance="web:backup", pid=stranger.pid) >= 0
        assert event_index(d, "adopted", instance="web:backup") == -1
        d.supctl_ok("shutdown", timeout=30)
        assert d.proc is not None and d.proc.wait(30) == 0
        assert stranger.poll() is None, "the unrelated process was killed"
        assert received.read_text() == "", f"it was signalled: {received.read_text()!r}"
        assert psutil.Process(stranger.pid).status() != psutil.STATUS_STOPPED
    finally:
        stranger.kill()
        stranger.wait(10)


def test_kill9_of_daemon_during_a_swap_leaves_no_unsupervised_candidate(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    """The new generation a reload was booting when the daemon died is adopted or stopped
    by the next daemon, never left serving unsupervised."""
    port = free_port()
    hold = tmp_path / "hold"
    d = make_daemon({"web": faulty_web(port, HOLD_FILE=hold)})
    d.wait_running("web", *INSTANCES)
    hold.write_text("booting")
    reload = subprocess.Popen(
        [PYTHON, "-m", "supervisord_lite.supctl", "-s", d.sock, "reload", "web"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    candidate = -1
    try:
        d.wait_for(
            lambda: d.instance("web", "backup", fast=True)["swapping"], 10, "the backup's swap"
        )
        [candidate] = [e["pid"] for e in d.events("spawned") if e["generation"] == 2]
        d.remember([candidate])
        kill9_daemon(d, pids={i: d.pid("web", i) for i in INSTANCES})
        reload.wait(20)
        restart_daemon(d)
        hold.unlink()
        d.wait_for(lambda: not pid_alive(candidate), 5, f"the orphaned candidate {candidate} to go")
    finally:
        if reload.poll() is None:
            reload.kill()
            reload.wait(10)
        if hold.exists():
            hold.unlink()
        if candidate > 0 and pid_alive(candidate):
            os.kill(candidate, signal.SIGKILL)  # the leak this test is about


def test_kill9_of_daemon_while_starting_leaves_no_unsupervised_process(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    """A process that was still starting when the daemon died is stopped (or adopted) by
    the next daemon, never left running beside its replacement."""
    port = free_port()
    hold = tmp_path / "hold"
    hold.write_text("booting")
    d = make_daemon({"web": {**faulty_web(port, HOLD_FILE=hold), "instances": ["primary"]}})

    old = d.wait_state("web", "primary", "STARTING")["pid"]
    assert isinstance(old, int)

    app = recorded(d).apps["web"]
    starting = [*app.others, *app.instances.values()]
    assert old in [rec.pid for rec in starting], "the starting process is not in the record"
    try:
        kill9_daemon(d)
        restart_daemon(d)
        hold.unlink()
        new = d.wait_state("web", "primary", "RUNNING", timeout=15)["pid"]
        d.wait_for(lambda: new == old or not pid_alive(old), 10, f"the old process {old} to go")
    finally:
        if hold.exists():
            hold.unlink()
        adopted = False
        if d.proc is not None and d.proc.poll() is None:
            adopted = d.instance("web", "primary")["pid"] == old
        if pid_alive(old) and not adopted:
            os.kill(old, signal.SIGKILL)  # the leak this test is about


# --------------------------------------------------------------------------- max_memory


def test_max_memory_is_replaced_by_hot_swap_without_refusal(make_daemon: DaemonFactory) -> None:
    """An instance whose RSS grows past max_memory is hot-swapped: generation +1, the new
    one ready before the old one gets its stop signal, and no request fails meanwhile."""
    port = free_port()
    app = {
        "command": [PYTHON, str(MEMHOG)],
        "env": {"ALLOC_MB": "100", "ALLOC_GENERATION": "1"},
        "listen": f"127.0.0.1:{port}",
        "ready": {"http": "http://{host}:{port}/health", "timeout": 10},
        "stop": {"timeout": 5},
        "max_memory": "60MiB",
    }
    d = make_daemon({"hog": app})
    old = d.wait_running("hog")["primary"]
    with Load(port, threads=2) as load:
        load.wait_ok(20)
        new = new_running_pid(d, "hog", "primary", old, timeout=30)
        wait_until(lambda: not pid_alive(old), 10, "the old generation to be gone")
        load.wait_ok(50)
        load.stop()
    load.assert_no_failure()
    assert {old, new} <= set(load.served_by), load.served_by

    def sampled() -> dict[str, Any] | None:
        i = d.instance("hog", "primary")
        return i if i["rss_bytes"] is not None else None

    # RSS is sampled on demand, at most once a second: a new generation has none at once
    info = d.wait_for(sampled, 5, "an RSS sample of the new generation")
    assert info["generation"] == 2 and info["pid"] == new
    assert info["state"] == "RUNNING"
    assert info["rss_bytes"] < 60 * 2**20, "the replacement should be small"
    exceeded = event_index(d, "max_memory_exceeded", instance="hog:primary")
    spawned = event_index(d, "spawned", instance="hog:primary", generation=2)
    assert 0 <= exceeded < spawned, (exceeded, spawned)
    rec = d.events("max_memory_exceeded")[0]
    assert rec["rss"] > rec["limit"] == 60 * 2**20
    # memhog prints the first /health it answers and the SIGTERM it gets, with the time:
    # generation 2 passed its readiness probe before generation 1 was told to stop
    marks = d.wait_for(
        lambda: _swap_marks(d.log_file("hog", "primary")), 10, "memhog's health/term lines"
    )
    assert marks["health", new, "2"] < marks["term", old, "1"], marks


def _swap_marks(path: Path) -> dict[tuple[str, int, str], float] | None:
    """{(what, pid, generation): time} from memhog's ``health``/``term`` lines."""
    marks: dict[tuple[str, int, str], float] = {}
    try:
        text = path.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        words = line.split()
        if len(words) == 7 and words[0] in ("health", "term") and words[1] == "pid":
            marks[words[0], int(words[2]), words[4]] = float(words[6])
    kinds = {k[0] for k in marks}
    return marks if kinds == {"health", "term"} else None


# --------------------------------------------------------------------------- watchdog


def test_watchdog_replaces_a_silent_instance_and_keeps_a_pinging_one(
    make_daemon: DaemonFactory,
) -> None:
    """With `watchdog: 1`, an app that never sends WATCHDOG=1 is replaced (restarts +1);
    one that pings every 0.2 s stays."""
    common = {"ready": {"notify": True, "timeout": 10}, "watchdog": 1, "stop": {"timeout": 3}}
    d = make_daemon(
        {
            "silent": {**app_cmd(NOTIFY_READY=1, PORT=free_port()), **common},
            "pinger": {**app_cmd(NOTIFY_READY=1, WATCHDOG_EVERY=0.2, PORT=free_port()), **common},
        }
    )
    silent = d.wait_running("silent")["primary"]
    pinger = d.wait_running("pinger")["primary"]
    replaced = d.wait_for(
        lambda: (i := d.instance("silent", "primary", fast=True))["restarts"] >= 1 and i,
        10,
        "the silent instance to be replaced",
    )
    assert "watchdog" in (replaced["last_error"] or ""), replaced
    d.wait_for(lambda: not pid_alive(silent), 5, "the silent instance's old process to go")
    d.wait_for(
        lambda: (d.instance("pinger", "primary", fast=True)["uptime_s"] or 0) >= 3.5,
        15,
        "the pinging instance to stay up 3.5 watchdog periods",
    )
    info = d.instance("pinger", "primary")
    assert info["pid"] == pinger and info["restarts"] == 0 and info["state"] == "RUNNING"
    assert not [e for e in d.events("instance_unhealthy") if e["instance"] == "pinger:primary"]
