"""Spawning (part of host): the only place that forks or posix_spawns.

Children are spawned in their own session (so a stop reaches the whole tree through
the process group), with the listening sockets at fd 3.. and ``LISTEN_PID`` set to
their own pid (systemd's socket-activation protocol), in their cgroup where there is
one, and watched from birth (exits). Also the short commands of exec probes, run
as the app they check, and :func:`read_as`: a file read with an app's rights.
"""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import errno
import fcntl
import grp
import os
import pwd
import shlex
import shutil
import signal
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import SpawnError
from . import files
from .exits import Child, watch_child
from .stopping import signal_group

# signals whose disposition Python changes at start-up and that a child must get back
_RESTORED_SIGNALS = tuple(
    s for s in (signal.SIGPIPE, getattr(signal, "SIGXFSZ", None)) if s is not None
)
_FIRST_LISTEN_FD = 3


@dataclass(frozen=True)
class SpawnSpec:
    """Everything a child is created with."""

    argv: tuple[str, ...]
    env: dict[str, str]
    cwd: str | None = None
    user: str | None = None
    group: str | None = None
    umask: int | None = None
    listen_fds: tuple[int, ...] = ()  # placed at fd 3, 4, ... in the child
    listen_fdnames: tuple[str, ...] = ()
    stdin_fd: int | None = None  # the child's standard input (inetd style); None: /dev/null
    output_fd: int | None = None  # the child's stdout and stderr; None: /dev/null
    # the read end of that pipe, also held by the child (at fd 3 + len(listen_fds)) so
    # the pipe outlives a crash of the supervisor: the app's writes never hit EPIPE, and
    # a restarted supervisor takes the read end back with pidfd_getfd
    output_keeper_fd: int | None = None
    cgroup: str | None = None  # a cgroup v2 directory the child joins before it execs


def _resolve_ids(user: str | None, group: str | None) -> tuple[int | None, int | None, str | None]:
    uid = gid = None
    name = None
    if user is not None:
        try:
            pw = pwd.getpwnam(user)
        except KeyError as exc:
            raise SpawnError(f"no such user {user!r}") from exc
        uid, gid, name = pw.pw_uid, pw.pw_gid, pw.pw_name
    if group is not None:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError as exc:
            raise SpawnError(f"no such group {group!r}") from exc
    return uid, gid, name


def _become(uid: int | None, gid: int | None, user_name: str | None) -> None:
    """Drop to the app's group, supplementary groups and user (in a forked child)."""
    if gid is not None:
        os.setgid(gid)
        if user_name is not None:
            os.initgroups(user_name, gid)
        else:
            os.setgroups([gid])
    if uid is not None:
        os.setuid(uid)


def _child_after_fork(
    spec: SpawnSpec, errpipe_w: int, uid: int | None, gid: int | None, user_name: str | None
) -> None:
    """Runs in the forked child: set it up and exec. Never returns."""
    stage = "setup"
    try:
        signal.set_wakeup_fd(-1)
        for signum in signal.valid_signals():
            if signum in (signal.SIGKILL, signal.SIGSTOP):
                continue
            try:
                handler = signal.getsignal(signum)
            except ValueError:
                continue
            if handler not in (signal.SIG_DFL, None) or signum in _RESTORED_SIGNALS:
                signal.signal(signum, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        os.setsid()
        if spec.umask is not None:
            os.umask(spec.umask)
        # Move every fd we place out of the way first, so that dup2 onto 0..3+n cannot
        # clobber a source that happens to sit there.
        placed = list(spec.listen_fds)
        if spec.output_keeper_fd is not None:
            placed.append(spec.output_keeper_fd)
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 64) for fd in placed]
        out = fcntl.fcntl(spec.output_fd, fcntl.F_DUPFD_CLOEXEC, 64) if spec.output_fd else -1
        devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        inp = devnull
        if spec.stdin_fd is not None:
            inp = fcntl.fcntl(spec.stdin_fd, fcntl.F_DUPFD_CLOEXEC, 64)
        os.dup2(inp, 0)
        os.dup2(out if out >= 0 else devnull, 1)
        os.dup2(out if out >= 0 else devnull, 2)
        for index, fd in enumerate(high):
            os.dup2(fd, _FIRST_LISTEN_FD + index)  # dup2 makes the target inheritable
        env = dict(spec.env)
        if spec.listen_fds:
            env["LISTEN_FDS"] = str(len(spec.listen_fds))
            env["LISTEN_PID"] = str(os.getpid())
            env["LISTEN_FDNAMES"] = ":".join(spec.listen_fdnames)
        if spec.cgroup is not None:
            stage = "cgroup"
            with open(os.path.join(spec.cgroup, "cgroup.procs"), "w") as f:
                f.write("0")  # before we drop root: the app's user cannot write there
        stage = "user"
        _become(uid, gid, user_name)
        stage = "cwd"
        if spec.cwd is not None:
            os.chdir(spec.cwd)
        stage = "exec"
        os.execvpe(spec.argv[0], list(spec.argv), env)
    except BaseException as exc:  # report whatever went wrong, then die without cleanup
        err = getattr(exc, "errno", 0) or 0
        msg = getattr(exc, "strerror", None) or str(exc)
        try:
            os.write(errpipe_w, f"{stage}\0{err}\0{msg}".encode(errors="replace"))
        finally:
            os._exit(127)
    os._exit(127)


