"""The loader: one generic walk over the declarations turns a YAML tree into a Config.

For each section class the walk lists its declared settings
(:func:`config_schema.settings`), reads the mapping's entries (unknown keys and
missing required ones are errors naming path and line), reads each entry with
its setting's validator (or, for a sub-section, by walking that section), applies
the section's :data:`config_rules.RULES` and builds the frozen dataclass. Beyond
sections, only the top level, the apps mapping and dependency cycles are here.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from . import limits
from .rules import RULES
from .schema import Rules, Setting, settings
from .settings import AppConfig, Config, HttpConfig, SupervisorConfig
from .validators import Context, check_name
from .yaml_reader import Source, Value, read_tree

TOP_LEVEL = ("supervisor", "apps")
_DEFAULT_HTTP_LISTEN = HttpConfig().listen
_NO_RULES = Rules()


def read_section(
    ctx: Context, cls: type[Any], v: Value | None, kw: dict[str, Any] | None = None
) -> Any:
    """The section ``cls`` read from ``v`` (None: absent, every default); ``kw``: prefilled."""
    rules = RULES.get(cls, _NO_RULES)
    if v is not None and rules.shortcut is not None:
        shortcut = rules.shortcut(v)
        if shortcut is not None:
            return shortcut
    declared = settings(cls)
    entries = v.entries(tuple(s.key for s in declared)) if v is not None else {}
    kw = {} if kw is None else kw
    position = {key: i for i, key in enumerate(entries)}

    def order(s: Setting) -> tuple[int, int]:
        """Phase 0 first, in declaration order; then the keys as written; then phase 2."""
        return (s.phase, position.get(s.key, 0) if s.phase == 1 else 0)

    for s in sorted(declared, key=order):
        entry = entries.get(s.key)
        if entry is not None:
            kw[s.key] = read_setting(ctx, s, entry)
        elif s.phase == 2 and s.section is not None:
            kw[s.key] = read_section(ctx, s.section, None)
    for s in declared:
        if s.required and s.key not in entries and v is not None:
            raise v.error(f"missing required key {s.key!r}")
    if rules.finish is not None:
        rules.finish(ctx, v, kw, entries)
    return cls(**kw)


def read_setting(ctx: Context, s: Setting, v: Value) -> Any:
    if s.nullable and v.is_null:
        return None
    if s.section is not None:
        return read_section(ctx, s.section, v)
    assert s.validator is not None  # a declaration has one or the other
    return s.validator.read(ctx, v)


def _read_config(root: Value | None, filename: str) -> Config:
    ctx = Context()
    top = _top_level(root)
    supervisor: SupervisorConfig = read_section(ctx, SupervisorConfig, top.get("supervisor"))
    if supervisor.http.listen is _DEFAULT_HTTP_LISTEN and _DEFAULT_HTTP_LISTEN is not None:
        ctx.claim(_DEFAULT_HTTP_LISTEN, "supervisor.http.listen (its default)")
    apps = _read_apps(ctx, top["apps"]) if "apps" in top else {}
    _check_cycles(ctx)
    path = None if Source(filename).base_dir is None else os.path.abspath(filename)
    return Config(supervisor, apps, path)


def _top_level(root: Value | None) -> dict[str, Value]:
    if root is None:
        return {}  # an empty file: every default, no apps
    if root.is_sequence or (root.is_scalar and not root.is_null):
        raise root.type_error("the config must be a mapping with keys supervisor, apps")
    return root.entries(TOP_LEVEL)


def _read_apps(ctx: Context, v: Value) -> dict[str, AppConfig]:
    entries = v.entries()
    for name, entry in entries.items():
        check_name(entry, name, "app")
    ctx.app_names = tuple(entries)
    apps: dict[str, AppConfig] = {}
    for name, entry in entries.items():
        ctx.app_name, ctx.app = name, {"name": name}
        apps[name] = read_section(ctx, AppConfig, entry, ctx.app)
    return apps


def _check_cycles(ctx: Context) -> None:
    """Reject ``a -> b -> a``: such apps could never be started in order."""
    done: set[str] = set()
    for app in ctx.dependencies:
        _visit(ctx, app, [], done)


def _visit(ctx: Context, app: str, stack: list[str], done: set[str]) -> None:
    if app in done:
        return
    if app in stack:
        cycle = [*stack[stack.index(app) :], app]
        # Report it where the cycle's first edge is written.
        edge = next(item for dep, item in ctx.dependencies[app] if dep == cycle[1])
        raise edge.error(f"dependency cycle: {' -> '.join(cycle)}")
    stack.append(app)
    for dep, _ in ctx.dependencies.get(app, []):
        _visit(ctx, dep, stack, done)
    stack.pop()
    done.add(app)


def parse_config(text: str, filename: str = "<config>") -> Config:
    """Validate YAML text into a :class:`Config`, or raise :class:`ConfigError`.

    The error names ``filename``, the 1-based line and the key path of the first
    offending key or value found. Each setting's rules are its declaration's
    (``supervisord-lite --help-config``); across settings, see ``config_rules``.
    """
    config = _read_config(read_tree(text, filename), filename)
    return dataclasses.replace(config, text=text)


def load_config(path: str | Path) -> Config:
    """Read and validate a config file, or raise :class:`ConfigError`."""
    p = Path(path)
    try:
        with p.open("rb") as f:  # bounded: a huge file is refused, not read into memory
            text = f.read(limits.MAX_FILE_BYTES + 1).decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config: {exc.strerror or exc}", file=str(p)) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"cannot read config: not UTF-8 text ({exc.reason})", file=str(p)
        ) from exc
    return parse_config(text, str(p))
