"""Per-instance cgroups, where cgroup v2 is delegated to the daemon.

With ``Delegate=yes`` in the unit, systemd hands the service's cgroup to the daemon
(and marks it with the ``trusted.delegate`` extended attribute). The daemon then
moves itself into a leaf of its own (``daemon``) and runs every generation of every
instance in a cgroup of its own, ``app.APP.INSTANCE.gGENERATION``, created *before*
the process (the child joins it before it execs the app). That gives what process
groups cannot:

- a stop reaches every process the instance started, also one that left its session
  and cleaned its environment (``cgroup.kill`` once the stop timeout is spent);
- a successor daemon finds every process of every instance in the kernel itself,
  whatever the record says;
- a pid is a member or not: a reused pid is never mistaken for the instance's;
- RSS and CPU are the cgroup's (``memory.current`` where the memory controller is
  enabled, ``cpu.stat``).

Without delegation (a terminal, a container, a unit without ``Delegate=yes``) none
of this is used and the daemon falls back to process groups and markers.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

from ..log import get_logger

log = get_logger("cgroups")

_DAEMON_LEAF = "daemon"
_PREFIX = "app."
_LEFTOVER_WAIT = 1.0  # seconds create() waits for a dead daemon's leftovers to die


def _cgroup_of(pid: int | str) -> str | None:
    """The cgroup v2 path of a process (``"self"``: ours), None when unknown."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            for line in f:
                if line.startswith("0::"):
                    return line[3:].strip()
    except OSError:
        return None
    return None


def cgroup2_mount() -> str | None:
    """Where cgroup v2 is mounted (None: it is not)."""
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                if right.split(" ", 1)[0] == "cgroup2":
                    return left.split()[4]
    except OSError:
        return None
    return None


def _delegated(path: str) -> bool:
    for attr in ("trusted.delegate", "user.delegate"):
        try:
            if os.getxattr(path, attr) == b"1":
                return True
        except OSError:
            continue
    return False


class Cgroups:
    """The delegated subtree: where instances' cgroups are made, read and killed."""

    def __init__(self, base: str) -> None:
        self.base = base

    @classmethod
    def detect(cls, fresh_start: bool = True) -> Cgroups | None:
        """The daemon's delegated cgroup, set up for instances; None without one.

        Controllers (memory, pids, cpu) are enabled for the instances only when the
        daemon was *started* in its leaf (systemd >= 254's ``DelegateSubgroup=``): a
        cgroup with controllers enabled for its children may hold no process, so an
        older systemd could not start a restarted daemon in the service's cgroup."""
        own, mount = _cgroup_of("self"), cgroup2_mount()
        if own is None or mount is None:
            return None
        path = os.path.normpath(os.path.join(mount, own.lstrip("/")))
        in_leaf = os.path.basename(path) == _DAEMON_LEAF and _delegated(os.path.dirname(path))
        if in_leaf:
            path = os.path.dirname(path)  # DelegateSubgroup=, or re-executed (upgrade)
        if not _delegated(path):
            return None
        tree = cls(path)
        try:
            leaf = os.path.join(path, _DAEMON_LEAF)
            os.makedirs(leaf, exist_ok=True)
            # no process may stay in an inner cgroup that has controllers for children
            with open(os.path.join(leaf, "cgroup.procs"), "w") as f:
                f.write("0")
        except OSError as exc:
            log.warning("cgroups_unusable", path=path, error=str(exc))
            return None
        if in_leaf and fresh_start:
            tree._enable_controllers()
        log.info("cgroups_delegated", path=path, controllers=tree.controllers())
        return tree

    def _enable_controllers(self) -> None:
        """memory and pids for the instances' cgroups, where the kernel offers them."""
        try:
            with open(os.path.join(self.base, "cgroup.controllers")) as f:
                offered = set(f.read().split())
        except OSError:
            return
        for controller in ("memory", "pids", "cpu"):
            if controller not in offered:
                continue
            control = os.path.join(self.base, "cgroup.subtree_control")
            with contextlib.suppress(OSError), open(control, "w") as f:
                f.write(f"+{controller}")

    def controllers(self) -> list[str]:
        try:
            with open(os.path.join(self.base, "cgroup.subtree_control")) as f:
                return f.read().split()
        except OSError:
            return []

    def path_for(self, app: str, instance: str, generation: int) -> str:
        return os.path.join(self.base, f"{_PREFIX}{app}.{instance}.g{generation}")

    def create(self, app: str, instance: str, generation: int) -> str:
        """A new, empty cgroup for one generation (before its process exists)."""
        path = self.path_for(app, instance, generation)
        with contextlib.suppress(FileExistsError):
            os.mkdir(path)
        leftovers = procs(path)
        if leftovers:  # a dead daemon's: never share a cgroup with them
            kill(path)
            # SIGKILL is delivered, not yet done: a dying member still counts in the
            # cgroup's memory and CPU, and may still hold what it held. Bounded: a
            # process stuck in the kernel (D state) is not waited for past this.
            deadline = time.monotonic() + _LEFTOVER_WAIT
            while leftovers and time.monotonic() < deadline:
                time.sleep(0.002)
                leftovers = procs(path)
            if leftovers:
                log.warning("cgroup_leftovers_linger", path=path, pids=leftovers)
        return path

    def instance_cgroups(self) -> list[str]:
        """Every instance cgroup under the subtree (for a successor's sweep)."""
        try:
            names = os.listdir(self.base)
        except OSError:
            return []
        return [os.path.join(self.base, n) for n in names if n.startswith(_PREFIX)]


def procs(path: str) -> list[int]:
    """The live members of a cgroup (empty when it is gone)."""
    try:
        with open(os.path.join(path, "cgroup.procs")) as f:
            return [int(p) for p in f.read().split()]
    except (OSError, ValueError):
        return []


def signal_all(path: str, signum: int) -> None:
    for pid in procs(path):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


def kill(path: str) -> None:
    """SIGKILL every member, atomically where the kernel has ``cgroup.kill`` (5.14)."""
    try:
        with open(os.path.join(path, "cgroup.kill"), "w") as f:
            f.write("1")
    except OSError:
        signal_all(path, signal.SIGKILL)


def remove(path: str) -> bool:
    """Remove an empty cgroup; False while members remain (or it is gone already)."""
    try:
        os.rmdir(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True


def memory_bytes(path: str) -> int | None:
    try:
        with open(os.path.join(path, "memory.current")) as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def cpu_seconds(path: str) -> float | None:
    try:
        with open(os.path.join(path, "cpu.stat")) as f:
            for line in f:
                key, _, value = line.partition(" ")
                if key == "usage_usec":
                    return int(value) / 1e6
    except (OSError, ValueError):
        return None
    return None


def member(path: str, pid: int) -> bool:
    """The pid is (now) in that cgroup: what a named pid must be to be believed."""
    own = _cgroup_of(pid)
    return own is not None and path.endswith(own)
