"""Which ``Host`` names the HTTP API answers: the defence against DNS rebinding.

A web page the operator visits can make the browser send requests to
``127.0.0.1:9190`` under a name of the attacker's (``attacker.example`` rebound to
127.0.0.1), and read the answers: app output, operators' uids. The browser always says
which name it thinks it talks to in ``Host``, so the API answers only names that are
this machine's own to the client:

* loopback names and addresses: ``localhost`` (and ``*.localhost``), ``127.0.0.0/8``,
  ``::1``;
* the address the request arrived on (the listen address, or with a wildcard listen
  address the interface's own address): an IP literal is never a rebound name;
* the names the operator lists in ``supervisor.http.allowed_hosts``.

Any port (or none) goes with those names: a rebinding page cannot choose the name, and
a proxy in front may forward from another port. A request without ``Host`` is served
only on HTTP/1.0 (which has none); on HTTP/1.1, whose clients all send one, it is
refused like a foreign name. Over a unix socket every ``Host`` is served: no browser
can reach a unix socket, so no name can be rebound onto one.

Pure functions, no I/O: :mod:`server` asks :meth:`HostPolicy.refusal` per request.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["HostPolicy"]

# one host (a name or a bracketed IPv6 literal) and an optional port
_HOST_RE = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::[0-9]{1,5})?")


def _malformed(value: str) -> bool:
    """True when a ``Host`` field is not one host with an optional port (a list such
    as ``a, b``, spaces, userinfo): 400, whatever the policy."""
    return _HOST_RE.fullmatch(value) is None


def _name_of(value: str) -> str:
    """The host of a well-formed ``Host`` value: lower-cased, no port, no brackets, no
    trailing dot."""
    if value.startswith("["):
        name = value[1 : value.index("]")]
    else:
        name = value.rpartition(":")[0] if ":" in value else value
    return name.lower().rstrip(".")


def _ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _unspecified(host: str) -> bool:
    ip = _ip(host)
    return ip is not None and ip.is_unspecified


@dataclass(frozen=True)
class HostPolicy:
    """The names one HTTP API answers (see the module's docstring)."""

    allowed: frozenset[str]  # lower-cased, without trailing dots
    unix: bool = False

    @classmethod
    def of(cls, listen_host: str | None, allowed: Iterable[str], unix: bool = False) -> HostPolicy:
        names = {n.lower().removeprefix("[").removesuffix("]").rstrip(".") for n in allowed}
        if listen_host and not _unspecified(listen_host):  # 0.0.0.0 is no one's name
            names.add(listen_host.lower())
        return cls(frozenset(names), unix)

    def refusal(self, hosts: list[str], http10: bool, local: object) -> tuple[int, str] | None:
        """None when a request with these ``Host`` fields is answered, else the status
        and reason to refuse it with; ``local`` is the connection's local address."""
        if len(hosts) > 1 or any(_malformed(h) for h in hosts):
            return 400, "malformed Host field (one host, an optional port)"
        local_ip = local[0] if isinstance(local, tuple) else None
        if not self.allows(hosts[0] if hosts else None, http10, local_ip):
            return 421, "not answered for this Host name (see supervisor.http.allowed_hosts)"
        return None

    def allows(self, host: str | None, http10: bool, local_address: str | None) -> bool:
        """Whether to answer a request with this ``Host`` (None: none sent) that
        arrived on ``local_address`` (the server side's IP; None over a unix socket)."""
        if self.unix:
            return True
        if host is None:
            return http10
        name = _name_of(host)
        if name == "localhost" or name.endswith(".localhost") or name in self.allowed:
            return True
        ip = _ip(name)
        if ip is None:
            return False
        return ip.is_loopback or (local_address is not None and ip == _ip(local_address))