def spawn(spec: SpawnSpec, loop: asyncio.AbstractEventLoop) -> Child:
    """Start ``spec``'s process; return once it runs, or raise SpawnError.

    Without a user or group to switch to, the child is made by posix_spawn (vfork:
    about ten times cheaper than forking this process), and a tiny /bin/sh
    trampoline, which execs the app in place (same pid), sets what posix_spawn
    cannot: the working directory, the umask and LISTEN_PID (the child's own pid).
    Switching users takes the fork path, which does everything in the child.
    """
    if not spec.argv:
        raise SpawnError("empty command")
    if spec.user is None and spec.group is None:
        return watch_child(_posix_spawn(spec), loop)
    return _fork_spawn(spec, loop)


_SIGNALS_TO_DEFAULT = frozenset(
    s for s in signal.valid_signals() if s not in (signal.SIGKILL, signal.SIGSTOP)
)
_TRAMPOLINE = "/bin/sh"


def _resolve_executable(spec: SpawnSpec) -> str:
    """The program's path, checked now so a bad command is a clear spawn error."""
    program = spec.argv[0]
    if "/" in program:
        path = program if spec.cwd is None else os.path.join(spec.cwd, program)
        if not os.path.exists(path):
            raise SpawnError(f"command not found: {program}")
        if not os.access(path, os.X_OK) or os.path.isdir(path):
            raise SpawnError(f"permission denied executing {program}")
        return path if os.path.isabs(path) else os.path.abspath(path)
    found = shutil.which(program, path=spec.env.get("PATH", os.defpath))
    if found is None:
        raise SpawnError(f"command not found: {program}")
    return found


