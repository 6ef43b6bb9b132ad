"""Shared fixtures: ``make_daemon`` starts real daemons and checks them on teardown."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import RunningDaemon

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
