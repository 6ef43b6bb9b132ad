"""What a restarted or re-executed daemon needs to take its apps back.

``STATE_DIR/state.json`` always holds, for every live generation, its pid, the
kernel's start time of that pid (so a reused pid is never adopted), its process
group, generation, release and the fd numbers *in the child* of its listening
socket and of its output pipe's read end. It is rewritten (atomically) whenever a
generation starts or ends.

Two ways back:
- ``upgrade``: the daemon re-executes itself; its own fds (listening sockets, output
  pipes, control and notify sockets, the state-dir lock) stay open across exec and
  their numbers travel in a handover file named by $SUPERVISORD_LITE_HANDOVER.
- a crash: a new daemon finds state.json, checks each pid against its start time,
  and copies the listening socket and the output pipe back out of the adopted child
  with pidfd_getfd (the child holds the pipe's read end exactly for this).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from ..host import cgroups, fds, files, procs, stopping
from ..host.cgroups import Cgroups
from ..log import get_logger
from ..paths import fd_store_name

log = get_logger("handover")

HANDOVER_ENV = "SUPERVISORD_LITE_HANDOVER"
# every process tree the daemon spawns carries SUPERVISORD_LITE_MARK=<its marker>
MARK_ENV = "SUPERVISORD_LITE_MARK"
_VERSION = 1


@dataclass
class InstanceRecord:
    pid: int
    pgid: int
    start_time: float
    generation: int
    release: str | None
    restarts: int = 0
    listen_fd: int | None = None  # fd number of its listening socket, in the child
    keeper_fd: int | None = None  # fd number of its output pipe's read end, in the child
    pipe_fd: int | None = None  # our own fd of the pipe's read end (upgrade only)
    running: bool = True  # False: it was still starting (or stopping): not adopted
    listen_inode: int | None = None  # the listening socket's inode (apps may move its fd)
    pipe_inode: int | None = None  # the output pipe's inode
    ready_since: float | None = None  # wall-clock time it became ready (for uptime)
    marker: str | None = None  # what its process tree carries in SUPERVISORD_LITE_MARK
    config_digest: str | None = None  # of the app config it was spawned with
    cgroup: str | None = None  # its generation's cgroup, where the daemon has cgroups


@dataclass
class AppRecord:
    release: str | None
    instances: dict[str, InstanceRecord] = field(default_factory=dict)
    sockets: dict[str, int] = field(default_factory=dict)  # address -> our fd (upgrade)
    should_run: bool = True  # False: an operator stopped the whole app
    stopped: list[str] = field(default_factory=list)  # instances an operator stopped
    # live processes that are not an instance's current generation (a swap's candidate,
    # a retiring generation): never adopted, stopped by a successor
    others: list[InstanceRecord] = field(default_factory=list)


@dataclass
class Handover:
    daemon_pid: int
    apps: dict[str, AppRecord] = field(default_factory=dict)
    control_fd: int | None = None
    notify_fd: int | None = None
    lock_fd: int | None = None
    upgrade: bool = False
    spare_sockets: dict[str, int] = field(default_factory=dict)  # address -> fd, any app
    config_path: str | None = None
    config_text: str | None = None  # what the predecessor ran (see Config.text)

    def to_json(self) -> dict[str, Any]:
        # plain dicts by hand: asdict's deep copy dominated the cost at 1000 instances
        return {
            "version": _VERSION,
            "daemon_pid": self.daemon_pid,
            "control_fd": self.control_fd,
            "notify_fd": self.notify_fd,
            "lock_fd": self.lock_fd,
            "upgrade": self.upgrade,
            "spare_sockets": self.spare_sockets,
            "config_path": self.config_path,
            "config_text": self.config_text,
            "apps": {
                name: {
                    "release": app.release,
                    "sockets": app.sockets,
                    "should_run": app.should_run,
                    "stopped": app.stopped,
                    "instances": {i: vars(rec).copy() for i, rec in app.instances.items()},
                    "others": [vars(rec).copy() for rec in app.others],
                }
                for name, app in self.apps.items()
            },
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Handover:
        apps = {}
        for name, app in data.get("apps", {}).items():
            instances = {i: InstanceRecord(**rec) for i, rec in app.get("instances", {}).items()}
            apps[name] = AppRecord(
                app.get("release"),
                instances,
                dict(app.get("sockets", {})),
                should_run=bool(app.get("should_run", True)),
                stopped=list(app.get("stopped", [])),
                others=[InstanceRecord(**rec) for rec in app.get("others", [])],
            )
        return cls(
            daemon_pid=int(data.get("daemon_pid", 0)),
            apps=apps,
            control_fd=data.get("control_fd"),
            notify_fd=data.get("notify_fd"),
            lock_fd=data.get("lock_fd"),
            upgrade=bool(data.get("upgrade", False)),
            spare_sockets=dict(data.get("spare_sockets", {})),
            config_path=data.get("config_path"),
            config_text=data.get("config_text"),
        )


def write_private_json(directory: str, name: str, data: dict[str, Any]) -> None:
    """Replace ``directory/name`` atomically with a 0600 file (never through a link)."""
    dir_fd = files.open_dir(directory)
    try:
        files.write_atomic(dir_fd, name, json.dumps(data, separators=(",", ":")).encode())
    finally:
        os.close(dir_fd)


def read(path: str) -> Handover | None:
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("version") != _VERSION:
        return None
    try:
        return Handover.from_json(data)
    except (TypeError, ValueError) as exc:
        log.warning("state_file_unreadable", path=path, error=str(exc))
        return None


def is_same_process(pid: int, start_time: float) -> bool:
    """The pid is alive and is the process we recorded (not a reused pid)."""
    now = procs.process_identity(pid)
    return now is not None and abs(now - start_time) < 0.05


def recover_after_crash(
    state: Handover,
    stored: dict[str, int] | None = None,
    unresolved: dict[str, str] | None = None,
    cgroups: Cgroups | None = None,
) -> Handover:
    """Turn a dead daemon's record into a handover: keep only processes that are
    still the ones recorded, and get their sockets and pipes back, from systemd's fd
    store (``stored``, by name) or else by copying them out of the process.

    A process whose listening socket cannot be had back is not adopted: it is
    stopped (TERM, then KILL), so that its address can be bound again. So is every
    other process that carries the marker of a record not adopted, or of a spawn
    whose pid never reached the record (``unresolved``: marker -> instance), so no
    process of the predecessor's is left running unsupervised or holding a port.
    """
    stored = dict(stored or {})
    stop_marked = set(unresolved or {})

    def evict_rec(rec: InstanceRecord) -> None:
        evict(rec)
        if rec.marker:
            stop_marked.add(rec.marker)

    recovered = Handover(
        daemon_pid=state.daemon_pid, config_path=state.config_path, config_text=state.config_text
    )
    for app_name, app in state.apps.items():
        rec_app = AppRecord(app.release, should_run=app.should_run, stopped=list(app.stopped))
        for other in app.others:
            other.pipe_fd = None  # the dead daemon's fd numbers mean nothing to us
            if other.marker:
                stop_marked.add(other.marker)
            if is_same_process(other.pid, other.start_time):
                log.warning("evicting_unsupervised", app=app_name, pid=other.pid)
                evict_rec(other)
        for address in app.sockets:
            fd = stored.pop(fd_store_name("sock", address), None)
            if fd is not None:
                rec_app.sockets[address] = fd
        holders: list[tuple[str, InstanceRecord]] = []
        for inst_name, inst in app.instances.items():
            inst_log = log.bind(instance=f"{app_name}:{inst_name}")
            inst.pipe_fd = None  # the dead daemon's fd numbers mean nothing to us
            if not is_same_process(inst.pid, inst.start_time):
                inst_log.info("not_adopted", pid=inst.pid)
                if inst.marker:
                    stop_marked.add(inst.marker)  # what its tree may have left behind
                continue
            if not inst.running:
                # it was still starting: not known to be good, and it holds the address
                inst_log.warning("evicting_unready", pid=inst.pid)
                evict_rec(inst)
                continue
            inst.pipe_fd = stored.pop(fd_store_name("pipe", str(inst.pid)), None)
            if inst.listen_fd is not None:
                holders.append((inst_name, inst))
            try:
                if inst.pipe_fd is None and inst.keeper_fd is not None:
                    inst.pipe_fd = _take_by_inode(inst, inst.keeper_fd, "pipe", inst.pipe_inode)
            except OSError as exc:
                # adopted; its output is lost
                inst_log.warning("adopt_pipe_failed", pid=inst.pid, error=str(exc))
            try:
                if inst.listen_fd is not None and len(rec_app.sockets) < len(app.sockets):
                    sock_fd = _take_by_inode(inst, inst.listen_fd, "socket", inst.listen_inode)
                    bound = _address_of(sock_fd)
                    if bound is None or bound in rec_app.sockets:
                        os.close(sock_fd)
                    else:
                        rec_app.sockets[bound] = sock_fd
            except OSError as exc:
                inst_log.warning("adopt_fds_failed", pid=inst.pid, error=str(exc))
            rec_app.instances[inst_name] = inst
        missing = set(app.sockets) - set(rec_app.sockets)
        if missing:
            # without its socket we could neither replace it nor bind the address
            for inst_name, inst in holders:
                log.warning(
                    "evicting_unadoptable",
                    instance=f"{app_name}:{inst_name}",
                    pid=inst.pid,
                    missing=sorted(missing),
                )
                evict_rec(inst)
                rec_app.instances.pop(inst_name, None)
        recovered.apps[app_name] = rec_app
    _stop_marked(recovered, stop_marked)
    if cgroups is not None:
        sweep_cgroups(cgroups, recovered)
    recovered.spare_sockets = spare_sockets(stored)
    return recovered


def sweep_cgroups(tree: Cgroups, adopted: Handover, timeout: float = 10.0) -> None:
    """With cgroups the kernel is the record: every instance cgroup that holds no
    adopted generation is emptied (the stop sequence: TERM, ``timeout``, then
    cgroup.kill) and removed, whatever the journal said (a process of a dead daemon
    never outlives it unseen)."""
    keep = {rec.cgroup for app in adopted.apps.values() for rec in app.instances.values()}
    doomed = [path for path in tree.instance_cgroups() if path not in keep]
    pids = [pid for path in doomed for pid in cgroups.procs(path)]
    if pids:
        log.warning("evicting_cgroup_members", pids=sorted(pids), cgroups=len(doomed))
        deadline = time.monotonic() + timeout
        stopping.stop_target_blocking(stopping.Cgroup(*doomed), signal.SIGTERM, deadline)
    for path in doomed:
        cgroups.remove(path)


def _stop_marked(adopted: Handover, markers: set[str], timeout: float = 10.0) -> None:
    """Stop every process that carries one of ``markers``, except what we adopt (a
    re-executed master carries the marker of the master it replaced)."""
    if not markers:
        return
    keep: set[int] = set()
    for app in adopted.apps.values():
        for rec in app.instances.values():
            keep |= procs.tree_pids(rec.pid)
    found = {p: m for p, m in procs.marked_processes(MARK_ENV, markers).items() if p not in keep}
    if found:
        log.warning("evicting_unrecorded", pids=sorted(found), markers=sorted(set(found.values())))
        stopping.stop_pids_blocking(found, timeout)


def spare_sockets(stored: dict[str, int]) -> dict[str, int]:
    """Listening sockets systemd kept that no adopted process needs any more: offered
    to the apps (by address) instead of binding again; other fds are closed."""
    spare: dict[str, int] = {}
    for name, fd in stored.items():
        address = _address_of(fd) if name.startswith("sock.") else None
        if address is None or address in spare:
            os.close(fd)
        else:
            spare[address] = fd
    return spare


def _take_by_inode(inst: InstanceRecord, fd: int, kind: str, inode: int | None) -> int:
    """Copy an fd out of the adopted process tree: at the number it was given, or,
    when the app moved it (gunicorn dups its LISTEN_FDS socket elsewhere and reuses
    fd 3), wherever in the tree ``kind:[inode]`` is now."""
    if inode is None:
        return fds.take_fd(inst.pid, fd)
    found = fds.find_fd(procs.tree_pids(inst.pid), f"{kind}:[{inode}]", prefer=(inst.pid, fd))
    if found is None:
        raise OSError(f"no process of pid {inst.pid}'s tree holds {kind}:[{inode}]")
    return fds.take_fd(*found)


def evict(inst: InstanceRecord, timeout: float = 10.0) -> None:
    """Stop a process group we cannot adopt: the stop sequence (TERM, ``timeout``,
    KILL)."""
    if inst.pipe_fd is not None:
        os.close(inst.pipe_fd)
        inst.pipe_fd = None
    if inst.pgid <= 0:  # shares its group with a process we keep: its own tree only
        stopping.kill_tree(inst.pid)
        return
    deadline = time.monotonic() + timeout
    stopping.stop_target_blocking(stopping.Group(inst.pgid), signal.SIGTERM, deadline)


def _address_of(fd: int) -> str | None:
    """The config-style address a listening socket is bound to."""
    sock = socket.socket(fileno=os.dup(fd))
    try:
        name = sock.getsockname()
    finally:
        sock.close()
    if isinstance(name, str):
        return f"unix:{name}"
    if isinstance(name, tuple) and len(name) >= 2:
        host, port = name[0], name[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return None
