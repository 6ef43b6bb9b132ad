"""Every supctl command and the HTTP API end to end: a real daemon, real children.

The daemon is ``python -m supervisord_lite.cli -c CONFIG`` started by
:class:`helpers.RunningDaemon`; supctl runs as a real subprocess. Most tests share
one module-wide daemon and each works on its own app (so the order of tests does
not matter); tests that change the daemon itself (shutdown, update, permissions,
/healthz) start their own. Every daemon is checked on close for leftover processes.
"""

from __future__ import annotations

import contextlib
import grp
import http.client
import json
import os
import random
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import psutil
import pytest
from conftest import DaemonFactory
from helpers import (
    PYTHON,
    REPO,
    STATUS_ANSWERED,
    RunningDaemon,
    app_cmd,
    descendants_of,
    free_port,
    pid_alive,
    py_app,
    supctl_as,
    wait_until,
)
from prometheus_client.parser import text_string_to_metric_families

NOBODY = 65534
DEADLINE = 10.0  # seconds any awaited condition may take
READY_TIMEOUT = 5.0  # the ready.timeout of the test apps

# Inline programs: no braces (commands are templates with {placeholders}).
RECORDER = """
import signal
count = 0
def on_usr1(signum, frame):
    global count
    count += 1
    print("got SIGUSR1 #%d" % count, flush=True)
signal.signal(signal.SIGUSR1, on_usr1)
print("recorder up", flush=True)
while True:
    signal.pause()
"""
CHATTY = """
import signal
for n in range(30):
    print("line %02d" % n, flush=True)
signal.pause()
"""
BURN = "while True: pass"


def web_app(port: int, **env: object) -> dict[str, Any]:
    """testapp as primary+backup on one shared socket, ready by HTTP."""
    return {
        **app_cmd(**env),
        "instances": ["primary", "backup"],
        "listen": f"127.0.0.1:{port}",
        "ready": {"http": "http://{host}:{port}/health", "timeout": READY_TIMEOUT},
        "stop": {"timeout": 3},
        "backoff": {"initial": 0.2, "max": 1},
    }


def sleeper(instances: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    """``sleep 3600``, ready at once."""
    app: dict[str, Any] = {"command": ["sleep", "3600"], "ready": {"delay": 0}}
    if instances is not None:
        app["instances"] = instances
    app.update(extra)
    return app


# --------------------------------------------------------------------------- helpers


def supctl_argv(sock: str, *args: str) -> list[str]:
    return [PYTHON, "-m", "supervisord_lite.supctl", "-s", sock, *args]


def supctl_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "SUPCTL_SOCKET"}
    env["NO_COLOR"] = "1"
    return env


def run_supctl(
    sock: str, *args: str, prefix: tuple[str, ...] = (), env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """supctl against any socket path (optionally under a prefix such as setpriv)."""
    argv = supctl_argv(sock, *args)
    if prefix:
        argv, other_env = supctl_as(prefix, "-s", sock, *args)
        env = env or other_env
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
        env=env or supctl_env(),
        check=False,
    )


