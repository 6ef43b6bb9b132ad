"""What ``update`` does, decided once: the difference between two configs as a Plan.

:func:`diff` is the only place that decides which apps an update adds, removes,
hot-swaps or restarts and which sockets it binds or closes. ``supctl plan`` (and
``update --dry-run``) shows its result; ``update`` (updater.py) executes the same
result, so what the plan says is what an update does. Pure: no I/O, no clock.

The plan names changed keys (``env.COLOUR``, ``stop.timeout``), never values: an
``env`` value may be a secret.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ..app.app import canonical
from ..config.settings import AppConfig, Config

# changes an instance cannot take by a hot swap: they need new sockets, another set
# of instances or other log files, so the app is stopped and started again
RESTART_KEYS = ("instances", "listen", "socket_activation", "logs")


class Action(StrEnum):
    ADD = "add"
    REMOVE = "remove"
    SWAP = "swap"  # hot swap of each instance, backup first: no downtime
    RESTART = "restart"  # stop every instance, then start the new app
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class AppPlan:
    name: str
    action: Action
    keys: tuple[str, ...] = ()  # what changed (key paths, never values)
    instances: tuple[str, ...] = ()  # in the order the update handles them
    capacity: str | None = None  # how serving capacity dips while the update runs
    starts: bool = False  # an added or restarted app is started (autostart)
    method: str | None = None  # SWAP: how each instance is replaced (ReloadConfig.method)

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.action.value,
            "method": self.method,
            "keys": list(self.keys),
            "instances": list(self.instances),
            "capacity": self.capacity,
            "starts": self.starts,
        }


@dataclass(frozen=True)
class Plan:
    apps: tuple[AppPlan, ...]  # removed apps first, then the new config's start order
    bind: tuple[str, ...] = ()  # addresses bound anew
    close: tuple[str, ...] = ()  # addresses no app listens on any more
    moved: tuple[str, ...] = ()  # kept open, handed from the old app to its successor
    supervisor_keys: tuple[str, ...] = ()  # changed under supervisor: (next daemon start)
    refusal: str | None = None  # why update refuses this without --allow-empty

    def names(self, action: Action) -> list[str]:
        return [a.name for a in self.apps if a.action is action]

    @property
    def added(self) -> list[str]:
        return self.names(Action.ADD)

    @property
    def removed(self) -> list[str]:
        return self.names(Action.REMOVE)

    @property
    def swapped(self) -> list[str]:
        return self.names(Action.SWAP)

    @property
    def restarted(self) -> list[str]:
        return self.names(Action.RESTART)

    @property
    def unchanged(self) -> list[str]:
        return self.names(Action.UNCHANGED)

    @property
    def changes(self) -> bool:
        """True when an update would change something that runs."""
        return any(a.action is not Action.UNCHANGED for a in self.apps)

    def app(self, name: str) -> AppPlan:
        return next(a for a in self.apps if a.name == name)

    def to_json(self) -> dict[str, Any]:
        """The stable ``--json`` shape (docs/contract.md "supctl plan")."""
        return {
            "changes": self.changes,
            "refused": self.refusal,
            "added": self.added,
            "removed": self.removed,
            "swapped": self.swapped,
            "restarted": self.restarted,
            "unchanged": self.unchanged,
            "apps": {a.name: a.to_json() for a in self.apps},
            "sockets": {
                "bind": list(self.bind),
                "close": list(self.close),
                "moved": list(self.moved),
            },
            "capacity": [a.capacity for a in self.apps if a.capacity],
            "supervisor_keys": list(self.supervisor_keys),
            "text": self.lines(),
        }

    def lines(self) -> list[str]:
        """The plan for people, one line per thing that happens."""
        if not self.changes:
            out = ["nothing to do: the running config is the file's"]
        else:
            out = []
            for a in self.apps:
                if a.action is Action.UNCHANGED:
                    continue
                then = "start" if a.starts else "configure (autostart: false)"
                what = {
                    Action.ADD: f"add ({then} {{instances}})",
                    Action.REMOVE: "remove (stop {instances})",
                    Action.SWAP: f"{a.method} {{instances}} in turn",
                    Action.RESTART: f"restart: stop {{instances}}, then {then} the new app",
                }[a.action].format(instances=", ".join(a.instances))
                keys = f"; changed: {', '.join(a.keys)}" if a.keys else ""
                out.append(f"{a.name}: {what}{keys}")
            for label, addresses in (
                ("bind", self.bind),
                ("close", self.close),
                ("keep open", self.moved),
            ):
                if addresses:
                    out.append(f"sockets: {label} {', '.join(addresses)}")
            out.extend(f"capacity: {a.capacity}" for a in self.apps if a.capacity)
            unchanged = self.unchanged
            if unchanged:
                out.append(f"unchanged: {', '.join(unchanged)}")
        if self.supervisor_keys:
            keys = ", ".join(self.supervisor_keys)
            out.append(f"note: supervisor: {keys} changed; takes effect at the next daemon start")
        if self.refusal:
            out.append(f"refused without --allow-empty: {self.refusal}")
        return out


def changed_keys(old: Any, new: Any) -> list[str]:
    """Key paths where two settings (dataclasses) differ: one level into nested
    settings (``stop.timeout``) and into ``env`` (``env.COLOUR``), never values."""
    keys: list[str] = []
    for f in dataclasses.fields(old):
        if f.name in ("name", "listen_shared"):
            continue  # the name is the app's own; listen_shared follows from listen
        a, b = getattr(old, f.name), getattr(new, f.name)
        if a == b:
            continue
        if dataclasses.is_dataclass(a) and dataclasses.is_dataclass(b) and type(a) is type(b):
            sub = [
                f"{f.name}.{g.name}"
                for g in dataclasses.fields(a)
                if getattr(a, g.name) != getattr(b, g.name)
            ]
            keys += sub or [f.name]
        elif isinstance(a, dict) and isinstance(b, dict) and f.name == "env":
            keys += [f"env.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        else:
            keys.append(f.name)
    return keys


def needs_restart(old: AppConfig, new: AppConfig) -> bool:
    """True when the change cannot be hot-swapped (see :data:`RESTART_KEYS`)."""
    return any(getattr(old, key) != getattr(new, key) for key in RESTART_KEYS)


def addresses(cfg: AppConfig) -> list[str]:
    """The addresses the supervisor binds for an app (canonical form, each once)."""
    if not cfg.socket_activation:
        return []  # the app binds {port} itself
    return list(dict.fromkeys(canonical(a) for a in cfg.listen.values()))


def reload_order(instances: tuple[str, ...]) -> tuple[str, ...]:
    """Backups first, the primary (the first listed) last: App.reload_order's rule."""
    return instances[1:] + instances[:1]


