"""The operating system: forking children, watching their exits, signalling, /proc.

This is the only module that forks, sends signals, or reads /proc. Children are
spawned in their own session (so a stop reaches the whole tree through the process
group), with the listening sockets at fd 3.. and ``LISTEN_PID`` set to their own
pid (systemd's socket-activation protocol). Exits are seen through a pidfd added to
the event loop: no polling, no thread per child, and never ``waitpid(-1)``; the
supervisor is a child subreaper, and orphans that it inherits (an app's stray
grandchildren, a re-executed master's predecessor) are reaped by pid on SIGCHLD
(found by a ``waitid(P_ALL, WNOWAIT)`` peek, which reaps nothing, or a listing).
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import fcntl
import grp
import os
import pwd
import shlex
import shutil
import signal
import socket
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from . import safefs, sockdiag
from .config import ListenAddress
from .errors import SpawnError

# signals whose disposition Python changes at start-up and that a child must get back
_RESTORED_SIGNALS = tuple(
    s for s in (signal.SIGPIPE, getattr(signal, "SIGXFSZ", None)) if s is not None
)
_PR_SET_CHILD_SUBREAPER = 36
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
    output_fd: int | None = None  # the child's stdout and stderr; None: /dev/null
    # the read end of that pipe, also held by the child (at fd 3 + len(listen_fds)) so
    # the pipe outlives a crash of the supervisor: the app's writes never hit EPIPE, and
    # a restarted supervisor takes the read end back with pidfd_getfd
    output_keeper_fd: int | None = None
    cgroup: str | None = None  # a cgroup v2 directory the child joins before it execs


@dataclass
class ExitStatus:
    """How a process ended: ``code`` for a normal exit, ``signal`` when killed."""

    code: int | None = None
    signal: int | None = None

    @property
    def as_int(self) -> int | None:
        """Exit code, or minus the signal number (the wire and /status form); None
        when unknown (a process we adopted but did not start has no waitable status)."""
        if self.code is not None:
            return self.code
        return -self.signal if self.signal is not None else None

    @property
    def clean(self) -> bool:
        return self.code == 0

    def describe(self) -> str:
        if self.code is None and self.signal is None:
            return "exited (status unknown: adopted from a previous daemon)"
        if self.signal is not None:
            try:
                name = signal.Signals(self.signal).name
            except ValueError:
                name = str(self.signal)
            return f"killed by {name}"
        return f"exited with status {self.code}"


@dataclass
class Child:
    """A spawned process: its pid (also its process group) and its exit future."""

    pid: int
    started_at: float  # time.monotonic() at spawn
    start_time: float  # the kernel's create time, to recognise the process
    exited: asyncio.Future[ExitStatus]
    _pidfd: int = -1
    group: int | None = None  # set when the process is not its group's leader

    @property
    def pgid(self) -> int:
        return self.group if self.group is not None else self.pid

    @property
    def alive(self) -> bool:
        return not self.exited.done()

    def uptime(self) -> float:
        return time.monotonic() - self.started_at


_SYS_PIDFD_GETFD = 438  # the same number on every Linux architecture


def pidfd_getfd(pidfd: int, target_fd: int) -> int:
    """Duplicate file descriptor ``target_fd`` of the process behind ``pidfd`` into ours
    (needs ptrace rights over it: root, or CAP_SYS_PTRACE)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = int(libc.syscall(_SYS_PIDFD_GETFD, pidfd, target_fd, 0))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"pidfd_getfd({target_fd}): {os.strerror(err)}")
    os.set_inheritable(fd, False)
    return fd


def take_fd(pid: int, target_fd: int) -> int:
    """A copy of another process's file descriptor (see pidfd_getfd)."""
    pidfd = os.pidfd_open(pid)
    try:
        return pidfd_getfd(pidfd, target_fd)
    finally:
        os.close(pidfd)


def find_fd(
    pids: Iterable[int], link: str, prefer: tuple[int, int] | None = None
) -> tuple[int, int] | None:
    """(pid, fd) of a descriptor whose /proc link reads ``link`` (``socket:[123]``)."""
    if prefer is not None:
        try:
            if os.readlink(f"/proc/{prefer[0]}/fd/{prefer[1]}") == link:
                return prefer
        except OSError:
            pass
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == link:
                    return pid, int(fd)
            except OSError:
                continue
    return None


