"""The value types of the config and their text forms, without YAML.

Addresses (``host:port``, ``[v6]:port``, ``unix:/path``), sizes (``512MiB``),
signals (``TERM``), the enums of choice settings and the ``{placeholder}``
templates: what a setting's value *is*, parsed from text or rendered to it.
"""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import string
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction

PLACEHOLDERS = ("app", "instance", "host", "port", "release", "release_dir", "generation")
DEFAULT_INSTANCES: tuple[str, ...] = ("primary",)
LOG_LEVELS = ("debug", "info", "warning", "error")
# `socket_activation: stdin`: the one listening socket is the child's fd 0 (inetd style)
SOCKET_STDIN = "stdin"

_SIZE_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)")
PORT_RE = re.compile(r"[0-9]{1,5}")
_HOST_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_HOST_NAME_RE = re.compile(rf"{_HOST_LABEL}(?:\.{_HOST_LABEL})*\.?")
# K/M/G are binary, as in most Unix tools (ulimit, systemd's MemoryMax=).
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "k": 1024,
    "m": 1024**2,
    "g": 1024**3,
}
# sun_path is 108 bytes on Linux, one of which is the terminating NUL.
MAX_UNIX_PATH = 107


class LogFormat(StrEnum):
    AUTO = "auto"
    JSON = "json"
    CONSOLE = "console"


@dataclass(frozen=True)
class ListenAddress:
    """One address the supervisor binds: ``host:port``, ``[v6]:port`` or ``unix:/path``.

    ``address`` is the text of the config; ``host`` is an IP literal without brackets
    (``localhost`` is stored as ``127.0.0.1``).
    """

    address: str
    host: str = ""
    port: int = 0
    path: str | None = None

    @property
    def is_unix(self) -> bool:
        return self.path is not None


def render(template: str, values: dict[str, str]) -> str:
    """Fill ``{placeholder}`` names; unknown names were rejected at load time."""
    return template.format_map(values)


def escape_braces(text: str) -> str:
    """Make literal text safe to prepend to a template (``{`` renders as itself)."""
    return text.replace("{", "{{").replace("}", "}}")


def template_fields(text: str) -> list[str]:
    """The placeholder names of a template; raises ValueError when it is malformed."""
    return [name for _, name, _, _ in string.Formatter().parse(text) if name is not None]


def parse_address(text: str) -> ListenAddress:
    """Parse ``host:port``, ``[v6]:port`` or ``unix:/abs/path``; ValueError says why not.

    The host must be an IP literal or ``localhost`` (stored as ``127.0.0.1``): the
    supervisor binds at start and at every ``update``, so a name that resolves
    differently over time, or not at all at boot, would be a trap.
    """
    if text.startswith("unix:"):
        return _parse_unix_address(text)
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ValueError('expected "host:port", "[v6]:port" or "unix:/path"')
    return ListenAddress(text, _parse_host(host), _parse_port(port_text))


def _parse_unix_address(text: str) -> ListenAddress:
    path = text.removeprefix("unix:")
    if not path.startswith("/"):
        raise ValueError("a unix socket path must be absolute (unix:/path)")
    if len(os.fsencode(path)) > MAX_UNIX_PATH:
        raise ValueError(f"a unix socket path may have at most {MAX_UNIX_PATH} bytes")
    return ListenAddress(text, path=path)


def _parse_host(host: str) -> str:
    if host == "localhost":
        return "127.0.0.1"
    bracketed = host.startswith("[") and host.endswith("]")
    literal = host[1:-1] if bracketed else host
    if ":" in host and not bracketed:
        # Without brackets the port cannot be told apart from the address.
        raise ValueError("write an IPv6 address in brackets, e.g. [::1]:8000")
    try:
        ip = ipaddress.ip_address(literal)
    except ValueError:
        raise ValueError(
            f"host {host!r} must be an IP address or 'localhost' (names are not resolved)"
        ) from None
    if bracketed and ip.version != 6:
        raise ValueError("brackets go around IPv6 addresses only, e.g. [::1]:8000")
    return literal


def valid_host_name(text: str) -> bool:
    """A host name (RFC 1123 labels) or an IP address, without a port: what
    ``supervisor.http.allowed_hosts`` lists."""
    if len(text) <= 253 and _HOST_NAME_RE.fullmatch(text):
        return True
    try:
        ipaddress.ip_address(text.removeprefix("[").removesuffix("]"))
    except ValueError:
        return False
    return True


def _parse_port(text: str) -> int:
    port = int(text) if PORT_RE.fullmatch(text) else 0
    if not 1 <= port <= 65535:
        raise ValueError(f"port must be a number from 1 to 65535, not {text!r}")
    return port


def address_key(address: ListenAddress) -> tuple[str, str, int]:
    """Identity of a bound address: ``localhost:80`` and ``127.0.0.1:80`` are the same."""
    if address.path is not None:
        return ("unix", os.path.normpath(address.path), 0)
    return ("tcp", ipaddress.ip_address(address.host).compressed, address.port)


def parse_size(text: str) -> int:
    """Bytes of ``512MiB``, ``1.5G``, ``100KB`` or ``4096``; ValueError when malformed.

    KB/MB/GB are decimal; KiB/MiB/GiB and the short K/M/G are binary. Units are
    case-insensitive. Fractions are allowed and rounded down to whole bytes.
    """
    match = _SIZE_RE.fullmatch(text.strip())
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _SIZE_UNITS:
        raise ValueError(text)
    return int(Fraction(match.group(1)) * _SIZE_UNITS[unit])


def parse_signal(value: str | int) -> signal.Signals:
    """``TERM``, ``SIGTERM``, ``term`` or a signal number; ValueError when unknown."""
    if isinstance(value, int):
        return signal.Signals(value)
    name = value.strip().upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    if name not in signal.Signals.__members__:
        raise ValueError(value)
    return signal.Signals[name]
