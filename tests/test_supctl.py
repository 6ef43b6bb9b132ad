"""supctl as operators run it: real subprocesses against a real ControlServer.

The server is backed by :class:`test_control.FakeAPI` until the real daemon exists;
these tests check supctl's output, streaming and exit statuses.
"""

from __future__ import annotations

import io
import json
import os
import pty
import queue
import re
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

import pytest
from helpers import supctl_as, wait_until
from helpers.fake_control import DEADLINE, FakeAPI, ServerThread, fake_status

from supervisord_lite import snapshots
from supervisord_lite.control.commands import COMMANDS, history
from supervisord_lite.control.commands import status as status_command
from supervisord_lite.control.commands.spec import EXIT_FAILED, EXIT_NOT_RUNNING, EXIT_USAGE, Cell
from supervisord_lite.supctl import main as supctl
from supervisord_lite.supctl import output as supctl_output

REPO = Path(__file__).resolve().parents[1]
NOBODY = 65534


def supctl_env(**extra: str) -> dict[str, str]:
    """The environment supctl runs in: this checkout importable, no inherited socket."""
    env = {k: v for k, v in os.environ.items() if k not in ("SUPCTL_SOCKET", "NO_COLOR")}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def supctl_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "supervisord_lite.supctl", *args]


def run_supctl(
    *args: str, env: dict[str, str] | None = None, prefix: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """Run supctl to completion (killed if it outlives the deadline)."""
    argv = supctl_argv(*args)
    if prefix:
        argv, other_env = supctl_as(prefix, *args)
        env = env or other_env
    return subprocess.run(
        argv,
        env=env or supctl_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=DEADLINE * 3,
        check=False,
    )


class Running:
    """A supctl still running: its output lines arrive on queues as it prints them."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            supctl_argv(*args),
            env=supctl_env(),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: dict[str, queue.Queue[str]] = {"out": queue.Queue(), "err": queue.Queue()}
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.readers = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, "out"), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, "err"), daemon=True),
        ]
        for reader in self.readers:
            reader.start()

    def _pump(self, pipe: IO[str], name: str) -> None:
        for line in pipe:
            self.lines[name].put(line.rstrip("\n"))

    def expect(self, name: str, fragment: str) -> str:
        """The next line on stdout ("out") or stderr ("err") containing ``fragment``."""
        deadline = time.monotonic() + DEADLINE
        seen: list[str] = []
        while True:
            try:
                line = self.lines[name].get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {fragment!r} on std{name}; saw {seen}") from None
            if fragment in line:
                return line
            seen.append(line)

    def rest(self, name: str) -> list[str]:
        out = []
        while not self.lines[name].empty():
            out.append(self.lines[name].get())
        return out

    def wait(self) -> int:
        code = self.proc.wait(DEADLINE)
        for reader in self.readers:
            reader.join(DEADLINE)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.wait()
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.proc.stdout.close()
        self.proc.stderr.close()


@pytest.fixture
def running() -> Iterator[list[Running]]:
    """Every supctl started through this list is killed and reaped at teardown."""
    procs: list[Running] = []
    yield procs
    for proc in procs:
        proc.kill()


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory anyone may enter (pytest's tmp dirs are root-only), for other uids."""
    path = Path(tempfile.mkdtemp(prefix="supctl-test-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


needs_root_setpriv = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="needs root and setpriv to act as another user",
)


def as_nobody(*groups: int) -> tuple[str, ...]:
    group_opt = f"--groups={','.join(map(str, groups))}" if groups else "--clear-groups"
    return ("setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", group_opt)


# --------------------------------------------------------------------------- status


def test_status_table(server: ServerThread) -> None:
    """status prints an aligned table of every instance, without colour on a pipe."""
    result = run_supctl("-s", server.path, "status")
    assert result.returncode == EXIT_NOT_RUNNING, result.stderr  # backup STARTING
    assert "\033[" not in result.stdout
    lines = result.stdout.splitlines()
    assert lines[0].split() == list(status_command.STATUS_COLUMNS)
    rows = [line.split() for line in lines[1:4]]
    assert rows == [
        ["web", "primary", "RUNNING", "1234", "3m12s", "0", "healthy", "r42", "50.0MiB"],
        ["web", "backup", "STARTING", "1240", "3s", "2", "-", "r42", "-"],
        ["worker", "0", "FATAL", "-", "-", "5", "-", "-", "-"],
    ]
    # Aligned: every column starts at the same offset on every line.
    state_at = lines[0].index("STATE")
    assert all(
        line[state_at:].split()[0] in ("STATE", "RUNNING", "STARTING", "FATAL")
        for line in lines[:4]
    )
    assert lines[4] == "worker:0: exited with status 1 (5 times)"


def test_status_json(server: ServerThread) -> None:
    """--json prints the final response as one JSON line, before or after the command."""
    for args in (("--json", "-s", server.path, "status"), ("status", "-s", server.path, "--json")):
        result = run_supctl(*args)
        assert result.returncode == EXIT_NOT_RUNNING, result.stderr
        status = fake_status()
        expected = {**status.to_json(), "unhealthy": status.unhealthy()}
        assert [json.loads(line) for line in result.stdout.splitlines()] == [
            {"id": 1, "ok": True, "result": expected}
        ]


def test_status_of_one_app(server: ServerThread, fake: FakeAPI) -> None:
    """status APP asks the daemon about that app only."""
    result = run_supctl("-s", server.path, "status", "worker")
    assert result.returncode == EXIT_NOT_RUNNING, result.stderr  # FATAL
    assert [line.split()[0] for line in result.stdout.splitlines()[1:2]] == ["worker"]
    assert ("status", "worker") in fake.calls


class AllUp(FakeAPI):
    """Everything that should run is RUNNING and healthy; what an operator stopped
    (a stopped instance, an app stopped as a whole) does not count."""

    def status(self, app: str | None) -> snapshots.SupervisorStatus:
        base = fake_status()
        web = base.apps["web"]
        backup = replace(web.instances["backup"], state="STOPPED", pid=None)
        up = replace(web, instances={**web.instances, "backup": backup})
        worker = replace(base.apps["worker"], should_run=False)
        return snapshots.SupervisorStatus(base.supervisor, {"web": up, "worker": worker})


def test_status_exit_status_says_whether_everything_runs(tmp_path: Path) -> None:
    """0 when every instance that should run is RUNNING and healthy, else 5 (docs/contract.md),
    with --json too; a degraded one names what is not running on stderr."""
    with ServerThread(str(tmp_path / "up.sock"), AllUp()) as up:
        assert run_supctl("-s", up.path, "status").returncode == 0
        assert run_supctl("-s", up.path, "--json", "status").returncode == 0
    with ServerThread(str(tmp_path / "down.sock"), FakeAPI()) as down:
        result = run_supctl("-s", down.path, "status")
        as_json = run_supctl("-s", down.path, "--json", "status")
    assert result.returncode == as_json.returncode == EXIT_NOT_RUNNING == 5
    assert result.stderr == (
        "supctl: not running as it should: web:backup STARTING, worker:0 FATAL\n"
    )
    final = json.loads(as_json.stdout.splitlines()[-1])
    assert final["result"]["unhealthy"] == ["web:backup STARTING", "worker:0 FATAL"]


def test_plan_exit_status_and_text(server: ServerThread, fake: FakeAPI) -> None:
    """plan and update --dry-run print the plan's text; 0 nothing to do, 1 changes,
    2 refused; the flags reach the daemon."""
    result = run_supctl("-s", server.path, "plan")
    assert (result.returncode, result.stdout) == (0, "nothing to do\n")
    assert run_supctl("-s", server.path, "update", "--dry-run").returncode == 0
    assert ("plan", False) in fake.calls and ("update",) not in fake.calls
    assert run_supctl("-s", server.path, "plan", "--allow-empty").returncode == 0
    assert ("plan", True) in fake.calls
    assert (
        supctl.success_status(
            COMMANDS["plan"],
            {},
            {"changes": True},
            supctl.Output(True, sys.stdout, sys.stderr),
        )
        == EXIT_FAILED
    )
    assert (
        supctl.success_status(
            COMMANDS["update"],
            {"dry_run": True},
            {"changes": True, "refused": "no apps"},
            supctl.Output(True, sys.stdout, sys.stderr),
        )
        == EXIT_USAGE
    )


def test_unknown_app_exits_4(server: ServerThread) -> None:
    """An unknown app is exit status 4 with the daemon's message."""
    result = run_supctl("-s", server.path, "status", "nope")
    assert result.returncode == 4
    assert result.stderr.startswith("supctl: no such app: 'nope'")
    result = run_supctl("-s", server.path, "--json", "start", "nope")
    assert result.returncode == 4
    assert json.loads(result.stdout)["error"]["code"] == "no_such_app"


def test_status_colours_on_a_terminal(server: ServerThread) -> None:
    """On a tty, states are coloured; NO_COLOR turns colour off."""
    coloured = _run_on_pty("-s", server.path, "status")
    assert "\033[32mRUNNING\033[0m" in coloured
    assert "\033[31mFATAL\033[0m" in coloured
    assert "\033[33mSTARTING\033[0m" in coloured
    plain = _run_on_pty("-s", server.path, "status", env=supctl_env(NO_COLOR="1"))
    assert "RUNNING" in plain and "\033[" not in plain


def _run_on_pty(*args: str, env: dict[str, str] | None = None) -> str:
    """Run supctl with stdout on a pseudo-terminal and return what it printed."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        supctl_argv(*args),
        env=env or supctl_env(),
        cwd=REPO,
        stdout=slave,
        stderr=subprocess.DEVNULL,
    )
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + DEADLINE
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if not ready:
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
        proc.wait(DEADLINE)
    assert proc.returncode == EXIT_NOT_RUNNING  # the fake's backup is STARTING
    return b"".join(chunks).decode()


# --------------------------------------------------------------------------- reaching the daemon


def test_unreachable_missing_socket_exits_3(tmp_path: Path) -> None:
    """A socket path with nothing at it is exit status 3 with the path in the message."""
    path = tmp_path / "none.sock"
    result = run_supctl("-s", str(path), "status")
    assert result.returncode == 3
    assert (
        result.stderr == f"supctl: cannot reach the daemon at {path}: No such file or directory\n"
    )
    result = run_supctl("-s", str(path), "--json", "status")
    assert result.returncode == 3
    assert json.loads(result.stdout)["error"]["code"] == "unreachable"


def test_unreachable_refused_exits_3(tmp_path: Path) -> None:
    """A socket file nobody listens on (a dead daemon's) is exit status 3."""
    path = str(tmp_path / "dead.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(path)
        result = run_supctl("-s", path, "status")
    assert result.returncode == 3
    assert result.stderr == f"supctl: cannot reach the daemon at {path}: Connection refused\n"


def test_socket_from_environment(server: ServerThread, tmp_path: Path) -> None:
    """$SUPCTL_SOCKET is used when -s is not given; -s wins over it."""
    answered = EXIT_NOT_RUNNING  # the fake's backup is STARTING
    result = run_supctl("status", env=supctl_env(SUPCTL_SOCKET=server.path))
    assert result.returncode == answered, result.stderr
    wrong = supctl_env(SUPCTL_SOCKET=str(tmp_path / "wrong.sock"))
    assert run_supctl("status", env=wrong).returncode == 3
    assert run_supctl("-s", server.path, "status", env=wrong).returncode == answered


def test_default_socket_path() -> None:
    """Without -s or $SUPCTL_SOCKET, the default state dir's socket is used."""
    from supervisord_lite import paths

    saved = os.environ.pop("SUPCTL_SOCKET", None)
    try:
        assert supctl.socket_path(None) == paths.default_control_socket()
        assert supctl.socket_path("/x.sock") == "/x.sock"
    finally:
        if saved is not None:
            os.environ["SUPCTL_SOCKET"] = saved


@needs_root_setpriv
def test_peer_of_another_uid_is_refused(open_dir: Path, fake: FakeAPI) -> None:
    """A peer that is not root, the daemon's user or in its group gets exit 3, refused."""
    path = str(open_dir / "supctl.sock")
    # Mode 0777: the file lets anyone connect, so the refusal must come from SO_PEERCRED.
    with ServerThread(path, fake, mode=0o777):
        result = run_supctl("-s", path, "status", prefix=as_nobody())
        as_json = run_supctl("-s", path, "--json", "status", prefix=as_nobody())
    assert result.returncode == 3, result.stderr
    assert result.stderr.startswith(
        f"supctl: permission denied: uid {NOBODY} may not use this control socket"
    )
    assert json.loads(as_json.stdout)["error"]["code"] == "permission"
    assert fake.calls == []


@needs_root_setpriv
def test_peer_in_the_group_is_served(open_dir: Path, fake: FakeAPI) -> None:
    """A member of the configured group (a supplementary group) is served."""
    path = str(open_dir / "supctl.sock")
    with ServerThread(path, fake, mode=0o770, group_gid=12345):
        result = run_supctl("-s", path, "status", prefix=as_nobody(12345))
        other = run_supctl("-s", path, "status", prefix=as_nobody(54321))
    assert result.returncode == EXIT_NOT_RUNNING, result.stderr
    assert other.returncode == 3
    # Without group access to the file, the kernel refuses before the daemon sees anything.
    assert "Permission denied" in other.stderr


@needs_root_setpriv
def test_socket_file_permissions_exit_3(open_dir: Path, fake: FakeAPI) -> None:
    """A socket file the user may not open (EACCES) is exit status 3."""
    path = str(open_dir / "supctl.sock")
    with ServerThread(path, fake, mode=0o600):
        result = run_supctl("-s", path, "status", prefix=as_nobody())
    assert result.returncode == 3
    assert result.stderr == f"supctl: cannot reach the daemon at {path}: Permission denied\n"


@pytest.mark.parametrize(
    ("answer", "status", "fragment"),
    [
        (b"", 3, "hung up before answering"),
        (b"garbage\n", 2, "bad answer from the daemon: invalid JSON"),
    ],
)
def test_daemon_that_does_not_answer_properly(
    tmp_path: Path, running: list[Running], answer: bytes, status: int, fragment: str
) -> None:
    """A daemon that hangs up without an answer (3) or answers garbage (2) is reported."""
    path = str(tmp_path / "odd.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(path)
        listener.listen(1)
        listener.settimeout(DEADLINE)
        proc = Running("-s", path, "status")
        running.append(proc)
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(DEADLINE)
            assert json.loads(conn.makefile("rb").readline())["command"] == "status"
            conn.sendall(answer)
    assert proc.wait() == status
    assert fragment in proc.expect("err", "supctl:")


# --------------------------------------------------------------------------- commands


def test_bad_signal_exits_2_before_connecting(tmp_path: Path) -> None:
    """A bad signal name is refused by supctl itself: exit 2, even with no daemon."""
    result = run_supctl("-s", str(tmp_path / "none.sock"), "signal", "web", "FOO")
    assert result.returncode == 2
    assert result.stderr == "supctl: bad signal 'FOO'\n"


@pytest.mark.parametrize(
    "args",
    [(), ("frobnicate",), ("start",), ("logs", "web", "-n", "many"), ("start", "web:")],
)
def test_usage_errors_exit_2(tmp_path: Path, args: tuple[str, ...]) -> None:
    """Missing or unknown commands and malformed arguments are exit status 2."""
    result = run_supctl("-s", str(tmp_path / "none.sock"), *args)
    assert result.returncode == 2
    assert result.stderr


def test_help_lists_every_command() -> None:
    """--help comes from the registry: every command with its one-line help."""
    result = run_supctl("--help")
    assert result.returncode == 0
    for spec in COMMANDS.values():
        assert re.search(rf"^\s+{spec.name}\s", result.stdout, re.MULTILINE), spec.name
    logs_help = run_supctl("logs", "--help").stdout
    assert "APP[:INSTANCE]" in logs_help and "-f, --follow" in logs_help


def test_signal_is_sent(server: ServerThread, fake: FakeAPI) -> None:
    """signal passes the target and signal to the daemon and says what it did."""
    result = run_supctl("-s", server.path, "signal", "web:primary", "hup")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "web:primary: sent SIGHUP\n"
    assert ("signal", "web", "primary", 1) in fake.calls


def test_failed_start_shows_reason_and_output(server: ServerThread) -> None:
    """A failed start is exit 1 with the reason and the app's last output lines."""
    result = run_supctl("-s", server.path, "start", "broken")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "broken:primary  STARTING  pid 4242",
        "supctl: broken:primary exited with status 1 before it was ready",
        "  exit_status: 1",
        "  last output:",
        "    Traceback (most recent call last):",
        "    ImportError: No module named 'flask'",
    ]


def test_internal_error_exits_1(server: ServerThread) -> None:
    """A daemon-side bug is reported as a failure, exit status 1."""
    result = run_supctl("-s", server.path, "start", "buggy")
    assert result.returncode == 1
    assert "internal error" in result.stderr


def test_progress_is_printed_as_it_arrives(
    server: ServerThread, fake: FakeAPI, running: list[Running]
) -> None:
    """Progress lines appear on stderr while the operation is still going on."""
    proc = Running("-s", server.path, "start", "slow")
    running.append(proc)
    assert proc.expect("err", "slow:primary") == "slow:primary  STARTING  pid 4242"
    wait_until(lambda: fake.waiting == 1, DEADLINE, "the start to wait at the gate")
    assert proc.proc.poll() is None
    server.open_gate()
    assert proc.expect("err", "RUNNING") == "slow:primary  RUNNING  pid 4242  ready"
    assert proc.wait() == 0
    assert proc.rest("out") == ["slow: started", "  started: slow:primary"]


def test_json_prints_events_then_final(server: ServerThread) -> None:
    """--json prints every progress event and then the final response, one per line."""
    result = run_supctl("-s", server.path, "--json", "start", "web")
    assert result.returncode == 0, result.stderr
    messages = [json.loads(line) for line in result.stdout.splitlines()]
    assert [m.get("event") for m in messages] == ["progress"] * 4 + [None]
    assert messages[-1] == {
        "id": 1,
        "ok": True,
        "result": {"started": ["web:primary", "web:backup"]},
    }
    assert result.stderr == ""


def test_logs_tail(server: ServerThread, fake: FakeAPI) -> None:
    """logs -n N prints the last N lines."""
    result = run_supctl("-s", server.path, "logs", "web:backup", "-n", "3")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "line 98\nline 99\nline 100\n"
    assert ("log_tail", "web", "backup", 3) in fake.calls


def test_logs_follow(server: ServerThread, fake: FakeAPI, running: list[Running]) -> None:
    """logs -f prints the tail, then new lines as they come, until it is terminated."""
    proc = Running("-s", server.path, "logs", "web", "-f", "-n", "1")
    running.append(proc)
    assert proc.expect("out", "line") == "line 100"
    wait_until(lambda: fake.followers == 1, DEADLINE, "the follower to subscribe")
    for text in ("first new line", "second new line"):
        server.push_log(text)
        assert proc.expect("out", "new line") == text
    proc.proc.terminate()
    proc.wait()
    wait_until(lambda: fake.follows_ended == 1, DEADLINE, "the server to end the follow")


def test_deploy_and_reload_arguments_reach_the_daemon(server: ServerThread, fake: FakeAPI) -> None:
    """Options and lists parse from the registry and arrive on the wire as declared."""
    deploy = run_supctl("-s", server.path, "deploy", "web", "r43", "--pause")
    assert deploy.returncode == 0, deploy.stderr
    assert ("deploy", "web", "r43", True) in fake.calls
    assert deploy.stdout.splitlines()[0] == "web: deployed r43"
    assert "web:backup  deploying" in deploy.stderr
    reload = run_supctl("-s", server.path, "reload", "web", "worker")
    assert reload.returncode == 0, reload.stderr
    assert ("reload", ["web", "worker"]) in fake.calls
    assert run_supctl("-s", server.path, "reload").returncode == 0
    assert ("reload", []) in fake.calls


def test_result_message_replaces_the_default_line(server: ServerThread) -> None:
    """A result's message is printed instead of the command's default success line."""
    result = run_supctl("-s", server.path, "rollback", "web")
    assert result.returncode == 0
    assert result.stdout == "web: rolled back to r41\n"
    update = run_supctl("-s", server.path, "update")
    assert update.stdout.splitlines() == ["config applied", "  added: api", "  changed: web"]


def test_supctl_imports_nothing_heavy(tmp_path: Path) -> None:
    """A plain `supctl status` loads the standard library and the light modules only:
    the declarations, never a handler or the daemon side, and neither argparse (the
    quick parser reads a plain command line) nor typing (2 ms of every run)."""
    code = (
        "import sys, json; from supervisord_lite.supctl import main as supctl\n"
        f"supctl.run(['-s', {str(tmp_path / 'none.sock')!r}, 'status'])\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=supctl_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=DEADLINE * 3,
        check=True,
    )
    assert "cannot reach the daemon" in result.stderr  # it did run the command
    modules = set(json.loads(result.stdout))
    ours = {
        m.removeprefix("supervisord_lite.") for m in modules if m.startswith("supervisord_lite")
    }
    light = {
        "supctl",
        "supctl.main",
        "supctl.args",
        "supctl.output",
        "supctl.escape",
        "control",
        "control.protocol",
        "errors",
        "paths",
        "instance",
        "instance.state",
    }
    declarations = {m for m in ours if m.startswith("control.commands.")} - {
        "control.commands.call",
        "control.commands.dispatch",
    }
    assert "control.commands.spec" in declarations
    assert ours <= {"supervisord_lite", "control.commands", *light, *declarations}
    assert not [m for m in ours if m.endswith("_handlers")]
    assert not modules & {"argparse", "typing", "dataclasses", "socket", "signal"}
    heavy = {"yaml", "psutil", "aiohttp", "structlog", "asyncio", "sdnotify"}
    assert not {m.split(".")[0] for m in modules} & heavy


# --------------------------------------------------------------------------- formatting


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "-"), (0.4, "0s"), (59, "59s"), (192.5, "3m12s"), (3720, "1h02m"), (90000, "1d01h")],
)
def test_format_uptime(seconds: float | None, text: str) -> None:
    """Uptimes read like 3m12s, coarser as they grow."""
    assert status_command.format_uptime(seconds) == text


@pytest.mark.parametrize(
    ("rss", "text"), [(None, "-"), (1 << 20, "1.0MiB"), (1536 << 20, "1536MiB")]
)
def test_format_rss(rss: int | None, text: str) -> None:
    """RSS is shown in MiB."""
    assert status_command.format_rss(rss) == text


def test_table_alignment_ignores_colour() -> None:
    """Colour codes do not count towards column widths."""
    rows: list[list[Cell]] = [[("a", None), ("RUNNING", "green"), ("1", None)]]
    header = ("APP", "STATE", "PID")
    plain = supctl_output.render_table(header, rows, colour=False)
    coloured = supctl_output.render_table(header, rows, colour=True)
    assert plain == ["APP  STATE    PID", "a    RUNNING    1"]
    assert [re.sub(r"\033\[\d+m", "", line) for line in coloured] == plain


def test_exit_status_of_unknown_code() -> None:
    """An error code this supctl does not know (a newer daemon's) is a failure."""
    assert supctl_output.exit_status({"code": "something_new"}) == 1
    assert supctl_output.exit_status({"code": "no_such_app"}) == 4
    assert supctl_output.exit_status({"code": "permission"}) == 3


def test_progress_line_format() -> None:
    """A progress event reads as target, state, pid, then the message."""
    event: dict[str, Any] = {"app": "web", "instance": "backup", "state": "STARTING", "pid": 1234}
    assert supctl_output.format_progress({**event, "message": "STARTING"}, colour=False) == (
        "web:backup  STARTING  pid 1234"
    )
    assert supctl_output.format_progress({"message": "stopping everything"}, colour=False) == (
        "stopping everything"
    )


def test_history_lines() -> None:
    """`history` shows one line per event: local time, kind, target, message and the
    key fields; app-controlled text cannot smuggle terminal escapes."""
    events = [
        {"ts": 0, "kind": "command", "app": "web", "instance": "primary", "message": "m",
         "result": "ok", "duration_s": 0.5, "uid": 0, "pid": 7},
        {"ts": "bad", "time": "T", "kind": "crash", "app": "web", "instance": None,
         "message": "evil \x1b]0;title\x07 done", "exit_status": -9},
    ]  # fmt: skip
    plain = supctl_output.Output(False, io.StringIO(), io.StringIO())  # no colour
    first, second = history.history_lines(events, plain)
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(0))
    assert first == f"{when}  command       web:primary  m  result=ok duration_s=0.5 uid=0 pid=7"
    assert second.startswith("T  crash")
    assert "\x1b" not in second and "\\x1b]0;title\\x07" in second
    assert history.history_lines([], plain) == ["no events recorded"]


def test_history_lines_of_the_pipeline() -> None:
    """artifact, task and hook events show their duration (``seconds``) as the others'
    duration_s, a task its phase; a failed one its last line of output."""
    events = [
        {"ts": 0, "kind": "task", "app": "web", "message": "after task t for v2: exit status 5",
         "result": "failed", "phase": "after", "exit_status": 5, "seconds": 0.02, "uid": 0,
         "release": "v2", "output": ["first", "index \x1b[31mcorrupt"]},
        {"ts": 0, "kind": "hook", "app": "web", "message": "exec hook (web) for crash: delivered",
         "result": "ok", "seconds": 0.1, "folded": 0, "output": ["not shown: it worked"]},
    ]  # fmt: skip
    plain = supctl_output.Output(False, io.StringIO(), io.StringIO())
    task, hook = history.history_lines(events, plain)
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(0))
    assert task == (
        f"{when}  task          web  after task t for v2: exit status 5  result=failed "
        'phase=after duration_s=0.02 uid=0 exit_status=5 release=v2 output="index \\x1b[31mcorrupt"'
    )
    assert hook == (
        f"{when}  hook          web  exec hook (web) for crash: delivered  result=ok duration_s=0.1"
    )
