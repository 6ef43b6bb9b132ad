"""A daemon killed with SIGKILL and started again on its state_dir (the handover),
the durable record it leaves in between, and the app these tests hand over.
"""

from __future__ import annotations

import signal
from typing import Any

from helpers import APPS_DIR, PYTHON, RunningDaemon
from supervisord_lite.state.handover import Handover, write_private_json
from supervisord_lite.state.journal import Journal

FAULTY = APPS_DIR / "faulty.py"
INSTANCES = ("primary", "backup")


def faulty_web(port: int, **env: object) -> dict[str, Any]:
    """tests/apps/faulty.py as primary+backup on one shared socket, ready by HTTP."""
    return {
        "command": [PYTHON, str(FAULTY)],
        "env": {k: str(v) for k, v in env.items()},
        "instances": list(INSTANCES),
        "listen": f"127.0.0.1:{port}",
        "ready": {"http": "http://{host}:{port}/health", "timeout": 30},
        "stop": {"timeout": 5},
    }


def recorded(d: RunningDaemon) -> Handover:
    """What a successor daemon would read now: the snapshot with the journal replayed."""
    found = Journal(str(d.state_dir)).load()
    assert found is not None, "no durable record in the state_dir"
    return found.state


def recorded_pids(d: RunningDaemon, app: str) -> dict[str, int]:
    """{instance: pid} of the running generations that the durable record holds now."""
    records = recorded(d).apps[app].instances
    return {name: rec.pid for name, rec in records.items() if rec.running}


def rewrite_record(d: RunningDaemon, state: Handover) -> None:
    """Replace the durable record by ``state`` (as a snapshot with an empty journal)."""
    data = state.to_json()
    data["journal_epoch"] = 1_000_000  # a journal that does not exist: nothing to replay
    write_private_json(str(d.state_dir), "state.json", data)


def kill9_daemon(d: RunningDaemon, app: str = "web", pids: dict[str, int] | None = None) -> None:
    """SIGKILL the daemon (nothing of it runs any more: no cleanup, no stop of the apps).
    The durable record never lags behind what runs: it already holds ``pids``."""
    assert d.proc is not None
    if pids is not None:
        assert recorded_pids(d, app) == pids, "the record lags behind what runs"
    d.record_tree()
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait(10)


def restart_daemon(d: RunningDaemon) -> None:
    """Start a new daemon on the same config and state_dir (the harness's pid tracking,
    output file and HTTP port carry over)."""
    d.proc = None
    d.start()
