"""kill -9 of the daemon at seeded random instants during reload, deploy and update.

Each instant is followed by a new daemon on the same config and state_dir. After it
settles: every process that carries the app's marker (every process the dead daemon
spawned for it, whatever it did since) is one the new daemon lists (its instances'
process trees), no instance is stuck (all RUNNING, none swapping, each on the release
and config the record says it runs) and not one request of a load that ran
throughout failed. The seed is printed on failure and can be set with
SUPERVISORD_LITE_CRASH_SEED to replay a run.
"""

from __future__ import annotations

import os
import random
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import DaemonFactory
from helpers import PYTHON, RunningDaemon, free_port
from helpers.handover import kill9_daemon, restart_daemon
from helpers.load import Load
from helpers.releases import make_release as build_release
from helpers.releases import make_root

from supervisord_lite.host import procs
from supervisord_lite.state.handover import (
    MARK_ENV,
    AppRecord,
    Handover,
    InstanceRecord,
    recover_after_crash,
)

# a name no other test, and no other test run on this host, uses: the markers that
# start with it are this run's alone (marked_pids scans the whole host)
APP = f"crash{os.getpid()}"
INSTANCES = ("primary", "backup")
INSTANTS = 10  # per operation; 30 over the three
SEED = int(os.environ.get("SUPERVISORD_LITE_CRASH_SEED", "20261201"))


def crash_app(root: Path, port: int, config_generation: int) -> dict[str, Any]:
    """Primary and backup on one shared socket, from ``root``'s releases, booting for
    a moment (so that an instant can fall inside a swap)."""
    return {
        "command": [PYTHON, "{release_dir}/app.py"],
        "env": {"BOOT_DELAY": "0.2", "CONFIG_GENERATION": str(config_generation)},
        "instances": list(INSTANCES),
        "listen": f"127.0.0.1:{port}",
        "ready": {"http": "http://{host}:{port}/", "timeout": 15},
        "stop": {"timeout": 5},
        "release": {"root": str(root), "keep": 3, "settle": 0.2},
    }


def marked_pids() -> set[int]:
    """Every process on the host that one of our daemons spawned for APP."""
    found: set[int] = set()
    prefix = f"{MARK_ENV}={APP}:".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                data = f.read()
        except OSError:
            continue
        if any(var.startswith(prefix) for var in data.split(b"\0")) and procs.alive(int(entry)):
            found.add(int(entry))
    return found


def settled(d: RunningDaemon, allowed: set[tuple[str, int]]) -> tuple[str, int] | None:
    """(release, config generation) that every instance runs, when they all run the
    same one of ``allowed``, RUNNING, none swapping, and no process of the app is left
    that the daemon does not list; else None."""
    app = d.status()["apps"][APP]
    listed: set[int] = set()
    runs: set[tuple[str, int]] = set()
    for inst in app["instances"].values():
        if inst["state"] != "RUNNING" or inst["swapping"]:
            return None
        listed |= procs.tree_pids(inst["pid"])
        env = Path(f"/proc/{inst['pid']}/environ").read_bytes().split(b"\0")
        generations = [int(v.split(b"=")[1]) for v in env if v.startswith(b"CONFIG_GENERATION=")]
        runs.add((inst["release"], generations[0] if generations else -1))
    if len(runs) != 1 or not runs <= allowed or not marked_pids() <= listed:
        return None
    return runs.pop()


@pytest.mark.parametrize("operation", ["reload", "deploy", "update"])
def test_kill9_at_random_instants_leaves_nothing_unsupervised(
    operation: str, make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    rng = random.Random(f"{SEED}:{operation}")
    port = free_port()
    root = make_root(tmp_path, "v1")
    config_generation = 1
    d = make_daemon({APP: crash_app(root, port, config_generation)})
    d.wait_running(APP, *INSTANCES, timeout=20)
    release = "v1"  # what the record says the app runs
    with Load(port, threads=2, max_seconds=300, max_requests=40_000) as load:
        load.wait_ok(20)
        for n in range(INSTANTS):
            args: list[str] = [operation, APP]
            target_release, target_generation = release, config_generation
            if operation == "deploy":
                target_release = f"v{n + 2}"
                build_release(root, target_release)
                args = ["deploy", APP, target_release]
            elif operation == "update":
                target_generation = config_generation + 1
                d.config["apps"][APP] = crash_app(root, port, target_generation)
                d.write_config()
            client = subprocess.Popen(
                [PYTHON, "-m", "supervisord_lite.supctl", "-s", d.sock, *args],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            instant = rng.uniform(0.05, 1.2)
            time.sleep(instant)  # not a wait for a condition: the instant is what we draw
            kill9_daemon(d, app=APP)
            finished = client.wait(30) == 0
            restart_daemon(d)
            # a finished operation stands; one the kill interrupted is rolled back or
            # finished by the new daemon, whichever its record says (the record may
            # already hold the outcome when the kill came before supctl read it), but
            # never half of each
            before, after = (release, config_generation), (target_release, target_generation)
            allowed = {after} if finished else {before, after}
            what = (
                f"seed {SEED}, {operation} #{n} killed {instant:.3f}s in "
                f"(finished: {finished}), expecting one of {sorted(allowed)}"
            )
            release, config_generation = d.wait_for(lambda a=allowed: settled(d, a), 30, what)  # type: ignore[misc]
            d.record_tree()
            load.wait_ok(10)
    load.assert_no_failure()


def test_recovery_never_closes_an_fd_number_the_dead_daemon_recorded() -> None:
    """A retired generation (recorded with the dead daemon's fd number of its output
    pipe) is evicted by the successor without touching that fd number in the
    successor, where it names something else (found by the random instants above:
    the successor died of EBADF, or could have closed its own lock or a socket)."""
    ours_r, ours_w = os.pipe()
    stray = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        started = procs.process_identity(stray.pid)
        assert started is not None
        rec = InstanceRecord(
            pid=stray.pid,
            pgid=stray.pid,
            start_time=started,
            generation=1,
            release=None,
            pipe_fd=ours_r,
            running=False,
        )
        state = Handover(daemon_pid=1, apps={APP: AppRecord(None, others=[rec])})
        recover_after_crash(state)
        assert stray.wait(15) is not None, "the stray was not evicted"
        os.fstat(ours_r)  # still ours, still open
    finally:
        if stray.poll() is None:
            stray.kill()
            stray.wait(10)
        os.close(ours_r)
        os.close(ours_w)
