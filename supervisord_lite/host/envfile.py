"""``env_file:``: KEY=value files in systemd's ``EnvironmentFile=`` syntax.

The syntax (what systemd's parser accepts, less its silent skipping of bad lines:
here every bad line is an error naming the file and line):

- one ``KEY=value`` per line; blank lines and lines whose first non-blank character
  is ``#`` or ``;`` are comments; whitespace around the key and before the value is
  ignored, and so is trailing whitespace of an unquoted value;
- ``'single quotes'`` keep everything literally (newlines too); ``"double quotes"``
  keep everything but ``\\"``, ``\\\\``, ``\\$`` and ``\\``` (the escaped character)
  and a backslash-newline (removed); quoted and unquoted parts may follow each other;
- outside quotes, a backslash takes the next character literally and a
  backslash-newline continues the value on the next line;
- a key is ``[A-Za-z_][A-Za-z0-9_]*`` (no ``export``: systemd has none either).

A leading ``-`` on the configured path makes the file optional: a missing file then
gives no variables (as with systemd). Values are secrets: no message of this module
quotes the file (a message names the file and line, never a key or a value), and
nothing here logs.

The file is read with the app's rights (:func:`spawning.read_as`: the app's user
could read it, no link planted by that user is followed, no FIFO or device, at most
``MAX_BYTES``), every time a process of the app is spawned and when a config is
checked or applied: an app's user who swaps its env file for a link to another app's
secrets gets a failed spawn, not the secrets.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import re

from ..config.settings import AppConfig, Config
from ..errors import ConfigError, SpawnError
from .spawning import read_as

_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BLANK = " \t\r\f\v"
_DQ_ESCAPES = '"\\`$'
MAX_BYTES = 1 << 20  # an env file is a few lines: more is an attack or a mistake


class EnvFileError(ConfigError):
    """An env file cannot be read or parsed; names the file and the line."""


def split_optional(setting: str) -> tuple[str, bool]:
    """``"-/etc/web.env"`` -> ``("/etc/web.env", True)``."""
    if setting.startswith("-"):
        return setting[1:], True
    return setting, False


async def load(cfg: AppConfig, loop: asyncio.AbstractEventLoop) -> dict[str, str]:
    """The variables of the app's ``env_file`` (none when it has none), read with the
    app's rights (raises :class:`EnvFileError` naming the file and line)."""
    if cfg.env_file is None:
        return {}
    path, optional = split_optional(cfg.env_file)
    try:
        data = await read_as(path, MAX_BYTES, cfg.user, cfg.group, loop)
    except SpawnError as exc:
        raise EnvFileError(
            f"cannot read env_file as the app's user: {exc.message}", file=path
        ) from None
    except OSError as exc:
        if optional and exc.errno == errno.ENOENT:
            return {}
        raise EnvFileError(f"cannot read env_file: {exc.strerror or exc}", file=path) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise EnvFileError("env_file is not UTF-8 text", file=path, line=line) from None
    return parse(text, path)


def digest(values: dict[str, str]) -> str:
    """A fingerprint of the values (to notice a changed file without keeping it)."""
    h = hashlib.sha256()
    for key in sorted(values):
        h.update(key.encode() + b"\0" + values[key].encode("utf-8", "surrogatepass") + b"\0")
    return h.hexdigest()


def parse(text: str, filename: str) -> dict[str, str]:
    """The variables of an env file's text (later assignments win)."""
    return _Parser(text, filename).run()