def _posix_spawn(spec: SpawnSpec) -> int:
    executable = _resolve_executable(spec)
    if spec.cwd is not None and not os.path.isdir(spec.cwd):
        raise SpawnError(f"cannot change to directory {spec.cwd}: no such directory")
    env = dict(spec.env)
    actions: list[tuple[int, ...]] = []
    devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        out = spec.output_fd if spec.output_fd is not None else devnull
        # file actions run in order in the child: move every source above the fds
        # we fill first (as the fork path does), so no dup2 can clobber a source
        placed = list(spec.listen_fds)
        if spec.output_keeper_fd is not None:
            placed.append(spec.output_keeper_fd)
        inp = spec.stdin_fd if spec.stdin_fd is not None else devnull
        base = max([*placed, out, devnull, inp, 2 + len(placed)]) + 1  # above every source
        high = list(range(base, base + len(placed)))
        for src, tmp in zip(placed, high, strict=True):
            actions.append((os.POSIX_SPAWN_DUP2, src, tmp))
        if inp != devnull:  # moved up too, so that filling 1 and 2 cannot clobber it
            actions.append((os.POSIX_SPAWN_DUP2, inp, base + len(placed)))
            inp = base + len(placed)
        actions += [
            (os.POSIX_SPAWN_DUP2, inp, 0),
            (os.POSIX_SPAWN_DUP2, out, 1),
            (os.POSIX_SPAWN_DUP2, out, 2),
        ]
        for index, tmp in enumerate(high):
            actions.append((os.POSIX_SPAWN_DUP2, tmp, _FIRST_LISTEN_FD + index))
            actions.append((os.POSIX_SPAWN_CLOSE, tmp))
        script = []
        if spec.cgroup is not None:
            target = shlex.quote(os.path.join(spec.cgroup, "cgroup.procs"))
            script.append(
                f"{{ echo 0 > {target}; }} 2>/dev/null"
                f" || {{ echo 'cannot join cgroup {spec.cgroup}' >&2; exit 125; }}"
            )
        if spec.cwd is not None:
            script.append('cd -- "$1" || exit 126')
        if spec.umask is not None:
            script.append(f"umask {spec.umask:03o}")
        if spec.listen_fds:
            env["LISTEN_FDS"] = str(len(spec.listen_fds))
            env["LISTEN_FDNAMES"] = ":".join(spec.listen_fdnames)
            script.append("LISTEN_PID=$$; export LISTEN_PID")
        if script:
            script.append('shift; exec "$@"')
            path = _TRAMPOLINE
            argv_exec = [
                _TRAMPOLINE,
                "-c",
                "; ".join(script),
                "sh",
                spec.cwd or ".",
                executable,
                *spec.argv[1:],
            ]
        else:
            path, argv_exec = executable, list(spec.argv)
        try:
            return os.posix_spawn(
                path,
                argv_exec,
                env,
                file_actions=actions,
                setsid=True,
                setsigdef=_SIGNALS_TO_DEFAULT,
                setsigmask=(),
            )
        except OSError as exc:
            raise SpawnError(f"cannot start {spec.argv[0]}: {exc.strerror}") from exc
    finally:
        os.close(devnull)


def _fork_spawn(spec: SpawnSpec, loop: asyncio.AbstractEventLoop) -> Child:
    """Fork, set the child up in Python (user, group, ...), exec; SpawnError if not."""
    uid, gid, user_name = _resolve_ids(spec.user, spec.group)
    if uid is not None and os.geteuid() != 0 and uid != os.geteuid():
        raise SpawnError(f"cannot run as user {spec.user!r}: the supervisor is not root")
    errpipe_r, errpipe_w = os.pipe2(os.O_CLOEXEC)
    # Block signals across fork so the child cannot run our Python handlers (which
    # would write to the parent's wakeup fd) before it has reset them.
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    pid = -1
    try:
        pid = os.fork()
        if pid == 0:
            os.close(errpipe_r)
            _child_after_fork(spec, errpipe_w, uid, gid, user_name)
    finally:
        if pid != 0:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    os.close(errpipe_w)
    try:
        report = b""
        while chunk := os.read(errpipe_r, 4096):  # EOF: exec happened (the pipe was CLOEXEC)
            report += chunk
    finally:
        os.close(errpipe_r)
    if report:
        os.waitpid(pid, 0)  # it has exited with 127; reap it now
        stage, err, msg = [*report.decode(errors="replace").split("\0"), "", ""][:3]
        raise SpawnError(_describe_spawn_failure(spec, stage, int(err or 0), msg))
    return watch_child(pid, loop)


def _describe_spawn_failure(spec: SpawnSpec, stage: str, err: int, msg: str) -> str:
    if stage == "exec" and err == errno.ENOENT:
        return f"command not found: {spec.argv[0]}"
    if stage == "exec" and err == errno.EACCES:
        return f"permission denied executing {spec.argv[0]}"
    if stage == "cwd":
        return f"cannot change to directory {spec.cwd}: {msg}"
    if stage == "cgroup":
        return f"cannot join cgroup {spec.cgroup}: {msg}"
    if stage == "user":
        return f"cannot switch to user {spec.user or ''} / group {spec.group or ''}: {msg}"
    return f"cannot start {spec.argv[0]} ({stage}): {msg}"


