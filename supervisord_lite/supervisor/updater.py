"""``update``: apply the config file to the running daemon, all or nothing.

What to do is decided by :func:`plan.diff` (the same call ``supctl plan`` shows);
this module only carries it out, in two phases:

1. **prepare**, changing nothing that runs: read and validate the file (env files
   included), refuse an update that would stop every app unless ``--allow-empty``,
   then build every added or restarted app (bind its new sockets; an address that an
   app being replaced or removed holds is handed over as a duplicate fd, so it never
   closes). Any failure here closes what was prepared and raises: the running apps,
   their sockets and the daemon's record of the running config are as they were.
2. **apply**: hot-swap the changed apps (backup first), then stop the removed and
   restarted apps, then start the new ones. A swap that fails stops the update
   there: its app is swapped back onto the config it ran, nothing is removed, added
   or restarted, and the error names what was applied and what not.

The record of the running config (``Supervisor.config``) is rebuilt from the apps
that run at the end, each with the config it runs, so the next ``update`` of the
same file tries again exactly what did not happen.
"""

from __future__ import annotations

import os
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from typing import Any, Protocol

from ..app.app import App, Progress, canonical
from ..config.parser import load_config
from ..config.settings import AppConfig, Config
from ..errors import OperationFailed, SupervisorError, UsageError
from ..host import envfile
from ..log import get_logger
from ..state.recovery import Durable
from .plan import Action, Plan, addresses, diff


class Fleet(Protocol):
    """What an update needs of the supervisor (which holds the updater): its apps and
    record, and the operations it offers on them. A protocol, not an import: the
    supervisor imports this module, never the other way round."""

    config: Config
    apps: dict[str, App]

    @property
    def durable(self) -> Durable: ...
    def refuse_if_exclusive(self) -> None: ...
    def exclusively(self, operation: str) -> AbstractAsyncContextManager[None]: ...
    def make_app(self, cfg: AppConfig, inherited: dict[str, int] | None = None) -> App: ...
    async def start_apps(self, names: list[str], progress: Progress) -> list[str]: ...
    async def stop_apps(self, names: list[str], progress: Progress, close: bool) -> None: ...
    def take_config(self, config: Config) -> None: ...


log = get_logger("updater")