class _Parser:
    def __init__(self, text: str, filename: str) -> None:
        self.text = text
        self.filename = filename
        self.i = 0
        self.line = 1

    def error(self, line: int, message: str) -> EnvFileError:
        return EnvFileError(message, file=self.filename, line=line)

    def run(self) -> dict[str, str]:
        env: dict[str, str] = {}
        text, n = self.text, len(self.text)
        while self.i < n:
            c = text[self.i]
            if c == "\n":
                self.line += 1
                self.i += 1
            elif c in _BLANK:
                self.i += 1
            elif c in "#;":
                self._comment()
            else:
                key, value = self._assignment()
                env[key] = value
        return env

    def _comment(self) -> None:
        # systemd lets a backslash continue a comment onto the next line too
        text, n = self.text, len(self.text)
        while self.i < n and text[self.i] != "\n":
            if text[self.i] == "\\" and self.i + 1 < n and text[self.i + 1] == "\n":
                self.line += 1
                self.i += 1
            self.i += 1

    def _assignment(self) -> tuple[str, str]:
        text, n = self.text, len(self.text)
        start = self.line
        end = self.i
        while end < n and text[end] not in "=\n":
            end += 1
        key = text[self.i : end].strip(_BLANK)
        if end >= n or text[end] != "=":
            raise self.error(start, "expected KEY=value, got a line without '='")
        if not _KEY_RE.fullmatch(key):
            hint = " (no `export`: write KEY=value)" if key.startswith("export ") else ""
            raise self.error(start, f"invalid variable name{hint}")
        self.i = end + 1
        while self.i < n and text[self.i] in _BLANK:
            self.i += 1
        value = self._value()
        if "\0" in value:
            raise self.error(start, "a value contains a NUL character")
        return key, value

    def _value(self) -> str:
        text, n = self.text, len(self.text)
        out: list[str] = []
        kept = 0  # out[:kept] is quoted or escaped: never stripped as trailing blanks
        while self.i < n:
            c = text[self.i]
            if c == "\n":
                break
            if c == "'":
                out.append(self._single())
                kept = len(out)
            elif c == '"':
                out.append(self._double())
                kept = len(out)
            elif c == "\\":
                self.i += 1
                if self.i < n:
                    if text[self.i] == "\n":
                        self.line += 1
                    else:
                        out.append(text[self.i])
                        kept = len(out)
                    self.i += 1
            else:
                out.append(c)
                self.i += 1
        head, tail = "".join(out[:kept]), "".join(out[kept:])
        return head + tail.rstrip(_BLANK)

    def _single(self) -> str:
        start = self.line
        close = self.text.find("'", self.i + 1)
        if close < 0:
            raise self.error(start, "unterminated single quote")
        part = self.text[self.i + 1 : close]
        self.line += part.count("\n")
        self.i = close + 1
        return part

    def _double(self) -> str:
        text, n = self.text, len(self.text)
        start = self.line
        out: list[str] = []
        self.i += 1
        while self.i < n:
            c = text[self.i]
            if c == '"':
                self.i += 1
                return "".join(out)
            if c == "\\" and self.i + 1 < n:
                nxt = text[self.i + 1]
                if nxt == "\n":
                    self.line += 1
                elif nxt in _DQ_ESCAPES:
                    out.append(nxt)
                else:
                    out.append(c + nxt)
                self.i += 2
                continue
            if c == "\n":
                self.line += 1
            out.append(c)
            self.i += 1
        raise self.error(start, "unterminated double quote")


async def for_spawn(cfg: AppConfig, loop: asyncio.AbstractEventLoop) -> dict[str, str]:
    """The variables a child gets from its ``env_file`` (read afresh at every spawn);
    a bad file fails the spawn with the reason (file:line, never a value)."""
    try:
        return await load(cfg, loop)
    except EnvFileError as exc:
        raise SpawnError(f"env_file: {exc.message}") from None


async def digests(config: Config, strict: bool = False) -> dict[str, str | None]:
    """App -> fingerprint of its env_file's variables (None: none, or unreadable).

    ``strict`` raises :class:`EnvFileError` for a bad file (the file and line)."""
    loop = asyncio.get_running_loop()
    found: dict[str, str | None] = {}
    for name, cfg in config.apps.items():
        found[name] = None
        if cfg.env_file is not None:
            try:
                found[name] = digest(await load(cfg, loop))
            except EnvFileError:
                if strict:
                    raise
    return found


def check(config: Config) -> None:
    """Raise :class:`EnvFileError` (file:line) for the first bad env file (as each app's
    user would read it)."""
    asyncio.run(digests(config, strict=True))