def set_child_subreaper() -> None:
    """Make orphaned descendants re-parent to us (so re-exec'd masters stay ours)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


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
        os.dup2(devnull, 0)
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
        if gid is not None:
            os.setgid(gid)
            if user_name is not None:
                os.initgroups(user_name, gid)
            else:
                os.setgroups([gid])
        if uid is not None:
            os.setuid(uid)
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
        base = max([*placed, out, devnull, 2 + len(placed)]) + 1  # above every source
        high = list(range(base, base + len(placed)))
        for src, tmp in zip(placed, high, strict=True):
            actions.append((os.POSIX_SPAWN_DUP2, src, tmp))
        actions += [
            (os.POSIX_SPAWN_DUP2, devnull, 0),
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


def watch_child(pid: int, loop: asyncio.AbstractEventLoop, group: int | None = None) -> Child:
    """Track a process through a pidfd; its ``exited`` future resolves on exit.

    Usually a child of ours; also a re-executed master (a grandchild until its
    parent exits and it is re-parented to us, the subreaper). The exit status is
    known only for our own children (others report code -1).
    """
    start_time = process_identity(pid) or 0.0
    child = Child(pid, time.monotonic(), start_time, loop.create_future(), group=group)
    try:
        child._pidfd = os.pidfd_open(pid)
        _watched.add(pid)
    except ProcessLookupError:
        # already gone (and a zombie, since it is our child): reap it now
        _, status = os.waitpid(pid, 0)
        child.exited.set_result(_status_from_wait(status))
        return child
    loop.add_reader(child._pidfd, _on_pidfd_readable, child, loop)
    return child


def _status_from_wait(status: int) -> ExitStatus:
    if os.WIFSIGNALED(status):
        return ExitStatus(signal=os.WTERMSIG(status))
    return ExitStatus(code=os.waitstatus_to_exitcode(status))


def _on_pidfd_readable(child: Child, loop: asyncio.AbstractEventLoop) -> None:
    loop.remove_reader(child._pidfd)
    try:
        info = os.waitid(os.P_PIDFD, child._pidfd, os.WEXITED | os.WNOHANG)
    except ChildProcessError:
        info = None  # not our child (adopted after a crash): its status is not ours to see
    finally:
        os.close(child._pidfd)
        child._pidfd = -1
        _watched.discard(child.pid)
    result = ExitStatus()
    if info is not None:
        if info.si_code == os.CLD_EXITED:
            result = ExitStatus(code=info.si_status)
        else:
            result = ExitStatus(signal=info.si_status)
    if not child.exited.done():
        child.exited.set_result(result)


# pids whose exit a pidfd watcher owns (instances, probes, the upgrade's check): the
# orphan reaper never takes their status away from that watcher
_watched: set[int] = set()


def reap_orphans(tracked: Callable[[int], bool]) -> list[int]:
    """Reap exited children that no pidfd watches (orphans we inherited as subreaper)."""
    reaped: list[int] = []
    # the common case, on every SIGCHLD: the exited child was a watched one, already
    # reaped by its watcher, or an orphan; peeking at the first waitable child
    # (WNOWAIT) finds either without listing all our children (O(N) on a big host)
    for _ in range(1000):
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return reaped
        if info is None or info.si_pid == 0:
            return reaped
        if info.si_pid in _watched or tracked(info.si_pid):
            break  # its watcher takes it; others may wait behind it: look at them all
        try:
            got, _ = os.waitpid(info.si_pid, os.WNOHANG)
        except ChildProcessError:
            break
        if not got:
            break
        reaped.append(got)
    for pid in list_children():
        if pid in _watched or tracked(pid):
            continue
        try:
            got, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            continue
        if got:
            reaped.append(got)
    return reaped


def list_children() -> list[int]:
    """Pids of our direct children (zombies included), cheaply from /proc."""
    return sorted(direct_children(os.getpid()))


def signal_group(pgid: int, signum: int) -> bool:
    """Send ``signum`` to a process group; False when the group is already gone."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    return True


