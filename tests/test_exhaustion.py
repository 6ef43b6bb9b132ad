"""Resource exhaustion is a failure with a reason, never a stuck state.

The daemon's own fd limit is lowered (``prlimit`` on its pid, as LimitNOFILE would):
a respawn that cannot get its pipe ends in BACKOFF naming the cause and recovers by
itself once fds are free again; the control socket stops accepting while no fd is
free, answers again afterwards, and the log says so once, not once a second.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from conftest import DaemonFactory
from helpers import PYTHON, py_app

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="raising an fd limit back needs root")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@contextmanager
def fd_limit(pid: int, spare: int) -> Iterator[None]:
    """Limit ``pid`` to the fds it has open now plus ``spare``; restored on exit."""
    before = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    limit = open_fds(pid) + spare
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (limit, before[1]))
    try:
        yield
    finally:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, before)


APP = {
    **py_app("import signal; signal.pause()"),
    "ready": {"delay": 0.1},
    "backoff": {"initial": 0.2, "max": 0.5},
    "stop": {"timeout": 5},
}


def test_respawn_without_fds_backs_off_with_the_reason_and_recovers(
    make_daemon: DaemonFactory,
) -> None:
    d = make_daemon({"worker": APP}, http=False)
    old = d.wait_running("worker")["primary"]
    daemon = d.pid_of_daemon
    # below what it holds now: after the exit frees its pidfd and pipe, not one fd
    # can be opened (a status query could not be accepted either: watch the log)
    with fd_limit(daemon, spare=-2):
        os.kill(old, signal.SIGKILL)
        failed = d.wait_for(
            lambda: [
                e
                for e in d.events("instance_failed")
                if "Too many open files" in str(e.get("reason"))
            ][2:],
            10,
            "three failed spawns naming the cause",
        )
        assert all(e["trigger"] == "spawn_failed" for e in failed), failed
        states = [e["state"] for e in d.events("instance_state")]
        assert "BACKOFF" in states[-3:], states  # retrying with backoff, never stuck
    new = d.wait_running("worker", timeout=10)["primary"]
    assert new != old


def test_control_socket_answers_again_once_fds_are_free(make_daemon: DaemonFactory) -> None:
    d = make_daemon({"worker": APP}, http=False)
    d.wait_running("worker")
    daemon = d.pid_of_daemon
    # (below what it holds: a connection of the last status query may still be closing)
    with fd_limit(daemon, spare=-2):
        client = subprocess.Popen(
            [PYTHON, "-m", "supervisord_lite.supctl", "-s", d.sock, "status"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            # connect() succeeds into the backlog; accept() fails until fds are free
            d.wait_for(
                lambda: "out of system resource" in d.output(), 10, "the accept failure in the log"
            )
            assert client.poll() is None, "supctl got an answer without a free fd"
        except BaseException:
            client.kill()
            client.wait(10)
            raise
    out, err = client.communicate(timeout=30)
    assert client.returncode == 0, err
    assert b"worker" in out
    reports = d.output().count("out of system resource")
    assert reports == 1, f"the accept failure was logged {reports} times"
