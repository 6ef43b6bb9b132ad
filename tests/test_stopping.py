"""The one stop sequence (os_stop): signal, CONT, grace, KILL, wait, with real processes.

Every case runs under both drivers (awaited and blocking), which run the same
sequence: what a process sees, and how it ends, must not depend on the driver.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import pid_alive, proc_state, wait_until

from supervisord_lite.host import cgroups, exits, spawning, stopping
from supervisord_lite.host.stopping import Target

DRIVERS = ("async", "blocking")

# A process that says it is ready (its handler set) by writing its pid to a file
# renamed into place, then sleeps. On TERM: "ignore" notes it in READY.term and
# carries on; "exit" exits 7; "setsid" forks a child that leaves the session and
# ignores TERM (the one that says it is ready), and exits.
WORKER = """
import os, signal, sys, time
ready, mode = sys.argv[1], sys.argv[2]
def on_term(signum, frame):
    if mode == "exit":
        os._exit(7)
    open(ready + ".term", "w").close()
signal.signal(signal.SIGTERM, on_term)
if mode == "setsid":
    if os.fork() != 0:
        os._exit(0)
    os.setsid()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
open(ready + ".tmp", "w").write(str(os.getpid()))
os.rename(ready + ".tmp", ready)
while True:
    time.sleep(60)
"""


def run(
    driver: str, target: Target, signum: int | None, grace: float, kill_wait: float = 5.0
) -> None:
    """The sequence on ``target`` under one driver, the grace ending ``grace`` from now."""
    deadline = time.monotonic() + grace
    if driver == "async":

        async def stop() -> None:
            await stopping.stop_target(target, signum, deadline, kill_wait=kill_wait)

        asyncio.run(stop())
    else:
        stopping.stop_target_blocking(target, signum, deadline, kill_wait=kill_wait)


class Recording(Target):
    """Signals recorded, not sent; ``left`` for as long as ``stays``."""

    def __init__(self, stays: bool) -> None:
        self.sent: list[int] = []
        self.stays = stays

    def send(self, signum: int) -> None:
        self.sent.append(signum)

    def left(self) -> bool:
        return self.stays


@pytest.fixture
def started(tmp_path: Path) -> Iterator[Callable[..., tuple[subprocess.Popen[bytes], Path]]]:
    """Start WORKER processes (``prefix`` wraps the command); every one is killed after."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(mode: str, *prefix: str, name: str = "w") -> tuple[subprocess.Popen[bytes], Path]:
        ready = tmp_path / name
        script = tmp_path / "worker.py"
        script.write_text(WORKER)
        argv = [*prefix, sys.executable, str(script), str(ready), mode]
        proc = subprocess.Popen(argv, start_new_session=True)
        procs.append(proc)
        wait_until(ready.exists, 10, f"{name} to set its handler")
        return proc, ready

    yield start
    for proc in procs:
        # each worker leads its own session and group: the group goes too (a test may
        # stop the leader alone and leave another member, as terminate_one does)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


@pytest.mark.parametrize("driver", DRIVERS)
def test_both_drivers_send_the_same_signals(driver: str) -> None:
    stays, leaves = Recording(stays=True), Recording(stays=False)
    run(driver, stays, signal.SIGTERM, 0.0, kill_wait=0.0)
    run(driver, leaves, signal.SIGINT, 0.0, kill_wait=0.0)
    assert stays.sent == [signal.SIGTERM, signal.SIGCONT, signal.SIGKILL]
    assert leaves.sent == [signal.SIGINT, signal.SIGCONT]
    already_signalled = Recording(stays=True)
    run(driver, already_signalled, None, 0.0, kill_wait=0.0)
    assert already_signalled.sent == [signal.SIGKILL]


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_process_that_ignores_term_is_killed_after_the_grace(
    driver: str, started: Callable[..., tuple[subprocess.Popen[bytes], Path]]
) -> None:
    proc, ready = started("ignore")
    run(driver, stopping.Pids([proc.pid]), signal.SIGTERM, 0.3)
    assert proc.wait(10) == -signal.SIGKILL
    assert Path(f"{ready}.term").exists(), "it never got the TERM first"


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_stopped_process_is_continued_and_acts_on_term(
    driver: str, started: Callable[..., tuple[subprocess.Popen[bytes], Path]]
) -> None:
    """Its TERM handler can run only once it is continued: it exits 7, not by KILL
    at the end of a grace long enough for any machine."""
    proc, _ = started("exit")
    os.kill(proc.pid, signal.SIGSTOP)
    wait_until(lambda: proc_state(proc.pid) == "T", 10, "the process to stop")
    run(driver, stopping.Pids([proc.pid]), signal.SIGTERM, 60.0)
    assert proc.wait(10) == 7


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_group_with_a_grandchild_that_ignores_term(
    driver: str, started: Callable[..., tuple[subprocess.Popen[bytes], Path]], tmp_path: Path
) -> None:
    """The leader (a shell) dies of TERM; its grandchild in the same group ignores it
    and is killed at the grace's end; the sequence returns once the group is gone."""
    shell = ("sh", "-c", '"$@" & wait', "sh")
    leader, ready = started("ignore", *shell)
    grandchild = int(ready.read_text())
    assert os.getpgid(grandchild) == leader.pid != grandchild
    run(driver, stopping.Group(leader.pid), signal.SIGTERM, 0.3)
    assert not pid_alive(grandchild), "the sequence returned with the grandchild alive"
    assert not stopping.group_alive(leader.pid)
    assert leader.wait(10) == -signal.SIGTERM