def signal_pid(pid: int, signum: int) -> bool:
    try:
        os.kill(pid, signum)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def group_alive(pgid: int) -> bool:
    """Whether any live (non-zombie) process remains in the group. kill(0) also
    succeeds for zombies, which another parent (init) may take a while to reap."""
    if not signal_group(pgid, 0):
        return False
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rfind(b")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != b"Z":
            return True
    return False


async def terminate(child: Child, signum: int, timeout: float, *, grace_poll: float = 0.02) -> None:
    """Stop a child's whole process group: ``signum``, wait, then SIGKILL.

    Waits for the leader through its exit future; leftover group members (workers
    that outlive their master) get the rest of the timeout, then SIGKILL, so no
    orphan stays behind.
    """
    deadline = time.monotonic() + timeout
    signal_group(child.pgid, signum)
    # a stopped (SIGSTOP) process would not act on the signal until continued
    signal_group(child.pgid, signal.SIGCONT)
    try:
        await asyncio.wait_for(asyncio.shield(child.exited), max(0.0, timeout))
    except TimeoutError:
        signal_group(child.pgid, signal.SIGKILL)
        await child.exited
    await reap_group(child.pgid, deadline, grace_poll=grace_poll)


async def reap_group(pgid: int, deadline: float, *, grace_poll: float = 0.02) -> None:
    """Wait for the rest of a process group to leave until ``deadline``, then SIGKILL it.

    There is no kernel event for "a process group became empty", so this checks at a
    short interval; it only runs while a stopped app still has stragglers.
    """
    while group_alive(pgid):
        if time.monotonic() >= deadline:
            signal_group(pgid, signal.SIGKILL)
            deadline = time.monotonic() + 5.0  # SIGKILL cannot be caught; just reaping
            if not group_alive(pgid):
                break
        await asyncio.sleep(grace_poll)


async def terminate_one(child: Child, signum: int, timeout: float) -> None:
    """Stop one process (not its group): a re-exec'd app's old master shares its
    process group with the new master, which must survive."""
    signal_pid(child.pid, signum)
    signal_pid(child.pid, signal.SIGCONT)
    try:
        await asyncio.wait_for(asyncio.shield(child.exited), max(0.0, timeout))
    except TimeoutError:
        signal_pid(child.pid, signal.SIGKILL)
        await child.exited


def kill_tree(pid: int) -> None:
    """SIGKILL a process and its descendants (a failed re-exec's new master)."""
    for p in tree_pids(pid):
        signal_pid(p, signal.SIGKILL)


def marked_processes(
    variable: str, markers: Iterable[str], among: Iterable[int] | None = None
) -> dict[int, str]:
    """Processes whose environment carries ``variable=MARKER`` for one of ``markers``
    (pid -> marker), among ``among`` or else every process on the host.

    The marker travels with a spawned tree through fork and exec, also into a process
    that left its session, so a stop or a successor daemon finds what a process group
    or the record alone would miss.
    """
    wanted = {f"{variable}={m}".encode(): m for m in markers}
    if not wanted:
        return {}
    prefix = f"{variable}=".encode()
    pids = among if among is not None else (int(e) for e in os.listdir("/proc") if e.isdigit())
    found: dict[int, str] = {}
    for pid in pids:
        if pid == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                data = f.read()
        except OSError:
            continue
        if prefix not in data:
            continue
        for var in data.split(b"\0"):
            marker = wanted.get(var)
            if marker is not None:
                found[pid] = marker
                break
    return found


def alive(pid: int) -> bool:
    """The pid is a live process (not a zombie waiting for its parent)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return False
    fields = data[data.rfind(b")") + 2 :].split()
    return bool(fields) and fields[0] != b"Z"


def stop_blocking(send: Callable[[int], object], left: Callable[[], bool], timeout: float) -> None:
    """The stop sequence, blocking (start-up, before the event loop): ``send`` TERM and
    CONT, wait up to ``timeout`` while ``left()``, then ``send`` SIGKILL."""
    send(signal.SIGTERM)
    send(signal.SIGCONT)
    deadline = time.monotonic() + timeout
    while left() and time.monotonic() < deadline:
        time.sleep(0.02)  # start-up, before the event loop: nothing else to do meanwhile
    if left():
        send(signal.SIGKILL)


async def stop_until(
    send: Callable[[int], object], left: Callable[[], bool], signum: int, deadline: float
) -> None:
    """The stop sequence, awaited: ``send`` ``signum`` and CONT, wait until ``deadline``
    while ``left()``, then ``send`` SIGKILL."""
    send(signum)
    send(signal.SIGCONT)
    while left() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    if left():
        send(signal.SIGKILL)


def _to_each(pids: list[int]) -> Callable[[int], object]:
    return lambda signum: [signal_pid(pid, signum) for pid in pids]


def stop_pids_blocking(pids: Iterable[int], timeout: float) -> None:
    """Stop processes that are not ours to wait for (a dead daemon's), by pid."""
    pids = list(pids)
    stop_blocking(_to_each(pids), lambda: any(alive(p) for p in pids), timeout)


async def stop_escaped(variable: str, marker: str, signum: int, deadline: float) -> list[int]:
    """After an instance's process group is gone: stop what its tree left behind
    outside the group (a grandchild that called setsid). Such a process was
    re-parented to us (we are a subreaper), so only our untracked children's trees
    are searched, not the host. ``signum``, then SIGKILL at ``deadline``."""
    among: set[int] = set()
    for pid in list_children():
        if pid not in _watched:  # every generation and probe is watched by its pidfd
            among |= tree_pids(pid)
    escaped = list(marked_processes(variable, [marker], among))
    if not escaped:
        return []
    await stop_until(_to_each(escaped), lambda: any(alive(p) for p in escaped), signum, deadline)
    reap_orphans(lambda pid: False)
    return escaped


def read_pidfile(path: str) -> int | None:
    """The pid in an app's pidfile: a small regular file, not read through a final
    symlink nor from a FIFO (the app writes it; the caller checks whose pid it is)."""
    data = safefs.read_small(path, 64)
    text = data.decode("ascii", errors="replace").strip() if data is not None else ""
    return int(text) if text.isdigit() and len(text) < 12 else None


def bind_listener(address: ListenAddress, backlog: int = 2048) -> socket.socket:
    """Bind and listen on an address the supervisor keeps open for an app's lifetime."""
    if address.path is not None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            st = os.stat(address.path)
            if stat.S_ISSOCK(st.st_mode):
                os.unlink(address.path)
        except FileNotFoundError:
            pass
        target: str | tuple[str, int] = address.path
    else:
        family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        target = (address.host, address.port)
    try:
        sock.bind(target)
    except OSError:
        sock.close()  # a refused bind (port taken) must not leak the fd
        raise
    sock.listen(backlog)
    sock.set_inheritable(False)
    return sock


# --- reading processes (/proc) --------------------------------------------------

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def read_usage(pids: Iterable[int]) -> tuple[float, int]:
    """(CPU seconds used so far, RSS bytes) summed over ``pids``, from /proc/PID/stat
    (one small read per process: cheap enough for every instance of a big host)."""
    cpu_ticks = rss_pages = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rfind(b")") + 2 :].split()
        try:
            cpu_ticks += int(fields[11]) + int(fields[12])  # utime, stime
            rss_pages += int(fields[21])
        except (IndexError, ValueError):
            continue
    return cpu_ticks / _CLOCK_TICKS, rss_pages * _PAGE_SIZE


def direct_children(pid: int) -> set[int]:
    """The children of one process (from /proc/PID/task/*/children)."""
    found: set[int] = set()
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found.update(int(c) for c in f.read().split())
        except OSError:
            continue
    return found


def tree_pids(pid: int) -> set[int]:
    """A process and all its descendants, walked through /proc/PID/task/*/children
    (cheap: it reads only the tree, not every process on the host)."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        p = todo.pop()
        if p not in found:
            found.add(p)
            todo.extend(direct_children(p))
    return found


def in_instance(pid: int, root: int, session: int) -> bool:
    """Whether ``pid`` is one of an instance's processes: a descendant of ``root``, or
    (a helper that daemonized) a member of ``root``'s own session ``session``. Only
    descendants of a session's leader can join it, so an app cannot name outsiders."""
    if pid in tree_pids(root):
        return True
    try:
        return os.getsid(root) == session and os.getsid(pid) == session
    except OSError:
        return False


def _stat_fields(pid: int) -> list[bytes] | None:
    """The fields of /proc/PID/stat after the command name (index 0: the state)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rfind(b")") + 2 :].split()


_btime: tuple[float, float] = (-1.0, 0.0)  # (monotonic when read, btime)


def _boot_time() -> float:
    """The boot time in seconds since the epoch, as /proc/stat says (it moves with the
    wall clock, so it is read again after a second; a boot of a thousand spawns reads
    the long /proc/stat once, not a thousand times)."""
    global _btime
    now = time.monotonic()
    if now - _btime[0] < 1.0:
        return _btime[1]
    with open("/proc/stat", "rb") as f:
        for line in f:
            if line.startswith(b"btime"):
                _btime = (now, float(line.split()[1]))
                return _btime[1]
    raise OSError("no btime in /proc/stat")


def ancestors(pid: int, limit: int = 32) -> list[int]:
    """pid, its parent, its grandparent... (for attributing a notify message). A parent
    younger than its child is a reused pid: the chain stops there."""
    chain: list[int] = []
    fields = _stat_fields(pid)
    while fields is not None and len(chain) < limit:
        chain.append(pid)
        try:
            ppid, started = int(fields[1]), int(fields[19])
        except (IndexError, ValueError):
            break
        if ppid <= 0 or ppid == pid:
            break
        fields = _stat_fields(ppid)
        try:
            if fields is None or int(fields[19]) > started:
                break
        except (IndexError, ValueError):
            break
        pid = ppid
    return chain


def _server_socket_inode(local_port: int, peer_port: int) -> int | None:
    """Inode of the server side of a loopback TCP connection peer_port -> local_port, from
    /proc/net/tcp{,6}: reads every socket on the host, so only a fallback for a kernel
    without sock_diag (see sockdiag.server_inode)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    local, remote, inode = fields[1], fields[2], fields[9]
                    if (
                        int(local.rsplit(":", 1)[1], 16) == local_port
                        and int(remote.rsplit(":", 1)[1], 16) == peer_port
                    ):
                        return int(inode)
        except (OSError, StopIteration, IndexError, ValueError):
            continue
    return None


def accepted_by(pids: Iterable[int], local: tuple[str, int], peer: tuple[str, int]) -> bool | None:
    """Who holds the server side of the TCP connection peer->local: True when one of
    ``pids`` does, False when another process accepted it, None while it still waits
    in the listen backlog (the kernel lists such a socket with inode 0).

    ``peer`` is the checker's own (client) address; the server side of its connection
    has it as the remote address. This is how a check is attributed to the generation
    that really accepted it on a socket shared with others.
    """
    try:
        inode = sockdiag.server_inode(local, peer)
    except OSError:  # no NETLINK_SOCK_DIAG (a kernel built without it, a seccomp filter)
        inode = _server_socket_inode(local[1], peer[1])
    if not inode:
        return None
    return find_fd(pids, f"socket:[{inode}]") is not None


def process_identity(pid: int) -> float | None:
    """The kernel's start time of a pid (with the pid, it identifies one process), in
    seconds since the epoch: the same figure as psutil's create_time, without its
    import (a few MiB of RSS and a slower spawn)."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    try:
        return float(fields[19]) / _CLOCK_TICKS + _boot_time()
    except (IndexError, ValueError, OSError):
        return None


async def run_command(
    argv: tuple[str, ...],
    env: dict[str, str],
    cwd: str | None,
    timeout: float,
    loop: asyncio.AbstractEventLoop,
) -> tuple[int | None, str]:
    """Run a short command (an exec probe) in its own session; (exit code, output).

    The code is None when it timed out (its group is then killed). It is spawned and
    watched like an app, so no other child watcher ever competes with ours.
    """
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    try:
        child = spawn(SpawnSpec(argv=argv, env=env, cwd=cwd, output_fd=write_fd), loop)
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