async def run_command(
    spec: SpawnSpec, timeout: float, loop: asyncio.AbstractEventLoop
) -> tuple[int | None, str]:
    """Run a short command (an exec probe) in its own session; (exit code, output).

    ``spec`` is the app's: its user, group, umask, environment, working directory and
    cgroup (a check runs with the rights of the app it checks, never root's). The code
    is None when it timed out (its whole group is then killed). It is spawned and
    watched like an app, so no other child watcher ever competes with ours.
    """
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    try:
        child = spawn(dataclasses.replace(spec, output_fd=write_fd, output_keeper_fd=None), loop)
    except SpawnError as exc:
        os.close(read_fd)
        return 127, exc.message
    finally:
        os.close(write_fd)
    os.set_blocking(read_fd, False)
    chunks: list[bytes] = []

    def on_readable() -> None:
        try:
            data = os.read(read_fd, 65536)
        except BlockingIOError:
            return
        if not data or sum(map(len, chunks)) > 65536:
            loop.remove_reader(read_fd)
        if data:
            chunks.append(data)

    loop.add_reader(read_fd, on_readable)
    try:
        status = await asyncio.wait_for(asyncio.shield(child.exited), timeout)
        code: int | None = status.as_int
    except TimeoutError:
        signal_group(child.pgid, signal.SIGKILL)
        await child.exited
        code = None
    finally:
        loop.remove_reader(read_fd)
        try:
            while data := os.read(read_fd, 65536):
                chunks.append(data)
        except (BlockingIOError, OSError):
            pass
        os.close(read_fd)
        signal_group(child.pgid, signal.SIGKILL)  # no leftovers from a probe
    return code, b"".join(chunks).decode(errors="replace")


_READ_AS_TIMEOUT = 10.0  # a file on a hung mount must not hold a spawn forever


async def read_as(
    path: str,
    limit: int,
    user: str | None,
    group: str | None,
    loop: asyncio.AbstractEventLoop,
) -> bytes:
    """The bytes of regular file ``path``, read with the rights of ``user``/``group``.

    A file the daemon reads for an app (its env_file, its re-exec pidfile) must be
    one the app's user could read itself: a forked child drops to that user and
    reads it with :func:`files.read_regular` (no untrusted link followed, no FIFO,
    at most ``limit`` bytes), so the kernel decides, ACLs included. The daemon only
    waits on a pipe, never on the file: a hung mount costs the child, killed after
    ``_READ_AS_TIMEOUT``. Raises ``OSError`` naming the path (never its content);
    SpawnError for an unknown user. An app without ``user``/``group`` runs as root:
    its file is read here, with the same checks.
    """
    if user is None and group is None:
        return files.read_regular(path, limit)
    uid, gid, user_name = _resolve_ids(user, group)
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    pid = -1
    try:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            os.close(read_fd)
            _read_in_child(write_fd, path, limit, uid, gid, user_name)
    finally:
        if pid != 0:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    os.close(write_fd)
    child = watch_child(pid, loop)  # before the loop runs again: its exit is ours
    try:
        report = await asyncio.wait_for(_read_all(read_fd, limit + 4096, loop), _READ_AS_TIMEOUT)
    except TimeoutError:
        raise OSError(errno.ETIMEDOUT, f"reading {path} timed out", path) from None
    finally:
        os.close(read_fd)
        if child.alive:
            signal_group(pid, signal.SIGKILL)
        await child.exited
    if report[:1] == b"\0":
        return report[1:]
    err, _, why = report[1:].decode(errors="replace").partition("\0")
    raise OSError(int(err) if err.isdigit() else errno.EIO, why or "cannot read", path)


def _read_in_child(
    write_fd: int, path: str, limit: int, uid: int | None, gid: int | None, user: str | None
) -> None:
    """In the forked child: become the app's user, read, report on the pipe, exit.
    Signals stay blocked (the parent's handlers must never run here)."""
    try:
        signal.set_wakeup_fd(-1)
        os.setsid()  # its own group: the timeout's kill reaches it alone
        _become(uid, gid, user)
        report = b"\0" + files.read_regular(path, limit)
    except OSError as exc:
        report = b"\1" + f"{exc.errno or 0}\0{exc.strerror or exc}".encode(errors="replace")
    except BaseException as exc:
        report = b"\1" + f"0\0{exc}".encode(errors="replace")
    try:
        view = memoryview(report)
        while view:
            view = view[os.write(write_fd, view) :]
    finally:
        os._exit(0)


