"""Shared fixtures: ``make_daemon`` starts real daemons and checks them on teardown;
``fake`` and ``server`` put the real control server in front of a fake supervisor;
``systemd_box`` boots one real systemd for the whole run.

The helpers they stand on are in tests/helpers/ (a package of plain modules): test
modules import those, never each other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import RunningDaemon
from helpers.fake_control import FakeAPI, ServerThread
from helpers.systemd_box import binds, box, why_no_box

DaemonFactory = Callable[..., RunningDaemon]


@pytest.fixture
def make_daemon(tmp_path: Path) -> Iterator[DaemonFactory]:
    """``make_daemon(apps, **kw)`` starts a daemon (waits for its control socket).

    Teardown sends SIGTERM to each daemon, waits for it to exit, and fails the test
    when it did not exit 0 or left any child process behind.
    """
    made: list[RunningDaemon] = []

    def make(apps: dict[str, dict[str, Any]], *, start: bool = True, **kw: Any) -> RunningDaemon:
        d = RunningDaemon(tmp_path / f"d{len(made)}", apps, **kw)
        made.append(d)
        if start:
            d.start()
        return d

    yield make
    problems = []
    for d in reversed(made):
        try:
            d.close()
        except AssertionError as exc:
            problems.append(str(exc))
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.fixture
def fake() -> FakeAPI:
    """The fake supervisor behind ``server`` (a test changes what it answers)."""
    return FakeAPI()


@pytest.fixture
def server(tmp_path: Path, fake: FakeAPI) -> Iterator[ServerThread]:
    """The real control server over ``fake`` on a unix socket in ``tmp_path``."""
    with ServerThread(str(tmp_path / "supctl.sock"), fake) as srv:
        yield srv


@pytest.fixture(scope="session")
def systemd_box() -> Iterator[None]:
    """A booted systemd-box, shared by the tests that need a real systemd (booted
    once, powered off at the end of the run); skipped where it cannot boot."""
    reason = why_no_box()
    if reason is not None:
        pytest.skip(reason)
    up = box("up", *binds(), timeout=900)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        yield
    finally:
        box("down", timeout=120)
