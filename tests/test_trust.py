"""The trust boundary: what an untrusted app (or another local user) tries, and fails.

Each attack is real: apps run as an unprivileged user made for the test (``sltest``,
when the tests run as root), notify datagrams go over the real NOTIFY_SOCKET, links
are real symlinks and hard links, escape sequences reach a real pseudo-terminal.
Every test asserts that nothing outside the app was touched: the victim process
received no signal, the victim file kept its bytes, no file appeared elsewhere.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import pwd
import random
import select
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import PYTHON, REPO, RunningDaemon, children_of, pid_alive, proc_state, wait_until

from supervisord_lite.app.releases import ReleaseStore
from supervisord_lite.config.parser import parse_config
from supervisord_lite.config.settings import ReleaseConfig
from supervisord_lite.control import protocol
from supervisord_lite.control.commands import COMMANDS
from supervisord_lite.errors import ConfigError, OperationFailed
from supervisord_lite.host import files, spawning
from supervisord_lite.supctl import escape
from supervisord_lite.supctl import main as supctl

USER = "sltest"
# The apps of the other user need a Python it can run (the venv may live under /root).
APP_PYTHON = shutil.which("python3", path="/usr/bin:/bin")


@pytest.fixture(scope="module")
def app_user() -> pwd.struct_passwd:
    """The unprivileged user the untrusted apps run as (created if missing)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run apps as another user")
    if APP_PYTHON is None:
        pytest.skip("needs /usr/bin/python3 for the apps of the unprivileged user")
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        pass
    useradd = shutil.which("useradd")
    if useradd is None:
        pytest.skip("needs useradd to create the test user")
    subprocess.run(
        [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return pwd.getpwnam(USER)


@pytest.fixture
def open_root() -> Iterator[Path]:
    """A directory every user may traverse (pytest's tmp_path is private to root)."""
    root = Path(tempfile.mkdtemp(prefix="sl-trust-", dir="/tmp"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def daemons() -> Iterator[list[RunningDaemon]]:
    """Daemons to close (and check for leftovers) at the end of the test."""
    made: list[RunningDaemon] = []
    yield made
    problems = []
    for d in made:
        try:
            d.close()
        except AssertionError as exc:
            problems.append(str(exc))
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


# (The apps' code has no braces: commands are templates with {placeholders}.)
# A process outside every app: it records every catchable signal it gets.
VICTIM = """
import signal, sys
out = sys.argv[1]
def record(n, _frame):
    with open(out, "a") as f:
        f.write(signal.Signals(n).name + "\\n")
for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1,
          signal.SIGUSR2, signal.SIGWINCH, signal.SIGCONT):
    signal.signal(s, record)
open(out + ".ready", "w").close()
while True:
    signal.pause()
"""


class Victim:
    """An unrelated process the test starts, which must not hear from the daemon."""

    def __init__(self, root: Path) -> None:
        self.log = root / "victim.signals"
        self.proc = subprocess.Popen([PYTHON, "-c", VICTIM, str(self.log)], start_new_session=True)
        wait_until(lambda: Path(f"{self.log}.ready").exists(), 10, "the victim to start")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def untouched(self) -> None:
        signals = self.log.read_text() if self.log.exists() else ""
        assert signals == "", f"the victim (pid {self.pid}) got signals: {signals.split()}"
        assert self.proc.poll() is None and proc_state(self.pid) not in (None, "Z")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def victim(open_root: Path) -> Iterator[Victim]:
    v = Victim(open_root)
    try:
        yield v
    finally:
        v.close()


# An app that names a pid on its NOTIFY_SOCKET: $NAME, or "child" (a process of its
# own), or "daemon" (its parent); on USR2 it writes that pid to $PIDFILE (a re-exec).
NAMER = """
import os, signal, socket, subprocess
name = os.environ["NAME"]
if name == "child":
    name = str(subprocess.Popen(["sleep", "300"]).pid)
elif name == "orphan":  # a helper whose parent exited: the daemon (subreaper) adopts it
    r, w = os.pipe()
    if os.fork() == 0:
        os.write(w, str(subprocess.Popen(["sleep", "300"]).pid).encode())
        os._exit(0)
    os.wait()
    name = os.read(r, 32).decode()
elif name == "daemon":
    name = str(os.getppid())
def on_usr2(_n, _f):
    with open(os.environ["PIDFILE"] + ".tmp", "w") as f:
        f.write(name + "\\n")
    os.replace(os.environ["PIDFILE"] + ".tmp", os.environ["PIDFILE"])
signal.signal(signal.SIGUSR2, on_usr2)
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.sendto(("READY=1\\nMAINPID=" + name).encode(), os.environ["NOTIFY_SOCKET"])
print("named", name, flush=True)
while True:
    signal.pause()
"""


def namer_app(name: str, run_dir: Path, **extra: Any) -> dict[str, Any]:
    assert APP_PYTHON is not None
    return {
        "command": [APP_PYTHON, "-c", NAMER],
        "user": USER,
        "env": {"NAME": name, "PIDFILE": str(run_dir / "app.pid")},
        "ready": {"notify": True, "timeout": 10},
        "instances": ["primary"],
        **extra,
    }


def start_daemon(
    daemons: list[RunningDaemon], root: Path, apps: dict[str, Any], **kw: Any
) -> RunningDaemon:
    d = RunningDaemon(root, apps, **kw)
    daemons.append(d)
    d.start()
    return d


def user_dir(root: Path, user: pwd.struct_passwd, name: str) -> Path:
    path = root / name
    path.mkdir()
    os.chown(path, user.pw_uid, user.pw_gid)
    return path


def rejected(d: RunningDaemon, pid: int) -> list[dict[str, Any]]:
    return [e for e in d.events("notify_pid_rejected") if e.get("pid") == str(pid)]


# --------------------------------------------------------------------------- 1. pids


@pytest.mark.parametrize("whom", ["unrelated", "daemon"])
def test_mainpid_of_an_outsider_is_ignored(
    app_user: pwd.struct_passwd,
    open_root: Path,
    victim: Victim,
    daemons: list[RunningDaemon],
    whom: str,
) -> None:
    """MAINPID=<a process outside the app> is refused with a warning naming the app:
    /status keeps the app's own pid, `supctl signal` reaches the app, not the victim."""
    run_dir = user_dir(open_root, app_user, "run")
    name = str(victim.pid) if whom == "unrelated" else "daemon"
    d = start_daemon(daemons, open_root / "d", {"w": namer_app(name, run_dir)})
    outsider = victim.pid if whom == "unrelated" else d.pid_of_daemon
    pid = d.wait_running("w")["primary"]
    warning = d.wait_for(lambda: rejected(d, outsider), 10, "the notify_pid_rejected warning")
    assert warning[0]["instance"] == "w:primary"
    assert pid != outsider and pid in d.record_tree()
    assert d.http_status()["apps"]["w"]["instances"]["primary"]["pid"] == pid
    cp = d.supctl_ok("signal", "w:primary", "TERM")
    d.wait_for(lambda: not pid_alive(pid), 10, "the app itself to get the TERM")
    assert str(outsider) not in cp.stdout
    victim.untouched()
    assert d.proc is not None and d.proc.poll() is None, "the daemon was signalled"


@pytest.mark.parametrize("whom", ["child", "orphan"])
def test_mainpid_of_its_own_process_is_believed(
    app_user: pwd.struct_passwd, open_root: Path, daemons: list[RunningDaemon], whom: str
) -> None:
    """The same message naming one of the app's own processes is accepted (so the
    refusal above is the trust check, not a broken MAINPID): its child, or a helper
    re-parented to the daemon that stayed in the app's session."""
    run_dir = user_dir(open_root, app_user, "run")
    d = start_daemon(daemons, open_root / "d", {"w": namer_app(whom, run_dir)})
    d.wait_running("w")
    child = d.wait_for(
        lambda: next((p for p in d.record_tree() if _comm(p) == "sleep"), None),
        10,
        "the app's child",
    )
    d.wait_for(lambda: d.instance("w", "primary")["pid"] == child, 10, "MAINPID to be believed")
    # the app's child, or (re-parented) the daemon's: either way in the app's session
    assert (child in children_of(d.pid_of_daemon)) == (whom == "orphan")
    assert os.getsid(child) == os.getsid(d.pid("w")) != os.getsid(d.pid_of_daemon)
    assert not rejected(d, child)


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def test_reexec_pidfile_naming_an_outsider_is_not_followed(
    app_user: pwd.struct_passwd,
    open_root: Path,
    victim: Victim,
    daemons: list[RunningDaemon],
) -> None:
    """A re-exec reload whose pidfile names an outside pid (after a MAINPID= naming it
    too) fails; the reload signal went to the app, never to the victim."""
    run_dir = user_dir(open_root, app_user, "run")
    app = namer_app(
        str(victim.pid),
        run_dir,
        reload={"signal": "USR2", "pidfile": str(run_dir / "app.pid")},
    )
    app["ready"] = {"notify": True, "timeout": 2}
    d = start_daemon(daemons, open_root / "d", {"w": app})
    pid = d.wait_running("w")["primary"]
    d.wait_for(lambda: rejected(d, victim.pid), 10, "the MAINPID to be refused")
    cp = d.supctl("reload", "w")
    assert cp.returncode == 1, (cp.stdout, cp.stderr)
    assert (run_dir / "app.pid").read_text().strip() == str(victim.pid)  # the app got USR2
    assert d.instance("w", "primary")["pid"] == pid
    victim.untouched()


# --------------------------------------------------------------------------- 2. links


# Prints numbered lines; once $TRIGGER exists it replaces its own log file by a
# symlink to $TARGET (HOW=symlink), as an app whose user owns logs.dir can.
LOGGER = """
import os, time
n, done = 0, False
while True:
    n += 1
    print("line", n, flush=True)
    if not done and os.path.exists(os.environ["TRIGGER"]):
        if os.environ["HOW"] == "symlink":
            os.unlink(os.environ["LOG"])
            os.symlink(os.environ["TARGET"], os.environ["LOG"])
        done = True
    time.sleep(0.01)
"""


def _last_number(d: RunningDaemon) -> int:
    cp = d.supctl_ok("logs", "w", "-n", "1")
    words = cp.stdout.split()
    return int(words[-1]) if words and words[-1].isdigit() else 0


@pytest.mark.parametrize(
    "how", ["symlink-to-file", "symlink-to-new-file", "hardlink", "symlink-to-new-file-then-rotate"]
)
def test_log_file_swapped_for_a_link_is_not_followed(
    app_user: pwd.struct_passwd, open_root: Path, daemons: list[RunningDaemon], how: str
) -> None:
    """The app's user replaces its log file (in a logs.dir it owns) by a link to a
    root file; after SIGUSR1 (or a rotation) the daemon refuses it: the root file is
    unchanged, no file is created through the link, the refusal is in the daemon's
    log, and the output goes nowhere else."""
    assert APP_PYTHON is not None
    logs = user_dir(open_root, app_user, "logs")
    secret_dir = open_root / "rootonly"
    secret_dir.mkdir(mode=0o755)
    secret = secret_dir / "shadow"
    secret.write_text("ORIGINAL\n")
    secret.chmod(0o644)
    before = secret.stat()
    target = secret_dir / "created" if "new-file" in how else secret
    log = logs / "w.primary.log"
    trigger = open_root / "go"
    app = {
        "command": [APP_PYTHON, "-c", LOGGER],
        "user": USER,
        "instances": ["primary"],
        "ready": {"delay": 0.1},
        "logs": {"dir": str(logs), "max_bytes": 4096 if "rotate" in how else 50_000_000},
        "env": {
            "LOG": str(log),
            "TARGET": str(target),
            "TRIGGER": str(trigger),
            "HOW": "none" if how == "hardlink" else "symlink",
        },
    }
    d = start_daemon(daemons, open_root / "d", {"w": app})
    d.wait_running("w")
    d.wait_for(lambda: log.exists() and "line 3" in log.read_text(), 10, "output in the log")
    st = log.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o640)  # root's file, not the app's
    if how == "hardlink":
        log.unlink()
        os.link(secret, log)  # what a user could do where fs.protected_hardlinks is off
    else:
        trigger.touch()
        d.wait_for(log.is_symlink, 10, "the app to plant its symlink")
    if "rotate" in how:
        # the next rotation moves the link itself to .1 and starts a fresh file
        d.wait_for(lambda: not log.is_symlink() and log.is_file(), 10, "a rotation")
        assert log.stat().st_uid == 0 and log.stat().st_nlink == 1
    else:
        os.kill(d.pid_of_daemon, signal.SIGUSR1)
        d.wait_for(lambda: d.events("log_file_unusable"), 10, "the refusal in the daemon's log")
        event = d.events("log_file_unusable")[0]
        assert event["path"] == str(log) and "refused" in event["error"], event
    seen = _last_number(d)
    d.wait_for(lambda: _last_number(d) > seen + 30, 10, "more output after the attack")
    assert secret.read_text() == "ORIGINAL\n"
    after = secret.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_nlink) == (
        before.st_size,
        before.st_mtime_ns,
        2 if how == "hardlink" else 1,
    )
    assert sorted(p.name for p in secret_dir.iterdir()) == ["shadow"], "a file was created"


def test_state_dir_is_private_and_pidfile_not_followed(
    open_root: Path, daemons: list[RunningDaemon]
) -> None:
    """A state_dir made 0755 with a symlink planted at the pidfile's name: the daemon
    makes the directory 0700, writes its own pidfile (0644) and lock (0600), and the
    link's target is untouched."""
    state = open_root / "d" / "state"
    state.mkdir(parents=True, mode=0o755)
    target = open_root / "target"
    target.write_text("KEEP\n")
    (state / "supervisord-lite.pid").symlink_to(target)
    (state / "supervisord-lite.pid.tmp").symlink_to(open_root / "made-through-tmp")
    d = start_daemon(daemons, open_root / "d", {"s": {"command": ["sleep", "300"]}})
    d.wait_running("s")
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    pidfile = state / "supervisord-lite.pid"
    assert not pidfile.is_symlink() and pidfile.read_text() == f"{d.pid_of_daemon}\n"
    assert stat.S_IMODE(pidfile.stat().st_mode) == 0o644
    assert stat.S_IMODE((state / "supervisord-lite.lock").stat().st_mode) == 0o600
    assert stat.S_IMODE((state / "logs").stat().st_mode) == 0o750
    assert target.read_text() == "KEEP\n"
    assert not (open_root / "made-through-tmp").exists()


def test_state_dir_owned_by_another_user_is_refused(open_root: Path) -> None:
    """A state_dir someone else made (e.g. in /tmp, before us) is not used: exit 1."""
    if os.geteuid() != 0:
        pytest.skip("needs root to make a directory owned by another user")
    state = open_root / "d" / "state"
    state.mkdir(parents=True)
    os.chown(state, 65534, 65534)
    d = RunningDaemon(open_root / "d", {"s": {"command": ["sleep", "300"]}}, http=False)
    d.expected_exit = 1
    d.start(wait=False)
    assert d.proc is not None
    try:
        assert d.proc.wait(20) == 1
        assert "state_dir: refusing" in d.output() and "owned by uid 65534" in d.output()
        assert os.listdir(state) == []
    finally:
        d.close()


def test_notify_socket_reachable_by_other_users_while_state_dir_is_private(
    app_user: pwd.struct_passwd, open_root: Path, daemons: list[RunningDaemon]
) -> None:
    """A notify app of another user gets ready: the NOTIFY_SOCKET is in state_dir (as
    the contract says), which then gets search permission for others and nothing more;
    every file in it stays private."""
    run_dir = user_dir(open_root, app_user, "run")
    d = start_daemon(daemons, open_root / "d", {"w": namer_app("child", run_dir)})
    d.wait_running("w")
    assert stat.S_IMODE(d.state_dir.stat().st_mode) == 0o701
    for path in d.state_dir.iterdir():
        mode = stat.S_IMODE(path.lstat().st_mode)
        if path.name == "notify.sock":
            assert mode == 0o666
        elif path.is_file():
            assert mode & 0o077 == 0 or path.name == "supervisord-lite.pid", (path, oct(mode))


def test_state_dir_is_private_when_no_app_needs_more(open_root: Path) -> None:
    d = RunningDaemon(open_root / "d", {"s": {"command": ["sleep", "300"]}}, http=False)
    try:
        d.start()
        d.wait_running("s")
        assert stat.S_IMODE(d.state_dir.stat().st_mode) == 0o700
        for path in d.state_dir.iterdir():
            if path.is_file() and path.name != "supervisord-lite.pid":
                assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    finally:
        d.close()


# --------------------------------------------------------------------------- safefs


def test_safefs_refuses_links_fifos_and_foreign_files(tmp_path: Path) -> None:
    (tmp_path / "target").write_text("T")
    (tmp_path / "sym").symlink_to(tmp_path / "target")
    os.link(tmp_path / "target", tmp_path / "hard")
    os.mkfifo(tmp_path / "fifo")
    fd = files.open_dir(str(tmp_path))
    try:
        for name, why in (("sym", "symlink"), ("hard", "2 hard links"), ("fifo", "regular")):
            with pytest.raises(files.UnsafeFile, match=why):
                files.open_append(fd, name)
        out = files.open_append(fd, "fresh", 0o640)
        os.write(out, b"x")
        os.close(out)
        files.replace_symlink(fd, "current", "releases/r2")
        files.replace_symlink(fd, "current", "releases/r3")
        assert os.readlink(tmp_path / "current") == "releases/r3"
        files.write_atomic(fd, "sym", b"new", 0o600)  # replaces the link, not its target
    finally:
        os.close(fd)
    assert (tmp_path / "target").read_text() == "T"
    assert (tmp_path / "sym").read_bytes() == b"new" and not (tmp_path / "sym").is_symlink()
    assert files.read_small(str(tmp_path / "fifo"), 64) is None  # and did not block
    (tmp_path / "big").write_bytes(b"1" * 100)
    assert files.read_small(str(tmp_path / "big"), 64) is None


def test_safefs_follows_only_symlinks_that_only_root_could_make(
    app_user: pwd.struct_passwd, open_root: Path
) -> None:
    """A directory path through a symlink in a directory another user can write is
    refused (the user could point it anywhere); the same link in a root-owned
    directory is followed."""
    real = open_root / "real"
    real.mkdir()
    (open_root / "rootlink").symlink_to(real)
    fd = files.open_dir(str(open_root / "rootlink"))
    assert os.fstat(fd).st_ino == real.stat().st_ino
    os.close(fd)
    theirs = user_dir(open_root, app_user, "theirs")
    (theirs / "logs").symlink_to("/etc")
    os.lchown(theirs / "logs", app_user.pw_uid, app_user.pw_gid)
    with pytest.raises(files.UnsafeFile, match="symlink in a directory"):
        files.open_dir(str(theirs / "logs"))


def test_release_root_through_a_users_symlink_is_refused(
    app_user: pwd.struct_passwd, open_root: Path
) -> None:
    """A release root reached through a symlink that the app's user planted (in a
    directory it owns) is not followed: no `current` link appears where it points."""
    elsewhere = open_root / "elsewhere"
    (elsewhere / "releases" / "r1").mkdir(parents=True)
    theirs = user_dir(open_root, app_user, "srv")
    (theirs / "app").symlink_to(elsewhere)
    os.lchown(theirs / "app", app_user.pw_uid, app_user.pw_gid)
    store = ReleaseStore(ReleaseConfig(root=str(theirs / "app")), "web", str(open_root / "st"))
    with pytest.raises(OperationFailed, match="symlink in a directory"):
        store.switch_current("r1")
    assert sorted(os.listdir(elsewhere)) == ["releases"]


# --------------------------------------------------------------------------- 4. terminal

NASTY = "\x1b]0;pwned\x07\x1b[2J\x1b[31mred\u202egnp.exe\x9b6n"


def run_on_tty(argv: list[str], timeout: float = 30.0) -> tuple[int, str]:
    """Run a command with stdout and stderr on a new pseudo-terminal; (status, output)."""
    master, slave = os.openpty()
    env = {k: v for k, v in os.environ.items() if k != "SUPCTL_SOCKET"}
    env["NO_COLOR"] = "1"
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, cwd=str(REPO), env=env
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], deadline - time.monotonic())
            if not ready:
                break
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the other side is closed
                break
            if not data:
                break
            chunks.append(data)
        return proc.wait(max(1.0, deadline - time.monotonic())), b"".join(chunks).decode(
            errors="replace"
        )
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _supctl(d: RunningDaemon, *args: str) -> list[str]:
    return [PYTHON, "-m", "supervisord_lite.supctl", "-s", d.sock, *args]