class Updater:
    def __init__(self, sup: Fleet) -> None:
        self.sup = sup
        # what each app's env_file held when its config was applied (boot or update);
        # read by remember_env() at boot (the files are read with each app's rights,
        # which takes the event loop)
        self.applied_env: dict[str, str | None] = {}

    async def remember_env(self) -> None:
        """Note what each app's env_file holds now (at boot, before the apps start)."""
        self.applied_env = await envfile.digests(self.sup.config)

    # --- deciding ---------------------------------------------------------------------

    async def read(self) -> tuple[Config, dict[str, str | None]]:
        """The file's config, validated (env files too); ConfigError changes nothing."""
        path = self.sup.config.path
        if path is None:
            raise UsageError("the daemon runs the bundled demo config; there is no file to re-read")
        new = load_config(path)
        return new, await envfile.digests(new, strict=True)

    def plan(self, new: Config, digests: dict[str, str | None], allow_empty: bool) -> Plan:
        changed = frozenset(
            n for n, d in digests.items() if n in self.applied_env and self.applied_env[n] != d
        )
        result = diff(self.sup.config, new, changed)
        return replace(result, refusal=None) if allow_empty else result

    async def dry_run(self, allow_empty: bool) -> dict[str, Any]:
        new, digests = await self.read()
        return self.plan(new, digests, allow_empty).to_json()

    # --- doing ------------------------------------------------------------------------

    async def update(self, progress: Progress, allow_empty: bool) -> dict[str, Any]:
        sup = self.sup
        sup.refuse_if_exclusive()
        new, digests = await self.read()  # ConfigError propagates: nothing changed
        plan = self.plan(new, digests, allow_empty)
        if plan.refusal is not None:
            raise UsageError(
                f"update refused: {plan.refusal}; nothing changed "
                "(`supctl update --allow-empty` applies it)"
            )
        if plan.supervisor_keys:
            progress("note: changes under 'supervisor:' take effect at the next daemon start", {})
        async with sup.exclusively("update"):
            return await self._apply(new, plan, digests, progress)

    def _holder(self, address: str) -> tuple[App, str] | None:
        """The running app whose socket is bound to ``address`` (canonical), and the
        key of that socket in its ``sockets``."""
        for app in self.sup.apps.values():
            for addr in app.cfg.listen.values():
                if canonical(addr) == address and addr.address in app.sockets:
                    return app, addr.address
        return None

    async def _prepare(self, new: Config, plan: Plan) -> dict[str, App]:
        """Build every added and restarted app; on failure close them all and raise."""
        prepared: dict[str, App] = {}
        try:
            for name in [a.name for a in plan.apps if a.action in (Action.ADD, Action.RESTART)]:
                inherited: dict[str, int] = {}
                for address in addresses(new.apps[name]):
                    held = self._holder(address)
                    if held is not None:
                        inherited[address] = os.dup(held[0].sockets[held[1]].fileno())
                try:
                    prepared[name] = self.sup.make_app(new.apps[name], inherited)
                finally:
                    for fd in inherited.values():  # those the new app did not take
                        os.close(fd)
        except Exception as exc:  # whatever it was, nothing prepared may stay open
            reason = exc.message if isinstance(exc, SupervisorError) else repr(exc)
            await self._discard(prepared, plan)
            raise OperationFailed(
                f"update refused: {reason}; nothing changed (running apps, their sockets "
                "and the running config are as they were)",
                applied=[],
                not_applied=[a.name for a in plan.apps if a.action is not Action.UNCHANGED],
            ) from None
        return prepared

    def _detach_moved(self, app: App, plan: Plan) -> None:
        """Close (never unlink: the path lives on) ``app``'s copies of sockets that
        change hands, so closing ``app`` leaves them to their other holder."""
        for addr in app.cfg.listen.values():
            sock = app.sockets.get(addr.address)
            if sock is not None and canonical(addr) in plan.moved:
                del app.sockets[addr.address]
                sock.close()

    async def _discard(self, prepared: dict[str, App], plan: Plan) -> None:
        """Undo :meth:`_prepare`: the apps never ran; close their instances and sockets."""
        for app in prepared.values():
            self._detach_moved(app, plan)
            await app.close()  # every instance is STOPPED: nothing to wait for

    async def _apply(
        self, new: Config, plan: Plan, digests: dict[str, str | None], progress: Progress
    ) -> dict[str, Any]:
        sup = self.sup
        old = sup.config
        prepared = await self._prepare(new, plan)
        applied: list[str] = []
        for name in plan.swapped:
            app = sup.apps[name]
            keys = ", ".join(plan.app(name).keys)
            how = new.apps[name].reload.doing
            progress(f"{name}: config changed ({keys}), {how}", {"app": name})
            try:
                await app.apply_config(new.apps[name], progress)
            except SupervisorError as exc:
                stuck = await self._swap_back(app, old, progress)
                await self._discard(prepared, plan)
                self._record(old, new, complete=False)
                done = set(applied)
                not_applied = [
                    a.name
                    for a in plan.apps
                    if a.action is not Action.UNCHANGED and a.name not in done
                ]
                back = (
                    f"{name} is back on the config it ran"
                    if not stuck
                    else f"{', '.join(stuck)} could not be swapped back and still run the new "
                    f"config; the rest of {name} runs the old one"
                )
                raise OperationFailed(
                    f"update stopped: {exc.message}; applied: {', '.join(applied) or 'nothing'}; "
                    f"not applied: {', '.join(not_applied)} ({back}; `supctl update` tries "
                    "the rest again)",
                    output=exc.details.get("output", []),
                    applied=applied,
                    not_applied=not_applied,
                ) from None
            applied.append(name)
            self.applied_env[name] = digests.get(name)
        going = plan.removed + plan.restarted
        if going:
            progress(f"stopping: {', '.join(going)}", {})
            await sup.stop_apps(going, progress, close=False)  # in dependency order
            for name in going:
                gone = sup.apps.pop(name)
                sup.durable.store_sockets(gone, remove=True)
                self._detach_moved(gone, plan)  # stopped: no spawn can need them now
                await gone.close()
                self.applied_env.pop(name, None)
        ordered: dict[str, App] = {}
        for name in new.start_order():
            ordered[name] = prepared[name] if name in prepared else sup.apps[name]
            if name in prepared:
                sup.durable.store_sockets(ordered[name])
                self.applied_env[name] = digests.get(name)
        sup.apps = ordered
        self._record(old, new, complete=True)
        starting = [n for n in plan.added + plan.restarted if new.apps[n].autostart]
        to_start = [n for n in new.start_order() if n in starting]
        failures = await sup.start_apps(to_start, progress)
        result: dict[str, Any] = {
            "added": plan.added,
            "removed": plan.removed,
            "swapped": plan.swapped,
            "restarted": plan.restarted,
            "unchanged": plan.unchanged,
            "sockets": {"bind": list(plan.bind), "close": list(plan.close)},
        }
        if failures:
            raise OperationFailed(
                "update applied, but these apps did not start: "
                + ", ".join(failures)
                + " (they keep retrying; see `supctl status`)",
                **result,
            )
        return result

    async def _swap_back(self, app: App, old: Config, progress: Progress) -> list[str]:
        """After a failed swap, put the app's instances that took the new config back
        on the one the app is recorded to run, so the record stays the truth; the
        instances that could not be (named in the error)."""
        before = old.apps[app.name]
        stuck: list[str] = []
        for inst in app.reload_order():
            if inst.cfg == before:
                continue
            progress(
                f"{inst.label}: {before.reload.doing} back onto the config it ran",
                {"app": app.name},
            )
            try:
                await inst.swap(before)
            except SupervisorError as exc:
                log.error("update_swap_back_failed", instance=inst.label, reason=exc.message)
                stuck.append(inst.label)
        return stuck

    def _record(self, old: Config, new: Config, complete: bool) -> None:
        """What runs is the record: each app with the config it runs. The text (what a
        successor daemon re-reads from state.json) is the file's only once all of it
        was applied; a half-applied update keeps the text that ran before."""
        sup = self.sup
        sup.take_config(
            replace(
                new,
                supervisor=old.supervisor,
                apps={n: a.cfg for n, a in sup.apps.items()},
                text=new.text if complete else old.text,
            )
        )
