"""One app: its listening sockets, its instances, and operations across them.

The app binds its listen addresses once and keeps them open for its whole life, so
a crashed or swapping instance's clients wait in the backlog (or are served by the
other instance on a shared socket) instead of being refused. Operations that touch
several instances in turn (reload, restart) are exclusive per app: a second one is
refused with the name of the one in progress, never interleaved.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from ..config.settings import AppConfig
from ..config.values import ListenAddress
from ..errors import NoSuchApp, OperationFailed
from ..host import fds, files
from ..host.cgroups import Cgroups
from ..instance.generation import Generation, Runtime
from ..instance.instance import Instance
from ..instance.state import State
from ..log import get_logger
from ..snapshots import AppStatus, DeployStats, SwapRecord
from . import artifacts, tasks
from .artifacts import Fetched
from .deploys import Deployer, Guard, Pipeline
from .releases import ReleaseStore
from .tasks import TaskResult

log = get_logger("app")

Progress = Callable[[str, dict[str, Any]], None]


def quiet(message: str, fields: dict[str, Any]) -> None:
    """A progress sink for operations nobody is watching (boot, signals)."""
    log.info("progress", message=message, **fields)


GenerationHook = Callable[[Instance, Generation, bool], None]

# worst first: the app's summary state is the worst of its instances'
_SEVERITY = [
    State.FATAL,
    State.BACKOFF,
    State.EXITED,
    State.STARTING,
    State.STOPPING,
    State.RUNNING,
    State.STOPPED,
]


class App:
    def __init__(
        self,
        cfg: AppConfig,
        *,
        loop: asyncio.AbstractEventLoop,
        logs_dir: str,
        state_dir: str,
        inherited: dict[str, int] | None = None,
        notify_socket: str | None,
        on_generation: GenerationHook,
        on_swap: Callable[[SwapRecord], None],
        on_spawning: Callable[[Instance, str], None],
        on_change: Callable[[App], None],
        on_event: Callable[..., None] | None = None,  # (instance, kind, **fields)
        cgroups: Cgroups | None = None,
        record: Callable[..., Any] | None = None,  # (kind, message, **fields): history
    ) -> None:
        self.cfg = cfg
        self._cgroups = cgroups
        self.name = cfg.name
        self.loop = loop
        self.should_run = False
        self.release: str | None = None
        self.last_swap: SwapRecord | None = None
        self._on_swap = on_swap
        self._on_change = on_change  # the durable record of should_run, release, stopped
        self._on_event = on_event
        self._guard = Guard(cfg.name)  # one operation at a time (restart, deploy, ...)
        self.held: set[str] = set()  # instances to leave stopped at boot (see start)
        self.store = ReleaseStore(cfg.release, cfg.name, state_dir) if cfg.release else None
        if self.store is not None:
            history = self.store.load()
            if not os.path.exists(self.store.history_path):
                self.store.save(history)  # remember what `current` was when we started
            self.release = history.current
            artifacts.sweep_incoming(self.store)  # what a killed install left
        self.sockets: dict[str, socket.socket] = {}  # address -> bound socket
        if cfg.socket_activation:
            try:
                for address in {a.address: a for a in cfg.listen.values()}.values():
                    fd = (inherited or {}).pop(canonical(address), None)
                    if fd is not None:  # kept open across an upgrade, or taken back after a crash
                        self.sockets[address.address] = socket.socket(fileno=fd)
                        self.sockets[address.address].set_inheritable(False)
                    else:
                        self.sockets[address.address] = _bind(address, cfg.name)
                    _set_nodelay(self.sockets[address.address], address)
            except BaseException:
                for bound in self.sockets.values():  # an app that cannot be made holds nothing
                    bound.close()
                raise
        logs_dir = cfg.logs.dir or logs_dir
        self.instances: dict[str, Instance] = {}
        # the hooks every instance's runtime shares (each instance's own are partials
        # of methods: a closure per hook per instance was a kilobyte per instance)
        record_swap, instance_event, claim = self._record_swap, self._instance_event, self._claim
        for name in cfg.instances:
            listen = cfg.listen_for(name)
            sock = self.sockets.get(listen.address) if listen else None
            runtime = Runtime(
                app=cfg.name,
                sockets=(sock,) if sock is not None else (),
                notify_socket=notify_socket,
                logs_dir=logs_dir,
                shared_socket=cfg.listen_shared and len(cfg.instances) > 1,
                on_generation=partial(self._generation_hook, name, on_generation),
                on_swap=record_swap,
                on_spawning=partial(self._spawning_hook, name, on_spawning),
                on_state=partial(self._state_hook, name, on_change),
                on_event=instance_event,
                cgroups=cgroups,
                claim_foreign=claim,
            )
            self.instances[name] = Instance(cfg, name, runtime, loop, release=self.release)
        # kept up to date on every state change, so that the durable record of which
        # instances are stopped costs O(1) per event, not a walk of a big app
        self._stopped = {n for n, i in self.instances.items() if i.state is State.STOPPED}
        self._stopped_list: tuple[str, ...] | None = None
        self._deployer = Deployer(
            cfg.name,
            self._guard,
            self.store,
            self.instances,
            self.reload_order,
            lambda: self.cfg.release.settle if self.cfg.release else 0.0,
            lambda: self.release,
            self._switched,
            Pipeline(
                install=self._install,
                run_task=self._run_task,
                before=lambda: self.cfg.deploy.before,
                after=lambda: self.cfg.deploy.after,
                undo_failed_after=lambda: self.cfg.deploy.undo_failed_after,
                record=record or (lambda kind, message, **fields: None),
            ),
        )

    def _state_hook(self, name: str, on_change: Callable[[App], None]) -> None:
        """Instance ``name``'s state changed."""
        stopped = self.instances[name].state is State.STOPPED
        if stopped != (name in self._stopped):
            (self._stopped.add if stopped else self._stopped.discard)(name)
            self._stopped_list = None
        on_change(self)

    def stopped(self) -> tuple[str, ...]:
        """The names of the STOPPED instances, in configuration order (the same object
        while it does not change: comparing it to the recorded one is O(1))."""
        if self._stopped_list is None:
            self._stopped_list = tuple(n for n in self.instances if n in self._stopped)
        return self._stopped_list

    def _generation_hook(
        self, name: str, hook: GenerationHook, gen: Generation, alive: bool
    ) -> None:
        """One of instance ``name``'s generations started or ended."""
        hook(self.instances[name], gen, alive)

    def _spawning_hook(self, name: str, hook: Callable[[Instance, str], None], marker: str) -> None:
        """Instance ``name`` is about to spawn a tree marked ``marker``."""
        hook(self.instances[name], marker)

    def _instance_event(self, kind: str, instance: str, **fields: Any) -> None:
        if self._on_event is not None:
            self._on_event(self.instances[instance], kind, **fields)

    def _claim(self, prober: str, inode: int) -> Callable[[], None] | None:
        """A probe of ``prober`` was accepted by another process on the shared socket:
        the credit of the instance that holds it (the other instance, or during a swap
        the old generation of the prober itself), to be given if it answers well."""
        others = [i for n, i in self.instances.items() if n != prober]
        for inst in [*others, self.instances[prober]]:
            credit = inst.claim(inode)
            if credit is not None:
                return credit
        return None

    def _record_swap(self, instance: str, ok: bool, seconds: float, reason: str | None) -> None:
        record = SwapRecord(self.name, instance, ok, seconds, reason, time.time())
        self.last_swap = record
        self._on_swap(record)

    @property
    def busy(self) -> bool:
        """An operation owns this app's processes (a swap, deploy or restart)."""
        return self._guard.busy is not None or any(i.swapping for i in self.instances.values())

    def select(self, instance: str | None) -> list[Instance]:
        if instance is None:
            return list(self.instances.values())
        if instance not in self.instances:
            raise NoSuchApp(
                f"app {self.name!r} has no instance {instance!r} "
                f"(instances: {', '.join(self.instances)})"
            )
        return [self.instances[instance]]

    def reload_order(self) -> list[Instance]:
        """Backup(s) first, the primary (the first listed instance) last."""
        names = list(self.instances)
        return [self.instances[n] for n in names[1:] + names[:1]]

    async def start(self, instance: str | None, progress: Progress, boot: bool = False) -> None:
        """Start instances and return once they are ready. At boot (``boot``), the
        instances an operator had stopped before an upgrade or crash stay stopped."""
        targets = self.select(instance)
        if boot:
            targets = [i for i in targets if i.name not in self.held]
            self.held = set()
            if not targets:
                return
        if instance is None:
            self.should_run = True
            self._on_change(self)
        await _all(targets, lambda i: self._start_one(i, progress))

    async def _start_one(self, inst: Instance, progress: Progress) -> None:
        progress(f"{inst.label} starting", {"app": self.name, "instance": inst.name})
        await inst.start()
        progress(
            f"{inst.label} RUNNING pid {inst.pid or '?'}",
            {"app": self.name, "instance": inst.name, "state": State.RUNNING.value},
        )

    async def stop(self, instance: str | None, progress: Progress) -> None:
        targets = self.select(instance)
        if instance is None:
            self.should_run = False
            self._on_change(self)

        async def stop_one(inst: Instance) -> None:
            if inst.state is not State.STOPPED:
                progress(f"{inst.label} stopping", {"app": self.name, "instance": inst.name})
            await inst.stop()
            progress(
                f"{inst.label} STOPPED",
                {"app": self.name, "instance": inst.name, "state": State.STOPPED.value},
            )

        await _all(targets, stop_one)

    async def restart(self, instance: str | None, progress: Progress) -> None:
        self._guard.take("restart")
        try:
            await self.stop(instance, progress)
            await self.start(instance, progress)
        finally:
            self._guard.done()

    async def reload(self, progress: Progress) -> None:
        """Hot-swap each instance in turn, backup first; stop at the first failure."""
        self._guard.take("reload")
        try:
            for inst in self.reload_order():
                if inst.state is State.STOPPED:
                    progress(f"{inst.label} is stopped; not reloaded", {"app": self.name})
                    continue
                kept = f"generation {inst.generation} keeps serving until the new one is ready"
                how = "the other instances serve meanwhile" if inst.cfg.reload.restart else kept
                progress(
                    f"{inst.label} {inst.cfg.reload.doing} ({how})",
                    {"app": self.name, "instance": inst.name},
                )
                await inst.swap()
                progress(
                    f"{inst.label} now generation {inst.generation}, pid {inst.pid or '?'}",
                    {"app": self.name, "instance": inst.name, "state": inst.state.value},
                )
        finally:
            self._guard.done()

    async def apply_config(self, cfg: AppConfig, progress: Progress) -> None:
        """Hot-swap every instance onto a changed config (same sockets and instances)."""
        self._guard.take("update")
        try:
            for inst in self.reload_order():
                progress(f"{inst.label} {cfg.reload.doing} onto the new config", {"app": self.name})
                await inst.swap(cfg)
            self.cfg = cfg
        finally:
            self._guard.done()

    # --- releases (deploys.py) -----------------------------------------------------------

    async def deploy(
        self,
        release: str,
        pause: bool,
        progress: Progress,
        artifact: str | None = None,
        sha256: str | None = None,
        uid: int | None = None,
    ) -> dict[str, Any]:
        """Canary deploy: backup(s) first, settle, then the primary, then ``current``
        (the artifact installed and the ``before`` tasks run first). ``uid``: the
        caller's, in the history events of its steps."""
        return await self._deployer.deploy(release, pause, progress, artifact, sha256, uid)

    async def _install(
        self, release: str, url: str | None, sha256: str | None, progress: Progress
    ) -> Fetched | None:
        if self.store is None:
            return None
        found = await artifacts.resolve(self.cfg, release, url, sha256, self.loop)
        if found is None:
            return None
        return await artifacts.install(
            self.store, self.cfg, release, found[0], found[1], progress, self.loop
        )

    async def _run_task(self, release: str, phase: str, argv: tuple[str, ...]) -> TaskResult:
        assert self.store is not None
        directory = self.store.release_dir(release)
        return await tasks.run_task(
            self.cfg, release, directory, phase, argv, self._cgroups, self.loop
        )

    async def promote(self, progress: Progress, uid: int | None = None) -> dict[str, Any]:
        return await self._deployer.promote(progress, uid)

    async def rollback(self, progress: Progress, uid: int | None = None) -> dict[str, Any]:
        return await self._deployer.rollback(progress, uid)

    @property
    def deploys(self) -> DeployStats:
        """Finished deploys, for /metrics."""
        return self._deployer.stats

    def _switched(self, release: str) -> None:
        self.release = release
        self._on_change(self)

    def signal(self, instance: str | None, signum: int) -> list[int]:
        pids: list[int] = []
        for inst in self.select(instance):
            pids.extend(inst.send_signal(signum))
        return pids

    async def close(self) -> None:
        """Stop every instance, then release the sockets (the app is going away)."""
        await _all(list(self.instances.values()), lambda i: i.stop(), collect=False)
        for inst in self.instances.values():
            await inst.close()
        for address, sock in self.sockets.items():
            sock.close()
            if address.startswith("unix:"):
                try:
                    files.unlink_socket(address[5:])
                except OSError as exc:
                    log.warning("socket_not_removed", app=self.name, error=str(exc))
        self.sockets.clear()

    def is_running(self) -> bool:
        return all(i.state is State.RUNNING for i in self.instances.values())

    def snapshot(self) -> AppStatus:
        instances = {name: inst.snapshot() for name, inst in self.instances.items()}
        states = {i.state for i in self.instances.values()}
        summary = next((s for s in _SEVERITY if s in states), State.STOPPED)
        deploy = None
        if self._guard.paused is not None:
            deploy = {k: v for k, v in self._guard.paused.items() if k != "before"}
        return AppStatus(
            deploy=deploy,
            name=self.name,
            state=summary.value,
            release=self.release,
            instances=instances,
            should_run=self.should_run,
            last_swap=self.last_swap,
            deploys=self.deploys,
        )


