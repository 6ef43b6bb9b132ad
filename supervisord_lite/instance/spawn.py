"""Making a generation: the spawn of a fresh process, or following an app's re-exec.

:func:`spawn` builds the process's environment and spec from the config and forks it;
the marker the child carries is made durable first (``Runtime.on_spawning``: no
record, no process). :func:`follow_reexec` signals a running master to re-execute
itself and follows its pidfile to the new master. Neither knows the instance: they
get where the generation runs (a :class:`~generation.Spot`), its number and release.
"""

from __future__ import annotations

import asyncio
import os
import time

from ..config.settings import AppConfig
from ..config.values import render
from ..errors import SpawnError
from ..host import envfile, exits, procs, spawning, stopping
from ..state.journal import MARK_ENV, new_marker
from .generation import Generation, Runtime, Spot, config_digest
from .output import LogSink, PipeReader

_ENV_FROM_OUR_SYSTEMD = (
    "NOTIFY_SOCKET",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "INVOCATION_ID",
)

_SPAWN_SLICE = 0.02  # seconds of back-to-back spawning before the loop gets a turn
_spawning_since = 0.0


async def pace_spawns() -> None:
    """Fork is synchronous: when a thousand instances start at once, let the event
    loop serve supctl, HTTP, signals and exits between slices of spawning."""
    global _spawning_since
    now = time.monotonic()
    if now - _spawning_since > _SPAWN_SLICE:
        await asyncio.sleep(0)
        _spawning_since = time.monotonic()


async def app_env(
    spot: Spot, number: int, release: str | None, loop: asyncio.AbstractEventLoop
) -> dict[str, str]:
    """The environment a process of the app gets (its checks' too): the daemon's, less
    what our own systemd gave us, then the env_file (read with the app's rights:
    SpawnError naming the file and line), then ``env:`` (which wins), then ours."""
    cfg = spot.cfg
    values = spot.values(number, release)
    env = {k: v for k, v in os.environ.items() if k not in _ENV_FROM_OUR_SYSTEMD}
    env.update(await envfile.for_spawn(cfg, loop))
    env.update({k: render(v, values) for k, v in cfg.env.items()})
    env.update(
        {
            "SUPERVISOR_APP": spot.app,
            "SUPERVISOR_INSTANCE": spot.name,
            "SUPERVISOR_GENERATION": str(number),
            "SUPERVISOR_RELEASE": release or "",
        }
    )
    if values["port"]:
        env["PORT"] = values["port"]
    return env


async def app_spawn_spec(
    spot: Spot,
    number: int,
    release: str | None,
    argv: tuple[str, ...],
    cgroup: str | None,
    loop: asyncio.AbstractEventLoop,
    cwd: str | None = None,
) -> spawning.SpawnSpec:
    """How a short command runs *as the app* (an exec check, a deploy task): the app's
    user, group, umask and environment, in ``cwd`` (default: the app's), in
    ``cgroup``; never root's rights for a script the app's user may write.
    SpawnError when the environment cannot be made (the env_file)."""
    cfg = spot.cfg
    values = spot.values(number, release)
    return spawning.SpawnSpec(
        argv=tuple(render(a, values) for a in argv),
        env=await app_env(spot, number, release, loop),
        cwd=cwd if cwd is not None else render(cfg.cwd, values) if cfg.cwd else None,
        user=cfg.user,
        group=cfg.group,
        umask=cfg.umask,
        cgroup=cgroup,
    )


async def spawn(
    spot: Spot,
    rt: Runtime,
    sink: LogSink,
    number: int,
    release: str | None,
    loop: asyncio.AbstractEventLoop,
) -> Generation:
    """Spawn one process of an instance. Every failure (EMFILE, ENOMEM, an error of
    any kind) is a SpawnError with its reason: a failed start, never a stuck one."""
    try:
        env = await app_env(spot, number, release, loop)
        return _spawn(spot, rt, sink, number, release, env, loop)
    except SpawnError:
        raise
    except Exception as exc:
        raise SpawnError(f"cannot start: {exc}") from exc