def spawn_supctl(sock: str, *args: str) -> subprocess.Popen[bytes]:
    """supctl as a background process with piped output."""
    return subprocess.Popen(
        supctl_argv(sock, *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        cwd=str(REPO),
        env=supctl_env(),
    )


def finish(proc: subprocess.Popen[bytes], timeout: float = 60) -> tuple[int, str, str]:
    """Wait for a background supctl: (exit status, stdout, stderr); killed if it hangs."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError(f"supctl pid {proc.pid} did not finish within {timeout:g}s") from None
    return proc.returncode, out.decode(), err.decode()


@contextlib.contextmanager
def background(proc: subprocess.Popen[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    """Make sure a process we started is gone when the block ends."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


class LineReader:
    """Lines of a pipe, each awaited with a deadline (a blocked read never hangs a test)."""

    def __init__(self, stream: IO[bytes] | None) -> None:
        assert stream is not None
        self.fd = stream.fileno()
        self.buf = b""

    def readline(self, timeout: float = DEADLINE) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no complete line within {timeout:g}s (have {self.buf!r})")
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if ready:
                chunk = os.read(self.fd, 65536)
                if not chunk:
                    raise AssertionError(f"end of output while waiting for a line ({self.buf!r})")
                self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode()


def inst(d: RunningDaemon, app: str, name: str = "primary") -> dict[str, Any]:
    """One instance's status from the HTTP API (fast)."""
    return d.instance(app, name, fast=True)


def instances(d: RunningDaemon, app: str) -> dict[str, dict[str, Any]]:
    """Every instance's status of one app, from the HTTP API (cheaper than supctl)."""
    result: dict[str, dict[str, Any]] = d.http_status()["apps"][app]["instances"]
    return result


def wait_respawned(d: RunningDaemon, app: str, name: str, old_pid: int) -> dict[str, Any]:
    """Wait until ``app:name`` is RUNNING again with a pid other than ``old_pid``."""

    def check() -> dict[str, Any] | None:
        info = inst(d, app, name)
        return info if info["state"] == "RUNNING" and info["pid"] not in (None, old_pid) else None

    return d.wait_for(check, DEADLINE, f"{app}:{name} to run again with a new pid")


def wait_gone(pid: int) -> None:
    wait_until(lambda: not pid_alive(pid), DEADLINE, f"pid {pid} to be gone")


def table_rows(stdout: str) -> list[list[str]]:
    """The rows of `supctl status` (header checked, notes below the table dropped)."""
    lines = stdout.splitlines()
    assert lines[0].split() == [
        "APP",
        "INSTANCE",
        "STATE",
        "PID",
        "UPTIME",
        "RESTARTS",
        "HEALTH",
        "RELEASE",
        "RSS",
    ], lines[0]
    return [line.split() for line in lines[1:] if len(line.split()) == 9]


@pytest.fixture
def open_root() -> Iterator[Path]:
    """A directory every user may traverse (pytest's tmp_path is private to root)."""
    root = Path(tempfile.mkdtemp(prefix="sl-e2e-", dir="/tmp"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def as_nobody(groups: str | None = None) -> tuple[str, ...]:
    """A setpriv prefix that runs a command as uid/gid 65534 (with ``groups`` or none)."""
    return (
        "setpriv",
        f"--reuid={NOBODY}",
        f"--regid={NOBODY}",
        f"--groups={groups}" if groups else "--clear-groups",
    )


needs_root_setpriv = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="needs root and setpriv to run a client as another uid",
)


# --------------------------------------------------------------------------- shared daemon

PORTS: dict[str, int] = {}


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    """One daemon for the tests that each work on their own app."""
    for name in ("web", "ctl", "workers"):
        PORTS[name] = free_port()
    apps: dict[str, dict[str, Any]] = {
        "web": web_app(PORTS["web"]),  # read only: status and HTTP
        "ctl": web_app(PORTS["ctl"]),  # start / stop / restart / reload
        "rec": {**py_app(RECORDER), "ready": {"delay": 0}},  # signal USR1
        "talker": {**py_app(RECORDER), "ready": {"delay": 0}},  # logs -f
        "chatty": {**py_app(CHATTY), "ready": {"delay": 0}},  # logs -n
        "term": sleeper(["primary", "backup"]),  # signal TERM -> respawn
        "victim": sleeper(),  # kill -9 -> restarts, exit_status
        "crashy": {
            **app_cmd(CRASH_AT_BOOT=3),
            "autostart": False,
            "ready": {"delay": 0.5, "timeout": READY_TIMEOUT},
            "backoff": {"initial": 0.2, "max": 1},
        },
        "burn": {**py_app(BURN), "autostart": False, "ready": {"delay": 0}},
        "workers": {
            **app_cmd(WORKERS=2),
            "listen": f"127.0.0.1:{PORTS['workers']}",
            "autostart": False,
            "stop": {"timeout": 3},
        },
    }
    d = RunningDaemon(tmp_path_factory.mktemp("shared"), apps)
    try:
        d.start()
        d.wait_running("web", "primary", "backup")
        d.wait_running("ctl", "primary", "backup")
        d.wait_running("term", "primary", "backup")
        for app in ("rec", "talker", "chatty", "victim"):
            d.wait_running(app)
        yield d
    finally:
        d.close()


# --------------------------------------------------------------------------- status


def test_supctl_status_imports_none_of_the_daemons_libraries(shared: RunningDaemon) -> None:
    """The installed ``supctl`` entry point, as an operator runs it, answers ``status``
    from a real daemon without importing aiohttp, structlog or psutil (nor yaml,
    sdnotify or asyncio): ``python -X importtime`` lists every module it imported."""
    script = Path(PYTHON).parent / "supctl"
    cp = subprocess.run(
        [PYTHON, "-X", "importtime", str(script), "-s", shared.sock, "status"],
        env=supctl_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=DEADLINE * 3,
        check=False,
    )
    assert cp.returncode in STATUS_ANSWERED, cp.stderr
    assert "web" in cp.stdout and "primary" in cp.stdout  # it did get the daemon's answer
    imported = {
        line.rpartition("|")[2].strip()
        for line in cp.stderr.splitlines()
        if line.startswith("import time:") and "cumulative" not in line
    }
    assert "supervisord_lite.supctl" in imported  # importtime did list the imports
    heavy = {"aiohttp", "structlog", "psutil", "yaml", "sdnotify", "asyncio"}
    assert not {m.split(".")[0] for m in imported} & heavy, sorted(imported)


def test_status_table_lists_every_instance(shared: RunningDaemon) -> None:
    """`supctl status` prints one aligned row per instance with its real state and pid."""
    cp = shared.supctl("status")  # 0, or 5 while some other test's app restarts
    assert cp.returncode in STATUS_ANSWERED, cp.stderr
    rows = {(r[0], r[1]): r for r in table_rows(cp.stdout)}
    status = shared.status()
    for app_name, app in status["apps"].items():
        for name, info in app["instances"].items():
            row = rows[(app_name, name)]
            assert row[2] == info["state"]
            assert row[3] == (str(info["pid"]) if info["pid"] else "-")
    web = rows[("web", "primary")]
    assert web[2] == "RUNNING" and psutil.pid_exists(int(web[3]))
    assert web[8].endswith("MiB")
    assert rows[("crashy", "primary")][2:4] == ["STOPPED", "-"]


def test_status_json_has_the_documented_fields(shared: RunningDaemon) -> None:
    """`supctl --json status` ends with one ok response carrying every documented field."""
    cp = shared.supctl("status", json_output=True)
    assert cp.returncode in STATUS_ANSWERED, cp.stderr
    final = json.loads(cp.stdout.splitlines()[-1])
    assert final["ok"] is True and final["id"] == 1
    result = final["result"]
    assert result["supervisor"]["pid"] == shared.pid_of_daemon
    assert result["supervisor"]["state"] == "running"
    web = result["apps"]["web"]
    assert web["state"] == "RUNNING"
    for info in web["instances"].values():
        for key in (
            "state",
            "pid",
            "generation",
            "uptime_s",
            "restarts",
            "exit_status",
            "ready",
            "healthy",
            "release",
            "listen",
            "rss_bytes",
            "cpu_percent",
        ):
            assert key in info, key
        assert info["listen"] == f"127.0.0.1:{PORTS['web']}"


def test_status_of_one_app(shared: RunningDaemon) -> None:
    """`supctl status APP` shows only that app's instances."""
    cp = shared.supctl("status", "term")
    assert cp.returncode in STATUS_ANSWERED, cp.stderr
    rows = table_rows(cp.stdout)
    assert [(r[0], r[1]) for r in rows] == [("term", "primary"), ("term", "backup")]
    cp = shared.supctl("status", "term", json_output=True)
    result = json.loads(cp.stdout.splitlines()[-1])["result"]
    assert list(result["apps"]) == ["term"]


# --------------------------------------------------------------------------- start/stop/restart


def test_stop_and_start_one_instance(shared: RunningDaemon) -> None:
    """stop APP:INSTANCE ends only that process; start brings it back ready with a new pid."""
    before = instances(shared, "ctl")
    old = before["backup"]["pid"]
    cp = shared.supctl_ok("stop", "ctl:backup")
    assert "ctl:backup: stopped" in cp.stdout
    now = instances(shared, "ctl")
    assert now["backup"]["state"] == "STOPPED" and now["backup"]["pid"] is None
    assert not pid_alive(old)
    assert now["primary"]["pid"] == before["primary"]["pid"]
    assert now["primary"]["state"] == "RUNNING"

    cp = shared.supctl_ok("start", "ctl:backup")
    assert "ctl:backup: started" in cp.stdout
    now = instances(shared, "ctl")  # start returns only once the instance is ready
    assert now["backup"]["state"] == "RUNNING" and now["backup"]["ready"] is True
    assert now["backup"]["pid"] not in (None, old) and pid_alive(now["backup"]["pid"])
    assert now["backup"]["generation"] == before["backup"]["generation"] + 1
    assert now["primary"]["pid"] == before["primary"]["pid"]


def test_stop_and_start_whole_app(shared: RunningDaemon) -> None:
    """stop APP ends every instance; start APP returns when all are ready and serving."""
    before = instances(shared, "ctl")
    shared.supctl_ok("stop", "ctl")
    now = instances(shared, "ctl")
    assert {i["state"] for i in now.values()} == {"STOPPED"}
    for info in before.values():
        assert not pid_alive(info["pid"])
    assert shared.status()["apps"]["ctl"]["should_run"] is False

    shared.supctl_ok("start", "ctl")
    now = instances(shared, "ctl")
    assert {i["state"] for i in now.values()} == {"RUNNING"}
    assert {i["pid"] for i in now.values()}.isdisjoint({i["pid"] for i in before.values()})
    conn = http.client.HTTPConnection("127.0.0.1", PORTS["ctl"], timeout=5)
    try:
        conn.request("GET", "/")
        assert conn.getresponse().status == 200
    finally:
        conn.close()


def test_restart_instance_then_app(shared: RunningDaemon) -> None:
    """restart APP:INSTANCE replaces only that pid; restart APP replaces every pid."""
    before = instances(shared, "ctl")
    cp = shared.supctl_ok("restart", "ctl:primary")
    assert "ctl:primary: restarted" in cp.stdout
    now = instances(shared, "ctl")
    assert now["primary"]["state"] == "RUNNING"
    assert now["primary"]["pid"] != before["primary"]["pid"]
    assert not pid_alive(before["primary"]["pid"])
    assert now["backup"]["pid"] == before["backup"]["pid"]

    mid = now
    shared.supctl_ok("restart", "ctl")
    now = instances(shared, "ctl")
    for name in ("primary", "backup"):
        assert now[name]["state"] == "RUNNING"
        assert now[name]["pid"] != mid[name]["pid"]
        assert not pid_alive(mid[name]["pid"])


def test_json_output_streams_progress_then_the_result(shared: RunningDaemon) -> None:
    """--json restart prints progress events as JSON lines, then one ok response, on stdout."""
    old = inst(shared, "ctl", "backup")["pid"]
    cp = shared.supctl("restart", "ctl:backup", json_output=True)
    assert cp.returncode == 0, cp.stderr
    messages = [json.loads(line) for line in cp.stdout.splitlines()]
    *events, final = messages
    assert events and all(e["event"] == "progress" and e["id"] == 1 for e in events)
    assert [e.get("state") for e in events if e.get("state")] == ["STOPPED", "RUNNING"]
    assert final["ok"] is True
    new = final["result"]["backup"]
    assert new["state"] == "RUNNING" and new["pid"] not in (None, old)
    assert new["pid"] == inst(shared, "ctl", "backup")["pid"]


def test_start_of_app_that_crashes_at_boot(shared: RunningDaemon) -> None:
    """start of an app dying at boot exits 1 before its ready deadline, with reason and output."""
    try:
        t0 = time.monotonic()
        cp = shared.supctl("start", "crashy")
        elapsed = time.monotonic() - t0
        assert cp.returncode == 1, (cp.stdout, cp.stderr)
        assert elapsed < READY_TIMEOUT, elapsed
        assert "crashy:primary failed to start" in cp.stderr
        assert "exited with status 3" in cp.stderr
        assert "last output:" in cp.stderr
        assert "fatal: cannot connect to the database (simulated)" in cp.stderr
    finally:
        shared.supctl_ok("stop", "crashy")
    assert inst(shared, "crashy")["state"] == "STOPPED"


def test_start_of_running_instance_is_a_no_op(shared: RunningDaemon) -> None:
    """start of an instance that already runs exits 0 and keeps its pid."""
    pid = inst(shared, "web", "primary")["pid"]
    shared.supctl_ok("start", "web:primary")
    assert inst(shared, "web", "primary")["pid"] == pid


# --------------------------------------------------------------------------- signal


def test_signal_usr1_reaches_the_process(shared: RunningDaemon) -> None:
    """signal APP USR1 delivers USR1 to the app's process, which records it and keeps running."""
    pid = inst(shared, "rec")["pid"]
    cp = shared.supctl_ok("signal", "rec", "USR1")
    assert "rec: sent SIGUSR1" in cp.stdout and str(pid) in cp.stdout
    shared.wait_for(
        lambda: any(
            line.startswith("got SIGUSR1")
            for line in shared.supctl_ok("logs", "rec").stdout.splitlines()
        ),
        DEADLINE,
        "the app to record SIGUSR1",
    )
    assert inst(shared, "rec")["pid"] == pid


def test_signal_term_to_one_instance_respawns_it(shared: RunningDaemon) -> None:
    """signal APP:INSTANCE TERM kills that process only; it is respawned with restarts + 1."""
    before = instances(shared, "term")
    cp = shared.supctl_ok("signal", "term:backup", "TERM")
    assert "sent SIGTERM" in cp.stdout
    after = wait_respawned(shared, "term", "backup", before["backup"]["pid"])
    assert after["restarts"] == before["backup"]["restarts"] + 1
    assert after["exit_status"] == -signal.SIGTERM
    assert inst(shared, "term", "primary")["pid"] == before["primary"]["pid"]


@pytest.mark.parametrize("sig", ["BOGUS", "SIGNOPE", "999"])
def test_signal_with_bad_name_is_a_usage_error(shared: RunningDaemon, sig: str) -> None:
    """A signal name or number that does not exist exits 2 and names it; nothing is sent."""
    pid = inst(shared, "rec")["pid"]
    cp = shared.supctl("signal", "rec", sig)
    assert cp.returncode == 2, (cp.stdout, cp.stderr)
    assert cp.stderr.startswith("supctl: bad signal") and sig in cp.stderr
    assert inst(shared, "rec")["pid"] == pid


def test_signal_to_stopped_app_fails(shared: RunningDaemon) -> None:
    """signal to an app with no running process exits 1 and says so."""
    cp = shared.supctl("signal", "crashy", "HUP")
    assert cp.returncode == 1
    assert "no running process to signal" in cp.stderr


# --------------------------------------------------------------------------- logs


def test_logs_last_n_lines(shared: RunningDaemon) -> None:
    """logs APP -n N prints exactly the app's last N lines, oldest first."""
    want = [f"line {n:02d}" for n in range(25, 30)]
    shared.wait_for(
        lambda: shared.supctl_ok("logs", "chatty", "-n", "5").stdout.splitlines() == want,
        DEADLINE,
        "the last 5 lines of chatty",
    )
    assert shared.supctl_ok("logs", "chatty", "-n", "1").stdout == "line 29\n"
    assert shared.supctl_ok("logs", "chatty", "-n", "0").stdout == ""
    lines = shared.supctl_ok("logs", "chatty", "-n", "1000").stdout.splitlines()
    assert lines[-30:] == [f"line {n:02d}" for n in range(30)]


def test_logs_of_two_instances_are_prefixed(shared: RunningDaemon) -> None:
    """logs of an app with two instances prefixes each line with its instance."""
    lines = shared.supctl_ok("logs", "web", "-n", "2").stdout.splitlines()
    assert lines and all(line.startswith(("primary| ", "backup| ")) for line in lines)
    assert {line.split("|")[0] for line in lines} == {"primary", "backup"}


def test_logs_follow_streams_new_lines(shared: RunningDaemon) -> None:
    """logs -f prints the tail, then each new line as the app prints it, until the client quits."""
    pid = inst(shared, "talker")["pid"]
    with background(spawn_supctl(shared.sock, "logs", "talker", "-f", "-n", "1")) as follower:
        out = LineReader(follower.stdout)
        out.readline()  # the tail: the follower is subscribed from here on
        for n in (1, 2):
            os.kill(pid, signal.SIGUSR1)
            assert out.readline() == f"got SIGUSR1 #{n}"
        follower.terminate()
        assert follower.wait(DEADLINE) == -signal.SIGTERM
    # the daemon dropped the follower and serves on
    assert shared.supctl("status", "talker").returncode in STATUS_ANSWERED
    assert inst(shared, "talker")["pid"] == pid


def test_logs_rejects_negative_count(shared: RunningDaemon) -> None:
    """logs -n -1 is a usage error (exit 2)."""
    cp = shared.supctl("logs", "chatty", "-n", "-1")
    assert cp.returncode == 2 and "must be at least 0" in cp.stderr


# --------------------------------------------------------------------------- reload


def test_reload_swaps_every_instance_once(shared: RunningDaemon) -> None:
    """reload APP hot-swaps backup then primary: exit 0, generation + 1, new pids, old gone."""
    before = instances(shared, "ctl")
    cp = shared.supctl_ok("reload", "ctl")
    assert "reloaded" in cp.stdout
    progress = cp.stderr.splitlines()
    swaps = [line for line in progress if "swapping (generation" in line]
    assert [s.split()[0] for s in swaps] == ["ctl:backup", "ctl:primary"]
    now = instances(shared, "ctl")
    for name in ("primary", "backup"):
        assert now[name]["state"] == "RUNNING"
        assert now[name]["generation"] == before[name]["generation"] + 1
        assert now[name]["pid"] != before[name]["pid"]
        assert not pid_alive(before[name]["pid"])


# --------------------------------------------------------------------------- no release config


@pytest.mark.parametrize(
    "args",
    [
        ("deploy", "web", "v2"),
        ("deploy", "web", "v2", "--pause"),
        ("promote", "web"),
        ("rollback", "web"),
    ],
    ids=["deploy", "deploy-pause", "promote", "rollback"],
)
def test_release_commands_on_app_without_releases(
    shared: RunningDaemon, args: tuple[str, ...]
) -> None:
    """deploy/promote/rollback of an app without `release:` exit 2 naming the missing config."""
    pids = {n: i["pid"] for n, i in instances(shared, "web").items()}
    cp = shared.supctl(*args)
    assert cp.returncode == 2, (cp.stdout, cp.stderr)
    assert cp.stderr.startswith("supctl: web: has no `release:` config"), cp.stderr
    assert {n: i["pid"] for n, i in instances(shared, "web").items()} == pids


# --------------------------------------------------------------------------- unknown names

APP_COMMANDS = [
    ("status", "nope"),
    ("start", "nope"),
    ("stop", "nope"),
    ("restart", "nope"),
    ("signal", "nope", "HUP"),
    ("logs", "nope"),
    ("logs", "nope", "-f"),
    ("reload", "nope"),
    ("reload", "web", "nope"),
    ("deploy", "nope", "v1"),
    ("promote", "nope"),
    ("rollback", "nope"),
]


@pytest.mark.parametrize("args", APP_COMMANDS, ids=" ".join)
def test_unknown_app_exits_4(shared: RunningDaemon, args: tuple[str, ...]) -> None:
    """Every command that takes an app exits 4 for an app that is not configured."""
    cp = shared.supctl(*args)
    assert cp.returncode == 4, (cp.stdout, cp.stderr)
    assert "no app named 'nope'" in cp.stderr


INSTANCE_COMMANDS = [
    ("start", "web:nope"),
    ("stop", "web:nope"),
    ("restart", "web:nope"),
    ("signal", "web:nope", "HUP"),
    ("logs", "web:nope"),
    ("logs", "web:nope", "-f"),
]


@pytest.mark.parametrize("args", INSTANCE_COMMANDS, ids=" ".join)
def test_unknown_instance_exits_4(shared: RunningDaemon, args: tuple[str, ...]) -> None:
    """Every command that takes APP:INSTANCE exits 4 for an instance the app does not have."""
    pids = {n: i["pid"] for n, i in instances(shared, "web").items()}
    cp = shared.supctl(*args)
    assert cp.returncode == 4, (cp.stdout, cp.stderr)
    assert "app 'web' has no instance 'nope' (instances: primary, backup)" in cp.stderr
    assert {n: i["pid"] for n, i in instances(shared, "web").items()} == pids


# --------------------------------------------------------------------------- no daemon


@pytest.mark.parametrize(
    "args",
    [("status",), ("start", "web"), ("logs", "web", "-f"), ("reload",), ("shutdown",)],
    ids=" ".join,
)
def test_no_daemon_exits_3(tmp_path: Path, args: tuple[str, ...]) -> None:
    """With no daemon (no socket file, or a stale one) supctl exits 3 naming the socket."""
    missing = str(tmp_path / "missing.sock")
    cp = run_supctl(missing, *args)
    assert cp.returncode == 3, (cp.stdout, cp.stderr)
    assert f"cannot reach the daemon at {missing}" in cp.stderr

    stale = str(tmp_path / "stale.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(stale)  # the file stays; nobody listens on it
    cp = run_supctl(stale, *args)
    assert cp.returncode == 3, (cp.stdout, cp.stderr)
    assert "Connection refused" in cp.stderr

    env = {**supctl_env(), "SUPCTL_SOCKET": missing}
    cp = subprocess.run(
        [PYTHON, "-m", "supervisord_lite.supctl", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert cp.returncode == 3 and missing in cp.stderr


# --------------------------------------------------------------------------- HTTP API


def test_http_status_fields_are_real(shared: RunningDaemon) -> None:
    """GET /status reports the real pids, rss, cpu, generation of the instances and the daemon."""

    def measured() -> dict[str, Any] | None:
        # CPU percent needs two samples (at most one a second): the first has none
        status = shared.http_status()
        cpu = [i["cpu_percent"] for i in status["apps"]["web"]["instances"].values()]
        return status if all(c is not None for c in cpu) else None

    status = shared.wait_for(measured, 10, "a second usage sample (cpu_percent)")
    sup = status["supervisor"]
    assert sup["pid"] == shared.pid_of_daemon and sup["state"] == "running"
    assert sup["uptime_s"] > 0 and sup["config"] == str(shared.config_path)
    via_supctl = instances(shared, "web")
    for name, info in status["apps"]["web"]["instances"].items():
        pid = info["pid"]
        assert pid == via_supctl[name]["pid"]
        proc = psutil.Process(pid)
        assert proc.ppid() == shared.pid_of_daemon
        assert any(part.endswith("testapp.py") for part in proc.cmdline())
        assert proc.environ()["SUPERVISOR_INSTANCE"] == name
        assert proc.environ()["SUPERVISOR_GENERATION"] == str(info["generation"])
        real_rss = proc.memory_info().rss
        assert info["rss_bytes"] > 0 and 0.5 < info["rss_bytes"] / real_rss < 2
        assert isinstance(info["cpu_percent"], int | float) and info["cpu_percent"] >= 0
        assert info["state"] == "RUNNING" and info["ready"] is True
        assert info["uptime_s"] >= 0 and isinstance(info["generation"], int)


def test_http_cpu_percent_is_measured(shared: RunningDaemon) -> None:
    """A busy-looping app shows a cpu_percent well above zero in /status."""
    shared.supctl_ok("start", "burn")
    try:
        shared.wait_for(
            lambda: (inst(shared, "burn")["cpu_percent"] or 0) > 20,
            DEADLINE,
            "cpu_percent of a busy loop to exceed 20",
        )
    finally:
        shared.supctl_ok("stop", "burn")


def test_http_status_after_kill_9(shared: RunningDaemon) -> None:
    """After kill -9 of an instance /status shows the respawn: restarts + 1, exit_status -9."""
    before = inst(shared, "victim")
    os.kill(before["pid"], signal.SIGKILL)
    after = wait_respawned(shared, "victim", "primary", before["pid"])
    assert after["restarts"] == before["restarts"] + 1
    assert after["exit_status"] == -9
    assert after["generation"] == before["generation"] + 1
    assert "SIGKILL" in (after["last_error"] or "")


def test_http_status_of_one_app_and_unknown_app(shared: RunningDaemon) -> None:
    """GET /status/APP gives that app; an unknown app is a 404 with a JSON error."""
    code, body = shared.http("/status/web")
    assert code == 200
    app = json.loads(body)
    assert app["name"] == "web" and set(app["instances"]) == {"primary", "backup"}
    pids = {n: i["pid"] for n, i in instances(shared, "web").items()}
    assert {n: i["pid"] for n, i in app["instances"].items()} == pids

    conn = http.client.HTTPConnection("127.0.0.1", shared.http_port or 0, timeout=5)
    try:
        conn.request("GET", "/status/nope")
        resp = conn.getresponse()
        assert resp.status == 404
        assert resp.getheader("Content-Type", "").startswith("application/json")
        assert json.loads(resp.read()) == {
            "error": {"code": "no_such_app", "message": "no app named 'nope'"}
        }
    finally:
        conn.close()


def test_http_metrics_parse_as_prometheus(shared: RunningDaemon) -> None:
    """GET /metrics parses with prometheus_client and holds one current state per instance."""
    conn = http.client.HTTPConnection("127.0.0.1", shared.http_port or 0, timeout=5)
    try:
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        assert resp.status == 200
        assert "version=0.0.4" in resp.getheader("Content-Type", "")
        text = resp.read().decode()
    finally:
        conn.close()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))
    status = shared.http_status()
    for app_name, app in status["apps"].items():
        for name, info in app["instances"].items():
            ids = {"app": app_name, "app_instance": name}
            states = {
                lb["state"]: v
                for lb, v in samples["supervisord_lite_instance_state"]
                if lb["app"] == app_name and lb["app_instance"] == name
            }
            assert states[info["state"]] == 1 and sum(states.values()) == 1, (ids, states)
            restarts = [
                v for lb, v in samples["supervisord_lite_instance_restarts_total"] if lb == ids
            ]
            assert restarts == [info["restarts"]]
    rss = samples["supervisord_lite_instance_resident_memory_bytes"]
    web_rss = [v for lb, v in rss if lb["app"] == "web"]
    assert len(web_rss) == 2 and all(v > 0 for v in web_rss)
    for name in (
        "supervisord_lite_up",
        "supervisord_lite_instance_cpu_seconds_total",
        "supervisord_lite_instance_health_check_failures_total",
        "supervisord_lite_swaps_total",
        "supervisord_lite_swap_duration_seconds_count",
        "supervisord_lite_deploys_total",
    ):
        assert name in samples, name


@pytest.mark.parametrize("path", ["/status", "/status/web", "/healthz", "/metrics"])
def test_http_post_is_405(shared: RunningDaemon, path: str) -> None:
    """The HTTP API is read-only: POST answers 405 with a JSON error and an Allow header."""
    conn = http.client.HTTPConnection("127.0.0.1", shared.http_port or 0, timeout=5)
    try:
        conn.request("POST", path, body=b"{}", headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        body = json.loads(resp.read())
        assert resp.status == 405
        assert "GET" in resp.getheader("Allow", "")
        assert body["error"]["code"] == "protocol" and "POST" in body["error"]["message"]
    finally:
        conn.close()


def test_healthz_turns_503_when_an_instance_backs_off(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    """/healthz is 200 while all runs, 503 naming the instance in BACKOFF, 200 once it recovers."""
    flag = tmp_path / "crash-at-boot"
    code = (
        "import os, signal, sys\n"
        f"if os.path.exists({str(flag)!r}):\n"
        "    print('boot failed: flag present', flush=True)\n"
        "    sys.exit(7)\n"
        "signal.pause()\n"
    )
    d = make_daemon(
        {
            "ok": sleeper(),
            "flaky": {
                **py_app(code),
                "ready": {"delay": 0.2, "timeout": 3},
                "backoff": {"initial": 0.3, "max": 0.5},
            },
        }
    )
    d.wait_running("ok")
    pid = d.wait_running("flaky")["primary"]
    assert d.http("/healthz") == (200, b'{"healthy": true}')
    flag.write_text("crash")
    os.kill(pid, signal.SIGKILL)
    d.wait_state("flaky", "primary", "BACKOFF", DEADLINE)
    code_, body = d.http("/healthz")
    assert code_ == 503
    assert json.loads(body) == {"healthy": False, "unhealthy": ["flaky:primary BACKOFF"]}
    flag.unlink()
    d.wait_state("flaky", "primary", "RUNNING", DEADLINE)
    assert d.http("/healthz")[0] == 200


# --------------------------------------------------------------------------- robustness


def _responses(sock: socket.socket, until_id: int) -> list[dict[str, Any]]:
    """Read response lines until the one with ``until_id``."""
    out: list[dict[str, Any]] = []
    buf = b""
    while not out or out[-1].get("id") != until_id:
        while b"\n" not in buf:
            chunk = sock.recv(65536)
            assert chunk, f"the daemon hung up; got {out}"
            buf += chunk
        line, _, buf = buf.partition(b"\n")
        out.append(json.loads(line))
    return out


def test_daemon_survives_garbage_on_the_socket(shared: RunningDaemon) -> None:
    """Junk bytes, bad requests, an oversized line and a stalled client leave the daemon serving."""
    pids = {n: i["pid"] for n, i in instances(shared, "web").items()}
    # 1. bad lines on one connection: each gets an error, and the connection still works
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(DEADLINE)
        s.connect(shared.sock)
        s.sendall(
            b"\xff\xfe\xfd garbage\n"
            b"not json at all\n"
            b"[1, 2, 3]\n"
            b'{"id": true, "command": "status"}\n'
            b'{"id": 7, "command": "launch"}\n'
            b'{"id": 8, "command": "stop", "args": {"target": 5}}\n'
            b'{"id": 9, "command": "status", "args": {"app": "web"}}\n'
        )
        replies = _responses(s, 9)
    assert [r.get("ok") for r in replies] == [False] * 6 + [True]
    assert [r["error"]["code"] for r in replies[:6]] == ["protocol"] * 5 + ["usage"]
    assert "unknown command 'launch'" in replies[4]["error"]["message"]
    assert list(replies[6]["result"]["apps"]) == ["web"]
    # 2. random binary, then an abrupt close
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(shared.sock)
        s.sendall(random.Random(1).randbytes(256 * 1024))
    # 3. a line over the 1 MiB limit: one error, then the daemon hangs up
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(DEADLINE)
        s.connect(shared.sock)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(b"x" * (2 << 20))
        reply = json.loads(s.recv(65536).split(b"\n")[0])
        assert reply["ok"] is False and "exceeds" in reply["error"]["message"]
    # 4. a client that sends half a request and stalls, and one that connects and leaves
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stalled:
        stalled.connect(shared.sock)
        stalled.sendall(b'{"id": 1, "command": "sta')
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as quick:
            quick.connect(shared.sock)
        cp = shared.supctl("status")
        assert cp.returncode in STATUS_ANSWERED and table_rows(cp.stdout)
    assert shared.proc is not None and shared.proc.poll() is None
    assert {n: i["pid"] for n, i in instances(shared, "web").items()} == pids


# --------------------------------------------------------------------------- whole daemon


def test_shutdown_stops_everything_and_exits_0(make_daemon: DaemonFactory) -> None:
    """shutdown exits 0, the daemon exits 0, and no child or grandchild is left."""
    port = free_port()
    d = make_daemon(
        {
            "web": {**web_app(port, GRANDCHILD=1), "stop": {"timeout": 1}},
            "s": sleeper(["a", "b"]),
        }
    )
    d.wait_running("web", "primary", "backup")
    d.wait_running("s", "a", "b")
    assert d.proc is not None
    tree = descendants_of(d.proc.pid)
    d.remember(tree)
    assert len(tree) >= 6  # 2 testapps + their stubborn grandchildren + 2 sleeps
    cp = d.supctl_ok("shutdown")
    assert "shut down" in cp.stdout
    assert d.proc.wait(DEADLINE) == 0
    for pid in tree:
        assert not pid_alive(pid), f"pid {pid} outlived the daemon"
    assert not os.path.exists(d.sock)
    assert not (d.state_dir / "supervisord-lite.pid").exists()
    cp = d.supctl("status")
    assert cp.returncode == 3


def test_update_adds_rejects_and_removes(make_daemon: DaemonFactory) -> None:
    """update applies an added app, refuses an invalid file with exit 2, removes a dropped app."""
    d = make_daemon({"a": sleeper()})
    a_pid = d.wait_running("a")["primary"]
    d.config["apps"]["b"] = sleeper()
    d.write_config()
    cp = d.supctl_ok("update")
    assert "added: b" in cp.stdout
    b_pid = d.wait_running("b")["primary"]
    d.config["apps"]["b"]["stop"] = {"timeout": -1}
    d.write_config()
    cp = d.supctl("update")
    assert cp.returncode == 2, (cp.stdout, cp.stderr)
    assert "apps.b.stop.timeout" in cp.stderr
    assert d.pid("b") == b_pid
    del d.config["apps"]["b"]
    d.write_config()
    cp = d.supctl_ok("update")
    assert "removed: b" in cp.stdout
    assert "b" not in d.status()["apps"]
    assert not pid_alive(b_pid)
    assert d.pid("a") == a_pid


def test_concurrent_reloads_do_not_interleave(make_daemon: DaemonFactory, tmp_path: Path) -> None:
    """Of two reloads at once one swaps each instance once; the other (and a restart) is refused."""
    hold = tmp_path / "hold"  # while it exists, a new generation keeps booting
    port = free_port()
    d = make_daemon({"slow": web_app(port, HOLD_FILE=hold)})
    d.wait_running("slow", "primary", "backup")
    before = instances(d, "slow")
    hold.write_text("")
    first = spawn_supctl(d.sock, "reload", "slow")
    second = spawn_supctl(d.sock, "reload", "slow")
    with background(first), background(second):
        d.wait_for(lambda: inst(d, "slow", "backup")["swapping"], DEADLINE, "a swap to begin")
        # while the winner's candidate is held: the loser is refused, not queued
        loser, winner = wait_until(
            lambda: (
                (first, second)
                if first.poll() is not None
                else (second, first)
                if second.poll() is not None
                else None
            ),
            DEADLINE,
            "one reload to be refused",
        )
        assert winner.poll() is None
        code, out, err = finish(loser)
        assert code == 1, (out, err)
        assert err.strip() == "supctl: slow: reload already in progress"
        restart = d.supctl("restart", "slow")
        assert restart.returncode == 1
        assert "slow: reload already in progress" in restart.stderr
        hold.unlink()
        code, out, err = finish(winner)
        assert code == 0, (out, err)
    after = instances(d, "slow")
    for name in ("primary", "backup"):
        assert after[name]["state"] == "RUNNING"
        assert after[name]["generation"] == before[name]["generation"] + 1
        assert after[name]["pid"] != before[name]["pid"]
    swaps = [e for e in d.events("spawned") if e.get("instance", "").startswith("slow:")]
    assert len(swaps) == 4  # two at boot, one per instance for the one reload


# --------------------------------------------------------------------------- permissions


def _own_daemon(
    root: Path, apps: dict[str, dict[str, Any]], control_socket: dict[str, Any]
) -> RunningDaemon:
    return RunningDaemon(
        root / "d", apps, supervisor={"control_socket": control_socket}, http=False
    )


@needs_root_setpriv
def test_other_uid_is_refused(open_root: Path) -> None:
    """A client of another uid that can open the socket is refused: exit 3, a permission message."""
    d = _own_daemon(open_root, {"s": sleeper()}, {"mode": "0666"})
    try:
        d.start()
        pid = d.wait_running("s")["primary"]
        assert os.stat(d.sock).st_mode & 0o777 == 0o666
        for args in (("status",), ("stop", "s"), ("shutdown",)):
            cp = run_supctl(d.sock, *args, prefix=as_nobody())
            assert cp.returncode == 3, (args, cp.stdout, cp.stderr)
            assert f"permission denied: uid {NOBODY} may not use this control socket" in cp.stderr
        assert d.pid("s") == pid  # nothing was stopped
        assert d.proc is not None and d.proc.poll() is None
    finally:
        d.close()


@needs_root_setpriv
def test_member_of_control_group_is_allowed(open_root: Path) -> None:
    """control_socket.group lets a member of that group in; a non-member still cannot connect."""
    group = next((g for g in grp.getgrall() if g.gr_gid not in (0, NOBODY)), None)
    if group is None:
        pytest.skip("no spare group on this machine")
    d = _own_daemon(open_root, {"s": sleeper()}, {"mode": "0660", "group": group.gr_name})
    try:
        d.start()
        d.wait_running("s")
        st = os.stat(d.sock)
        assert (st.st_mode & 0o777, st.st_gid) == (0o660, group.gr_gid)
        cp = run_supctl(d.sock, "status", prefix=as_nobody(str(group.gr_gid)))
        assert cp.returncode == 0, cp.stderr
        assert [r[0] for r in table_rows(cp.stdout)] == ["s"]
        cp = run_supctl(d.sock, "stop", "s", prefix=as_nobody(str(group.gr_gid)))
        assert cp.returncode == 0, cp.stderr
        assert inst_state(d, "s") == "STOPPED"
        cp = run_supctl(d.sock, "status", prefix=as_nobody())
        assert cp.returncode == 3 and "Permission denied" in cp.stderr
    finally:
        d.close()


def inst_state(d: RunningDaemon, app: str) -> str:
    state: str = d.status()["apps"][app]["instances"]["primary"]["state"]
    return state


# --------------------------------------------------------------------------- known bugs


def test_logs_follow_ends_cleanly_at_shutdown(make_daemon: DaemonFactory) -> None:
    """A `logs -f` running while the daemon shuts down ends with exit 0, not 'unreachable'."""
    d = make_daemon({"rec": {**py_app(RECORDER), "ready": {"delay": 0}}}, http=False)
    d.wait_running("rec")
    d.wait_for(
        lambda: d.supctl_ok("logs", "rec").stdout == "recorder up\n",
        DEADLINE,
        "the app's first line",
    )
    with background(spawn_supctl(d.sock, "logs", "rec", "-f", "-n", "1")) as follower:
        assert LineReader(follower.stdout).readline() == "recorder up"  # subscribed
        d.supctl_ok("shutdown")
        assert d.proc is not None and d.proc.wait(DEADLINE) == 0
        code, _, err = finish(follower, DEADLINE)
    assert code == 0, f"logs -f exited {code}: {err.strip()}"


def test_rss_counts_the_workers_too(shared: RunningDaemon) -> None:
    """rss_bytes of a pre-forking app covers its workers, as max_memory and /metrics' HELP say."""
    shared.supctl_ok("start", "workers")
    try:
        pid = inst(shared, "workers")["pid"]
        tree = [pid, *descendants_of(pid)]
        assert len(tree) == 3
        shared.remember(tree)
        real = sum(psutil.Process(p).memory_info().rss for p in tree)
        reported = inst(shared, "workers")["rss_bytes"]
        assert reported >= 0.8 * real, f"rss_bytes {reported} vs {real} for pids {tree}"
    finally:
        shared.supctl_ok("stop", "workers")


def test_upgrade_keeps_daemon_pid_and_children(make_daemon: DaemonFactory) -> None:
    """upgrade re-executes the daemon in place: exit 0, same daemon pid, every child kept."""
    d = make_daemon({"s": sleeper(["a", "b"])})
    pids = d.wait_running("s", "a", "b")
    cp = d.supctl("upgrade")
    assert cp.returncode == 0, (cp.stdout, cp.stderr)

    def answers() -> dict[str, Any] | None:
        if d.supctl("status").returncode not in STATUS_ANSWERED:
            return None
        try:
            return d.http_status()
        except OSError:
            return None

    status = d.wait_for(answers, DEADLINE, "the upgraded daemon to answer")
    assert status["supervisor"]["pid"] == d.pid_of_daemon
    assert d.proc is not None and d.proc.poll() is None
    now = {n: i["pid"] for n, i in status["apps"]["s"]["instances"].items()}
    assert now == pids
    for pid in pids.values():
        assert psutil.Process(pid).ppid() == d.pid_of_daemon
