"""A generation: one spawned process tree of an instance, and what it was started with.

The runners (``spawn``, ``ready``, ``liveness``,
``swap``, ``records``) work on a :class:`Generation` and never on the
instance that owns it; :class:`Runtime` is what they need from the app and the
supervisor (sockets, hooks), fixed when the instance is made. NOTIFY_SOCKET messages
land on the generation whose process sent them (:func:`apply_notify`).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from ..config.settings import AppConfig
from ..config.values import ListenAddress
from ..host import cgroups, exits, procs
from ..host.cgroups import Cgroups
from ..log import Logger, get_logger
from .output import PipeReader

OUTPUT_LINES = 20  # lines of the app's output shown with a failure

_log = get_logger("instance")


def instance_log(label: str) -> Logger:
    """The logger of one instance (``app:name``): every line it writes names it.

    Bound when a line is to be written, not kept: a bound logger per instance, kept,
    was a few hundred bytes of every instance of a big app, for the few lines each
    writes."""
    return _log.bind(instance=label)


@dataclass(frozen=True)
class Runtime:
    """What an instance needs from its app and the supervisor, fixed at creation."""

    app: str
    sockets: tuple[socket.socket, ...]  # supervisor-held listening sockets (may be empty)
    notify_socket: str | None  # path of our NOTIFY_SOCKET, when the app needs it
    logs_dir: str
    shared_socket: bool  # other instances accept on the same socket
    on_generation: Callable[[Generation, bool], None]  # (gen, alive): pid registry hook
    on_swap: Callable[[str, bool, float, str | None], None]  # (instance, ok, secs, reason)
    on_event: Callable[..., None]  # (kind, instance, **fields): for the history
    # before a spawn: make the marker the child will carry durable (raises OSError)
    on_spawning: Callable[[str], None] = lambda marker: None
    on_state: Callable[[], None] = lambda: None  # the instance's state changed
    cgroups: Cgroups | None = None  # per-generation cgroups, where delegated
    # a probe of this instance was accepted by another process on the shared socket:
    # (this instance, the inode of the socket that accepted it) -> what to call if that
    # process answers well (None: no instance of the app holds that socket). Asked at
    # once, while the accepting process still holds the connection: a fast server
    # has closed it by the time its answer is read.
    claim_foreign: Callable[[str, int], Callable[[], None] | None] = lambda name, inode: None


@dataclass(slots=True)
class Generation:
    """One spawned process of an instance (its number grows with every spawn)."""

    number: int
    child: exits.Child
    reader: PipeReader
    release: str | None
    ready_at: float | None = None
    ready_wall: float | None = None  # ready_at as Unix time, fixed once (see snapshot)
    last_watchdog: float = field(default_factory=time.monotonic)
    status_text: str | None = None
    main_pid: int | None = None  # MAINPID=, once checked to be one of this instance's
    main_identity: float | None = None  # its start time: a reused pid is not believed
    listen_fd: int | None = None  # where its listening socket sits in the child
    keeper_fd: int | None = None  # where its output pipe's read end sits in the child
    listen_inode: int | None = None  # inodes identify them wherever the app moves them
    pipe_inode: int | None = None
    marker: str | None = None  # SUPERVISORD_LITE_MARK of the tree we spawned (not a re-exec)
    config_digest: str | None = None  # the app config it runs (see config_digest)
    cgroup: str | None = None  # its own cgroup (a re-exec shares its predecessor's)
    _notified: asyncio.Event | None = field(default=None, repr=False)

    def notified_ready(self) -> asyncio.Event:
        """Set once the app sent READY=1; made on first use (an Event costs most of a
        kilobyte, and only apps readied by notify ever ask)."""
        if self._notified is None:
            self._notified = asyncio.Event()
        return self._notified

    @property
    def pid(self) -> int:
        if self.main_pid is not None and procs.process_identity(self.main_pid) != (
            self.main_identity
        ):
            self.main_pid = None  # it exited: its number may be anyone's now
        return self.main_pid or self.child.pid

    def pids(self) -> set[int]:
        return procs.tree_pids(self.pid) | {self.child.pid}

    def pids_lazily(self) -> Iterator[int]:
        """The main pid, then the rest of the tree, walked only if asked for: a probe's
        connection is mostly found in the main process's fds, without the walk."""
        main = self.pid
        yield main
        yield from self.pids() - {main}

    def output(self, n: int = OUTPUT_LINES) -> list[str]:
        self.reader.drain()
        return self.reader.last(n)


_digests: dict[int, tuple[AppConfig, str]] = {}  # id -> (the config, kept alive; digest)


def config_digest(cfg: AppConfig) -> str:
    """A short fingerprint of an app's config, to tell which one a process runs.

    Cached per config object (configs are frozen): the repr of an app with a
    thousand instances is long, and every spawn of each of them asks."""
    got = _digests.get(id(cfg))
    if got is not None and got[0] is cfg:
        return got[1]
    digest = hashlib.sha256(repr(cfg).encode()).hexdigest()[:16]
    if len(_digests) >= 256:  # configs replaced by updates: forget the oldest
        del _digests[next(iter(_digests))]
    _digests[id(cfg)] = (cfg, digest)
    return digest


@dataclass(frozen=True)
class Spot:
    """Where a generation runs: its app, instance and config (the values of the
    ``{app}``/``{port}``/... placeholders in commands, checks and pidfiles)."""

    app: str
    name: str
    cfg: AppConfig
    listen: ListenAddress | None
    log: Logger = field(compare=False)  # the instance's logger: ``instance`` bound

    @property
    def label(self) -> str:
        return f"{self.app}:{self.name}"

    def values(self, generation: int, release: str | None) -> dict[str, str]:
        listen = self.listen
        release_dir = ""
        if self.cfg.release is not None and release is not None:
            release_dir = os.path.join(self.cfg.release.root, "releases", release)
        return {
            "app": self.app,
            "instance": self.name,
            "generation": str(generation),
            "host": listen.host if listen and not listen.is_unix else "",
            "port": str(listen.port) if listen and not listen.is_unix else "",
            "release": release or "",
            "release_dir": release_dir,
        }


_MAX_STATUS_TEXT = 512  # STATUS= is the app's text: kept short in /status


def apply_notify(gen: Generation, fields: dict[str, str], log: Logger) -> None:
    """A NOTIFY_SOCKET message from one of ``gen``'s processes."""
    if fields.get("READY") == "1":
        gen.notified_ready().set()
    if fields.get("WATCHDOG") == "1":
        gen.last_watchdog = time.monotonic()
    if "STATUS" in fields:
        gen.status_text = fields["STATUS"][:_MAX_STATUS_TEXT]
    if "MAINPID" in fields:
        _main_pid(gen, fields["MAINPID"].strip(), log)


def _main_pid(gen: Generation, text: str, log: Logger) -> None:
    """MAINPID= names the process that signals and metrics go to: believed only for
    a process of ``gen``'s own tree or session (an app could name any pid)."""
    pid = int(text) if text.isdigit() and len(text) < 12 else 0
    inside = (
        cgroups.member(gen.cgroup, pid)
        if gen.cgroup is not None
        else procs.in_instance(pid, gen.child.pid, gen.child.pgid)
    )
    if pid > 1 and gen.child.alive and inside:
        gen.main_pid, gen.main_identity = pid, procs.process_identity(pid)
        return
    log.warning(
        "notify_pid_rejected",
        pid=text[:32],
        generation=gen.number,
        reason="not a process of this instance",
    )