def diff(old: Config, new: Config, env_changed: frozenset[str] = frozenset()) -> Plan:
    """What an update from ``old`` (what runs) to ``new`` (the file) does.

    ``env_changed`` names apps whose ``env_file`` contents changed since they were
    applied (the files are read by the caller; this stays pure): they are swapped.
    """
    old_socks = {a for cfg in old.apps.values() for a in addresses(cfg)}
    new_socks = {a for cfg in new.apps.values() for a in addresses(cfg)}
    apps: list[AppPlan] = []
    for name, cfg in old.apps.items():
        if name not in new.apps:
            capacity = _removed(cfg, new_socks)
            apps.append(AppPlan(name, Action.REMOVE, (), cfg.instances, capacity))
    for name in new.start_order():
        cfg = new.apps[name]
        before = old.apps.get(name)
        if before is None:
            apps.append(AppPlan(name, Action.ADD, (), cfg.instances, starts=cfg.autostart))
            continue
        keys = changed_keys(before, cfg)
        if name in env_changed and "env_file" not in keys:
            keys.append("env_file (contents)")
        if not keys:
            apps.append(AppPlan(name, Action.UNCHANGED))
        elif needs_restart(before, cfg):
            capacity = _restarted(before, cfg, new_socks)
            apps.append(
                AppPlan(name, Action.RESTART, tuple(keys), cfg.instances, capacity, cfg.autostart)
            )
        else:
            order = reload_order(cfg.instances)
            apps.append(
                AppPlan(
                    name, Action.SWAP, tuple(keys), order, _swapped(cfg), method=cfg.reload.method
                )
            )
    touched = {a.name for a in apps if a.action in (Action.ADD, Action.RESTART)}
    moved = {a for n in touched for a in addresses(new.apps[n])} & old_socks
    supervisor_keys = tuple(changed_keys(old.supervisor, new.supervisor))
    plan = Plan(
        apps=tuple(apps),
        bind=tuple(sorted(new_socks - old_socks)),
        close=tuple(sorted(old_socks - new_socks)),
        moved=tuple(sorted(moved)),
        supervisor_keys=supervisor_keys,
    )
    return dataclasses.replace(plan, refusal=_refusal(old, new, plan))


def _refusal(old: Config, new: Config, plan: Plan) -> str | None:
    """An update that would stop every app is most likely a mistake (an empty or
    truncated file): say so, so that it needs --allow-empty."""
    if not old.apps or len(plan.removed) < len(old.apps):
        return None
    if not new.apps:
        return f"the new config has no apps: it would stop every app ({', '.join(old.apps)})"
    return f"it would remove every app that runs now ({', '.join(old.apps)})"


def _sockets(old: AppConfig, new_socks: set[str]) -> str:
    """What becomes of an app's sockets when it stops: kept for their next app, or closed."""
    kept = [a for a in addresses(old) if a in new_socks]
    gone = [a for a in addresses(old) if a not in new_socks]
    text = ""
    if kept:
        text += f"; {', '.join(kept)} stays bound (clients wait in its backlog)"
    if gone:
        text += f"; {', '.join(gone)} closed (connections refused)"
    return text


def _removed(cfg: AppConfig, new_socks: set[str]) -> str:
    n = len(cfg.instances)
    return f"{cfg.name}: 0 of {n} instances serving once stopped{_sockets(cfg, new_socks)}"


def _restarted(old: AppConfig, new: AppConfig, new_socks: set[str]) -> str:
    n = len(new.instances)
    text = f"{new.name}: 0 of {n} instances serving from the stop until the new ones are ready"
    return text + _sockets(old, new_socks)


def _swapped(cfg: AppConfig) -> str:
    n = len(cfg.instances)
    if cfg.reload.restart:
        return (
            f"{cfg.name}: {n - 1} of {n} instances serving while each is restarted "
            "(stop-then-start, one at a time: the instances cannot run twice)"
        )
    return (
        f"{cfg.name}: {n} of {n} instances keep serving; each instance's new generation "
        f"boots beside the old one, which is retired once the new one is ready "
        f"(one generation more than usual at the peak)"
    )