def _spawn(
    spot: Spot,
    rt: Runtime,
    sink: LogSink,
    number: int,
    release: str | None,
    env: dict[str, str],
    loop: asyncio.AbstractEventLoop,
) -> Generation:
    cfg = spot.cfg
    values = spot.values(number, release)
    if rt.notify_socket is not None and cfg.needs_notify_socket:
        env["NOTIFY_SOCKET"] = rt.notify_socket
        if cfg.watchdog is not None:
            env["WATCHDOG_USEC"] = str(int(cfg.watchdog * 1_000_000))
    marker = new_marker(spot.app, spot.name, number)
    env[MARK_ENV] = marker
    try:
        rt.on_spawning(marker)  # the record comes first: no record, no process
    except OSError as exc:
        raise SpawnError(f"cannot record the spawn in the state directory: {exc}") from exc
    cgroup = None
    if rt.cgroups is not None:  # made before the process: the kernel's record
        cgroup = rt.cgroups.create(spot.app, spot.name, number)
    use_fds = bool(cfg.socket_activation and rt.sockets) and not cfg.socket_on_stdin
    on_stdin = rt.sockets[0] if cfg.socket_on_stdin and rt.sockets else None
    reader = PipeReader(loop, sink)
    spec = spawning.SpawnSpec(
        argv=tuple(render(a, values) for a in cfg.command),
        env=env,
        cwd=render(cfg.cwd, values) if cfg.cwd else None,
        user=cfg.user,
        group=cfg.group,
        umask=cfg.umask,
        listen_fds=tuple(s.fileno() for s in rt.sockets) if use_fds else (),
        listen_fdnames=tuple(spot.app for _ in rt.sockets) if use_fds else (),
        stdin_fd=on_stdin.fileno() if on_stdin is not None else None,
        output_fd=reader.write_fd,
        output_keeper_fd=reader.read_fd,
        cgroup=cgroup,
    )
    try:
        child = spawning.spawn(spec, loop)
    except BaseException:
        reader.close()
        raise
    finally:
        reader.child_started()
    gen = Generation(
        number,
        child,
        reader,
        release,
        marker=marker,
        config_digest=config_digest(cfg),
        cgroup=cgroup,
    )
    if spec.listen_fds:
        gen.listen_fd = 3
        gen.listen_inode = os.fstat(spec.listen_fds[0]).st_ino
    elif on_stdin is not None:
        gen.listen_fd = 0
        gen.listen_inode = os.fstat(on_stdin.fileno()).st_ino
    gen.keeper_fd = 3 + len(spec.listen_fds)
    gen.pipe_inode = os.fstat(reader.read_fd).st_ino
    rt.on_generation(gen, True)
    spot.log.info("spawned", pid=child.pid, generation=number)
    return gen


async def _new_master(
    pidfile: str, old_pid: int, cfg: AppConfig, loop: asyncio.AbstractEventLoop
) -> int | None:
    """The re-executed master, once it wrote its pid: Unicorn writes PIDFILE (the
    old one moves to .oldbin); gunicorn writes PIDFILE.2 while the old one lives."""
    tree = procs.tree_pids(old_pid)
    for path in (pidfile, pidfile + ".2"):
        pid = await _read_pidfile(path, cfg, loop)
        if pid is not None and pid != old_pid and pid in tree:
            return pid
    return None


async def _read_pidfile(path: str, cfg: AppConfig, loop: asyncio.AbstractEventLoop) -> int | None:
    """The pid in an app's pidfile, read with the app's rights (a small regular file,
    no link followed; the caller checks whose pid it is); None when there is none."""
    try:
        data = await spawning.read_as(path, 64, cfg.user, cfg.group, loop)
    except (OSError, SpawnError):
        return None
    text = data.decode("ascii", errors="replace").strip()
    return int(text) if text.isdigit() and len(text) < 12 else None


async def follow_reexec(
    spot: Spot,
    rt: Runtime,
    old: Generation,
    number: int,
    release: str | None,
    loop: asyncio.AbstractEventLoop,
) -> Generation:
    """Signal the app to re-exec itself and follow its pidfile to the new master.

    The new master is the old one's child until the old one exits; we are a
    subreaper, so it then becomes ours. It shares the old master's process group.
    """
    reload = spot.cfg.reload
    timeout = spot.cfg.ready.timeout
    assert reload.signal is not None and reload.pidfile is not None
    pidfile = render(reload.pidfile, spot.values(number, release))
    old_pid = old.pid
    children_before = procs.direct_children(old_pid)
    if not stopping.signal_pid(old_pid, reload.signal):
        raise SpawnError(f"cannot send {reload.signal.name} to pid {old_pid}")
    deadline = time.monotonic() + timeout
    pause = 0.01
    while True:
        if old.child.exited.done():
            raise SpawnError(f"the old master (pid {old_pid}) exited before a new one appeared")
        pid = await _new_master(pidfile, old_pid, spot.cfg, loop)
        if pid is not None:
            break
        if time.monotonic() >= deadline:
            # a new master may have started without saying so where we look: kill
            # what the old master forked since the signal, so only it remains
            for stray in procs.direct_children(old_pid) - children_before:
                stopping.kill_tree(stray)
            raise SpawnError(
                f"no new master in {pidfile} within {timeout:g}s after {reload.signal.name}"
            )
        await asyncio.sleep(pause)
        pause = min(pause * 1.5, 0.1)
    child = exits.watch_child(pid, loop, group=old.child.pgid)
    gen = Generation(
        number,
        child,
        old.reader,
        release,
        marker=old.marker,
        config_digest=config_digest(spot.cfg),
        cgroup=old.cgroup,
    )
    rt.on_generation(gen, True)
    spot.log.info("reexec_followed", old_pid=old_pid, pid=pid, generation=number)
    return gen
