"""``supctl status --watch`` on a real pseudo-terminal and on a pipe, ended by SIGINT.

The control server is real (test_control's ServerThread); its status changes on
every request (the restarts counter of web:primary counts the requests), so each
frame shows that it was fetched afresh.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import pty
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.fake_control import DEADLINE, FakeAPI, ServerThread

from supervisord_lite import snapshots
from supervisord_lite.control import protocol
from supervisord_lite.control.commands import COMMANDS
from supervisord_lite.errors import UsageError
from supervisord_lite.supctl.watch import HOME_CLEAR

REPO = Path(__file__).resolve().parents[1]


class ChangingAPI(FakeAPI):
    """The fake supervisor whose web:primary has restarted once per status request."""

    def status(self, app: str | None) -> snapshots.SupervisorStatus:
        status = super().status(app)
        asked = sum(1 for call in self.calls if call[0] == "status")
        web = status.apps.get("web")
        if web is None:
            return status
        primary = dataclasses.replace(web.instances["primary"], restarts=1000 + asked)
        apps = {
            **status.apps,
            "web": dataclasses.replace(web, instances={**web.instances, "primary": primary}),
        }
        return dataclasses.replace(status, apps=apps)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerThread]:
    with ServerThread(str(tmp_path / "supctl.sock"), ChangingAPI()) as srv:
        yield srv


def supctl_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SUPCTL_SOCKET", "NO_COLOR")}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def supctl_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "supervisord_lite.supctl", *args]


class OnPty:
    """supctl with a pseudo-terminal as its controlling terminal, stdin and stdout.

    ``setsid -c`` (util-linux) gives it a session of its own with the pty as its
    controlling terminal, so a Ctrl-C typed on the pty is a real SIGINT from the
    terminal's line discipline.
    """

    def __init__(self, *args: str, rows: int = 40) -> None:
        self.master, slave = pty.openpty()
        # The terminal's size, as a terminal emulator sets it (TIOCSWINSZ).
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, 120, 0, 0))
        self.proc = subprocess.Popen(
            ["setsid", "-c", *supctl_argv(*args)],
            env=supctl_env(),
            cwd=REPO,
            stdin=slave,
            stdout=slave,
            stderr=slave,
        )
        os.close(slave)
        self.data = b""

    def read_until(self, predicate: re.Pattern[bytes]) -> re.Match[bytes]:
        """Read what supctl draws until ``predicate`` matches it."""
        deadline = time.monotonic() + DEADLINE
        while True:
            found = predicate.search(self.data)
            if found:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"{predicate.pattern!r} not drawn; got {self.data!r}")
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if ready:
                try:
                    self.data += os.read(self.master, 65536)
                except OSError:  # EIO: supctl exited and closed the terminal
                    raise AssertionError(f"supctl exited; it drew {self.data!r}") from None

    def drain(self) -> None:
        """Read until supctl has closed the terminal."""
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if not ready:
                if self.proc.poll() is not None:
                    return
                continue
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                return
            if not chunk:
                return
            self.data += chunk

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(DEADLINE)
        os.close(self.master)


needs_setsid = pytest.mark.skipif(shutil.which("setsid") is None, reason="needs util-linux setsid")

HOME = HOME_CLEAR.encode()
PRIMARY_RESTARTS = re.compile(r"^web +primary +\w+ +\d+ +\S+ +(\d+) ", re.MULTILINE)


def restarts_shown(frame: str) -> int:
    found = PRIMARY_RESTARTS.search(re.sub("\033\\[[0-9;]*m", "", frame))
    assert found, frame
    return int(found[1])


@needs_setsid
def test_watch_redraws_in_place_until_ctrl_c(server: ServerThread) -> None:
    """Each frame starts at the top of a cleared screen with fresh data; Ctrl-C is exit 0."""
    term = OnPty("-s", server.path, "status", "--watch")
    try:
        # Two whole frames: each one is followed by the next one's home-and-clear.
        term.read_until(re.compile(b"(?:" + re.escape(HOME) + b".*){3}", re.DOTALL))
        assert term.proc.poll() is None  # still watching
        os.write(term.master, b"\x03")  # Ctrl-C, typed on the terminal
        term.drain()
        assert term.proc.wait(DEADLINE) == 0
    finally:
        term.close()
    text = term.data.replace(b"\r\n", b"\n").decode()
    assert text.startswith(HOME_CLEAR)  # nothing before the first frame
    frames = text.split(HOME_CLEAR)[1:3]
    for frame in frames:
        header, table = frame.split("\n", 1)
        assert re.fullmatch(r"every 1s  [-\d]+ [:\d]+  \(Ctrl-C to quit\)", header)
        assert table.startswith("APP ") and "\033[32mRUNNING\033[0m" in table
    assert restarts_shown(frames[1]) > restarts_shown(frames[0])
    assert "Traceback" not in text and "KeyboardInterrupt" not in text


@needs_setsid
def test_watch_cuts_the_frame_to_the_terminal(server: ServerThread) -> None:
    """A terminal shorter than the table gets what fits and a note, never a scroll."""
    term = OnPty("-s", server.path, "status", "--watch", rows=4)
    try:
        term.read_until(re.compile(re.escape(HOME) + rb"[^\033]*more lines"))
    finally:
        term.close()
    frame = term.data.split(HOME)[1]
    # The header, the column titles, and a note for the 4 lines left out: 3 lines on 4 rows.
    assert frame.count(b"\n") == 2
    assert frame.endswith(b"\n... 4 more lines (a taller window, or APP)")


def test_watch_on_a_pipe_prints_frames_apart(server: ServerThread) -> None:
    """Not a terminal: one plain frame a second, a blank line between; SIGINT is exit 0."""
    proc = subprocess.Popen(
        supctl_argv("-s", server.path, "status", "--watch"),
        env=supctl_env(),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + DEADLINE
        # Two whole frames: the second ends where the third begins.
        while sum(1 for line in lines if line.startswith("APP ")) < 3:
            assert time.monotonic() < deadline, lines
            line = proc.stdout.readline()
            assert line, f"supctl ended early: {lines}"
            lines.append(line.rstrip("\n"))
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=DEADLINE)
        assert proc.returncode == 0, err
        assert err == ""
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(DEADLINE)
    text = "\n".join(lines)
    assert "\033[" not in text
    frames = text.split("\n\n")
    assert len(frames) >= 2
    for frame in frames[:2]:
        header, table = frame.split("\n", 1)
        assert re.fullmatch(r"every 1s  \d{4}-\d\d-\d\d \d\d:\d\d:\d\d", header)
        assert table.startswith("APP ") and "web" in table
    assert restarts_shown(frames[1]) > restarts_shown(frames[0])


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [(("status", "nope", "--watch"), 4, "no such app"), (("status", "--watch"), 3, "cannot reach")],
)
def test_watch_stops_at_once_when_the_first_answer_is_an_error(
    server: ServerThread, tmp_path: Path, args: tuple[str, ...], status: int, message: str
) -> None:
    """A mistyped app or no daemon at all is reported once, with status's exit status."""
    sock = server.path if status != 3 else str(tmp_path / "missing.sock")
    result = subprocess.run(
        supctl_argv("-s", sock, *args),
        env=supctl_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=DEADLINE * 3,
        check=False,
    )
    assert result.returncode == status
    assert message in result.stderr
    assert result.stdout == ""


def test_watch_is_not_sent_to_the_daemon(server: ServerThread) -> None:
    """--watch is supctl's own: the daemon, which refuses a "watch" argument, sees plain
    status requests; --json prints one JSON answer per second."""
    with pytest.raises(UsageError, match="unknown argument"):
        protocol.validate_args(COMMANDS["status"], {"watch": True})
    proc = subprocess.Popen(
        supctl_argv("-s", server.path, "--json", "status", "web", "--watch"),
        env=supctl_env(),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        answers = [json.loads(proc.stdout.readline()) for _ in range(2)]
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=DEADLINE)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(DEADLINE)
    for answer in answers:
        assert answer["ok"] and list(answer["result"]["apps"]) == ["web"]
    assert [a["result"]["apps"]["web"]["instances"]["primary"]["restarts"] for a in answers] == [
        1001,
        1002,
    ]