def test_app_output_is_inert_on_a_terminal(tmp_path: Path) -> None:
    """`supctl logs` and a failed `supctl start` show an app's escape sequences as
    text on a terminal, raw with --raw, and raw into a pipe."""
    shout = f"import sys; print({NASTY!r}, flush=True)"
    apps: dict[str, dict[str, Any]] = {
        "loud": {"command": [PYTHON, "-c", shout + "; import time; time.sleep(300)"]},
        "dies": {
            "command": [PYTHON, "-c", shout + "; sys.exit(3)"],
            "autostart": False,
            "restart": "never",
        },
    }
    with RunningDaemon(tmp_path / "d", apps) as d:
        d.wait_running("loud")
        d.wait_for(lambda: "pwned" in d.supctl_ok("logs", "loud").stdout, 10, "the output")
        status, shown = run_on_tty(_supctl(d, "logs", "loud"))
        assert status == 0, shown
        assert "\\x1b]0;pwned\\x07\\x1b[2J\\x1b[31mred\\u202egnp.exe\\x9b6n" in shown
        assert "\x1b" not in shown and "\x07" not in shown and "\u202e" not in shown
        status, shown = run_on_tty(_supctl(d, "logs", "--raw", "loud"))
        assert status == 0 and "\x1b]0;pwned\x07" in shown
        assert NASTY in d.supctl_ok("logs", "loud").stdout  # a pipe gets the bytes
        status, shown = run_on_tty(_supctl(d, "start", "dies"))
        assert status == 1, shown
        assert "last output:" in shown and "\\x1b]0;pwned\\x07" in shown
        assert "\x1b" not in shown
        status, shown = run_on_tty(_supctl(d, "status"))  # 5: "dies" should run, is FATAL
        assert status == 5 and "\x1b" not in shown


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("raw", [False, True])
def test_status_shows_app_text_escaped_on_a_terminal(
    raw: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What an app can put in /status (its last error, its release) is escaped in the
    table on a terminal, unless --raw."""
    monkeypatch.setenv("NO_COLOR", "1")  # our own colour codes are not the point here
    result = {
        "apps": {
            "web": {
                "release": "r1\x1b[8m",
                "instances": {
                    "primary": {"state": "FATAL", "pid": None, "last_error": "died: \x1b]0;x\x07"}
                },
            }
        }
    }
    out, err = _Tty(), _Tty()
    output = supctl.Output(False, out, err, raw=raw)
    msg = {"id": 1, "ok": True, "result": result}
    assert output.final(COMMANDS["status"], {}, msg) == 0
    shown = out.getvalue()
    assert ("\x1b" in shown) == raw
    assert ("\\x1b]0;x\\x07" in shown) == (not raw)
    assert ("r1\\x1b[8m" in shown) == (not raw)


def test_followed_lines_and_progress_are_escaped_on_a_terminal() -> None:
    """`logs -f` lines (events) and progress messages carry app text too."""
    out, err = _Tty(), _Tty()
    output = supctl.Output(False, out, err)
    output.event({"id": 1, "event": protocol.EVENT_LOG, "line": "web: \x1b[2Jgone"})
    output.event({"id": 1, "event": "progress", "message": "web: exited: \x1b[5mX"})
    assert out.getvalue() == "web: \\x1b[2Jgone\n"
    assert "\\x1b[5mX" in err.getvalue() and "\x1b" not in err.getvalue()
    piped = io.StringIO()
    supctl.Output(False, piped, io.StringIO()).event(
        {"id": 1, "event": protocol.EVENT_LOG, "line": "raw \x1b[2J"}
    )
    assert piped.getvalue() == "raw \x1b[2J\n"


def test_escape_shows_every_control_character() -> None:
    assert escape.escape("a\tb\x00c\x1b[0m\x7f\x85\u2066ok") == (
        "a\tb\\x00c\\x1b[0m\\x7f\\x85\\u2066ok"
    )
    assert escape.escape("plain é ü 日本") == "plain é ü 日本"


# --------------------------------------------------------------------------- 5. config

BAD_CONFIGS = {
    "nul-in-argv": ('apps:\n  web:\n    command: ["sleep", "1\\0 0"]\n', 3, "command[1]", "NUL"),
    "nul-in-env": (
        'apps:\n  web:\n    command: sleep 1\n    env: {A: "x\\0"}\n',
        4,
        "env.A",
        "NUL",
    ),
    "nul-in-path": (
        'apps:\n  web:\n    command: sleep 1\n    cwd: "/tmp\\0x"\n',
        4,
        "cwd",
        "NUL",
    ),
    "python-tag": (
        "apps:\n  web:\n    command: !!python/object/apply:os.system [id]\n",
        3,
        "command",
        "tag",
    ),
    "binary-tag": ("apps:\n  web:\n    command: !!binary c2xlZXA=\n", 3, "command", "tag"),
    "custom-tag": ("apps:\n  web: !app\n    command: sleep 1\n", 2, "apps.web", "tag"),
    "set-tag": ("apps:\n  web:\n    command: sleep 1\n    env: !!set {A}\n", 4, "env", "tag"),
    "instances": (
        "apps:\n  web:\n    command: sleep 1\n    instances: 100000000\n",
        4,
        "instances",
        "at most",
    ),
    "deep": (
        "apps:\n  web:\n    command: sleep 1\n    env: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n",
        4,
        "env.a",
        "nested",
    ),
    "huge-string": (
        'apps:\n  web:\n    command: "' + "x" * 200_000 + '"\n',
        3,
        "command",
        "characters",
    ),
    "laughs": (
        "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
        + "".join(
            f"a{i}: &a{i} [{', '.join(['*a' if i == 1 else f'*a{i - 1}'] * 10)}]\n"
            for i in range(1, 9)
        )
        + "apps: {}\n",
        None,
        None,
        "expands",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_values_that_cannot_run_fail_check(tmp_path: Path, case: str) -> None:
    """`supervisord-lite --check`: exit 2, the file, line and key path; no traceback."""
    text, line, path, words = BAD_CONFIGS[case]
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    cp = subprocess.run(
        [PYTHON, "-m", "supervisord_lite.cli", "-c", str(config), "--check"],
        capture_output=True,
        text=True,
        cwd=str(REPO),
        timeout=60,
        check=False,
    )
    assert cp.returncode == 2, (cp.stdout, cp.stderr)
    assert "Traceback" not in cp.stderr
    where = f"{config}:{line}:" if line else f"{config}"
    assert cp.stderr.startswith(f"supervisord-lite: {where}"), cp.stderr[:300]
    if path:
        assert path in cp.stderr.split("\n")[0][:400]
    assert words in cp.stderr


def test_check_survives_fuzzed_configs() -> None:
    """Mutated real configs: every outcome is a Config or a ConfigError."""
    seeds = [(REPO / "etc" / "supervisord-lite.yaml").read_text()]
    pieces = [":", "-", "[", "]", "{", "}", "&a ", "*a", "!!", "<<: ", '"\\0"', "\n  ", "0o9"]
    pieces += ["!!python/name:os.system ", "1e999", "-1", "99999999999999999999", "\t", "'"]
    rng = random.Random(9)
    for _ in range(150):
        text = list(rng.choice(seeds))
        for _ in range(rng.randint(1, 6)):
            pos = rng.randrange(len(text) + 1)
            if rng.random() < 0.5:
                text[pos:pos] = list(rng.choice(pieces))
            else:
                del text[pos : pos + rng.randint(1, 30)]
        try:
            parse_config("".join(text), "fuzz.yaml")
        except ConfigError:
            pass


def test_update_refuses_a_config_that_cannot_run(tmp_path: Path) -> None:
    """`supctl update` with a NUL or a tag in the file: exit 2 with the file, line and
    path; the running config is kept."""
    with RunningDaemon(tmp_path / "d", {"s": {"command": ["sleep", "300"]}}) as d:
        pid = d.wait_running("s")["primary"]
        config = json.loads(d.config_path.read_text())
        config["apps"]["s"]["command"] = "@CMD@"
        template = json.dumps(config, indent=2)
        line = next(n for n, text in enumerate(template.splitlines(), 1) if "@CMD@" in text)
        for bad in ('["sleep\\u0000", "300"]', "!!python/object:os.system sleep"):
            d.config_path.write_text(template.replace('"@CMD@"', bad))
            cp = d.supctl("update")
            assert cp.returncode == 2, (bad, cp.stdout, cp.stderr)
            assert f"{d.config_path}:{line}: apps.s.command" in cp.stderr, cp.stderr
        assert d.pid("s") == pid


# ------------------------------------------------------------------- 5. the app user's files
#
# Each test gives an app its own unprivileged user and a directory that user owns (the
# /srv/web layout of etc/), and lets the app, as that user, do what an attacker would:
# swap names for links, FIFOs and huge files while the daemon respawns or deploys it.

# The app: on the first start of each instance it runs $ACT (Python, as its own user)
# and crashes, so the daemon spawns it again; every start records what it got in
# $DIR/seen.GEN.
ATTACKER = """
import os, socket, sys, time
d = os.environ["DIR"]
gen = os.environ["SUPERVISOR_GENERATION"]
with open(d + "/seen." + gen, "w") as f:
    f.write(os.environ.get("STOLEN", "") + "|" + os.environ.get("PLAIN", "") + "\\n")
marker = d + "/attacked." + os.environ["SUPERVISOR_INSTANCE"]
if os.environ.get("ACT") and not os.path.exists(marker):
    open(marker, "w").close()
    exec(os.environ["ACT"])
    sys.exit(1)
if os.environ.get("NOTIFY_SOCKET"):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.sendto(b"READY=1", os.environ["NOTIFY_SOCKET"])
while True:
    time.sleep(60)
"""
STOLEN = "stolen-secret-9d1f"  # what another app's root-only file holds


def attacker_app(home: Path, act: str, **extra: Any) -> dict[str, Any]:
    assert APP_PYTHON is not None
    return {
        "command": [APP_PYTHON, "-c", ATTACKER],
        "user": USER,
        "cwd": str(home),
        "env": {"DIR": str(home), "ACT": act},
        "env_file": str(home / "web.env"),
        "ready": {"notify": True, "timeout": 10},
        "backoff": {"initial": 0.1, "max": 0.2, "max_retries": 2},
        "instances": ["primary"],
        **extra,
    }


def app_home(root: Path, user: pwd.struct_passwd) -> Path:
    """The app's own directory with its env file, both the app's user's."""
    home = user_dir(root, user, "web")
    (home / "web.env").write_text("PLAIN=plain-value\n")
    os.chown(home / "web.env", user.pw_uid, user.pw_gid)
    return home


def root_only(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


def seen(home: Path) -> list[str]:
    return [p.read_text() for p in sorted(home.glob("seen.*"))]


def nothing_leaked(d: RunningDaemon, home: Path, secret: str) -> None:
    """``secret`` reached no child, no status, no supctl answer and no log line."""
    assert not any(secret in s for s in seen(home)), seen(home)
    assert secret not in json.dumps(d.status())
    assert secret not in d.supctl("status").stdout
    assert secret not in d.supctl("history").stdout
    assert secret not in d.output()


@pytest.mark.parametrize(
    ("victim_text", "what"),
    [
        (f"STOLEN={STOLEN}\n", "another app's secrets"),
        (f"{STOLEN} is not an assignment\n", "a file that does not parse"),
    ],
)
def test_env_file_swapped_for_a_link_to_root_only_file_is_refused(
    app_user: pwd.struct_passwd,
    open_root: Path,
    daemons: list[RunningDaemon],
    victim_text: str,
    what: str,
) -> None:
    """The app's user replaces its env_file with a symlink to a root-only file (``what``)
    and crashes: the respawn refuses the link, and nothing of that file reaches the
    app, /status, supctl or the log (before: root read it and handed it over, or
    quoted it in the parse error that /status serves)."""
    home = app_home(open_root, app_user)
    victim = root_only(open_root / "other.env", victim_text)
    act = f"os.remove(d + '/web.env'); os.symlink('{victim}', d + '/web.env')"
    d = start_daemon(daemons, open_root / "d", {"web": attacker_app(home, act)})
    info = d.wait_state("web", "primary", "FATAL", timeout=20)
    assert f"{home}/web.env" in info["last_error"] and "symlink" in info["last_error"], info
    assert seen(home) == ["|plain-value\n"]  # the first start only
    nothing_leaked(d, home, STOLEN)
    assert victim.read_text() == victim_text


def test_env_file_only_root_can_read_is_not_read_for_the_app(
    app_user: pwd.struct_passwd, open_root: Path, daemons: list[RunningDaemon]
) -> None:
    """An env_file its app's user cannot read is refused (the daemon reads with the
    app's rights), at --check and at spawn, naming the file; one the app's group may
    read works."""
    home = app_home(open_root, app_user)
    secret = root_only(open_root / "web-root.env", f"STOLEN={STOLEN}\n")
    app = attacker_app(home, "", env_file=str(secret))
    d = RunningDaemon(open_root / "d", {"web": app})
    check = subprocess.run(
        [PYTHON, "-m", "supervisord_lite.cli", "-c", str(d.config_path), "--check"],
        capture_output=True,
        text=True,
        cwd=str(REPO),
        timeout=60,
        check=False,
    )
    assert check.returncode == 2, check
    assert f"{secret}: cannot read env_file: Permission denied" in check.stderr, check.stderr
    assert STOLEN not in check.stdout + check.stderr
    daemons.append(d)
    d.start()
    info = d.wait_state("web", "primary", "FATAL", timeout=20)
    assert "Permission denied" in info["last_error"] and str(secret) in info["last_error"]
    nothing_leaked(d, home, STOLEN)
    # readable by the app's group: the documented way to keep it from other users
    os.chown(secret, 0, app_user.pw_gid)
    secret.chmod(0o640)
    d.supctl_ok("start", "web")
    assert STOLEN in seen(home)[-1]


@pytest.mark.parametrize(
    ("act", "reason"),
    [
        ("os.remove(d + '/web.env'); os.mkfifo(d + '/web.env')", "not a regular file"),
        ("os.truncate(d + '/web.env', 16 << 20)", "larger than 1048576 bytes"),
        ("os.remove(d + '/web.env'); os.symlink('/dev/zero', d + '/web.env')", "symlink"),
    ],
    ids=["fifo", "sparse-16MiB", "dev-zero"],
)
def test_env_file_that_would_block_or_flood_the_daemon_is_refused(
    app_user: pwd.struct_passwd,
    open_root: Path,
    daemons: list[RunningDaemon],
    act: str,
    reason: str,
) -> None:
    """A FIFO (before: the daemon blocked in open() and stopped serving everything), a
    16 MiB sparse file or /dev/zero (before: the loop stalled, RSS grew without bound)
    as the env_file: the respawn fails with the reason, and the daemon serves on."""
    home = app_home(open_root, app_user)
    bystander = {"command": ["sleep", "300"], "ready": {"delay": 0.1}}
    d = start_daemon(daemons, open_root / "d", {"web": attacker_app(home, act), "other": bystander})
    info = d.wait_state("web", "primary", "FATAL", timeout=20)
    assert f"{home}/web.env" in info["last_error"] and reason in info["last_error"], info
    assert d.instance("other", "primary")["state"] == "RUNNING"
    d.supctl_ok("restart", "other")  # the control socket answers, apps still start
    assert d.http_status()["apps"]["other"]["state"] == "RUNNING"


CHECK_SCRIPT = """#!/bin/sh
echo "$(id -u) $(id -g) $(pwd) $(umask) $PLAIN" > "$DIR/check.ran"
"""


def test_exec_checks_run_as_the_app(
    app_user: pwd.struct_passwd, open_root: Path, daemons: list[RunningDaemon]
) -> None:
    """A check script is the app's to rewrite, so root must not run it: ready.exec and
    health.exec run with the app's user, group, umask, working directory and
    environment (env_file included), as systemd runs ExecStartPost= under User=."""
    home = app_home(open_root, app_user)
    script = home / "check.sh"
    script.write_text(CHECK_SCRIPT)
    script.chmod(0o755)
    os.chown(script, app_user.pw_uid, app_user.pw_gid)
    app = attacker_app(home, "", umask="0027")
    app["ready"] = {"exec": [str(script)], "timeout": 10}
    app["health"] = {"exec": [str(script)], "interval": 0.5, "timeout": 5}
    d = start_daemon(daemons, open_root / "d", {"web": app})
    d.wait_running("web")
    ran = wait_until(lambda: (home / "check.ran").exists(), 10, "the check to run")
    assert ran
    uid, gid, cwd, umask, plain = (home / "check.ran").read_text().split()
    assert (int(uid), int(gid)) == (app_user.pw_uid, app_user.pw_gid)
    assert (cwd, umask, plain) == (str(home), "0027", "plain-value")
    # the app rewrites its health check to act as whoever runs it: still the app
    (home / "check.ran").unlink()
    script.write_text(CHECK_SCRIPT + "touch /etc/sl-trust-pwned 2>/dev/null; exit 0\n")
    wait_until(lambda: (home / "check.ran").exists(), 10, "the health check to run")
    assert not os.path.exists("/etc/sl-trust-pwned")
    assert (home / "check.ran").read_text().split()[0] == str(app_user.pw_uid)


def test_prune_does_not_follow_a_releases_dir_swapped_for_a_link(
    app_user: pwd.struct_passwd, open_root: Path, daemons: list[RunningDaemon]
) -> None:
    """During a deploy the app's user renames RELEASE_ROOT/releases away and puts a link
    to a root-owned directory in its place: the prune refuses the link (before: it
    removed the victim's subdirectories and reported them as pruned)."""
    srv = user_dir(open_root, app_user, "srv")
    for name in ("v0", "v1", "v2"):
        (srv / "releases" / name).mkdir(parents=True)
        (srv / f"work-{name}").mkdir()  # where the app's process notes what it saw
    for path in [srv / "releases", *(srv / "releases").iterdir(), *srv.glob("work-*")]:
        os.chown(path, app_user.pw_uid, app_user.pw_gid)
    os.symlink("releases/v0", srv / "current")
    victim = open_root / "victim"
    for name in ("v0", "v1"):
        (victim / name).mkdir(parents=True)
        (victim / name / "data").write_text("root's")
    # the v2 primary swaps the directory before it says it is ready (the deploy's last
    # step before the prune)
    act = (
        "if os.environ['SUPERVISOR_RELEASE'] == 'v2' and "
        "os.environ['SUPERVISOR_INSTANCE'] == 'primary':\n"
        f"    os.rename('{srv}/releases', '{srv}/releases.moved')\n"
        f"    os.symlink('{victim}', '{srv}/releases')"
    )
    app = attacker_app(srv, "", cwd="{release_dir}", instances=["primary", "backup"])
    app["env"] = {"DIR": f"{srv}/work-{{release}}", "ACT": act}
    app["env_file"] = None
    app["release"] = {"root": str(srv), "keep": 1, "settle": 0.1}
    # ACT runs on the first start in each release dir, without the crash: the attack
    # is the app's, the deploy must still succeed
    app["command"] = [APP_PYTHON, "-c", ATTACKER.replace("    sys.exit(1)\n", "")]
    d = start_daemon(daemons, open_root / "d", {"web": app})
    d.wait_running("web", "primary", "backup")
    d.supctl_ok("deploy", "web", "v1", timeout=60)
    answer = d.supctl("--json", "deploy", "web", "v2", timeout=60)
    assert answer.returncode == 0, answer
    assert (srv / "releases").is_symlink()  # the attack happened
    final = json.loads(answer.stdout.splitlines()[-1])["result"]
    assert final["pruned"] == [] and "symlink" in final["prune_refused"], final
    assert sorted(os.listdir(victim)) == ["v0", "v1"]
    assert (victim / "v0" / "data").read_text() == "root's"
    refused = d.events("prune_refused")
    assert refused and "symlink" in refused[-1]["reason"], refused


def test_unix_socket_in_a_directory_the_app_user_can_move_is_refused(
    app_user: pwd.struct_passwd, open_root: Path
) -> None:
    """``listen: unix:DIR/web.sock`` where the app's user could rename DIR (it owns
    DIR's parent) and put a link to a root-owned directory there: the daemon would
    bind and later unlink in that directory. Refused at start with the reason; a
    socket directory that only root can move (DIR itself may be the app's) works,
    and a link the app leaves in place of its socket is not followed at shutdown."""
    theirs = user_dir(open_root, app_user, "theirs")
    movable = theirs / "run"
    movable.mkdir()
    os.chown(movable, app_user.pw_uid, app_user.pw_gid)
    app = {"command": ["sleep", "300"], "listen": f"unix:{movable}/web.sock"}
    d = RunningDaemon(open_root / "d1", {"web": app})
    d.expected_exit = None  # it must refuse to start: closed (and checked) below either way
    d.start(wait=False)
    assert d.proc is not None
    try:
        code = d.proc.wait(60)
    finally:
        d.close()
    assert code not in (0, None)
    assert f"another user can rename {movable}" in d.output(), d.output()
    assert not (movable / "web.sock").exists()
    # the app's own directory under a root-owned parent: served, cleaned up by fd
    run = user_dir(open_root, app_user, "run-web")
    victim = open_root / "victim.sock"
    held = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    held.bind(str(victim))
    app = {"command": ["sleep", "300"], "listen": f"unix:{run}/web.sock", "user": USER}
    with RunningDaemon(open_root / "d2", {"web": app}) as d2:
        d2.wait_running("web")
        assert stat.S_ISSOCK((run / "web.sock").lstat().st_mode)
        (run / "web.sock").unlink()
        (run / "web.sock").symlink_to(victim)
    held.close()
    assert stat.S_ISSOCK(victim.lstat().st_mode)  # the link's target stayed
    assert (run / "web.sock").is_symlink()


@pytest.mark.parametrize(
    "kind", ["env-file", "pidfile", "releases-dir", "socket-dir", "logs-dir", "current"]
)
def test_the_rule_over_every_path_kind(
    app_user: pwd.struct_passwd, open_root: Path, kind: str
) -> None:
    """The rule, for each kind of path the daemon touches in an app's directory: a link
    the app's user planted there is never followed to a root-owned victim, and a file
    that user could not read is not read for it."""
    theirs = user_dir(open_root, app_user, "theirs")
    victim = open_root / "victim"
    victim.mkdir(mode=0o700)
    (victim / "secret").write_text(STOLEN)
    (victim / "secret").chmod(0o600)
    link = theirs / "link"
    os.symlink(victim if kind.endswith("-dir") or kind == "current" else victim / "secret", link)
    os.lchown(link, app_user.pw_uid, app_user.pw_gid)

    def as_app(path: Path) -> bytes:
        async def read() -> bytes:
            return await spawning.read_as(str(path), 64, USER, None, asyncio.get_running_loop())

        return asyncio.run(read())

    if kind in ("env-file", "pidfile"):
        with pytest.raises(OSError, match="symlink"):
            as_app(link)
        with pytest.raises(OSError, match="Permission denied"):
            as_app(victim / "secret")  # no link at all: the app's user may not read it
    elif kind == "releases-dir":
        fd = files.open_dir(str(theirs))
        try:
            with pytest.raises(files.UnsafeFile, match="symlink"):
                files.open_beneath(fd, "link")
            with pytest.raises(files.UnsafeFile, match="symlink"):
                files.open_beneath(fd, "link/secret", os.O_RDONLY)
            files.remove_tree(fd, "link")  # removes the link itself, never its target
        finally:
            os.close(fd)
        assert not link.exists() and not link.is_symlink()
    elif kind == "socket-dir":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with pytest.raises(files.UnsafeFile, match="symlink"), sock:
            files.bind_unix(sock, str(link / "web.sock"))
        with pytest.raises(files.UnsafeFile, match="symlink"):
            files.unlink_socket(str(link / "secret"))
    elif kind == "logs-dir":
        with pytest.raises(files.UnsafeFile, match="symlink"):
            files.open_dir(str(link))
    else:
        store = ReleaseStore(ReleaseConfig(root=str(link)), "web", str(open_root / "st"))
        with pytest.raises(OperationFailed, match="symlink"):
            store.switch_current("r1")
    assert os.listdir(victim) == ["secret"] and (victim / "secret").read_text() == STOLEN
