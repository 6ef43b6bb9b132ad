"""Validators of the settings that take placeholders: commands, env, paths and probes.

A template may use only the placeholders the app can fill: ``{host}``/``{port}``
need a TCP listen address, ``{release}``/``{release_dir}`` a ``release``; the
app's ``listen`` and ``release`` are read first (phase 0) so these checks know.
"""

from __future__ import annotations

import os
import shlex
import string

from .validators import Context, Validator, nonempty_string, read_string, text
from .values import PLACEHOLDERS, PORT_RE, ListenAddress, escape_braces, render, template_fields
from .yaml_reader import Value

# Values used to check the shape of a rendered tcp check template.
_SAMPLE_VALUES = {
    "app": "app",
    "instance": "primary",
    "host": "127.0.0.1",
    "port": "8000",
    "release": "r1",
    "release_dir": "/srv/app/releases/r1",
    "generation": "1",
}


def template(ctx: Context, v: Value, written: str) -> str:
    """Check that ``written`` only uses placeholders this app can fill; return it."""
    try:
        parts = list(string.Formatter().parse(written))
    except ValueError as exc:
        raise v.error(
            f"malformed placeholder in {written!r}: {exc} (write {{{{ and }}}} for braces)"
        ) from None
    for _, name, spec, conversion in parts:
        if name is not None:
            _check_placeholder(ctx, v, name, spec or conversion)
    return written


def _check_placeholder(ctx: Context, v: Value, name: str, extra: str | None) -> None:
    listen: dict[str, ListenAddress] = ctx.app.get("listen", {})
    if name not in PLACEHOLDERS:
        known = ", ".join(PLACEHOLDERS)
        raise v.error(f"unknown placeholder {{{name}}} (expected one of: {known})")
    if extra:
        raise v.error(f"placeholder {{{name}}} cannot have a format spec or conversion")
    if name in ("host", "port") and not listen:
        raise v.error(f"{{{name}}} needs a listen address, and this app has none")
    if name in ("host", "port") and any(address.is_unix for address in listen.values()):
        raise v.error(f"{{{name}}} has no value: this app listens on a unix socket")
    if name in ("release", "release_dir") and ctx.app.get("release") is None:
        raise v.error(f"{{{name}}} needs a 'release' setting, and this app has none")


def _argv(ctx: Context, v: Value) -> tuple[str, ...]:
    """A command: a list of arguments, or a string split like a shell would."""
    expected = "must be a command: a list of strings or a command line"
    if v.is_sequence:
        args = [template(ctx, i, text(i, "must be a string")) for i in v.items(expected)]
    else:
        try:
            split = shlex.split(text(v, expected))
        except ValueError as exc:
            raise v.error(f"cannot split the command line: {exc}") from None
        args = [template(ctx, v, arg) for arg in split]
    if not args or not args[0]:
        raise v.error("must not be empty (it names the program to run)")
    return tuple(args)


ARGV = Validator("command (list, or a command line)", _argv)


def _env(ctx: Context, v: Value) -> dict[str, str]:
    """Names to values; numbers and bools are kept as written (``yes``, ``08``)."""
    env: dict[str, str] = {}
    for key, entry in v.entries().items():
        if not key or "=" in key or "\0" in key:
            raise entry.error(f"invalid environment variable name {key!r}")
        value = text(entry, 'must be a string, number or bool (write "" for empty)')
        env[key] = template(ctx, entry, value)
    return env


ENV = Validator("mapping of name to value", _env)


def _cwd(ctx: Context, v: Value) -> str:
    path = template(ctx, v, nonempty_string(v))
    base_dir = v.source.base_dir
    # With placeholders the path is only known at spawn time ("{release_dir}"
    # is absolute anyway); a plain relative one is relative to the config file.
    if base_dir is None or os.path.isabs(path) or template_fields(path):
        return path
    return os.path.normpath(os.path.join(escape_braces(base_dir), path))


CWD = Validator("path (placeholders allowed)", _cwd)
TEMPLATE_PATH = Validator(
    "path (placeholders allowed)", lambda ctx, v: template(ctx, v, nonempty_string(v))
)


def _http_url(ctx: Context, v: Value) -> str:
    url = read_string(v, 'must be a URL like "http://{host}:{port}/health"')
    if not url.startswith("http://") or len(url) == len("http://"):
        raise v.error(f'must be a URL starting with "http://", not {url!r}')
    return template(ctx, v, url)


def _tcp_target(ctx: Context, v: Value) -> str:
    expected = 'must be "host:port", e.g. "{host}:{port}"'
    target = template(ctx, v, read_string(v, expected))
    host, sep, port = render(target, _SAMPLE_VALUES).rpartition(":")
    if not (sep and host and PORT_RE.fullmatch(port) and 1 <= int(port) <= 65535):
        raise v.error(f"{expected}, not {target!r}")
    return target


HTTP_URL = Validator("URL (http://..., placeholders allowed)", _http_url)
TCP_TARGET = Validator("host:port (placeholders allowed)", _tcp_target)


def _commands(ctx: Context, v: Value) -> tuple[tuple[str, ...], ...]:
    """A list of commands, each as ``command`` is written (list, or a command line)."""
    return tuple(_argv(ctx, item) for item in v.items("must be a list of commands"))


COMMANDS = Validator("list of commands", _commands)