async def _read_all(fd: int, limit: int, loop: asyncio.AbstractEventLoop) -> bytes:
    """Everything written to pipe ``fd`` until EOF (at most ``limit`` bytes kept)."""
    os.set_blocking(fd, False)
    chunks: list[bytes] = []
    size = 0
    done: asyncio.Future[None] = loop.create_future()

    def on_readable() -> None:
        nonlocal size
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError as exc:
            loop.remove_reader(fd)
            if not done.done():
                done.set_exception(exc)
            return
        if data and size < limit:
            chunks.append(data)
            size += len(data)
        if not data and not done.done():
            loop.remove_reader(fd)
            done.set_result(None)

    loop.add_reader(fd, on_readable)
    try:
        await done
    finally:
        loop.remove_reader(fd)
    return b"".join(chunks)


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Have the kernel SIGKILL this child when the daemon dies (after the credential
    change, which would clear it): a daemon killed mid-work leaves no worker behind."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


async def call_as(
    work: Callable[[], tuple[int, str]],
    user: str | None,
    group: str | None,
    umask: int | None,
    timeout: float,
    loop: asyncio.AbstractEventLoop,
    keep_fds: tuple[int, ...] = (),
) -> tuple[int | None, str]:
    """Run ``work`` in a forked child with the rights of ``user``/``group``; its (exit
    code, message), or (None, "") when it ran past ``timeout`` (its group is killed).

    For work done *for* an app in places the app's user owns (unpacking an artifact
    into its release root, reading a local artifact path): whatever it creates is
    the app's, and the kernel refuses it what the app's user may not do. The child
    sits in its own session, dies with the daemon, and never runs the daemon's
    signal handlers or event loop. Of the daemon's fds it keeps only ``keep_fds``
    (the directory and file it works on) and 0-2; having changed its uid it is not
    dumpable, so the app's own processes cannot ptrace it.
    """
    uid, gid, user_name = _resolve_ids(user, group)
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    pid = -1
    try:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            os.close(read_fd)
            _close_all_but((0, 1, 2, write_fd, *keep_fds))
            _work_in_child(work, write_fd, uid, gid, user_name, umask)
    finally:
        if pid != 0:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    os.close(write_fd)
    child = watch_child(pid, loop)
    try:
        report = await asyncio.wait_for(_read_all(read_fd, 65536, loop), timeout)
        status = await child.exited
    except TimeoutError:
        return None, ""
    finally:
        os.close(read_fd)
        if child.alive:
            signal_group(pid, signal.SIGKILL)
        await child.exited
    return status.as_int, report.decode(errors="replace")


def _close_all_but(keep: tuple[int, ...]) -> None:
    low = 0
    for fd in sorted(set(keep)):
        if fd > low:  # closerange(n, n) would be close_range(n, n - 1): everything above n
            os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, os.sysconf("SC_OPEN_MAX"))


def _work_in_child(
    work: Callable[[], tuple[int, str]],
    write_fd: int,
    uid: int | None,
    gid: int | None,
    user: str | None,
    umask: int | None,
) -> None:
    """In the forked child: become the app's user, work, report on the pipe, exit."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        os.setsid()  # its own group: the timeout's kill reaches it (and only it)
        if umask is not None:
            os.umask(umask)
        _become(uid, gid, user)
        _die_with_parent()
        if os.getppid() == 1:  # the daemon died before prctl took effect
            os._exit(1)
        code, message = work()
    except BaseException as exc:
        message = f"{exc.__class__.__name__}: {exc}"
    try:
        view = memoryview(message.encode(errors="replace")[:60000])
        while view:
            view = view[os.write(write_fd, view) :]
    finally:
        os._exit(code)
