"""One-shot deploy tasks: ``deploy.before`` and ``deploy.after`` commands, run as the app.

A task runs once per deploy in the new release's directory with the app's user,
group, umask and environment (the same spawn spec as its exec checks:
:func:`instance_spawn.app_spawn_spec`), in a cgroup of its own where cgroups are
delegated, and is killed whole (its process group, and its cgroup) at
``deploy.timeout``. Its exit status, duration and last lines of output are what the
deploy reports and the history records.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from dataclasses import dataclass

from ..config.settings import AppConfig
from ..errors import SpawnError
from ..host import cgroups as cgroup_ops
from ..host import spawning
from ..host.cgroups import Cgroups
from ..instance.generation import Spot
from ..instance.spawn import app_spawn_spec
from ..log import get_logger

log = get_logger("app")

OUTPUT_LINES = 20  # last lines of a task's output kept in the answer and the history
_runs = itertools.count(1)  # numbers the tasks' cgroups apart


@dataclass(frozen=True)
class TaskResult:
    phase: str  # "before" or "after"
    argv: tuple[str, ...]
    code: int | None  # None: killed at its timeout
    output: list[str]
    seconds: float

    @property
    def ok(self) -> bool:
        return self.code == 0

    @property
    def outcome(self) -> str:
        if self.code is None:
            return "killed at its timeout"
        return f"exit status {self.code}"


async def run_task(
    cfg: AppConfig,
    release: str,
    release_dir: str,
    phase: str,
    argv: tuple[str, ...],
    cgroups: Cgroups | None,
    loop: asyncio.AbstractEventLoop,
) -> TaskResult:
    """Run one task of ``release`` to its end (or its timeout)."""
    started = time.monotonic()
    spot = Spot(cfg.name, f"deploy-{phase}", cfg, None, log.bind(app=cfg.name, task=phase))
    cgroup = None
    try:
        if cgroups is not None:
            try:
                cgroup = cgroups.create(cfg.name, f"task-{phase}", next(_runs))
            except OSError:
                cgroup = None  # no cgroup for it: its process group is still killed
        try:
            spec = await app_spawn_spec(spot, 0, release, argv, cgroup, loop, cwd=release_dir)
        except SpawnError as exc:
            return TaskResult(phase, argv, 127, [exc.message], time.monotonic() - started)
        code, output = await spawning.run_command(spec, cfg.deploy.timeout, loop)
    finally:
        if cgroup is not None:
            cgroup_ops.kill(cgroup)  # what left the process group (setsid) goes too
            await _remove_cgroup(cgroup)
    lines = output.splitlines()[-OUTPUT_LINES:]
    return TaskResult(phase, spec.argv, code, lines, time.monotonic() - started)


async def _remove_cgroup(path: str) -> None:
    deadline = time.monotonic() + 2.0
    while not cgroup_ops.remove(path) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    if os.path.isdir(path):
        cgroup_ops.remove(path)