def canonical(address: ListenAddress) -> str:
    """The form handover.py derives from a socket's getsockname()."""
    if address.path is not None:
        return f"unix:{address.path}"
    return (
        f"[{address.host}]:{address.port}"
        if ":" in address.host
        else f"{address.host}:{address.port}"
    )


def _bind(address: ListenAddress, app: str) -> socket.socket:
    try:
        return fds.bind_listener(address)
    except OSError as exc:
        raise OperationFailed(f"{app}: cannot listen on {address.address}: {exc.strerror}") from exc


def _set_nodelay(sock: socket.socket, address: ListenAddress) -> None:
    """TCP_NODELAY on a listener: Linux copies it to every connection accepted from it, so
    even a server that never sets it itself gets it. uvicorn --fd wraps an inherited
    socket as AF_UNIX, so asyncio skips it, and its header and body writes then wait for
    the client's delayed ACK: about 40 ms per keep-alive request instead of 1 ms. An app
    that wants Nagle's algorithm clears the option on its connections (or on fd 3)."""
    if address.path is None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def _all(items: list[Instance], fn: Callable[[Instance], Any], collect: bool = True) -> None:
    """Run ``fn`` on every instance at once; raise one error naming every failure."""
    results = await asyncio.gather(*(fn(i) for i in items), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if not errors or not collect:
        return
    if len(errors) == 1:
        raise errors[0]
    output: list[str] = []
    for e in errors:
        if isinstance(e, OperationFailed):
            output.extend(e.details.get("output", []))
    raise OperationFailed("; ".join(str(e) for e in errors), output=output)
