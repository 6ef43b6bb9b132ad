"""Resource exhaustion is a failure with a reason, never a stuck state.

The daemon's own fd limit is lowered (``prlimit`` on its pid, as LimitNOFILE would):
a respawn that cannot get its pipe ends in BACKOFF naming the cause and recovers by
itself once fds are free again; the control socket and the HTTP API refuse each client
at once while no fd is free (a spare fd to accept and refuse it), without spinning,
answer again afterwards, and the log says so once per episode, not once a second.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import pytest
from conftest import DaemonFactory
from helpers import RunningDaemon, http_get, py_app, wait_until

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


def lowest_free_fd(pid: int) -> int:
    used = {int(fd) for fd in os.listdir(f"/proc/{pid}/fd")}
    return min(set(range(len(used) + 1)) - used)


@contextmanager
def no_free_fd(pid: int) -> Iterator[None]:
    """Limit ``pid`` so that it cannot open one more descriptor: EMFILE is about fd
    numbers, so the limit is its lowest free number, set again until no lower one frees
    up (a connection of the last query may still be closing); restored on exit."""
    before = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    settled: list[tuple[int, float]] = []

    def steady() -> bool:
        limit = lowest_free_fd(pid)
        if not settled or settled[-1][0] != limit:
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (limit, before[1]))
            settled.append((limit, time.monotonic()))
        return time.monotonic() - settled[-1][1] >= 0.5  # no change for half a second

    wait_until(steady, 10, "the daemon's fds to settle")
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


def accept_episodes(d: RunningDaemon, listener: str) -> list[dict[str, Any]]:
    return [e for e in d.events("accept_fds_back") if e.get("listener") == listener]


def test_both_servers_refuse_cleanly_without_fds_and_answer_again(
    make_daemon: DaemonFactory,
) -> None:
    """With no descriptor free, ``supctl status`` and ``GET /healthz`` are each answered
    at once with a refusal naming the cause (not left to time out in the backlog), the
    listeners do not spin meanwhile (each accept() attempt is for a waiting client:
    attempts stay within a small multiple of the clients, where asyncio's own accept
    loop made hundreds a second), and both answer normally once fds are free."""
    d = make_daemon({"worker": APP})
    d.wait_running("worker")
    daemon = d.pid_of_daemon
    assert d.http_port is not None
    rounds = 3
    with no_free_fd(daemon):
        for _ in range(rounds):
            refused = d.supctl("status", timeout=30)
            assert refused.returncode == 1, refused
            assert "out of file descriptors" in refused.stderr, refused.stderr
            status, body = http_get("127.0.0.1", d.http_port, "/healthz", timeout=30)
            assert status == 503, body
            assert "out of file descriptors" in json.loads(body)["error"]["message"]
    # fds free again: both answer, and each listener reports its episode once
    assert d.supctl("status").returncode == 0
    assert http_get("127.0.0.1", d.http_port, "/healthz")[0] == 200
    for listener in ("control", "http"):
        episodes = d.wait_for(partial(accept_episodes, d, listener), 10, f"{listener} episode")
        assert len(episodes) == 1, episodes
        ep = episodes[0]
        assert ep["refused"] == rounds, ep
        # per refused client: the failed accept() and the one with the spare closed;
        # a pause (none expected here) costs a look a second
        assert ep["attempts"] <= 2 * ep["refused"] + 2 * ep["pauses"] + 2, ep
        assert ep["pauses"] <= ep["seconds"] + 1, ep
        warned = [e for e in d.events("accept_out_of_fds") if e.get("listener") == listener]
        assert len(warned) == 1, warned  # once per episode, not once per client
