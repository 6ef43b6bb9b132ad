"""The trust boundary: what an untrusted app (or another local user) tries, and fails.

Each attack is real: apps run as an unprivileged user made for the test (``sltest``,
when the tests run as root), notify datagrams go over the real NOTIFY_SOCKET, links
are real symlinks and hard links, escape sequences reach a real pseudo-terminal.
Every test asserts that nothing outside the app was touched: the victim process
received no signal, the victim file kept its bytes, no file appeared elsewhere.
"""

from __future__ import annotations

import io
import json
import os
import pwd
import random
import select
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import PYTHON, REPO, RunningDaemon, children_of, pid_alive, proc_state, wait_until

from supervisord_lite import inert, protocol, safefs, supctl
from supervisord_lite.config import ReleaseConfig, parse_config
from supervisord_lite.errors import ConfigError, OperationFailed
from supervisord_lite.releases import ReleaseStore

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
    fd = safefs.open_dir(str(tmp_path))
    try:
        for name, why in (("sym", "symlink"), ("hard", "2 hard links"), ("fifo", "regular")):
            with pytest.raises(safefs.UnsafeFile, match=why):
                safefs.open_append(fd, name)
        out = safefs.open_append(fd, "fresh", 0o640)
        os.write(out, b"x")
        os.close(out)
        safefs.replace_symlink(fd, "current", "releases/r2")
        safefs.replace_symlink(fd, "current", "releases/r3")
        assert os.readlink(tmp_path / "current") == "releases/r3"
        safefs.write_atomic(fd, "sym", b"new", 0o600)  # replaces the link, not its target
    finally:
        os.close(fd)
    assert (tmp_path / "target").read_text() == "T"
    assert (tmp_path / "sym").read_bytes() == b"new" and not (tmp_path / "sym").is_symlink()
    assert safefs.read_small(str(tmp_path / "fifo"), 64) is None  # and did not block
    (tmp_path / "big").write_bytes(b"1" * 100)
    assert safefs.read_small(str(tmp_path / "big"), 64) is None


def test_safefs_follows_only_symlinks_that_only_root_could_make(
    app_user: pwd.struct_passwd, open_root: Path
) -> None:
    """A directory path through a symlink in a directory another user can write is
    refused (the user could point it anywhere); the same link in a root-owned
    directory is followed."""
    real = open_root / "real"
    real.mkdir()
    (open_root / "rootlink").symlink_to(real)
    fd = safefs.open_dir(str(open_root / "rootlink"))
    assert os.fstat(fd).st_ino == real.stat().st_ino
    os.close(fd)
    theirs = user_dir(open_root, app_user, "theirs")
    (theirs / "logs").symlink_to("/etc")
    os.lchown(theirs / "logs", app_user.pw_uid, app_user.pw_gid)
    with pytest.raises(safefs.UnsafeFile, match="symlink in a directory"):
        safefs.open_dir(str(theirs / "logs"))


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
    assert output.final(protocol.COMMANDS["status"], {}, msg) == 0
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
    assert inert.escape("a\tb\x00c\x1b[0m\x7f\x85\u2066ok") == (
        "a\tb\\x00c\\x1b[0m\\x7f\\x85\\u2066ok"
    )
    assert inert.escape("plain é ü 日本") == "plain é ü 日本"


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
