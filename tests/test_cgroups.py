"""Per-instance cgroups where cgroup v2 is delegated (as systemd's Delegate=yes does).

The test makes a cgroup of its own, marks it delegated (``trusted.delegate``, the
attribute systemd sets) and starts the daemon inside it. A process that leaves its
session *and* clears its environment (so neither the process group nor the marker
finds it) is still stopped with its instance; a leftover cgroup of a dead daemon
(one its record does not name) is emptied and removed by the next daemon.
"""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import DaemonFactory
from helpers import PYTHON, pid_alive, py_app, wait_until
from helpers.handover import kill9_daemon, restart_daemon

from supervisord_lite.host import cgroups

MOUNT = cgroups.cgroup2_mount()
pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or MOUNT is None, reason="needs root and a cgroup v2 mount"
)

# forks a helper that leaves the session and replaces its environment with nothing,
# then sleeps; the parent writes the helper's pid and waits
ESCAPER = """
import os, sys, time
pid = os.fork()
if pid == 0:
    os.setsid()
    os.execve("/bin/sleep", ["sleep", "300"], {})
open(sys.argv[1] + ".tmp", "w").write(str(pid))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
while True:
    time.sleep(60)
"""


@pytest.fixture
def delegated() -> Iterator[Path]:
    assert MOUNT is not None
    base = Path(MOUNT) / f"supervisord-lite-test-{uuid.uuid4().hex[:8]}"
    base.mkdir()
    os.setxattr(base, "trusted.delegate", b"1")
    try:
        yield base
    finally:
        for sub in sorted(base.iterdir(), reverse=True):
            if sub.is_dir():
                path = str(sub)
                cgroups.kill(path)
                wait_until(lambda: not cgroups.procs(path), 10, f"{path} to empty")  # noqa: B023
                sub.rmdir()
        base.rmdir()


def launch_in(base: Path) -> tuple[str, ...]:
    return ("sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(base))


def escaper(tmp_path: Path) -> dict[str, object]:
    script = tmp_path / "escaper.py"
    script.write_text(ESCAPER)
    return {"command": [PYTHON, str(script), str(tmp_path / "helper")]}


def test_instances_run_in_their_own_cgroups_and_a_stop_reaches_every_process(
    delegated: Path, make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    d = make_daemon({"esc": {**escaper(tmp_path), "ready": {"delay": 0.2}}}, start=False)
    d.launcher = launch_in(delegated)
    d.start()
    pid = d.wait_running("esc")["primary"]
    helper_file = tmp_path / "helper"
    wait_until(helper_file.exists, 10, "the helper's pid")
    helper = int(helper_file.read_text())
    d.remember([helper])
    try:
        cgroup = delegated / "app.esc.primary.g1"
        assert set(cgroups.procs(str(cgroup))) == {pid, helper}
        assert str(d.pid_of_daemon) in (delegated / "daemon" / "cgroup.procs").read_text()
        assert os.getsid(helper) == helper != pid
        assert b"SUPERVISORD_LITE_MARK" not in Path(f"/proc/{helper}/environ").read_bytes()
        d.supctl_ok("stop", "esc", timeout=30)
        assert not pid_alive(helper), "the helper outlived its instance's stop"
        assert not cgroup.exists(), "the generation's cgroup was not removed"
    finally:
        if pid_alive(helper):
            os.kill(helper, signal.SIGKILL)


def test_a_successor_empties_cgroups_its_record_does_not_name(
    delegated: Path, make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    d = make_daemon(
        {"s": {**py_app("import time; time.sleep(300)"), "ready": {"delay": 0.1}}}, start=False
    )
    d.launcher = launch_in(delegated)
    d.start()
    pids = d.wait_running("s")
    kill9_daemon(d, app="s", pids=pids)
    # a cgroup the dead daemon made whose process never reached its record
    stray_cgroup = delegated / "app.s.primary.g7"
    stray_cgroup.mkdir()
    stray = subprocess.Popen(
        ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec sleep 300', str(stray_cgroup)],
        start_new_session=True,
    )
    wait_until(lambda: stray.pid in cgroups.procs(str(stray_cgroup)), 10, "the stray to join")
    try:
        # the successor runs in the daemon leaf its predecessor left
        d.launcher = launch_in(delegated / "daemon")
        restart_daemon(d)
        assert d.wait_running("s")["primary"] == pids["primary"], "not adopted"
        assert stray.wait(20) is not None
        assert not stray_cgroup.exists()
        assert (delegated / "app.s.primary.g1").exists()
        assert d.events("evicting_cgroup_members")
    finally:
        if stray.poll() is None:
            stray.kill()
            stray.wait(10)


def test_a_new_generations_cgroup_is_empty_when_create_returns(delegated: Path) -> None:
    """A dead daemon's processes left in the cgroup a new generation is to use are
    killed, and gone, before the new process could join it (twenty of them: dying
    takes each a moment, so a create that only signalled would return too early)."""
    tree = cgroups.Cgroups(str(delegated))
    path = tree.path_for("web", "primary", 7)
    os.mkdir(path)
    leftover = subprocess.Popen(
        [*launch_in(Path(path)), "sh", "-c", "for i in $(seq 20); do sleep 300 & done; wait"]
    )
    try:
        wait_until(lambda: len(cgroups.procs(path)) == 21, 10, "the leftovers to start")
        assert tree.create("web", "primary", 7) == path
        assert cgroups.procs(path) == []  # no wait here: create waited
        assert leftover.wait(10) == -signal.SIGKILL
    finally:
        cgroups.kill(path)
        if leftover.poll() is None:
            leftover.kill()
            leftover.wait()