def test_terminate_waits_for_the_leaders_exit_and_the_rest_of_its_group(tmp_path: Path) -> None:
    """stopping.terminate: the leader's exit future (a spawned child), then the group."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    ready = tmp_path / "w"
    argv = ("sh", "-c", '"$@" & wait', "sh", sys.executable, str(script), str(ready), "ignore")

    async def scenario() -> tuple[exits.ExitStatus, int]:
        loop = asyncio.get_running_loop()
        child = spawning.spawn(spawning.SpawnSpec(argv=argv, env=dict(os.environ)), loop)
        try:
            while not ready.exists():  # bounded by the test's own timeout
                await asyncio.sleep(0.02)
            await stopping.terminate(child, signal.SIGTERM, 0.3)
        finally:
            stopping.signal_group(child.pgid, signal.SIGKILL)
            await child.exited
        return child.exited.result(), int(ready.read_text())

    status, grandchild = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert status.signal == signal.SIGTERM
    assert not pid_alive(grandchild)


def test_terminate_one_leaves_the_rest_of_the_group(
    started: Callable[..., tuple[subprocess.Popen[bytes], Path]], tmp_path: Path
) -> None:
    """A re-exec'd master's predecessor goes alone: its group's other members stay."""
    shell = ("sh", "-c", '"$@" & wait', "sh")
    leader, ready = started("ignore", *shell)
    other = int(ready.read_text())

    async def scenario() -> exits.ExitStatus:
        child = exits.watch_child(leader.pid, asyncio.get_running_loop())
        await stopping.terminate_one(child, signal.SIGTERM, 10.0)
        return child.exited.result()

    assert asyncio.run(scenario()).signal == signal.SIGTERM
    assert pid_alive(other), "a process of the group other than the one stopped"


@pytest.fixture
def cgroup() -> Iterator[Path]:
    """A cgroup of the test's own (as tests/test_cgroups.py makes them), emptied after."""
    mount = cgroups.cgroup2_mount()
    if os.geteuid() != 0 or mount is None:
        pytest.skip("needs root and a cgroup v2 mount")
    path = Path(mount) / f"supervisord-lite-test-stop-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    try:
        yield path
    finally:
        cgroups.kill(str(path))
        wait_until(lambda: not cgroups.procs(str(path)), 10, f"{path} to empty")
        if path.exists():
            path.rmdir()


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_cgroup_whose_member_left_its_session_and_ignores_term(
    driver: str, started: Callable[..., tuple[subprocess.Popen[bytes], Path]], cgroup: Path
) -> None:
    """Neither its group nor its pid is known to the stop: only its cgroup; and it
    ignores TERM, so cgroup.kill ends it once the grace is spent."""
    join = ("sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(cgroup))
    first, _ = started("ignore", *join, name="first")
    _, ready = started("setsid", *join, name="escaped")
    escaped = int(ready.read_text())
    assert os.getsid(escaped) == escaped
    wait_until(lambda: set(cgroups.procs(str(cgroup))) == {first.pid, escaped}, 10, "members")
    run(driver, stopping.Cgroup(str(cgroup)), signal.SIGTERM, 0.3)
    assert not cgroups.procs(str(cgroup)), "the sequence returned with members left"
    assert not pid_alive(escaped)
    assert first.wait(10) == -signal.SIGKILL


def test_stop_cgroup_removes_the_emptied_cgroup(
    started: Callable[..., tuple[subprocess.Popen[bytes], Path]], cgroup: Path
) -> None:
    join = ("sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(cgroup))
    proc, _ = started("exit", *join)

    async def scenario() -> list[int]:
        return await stopping.stop_cgroup(str(cgroup), signal.SIGTERM, time.monotonic() + 60)

    assert asyncio.run(scenario()) == [proc.pid]
    assert proc.wait(10) == 7
    assert not cgroup.exists()
