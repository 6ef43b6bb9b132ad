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
from typing import Any

from . import oslayer
from .cgroups import Cgroups
from .config import AppConfig, ListenAddress
from .errors import Busy, NoSuchApp, OperationFailed, SupervisorError, UsageError
from .instance import Generation, Instance, Runtime
from .log import get_logger
from .model import AppStatus, DeployStats, SwapRecord
from .releases import ReleaseStore
from .states import State

log = get_logger("app")

Progress = Callable[[str, dict[str, Any]], None]
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
    ) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.loop = loop
        self.should_run = False
        self.release: str | None = None
        self.last_swap: SwapRecord | None = None
        self.deploys = DeployStats()  # finished deploys, for /metrics
        self._on_swap = on_swap
        self._on_change = on_change  # the durable record of should_run, release, stopped
        self._on_event = on_event
        self._busy: str | None = None
        self._deploy: dict[str, Any] | None = None  # a deploy paused at its canary
        self.held: set[str] = set()  # instances to leave stopped at boot (see start)
        self.store = ReleaseStore(cfg.release, cfg.name, state_dir) if cfg.release else None
        if self.store is not None:
            history = self.store.load()
            if not os.path.exists(self.store.history_path):
                self.store.save(history)  # remember what `current` was when we started
            self.release = history.current
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
        for name in cfg.instances:
            listen = cfg.listen_for(name)
            sock = self.sockets.get(listen.address) if listen else None
            runtime = Runtime(
                app=cfg.name,
                sockets=(sock,) if sock is not None else (),
                notify_socket=notify_socket,
                logs_dir=logs_dir,
                shared_socket=cfg.listen_shared and len(cfg.instances) > 1,
                on_generation=self._generation_hook(name, on_generation),
                on_swap=self._record_swap,
                on_spawning=self._spawning_hook(name, on_spawning),
                on_state=self._state_hook(name, on_change),
                on_event=self._instance_event,
                cgroups=cgroups,
            )
            self.instances[name] = Instance(cfg, name, runtime, loop, release=self.release)
        # kept up to date on every state change, so that the durable record of which
        # instances are stopped costs O(1) per event, not a walk of a big app
        self._stopped = {n for n, i in self.instances.items() if i.state is State.STOPPED}
        self._stopped_list: tuple[str, ...] | None = None

    def _state_hook(self, name: str, on_change: Callable[[App], None]) -> Callable[[], None]:
        def call() -> None:
            stopped = self.instances[name].state is State.STOPPED
            if stopped != (name in self._stopped):
                (self._stopped.add if stopped else self._stopped.discard)(name)
                self._stopped_list = None
            on_change(self)

        return call

    def stopped(self) -> tuple[str, ...]:
        """The names of the STOPPED instances, in configuration order (the same object
        while it does not change: comparing it to the recorded one is O(1))."""
        if self._stopped_list is None:
            self._stopped_list = tuple(n for n in self.instances if n in self._stopped)
        return self._stopped_list

    def _generation_hook(
        self, name: str, hook: GenerationHook
    ) -> Callable[[Generation, bool], None]:
        def call(gen: Generation, alive: bool) -> None:
            hook(self.instances[name], gen, alive)

        return call

    def _spawning_hook(
        self, name: str, hook: Callable[[Instance, str], None]
    ) -> Callable[[str], None]:
        def call(marker: str) -> None:
            hook(self.instances[name], marker)

        return call

    def _instance_event(self, kind: str, instance: str, **fields: Any) -> None:
        if self._on_event is not None:
            self._on_event(self.instances[instance], kind, **fields)

    def _record_swap(self, instance: str, ok: bool, seconds: float, reason: str | None) -> None:
        record = SwapRecord(self.name, instance, ok, seconds, reason, time.time())
        self.last_swap = record
        self._on_swap(record)

    @property
    def busy(self) -> bool:
        """An operation owns this app's processes (a swap, deploy or restart)."""
        return self._busy is not None or any(i.swapping for i in self.instances.values())

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

    def _exclusive(self, operation: str) -> None:
        if self._busy is not None:
            raise Busy(f"{self.name}: {self._busy} already in progress")
        if self._deploy is not None and operation not in ("promote", "rollback"):
            raise Busy(
                f"{self.name}: a deploy of {self._deploy['release']} is paused at the canary; "
                f"`supctl promote {self.name}` or `supctl rollback {self.name}` first"
            )
        self._busy = operation

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
            f"{inst.label} RUNNING pid {inst.current.pid if inst.current else '?'}",
            {"app": self.name, "instance": inst.name, "state": "RUNNING"},
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
                {"app": self.name, "instance": inst.name, "state": "STOPPED"},
            )

        await _all(targets, stop_one)

    async def restart(self, instance: str | None, progress: Progress) -> None:
        self._exclusive("restart")
        try:
            await self.stop(instance, progress)
            await self.start(instance, progress)
        finally:
            self._busy = None

    async def reload(self, progress: Progress) -> None:
        """Hot-swap each instance in turn, backup first; stop at the first failure."""
        self._exclusive("reload")
        try:
            for inst in self.reload_order():
                if inst.state is State.STOPPED:
                    progress(f"{inst.label} is stopped; not reloaded", {"app": self.name})
                    continue
                progress(
                    f"{inst.label} swapping (generation {inst.generation} keeps serving "
                    "until the new one is ready)",
                    {"app": self.name, "instance": inst.name},
                )
                await inst.swap()
                progress(
                    f"{inst.label} now generation {inst.generation}, pid "
                    f"{inst.current.pid if inst.current else '?'}",
                    {"app": self.name, "instance": inst.name, "state": inst.state.value},
                )
        finally:
            self._busy = None

    async def apply_config(self, cfg: AppConfig, progress: Progress) -> None:
        """Hot-swap every instance onto a changed config (same sockets and instances)."""
        self._exclusive("update")
        try:
            for inst in self.reload_order():
                progress(f"{inst.label} swapping onto the new config", {"app": self.name})
                await inst.swap(cfg)
            self.cfg = cfg
        finally:
            self._busy = None

    # --- releases: deploy, promote, rollback ---------------------------------------------

    async def deploy(self, release: str, pause: bool, progress: Progress) -> dict[str, Any]:
        """Canary deploy: backup(s) first, settle, then the primary, then ``current``.

        Any failure puts every instance back on the release it ran before; ``current``
        and the history change only once every instance runs the new release.
        """
        store = self._store()
        self._exclusive("deploy")
        started, ok = time.monotonic(), False
        try:
            if not store.exists(release):
                raise OperationFailed(
                    f"{self.name}: release {release!r} not found "
                    f"({store.release_dir(release)} is not a directory)"
                )
            before = {i.name: i.release for i in self.instances.values()}
            canaries = self.reload_order()[:-1]
            progress(f"{self.name}: deploying {release} (was {self.release or 'none'})", {})
            try:
                for inst in canaries:
                    await self._swap_to(inst, release, progress)
                for inst in canaries:
                    await self._settle(inst, progress)
            except SupervisorError as exc:
                raise await self._failed(release, before, exc, progress) from None
            if pause and canaries:
                self._deploy = {
                    "release": release,
                    "phase": "paused",
                    "before": before,
                    "canaries": [i.name for i in canaries],
                }
                names = ", ".join(i.label for i in canaries)
                return {
                    "message": f"{names} runs {release}; `supctl promote {self.name}` to "
                    f"continue, `supctl rollback {self.name}` to undo",
                    "paused": True,
                    "release": release,
                }
            result = await self._finish(release, before, progress)
            ok = True
            return result
        finally:
            self._busy = None
            if self._deploy is None:  # finished (a paused one is counted by promote)
                self.deploys = self.deploys.observe(ok, time.monotonic() - started)

    async def promote(self, progress: Progress) -> dict[str, Any]:
        self._store()
        if self._deploy is None:
            raise UsageError(f"{self.name}: no paused deploy to promote")
        self._exclusive("promote")
        started, ok = time.monotonic(), False
        try:
            deploy = self._deploy
            result = await self._finish(deploy["release"], deploy["before"], progress)
            ok = True
            return result
        finally:
            self._busy = None
            self.deploys = self.deploys.observe(ok, time.monotonic() - started)

    async def rollback(self, progress: Progress) -> dict[str, Any]:
        store = self._store()
        if self._deploy is not None:
            self._exclusive("rollback")
            try:
                deploy, self._deploy = self._deploy, None
                progress(f"{self.name}: undoing the paused deploy of {deploy['release']}", {})
                await self._revert(deploy["before"], progress)
                return {"release": self.release, "message": f"{self.name}: back on {self.release}"}
            finally:
                self._busy = None
        previous = store.load().previous()
        if previous is None:
            raise OperationFailed(f"{self.name}: no previous release to roll back to")
        progress(f"{self.name}: rolling back to {previous}", {})
        return await self.deploy(previous, False, progress)

    def _store(self) -> ReleaseStore:
        if self.store is None:
            raise UsageError(f"{self.name}: has no `release:` config; it cannot be deployed")
        return self.store

    async def _swap_to(self, inst: Instance, release: str, progress: Progress) -> None:
        if inst.state is State.STOPPED:
            await inst.swap(release=release)
            return
        progress(
            f"{inst.label}: swapping to {release}",
            {"app": self.name, "instance": inst.name, "release": release},
        )
        await inst.swap(release=release)
        progress(
            f"{inst.label}: ready on {release}, pid {inst.current.pid if inst.current else '?'}",
            {"app": self.name, "instance": inst.name, "state": inst.state.value},
        )

    async def _settle(self, inst: Instance, progress: Progress) -> None:
        """The canary must stay up (same process) and healthy for ``release.settle``."""
        assert self.cfg.release is not None
        settle = self.cfg.release.settle
        if inst.state is State.STOPPED or settle <= 0:
            return
        progress(f"{inst.label}: settling for {settle:g}s", {"app": self.name})
        pid = inst.current.pid if inst.current else None
        deadline = time.monotonic() + settle
        while True:
            if inst.state is not State.RUNNING or inst.current is None or inst.current.pid != pid:
                raise OperationFailed(
                    f"{inst.label} did not stay up while settling: {inst.last_error}",
                    output=inst.last_output(),
                )
            result = await inst.probe_health()
            if result is not None and not result.ok and not result.foreign:
                raise OperationFailed(
                    f"{inst.label} failed its health check while settling: {result.detail}",
                    output=inst.last_output(),
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            await asyncio.sleep(min(0.25, remaining))

    async def _finish(
        self, release: str, before: dict[str, str | None], progress: Progress
    ) -> dict[str, Any]:
        store = self._store()
        try:
            for inst in self.reload_order():
                if inst.release != release:
                    await self._swap_to(inst, release, progress)
        except SupervisorError as exc:
            self._deploy = None
            raise await self._failed(release, before, exc, progress) from None
        self._deploy = None
        history = store.record(release)  # before the switch: load() may read the link
        store.switch_current(release)
        self.release = release
        self._on_change(self)
        pruned = store.prune(history, {i.release or "" for i in self.instances.values()})
        progress(f"{self.name}: {release} is current", {"app": self.name, "release": release})
        return {
            "release": release,
            "instances": {i.name: i.release for i in self.instances.values()},
            "pruned": pruned,
        }

    async def _failed(
        self,
        release: str,
        before: dict[str, str | None],
        exc: SupervisorError,
        progress: Progress,
    ) -> OperationFailed:
        progress(f"{self.name}: deploy of {release} failed; rolling back", {})
        await self._revert(before, progress)
        back = ", ".join(f"{n}={r}" for n, r in before.items())
        return OperationFailed(
            f"{self.name}: deploy of {release} failed: {exc.message}; every instance is back "
            f"on its previous release ({back}), current unchanged",
            output=exc.details.get("output", []),
        )

    async def _revert(self, before: dict[str, str | None], progress: Progress) -> None:
        for inst in self.reload_order():
            old = before.get(inst.name)
            if inst.release != old and old is not None:
                try:
                    await self._swap_to(inst, old, progress)
                except SupervisorError as exc:
                    log.error("rollback_failed", instance=inst.label, reason=exc.message)
                    progress(f"{inst.label}: could not return to {old}: {exc.message}", {})

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
                    os.unlink(address[5:])
                except OSError:
                    pass
        self.sockets.clear()

    def is_running(self) -> bool:
        return all(i.state is State.RUNNING for i in self.instances.values())

    def snapshot(self) -> AppStatus:
        instances = {name: inst.snapshot() for name, inst in self.instances.items()}
        states = {i.state for i in self.instances.values()}
        summary = next((s for s in _SEVERITY if s in states), State.STOPPED)
        deploy = None
        if self._deploy is not None:
            deploy = {k: v for k, v in self._deploy.items() if k != "before"}
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

    def reopen_logs(self) -> None:
        for inst in self.instances.values():
            inst.sink.reopen()


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
        return oslayer.bind_listener(address)
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
