"""The rules of a section that no single setting's validator can check alone.

One :class:`config_schema.Rules` per section class that needs it: the shortcut
forms (``reload: swap``, ``http: null``), the readiness default, at most one probe
per check, ``backoff.max >= backoff.initial`` and an app's derived fields.
"""

from __future__ import annotations

from typing import Any

from .schema import Rules
from .settings import (
    DEFAULT_READY_DELAY,
    DEFAULT_READY_TCP,
    RELOAD_RESTART,
    RELOAD_SWAP,
    AppConfig,
    BackoffConfig,
    HealthConfig,
    HttpConfig,
    ReadyConfig,
    ReloadConfig,
)
from .validators import Context
from .values import SOCKET_STDIN
from .yaml_reader import Value

_PROBES = ("http", "tcp", "exec")


def _http_shortcut(v: Value) -> HttpConfig | None:
    # `http: null` disables the API, as `http: {listen: null}` does: anything
    # else would surprise whoever wrote null to turn it off.
    return HttpConfig(listen=None) if v.is_null else None


def _reload_shortcut(v: Value) -> ReloadConfig | None:
    """``swap`` (or null), ``restart``, or ``{signal, pidfile}`` (read as the section)."""
    if v.is_null or (v.kind == "str" and v.text == RELOAD_SWAP):
        return ReloadConfig()
    if v.kind == "str" and v.text == RELOAD_RESTART:
        return ReloadConfig(restart=True)
    if not v.is_mapping:
        raise v.type_error(
            f'must be "{RELOAD_SWAP}", "{RELOAD_RESTART}" or a mapping with keys signal, pidfile'
        )
    return None


def _at_most_one_probe(entries: dict[str, Value]) -> None:
    # In file order, so that the error points at the second probe written.
    given = [entry for key, entry in entries.items() if key in _PROBES and not entry.is_null]
    if len(given) > 1:
        first = given[0]
        message = f"only one of http, tcp, exec may be set ({first.path} is on line {first.line})"
        raise given[1].error(message)


def _finish_ready(
    ctx: Context, v: Value | None, kw: dict[str, Any], entries: dict[str, Value]
) -> None:
    """Fill in the default criterion (see :class:`ReadyConfig`); delay < timeout."""
    _at_most_one_probe(entries)
    criteria = ("http", "tcp", "exec", "delay")
    if not kw.get("notify") and all(kw.get(key) is None for key in criteria):
        listen = ctx.app.get("listen", {})
        if listen and not any(address.is_unix for address in listen.values()):
            kw["tcp"] = DEFAULT_READY_TCP
        else:
            kw["delay"] = DEFAULT_READY_DELAY
    ready = ReadyConfig(**kw)
    # A delay that reaches the timeout would make every start fail.
    if ready.delay is None or ready.delay < ready.timeout:
        return
    delay = entries.get("delay")
    if delay is not None and not delay.is_null:
        raise delay.error(f"must be less than ready.timeout ({ready.timeout:g})")
    # Only a configured timeout can be shorter than the default delay.
    raise entries["timeout"].error(f"must be more than the default ready.delay ({ready.delay:g})")


def _finish_health(
    ctx: Context, v: Value | None, kw: dict[str, Any], entries: dict[str, Value]
) -> None:
    _at_most_one_probe(entries)
    if v is not None and all(kw.get(key) is None for key in _PROBES):
        raise v.error("must set exactly one of: http, tcp, exec")


def _finish_backoff(
    ctx: Context, v: Value | None, kw: dict[str, Any], entries: dict[str, Value]
) -> None:
    backoff = BackoffConfig(**kw)
    if backoff.max >= backoff.initial:
        return
    if "max" in entries:
        raise entries["max"].error(f"must be >= backoff.initial ({backoff.initial:g})")
    raise entries["initial"].error(f"must be <= backoff.max (default {backoff.max:g})")


def _finish_app(
    ctx: Context, v: Value | None, kw: dict[str, Any], entries: dict[str, Value]
) -> None:
    listen = entries.get("listen")
    kw["listen_shared"] = listen is not None and listen.is_scalar and not listen.is_null
    # An app that binds its port itself cannot boot a new generation beside the old one
    # (EADDRINUSE), so it is restarted one instance at a time unless it says otherwise
    # (`reload: swap` for SO_REUSEPORT servers, `{signal, pidfile}` for re-exec ones).
    if kw.get("socket_activation") is False and "reload" not in entries:
        kw["reload"] = ReloadConfig(restart=True)
    # The listen map gives each instance exactly one address, so "one socket on fd 0"
    # only needs one to be there at all.
    if kw.get("socket_activation") == SOCKET_STDIN and not kw.get("listen"):
        where = entries["socket_activation"]
        raise where.error(
            f'"{SOCKET_STDIN}" needs a listen address: the socket is the standard input'
        )


RULES: dict[type[Any], Rules] = {
    HttpConfig: Rules(shortcut=_http_shortcut),
    ReloadConfig: Rules(shortcut=_reload_shortcut),
    ReadyConfig: Rules(finish=_finish_ready),
    HealthConfig: Rules(finish=_finish_health),
    BackoffConfig: Rules(finish=_finish_backoff),
    AppConfig: Rules(finish=_finish_app),
}
