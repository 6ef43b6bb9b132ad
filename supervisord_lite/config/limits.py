"""What a config file may hold at all, checked before and after YAML composes it.

A config whose values could never run must fail ``--check`` (and ``update``) with
the path and line, not leave an instance stuck or the daemon without memory:

- the file is at most :data:`MAX_FILE_BYTES`; a scalar at most :data:`MAX_SCALAR`
  characters; collections nest at most :data:`MAX_DEPTH` deep (checked on the event
  stream, which PyYAML produces without recursion, before the recursive composer
  runs); the tree, aliases expanded, has at most :data:`MAX_NODES` nodes (so an
  alias "billion laughs" is refused in linear time);
- explicit tags are the standard ones only (``!!str``, ``!!int``, ``!!float``,
  ``!!bool``, ``!!null``, ``!!map``, ``!!seq``): ``!!python/object``, ``!!binary``,
  ``!!set`` and custom ``!tags`` are errors, never silently read as strings;
- no value contains a NUL character (argv, env, paths all become C strings);
- counts the daemon turns into processes or files (``instances``, ``logs.backups``)
  are bounded by :data:`MAX_INSTANCES` and :data:`MAX_BACKUPS`.

The YAML reader (``config_yaml``) calls the checks, handing it PyYAML's events and
nodes in a neutral form (``config_yaml`` stays the only module that imports yaml);
the validators of ``instances`` and ``logs.backups`` apply the counts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from ..errors import ConfigError

N = TypeVar("N")

MAX_FILE_BYTES = 4 * 1024 * 1024
MAX_SCALAR = 64 * 1024
MAX_DEPTH = 64
MAX_NODES = 200_000
MAX_INSTANCES = 1000
MAX_BACKUPS = 1000

_STANDARD_TAGS = frozenset(
    "tag:yaml.org,2002:" + name for name in ("str", "int", "float", "bool", "null", "map", "seq")
) | {"!"}  # `! value`: the non-specific tag, a plain string


@dataclass(frozen=True)
class Event:
    """One YAML parse event: ``kind`` is scalar, alias, map, seq (a collection
    starts) or end (one ends); ``tag`` only when written explicitly."""

    kind: str
    tag: str | None
    value: str
    line: int | None


def check_size(text: str, filename: str) -> None:
    if len(text) > MAX_FILE_BYTES:
        raise ConfigError(f"the config is larger than {MAX_FILE_BYTES} bytes", file=filename)


def check_events(events: Iterable[Event], filename: str) -> None:
    """Nesting, tags, scalars and NULs, from the event stream (iterative)."""
    path: list[_Frame] = []
    for event in events:
        _check_event(event, path, filename)


class _Frame:
    """One open collection while the events stream by: where its items are."""

    def __init__(self, mapping: bool) -> None:
        self.mapping = mapping
        self.index = 0  # items seen (a mapping: keys and values)
        self.key = "?"

    def child(self) -> str | None:
        """The name of the node now arriving (None: it is a mapping's key)."""
        if not self.mapping:
            return f"[{self.index}]"
        return None if self.index % 2 == 0 else self.key


def _where(path: list[_Frame]) -> str:
    parts: list[str] = []
    for frame in path:
        name = frame.child()
        if name is None:
            break
        if name.startswith("["):
            parts.append(name)
        else:
            parts.append(("." if parts else "") + name)
    where = "".join(parts)
    return where if len(where) <= 120 else where[:117] + "..."


def _check_event(event: Event, path: list[_Frame], filename: str) -> None:
    def fail(message: str) -> ConfigError:
        return ConfigError(message, file=filename, line=event.line, path=_where(path) or None)

    if event.tag is not None and event.tag not in _STANDARD_TAGS:
        raise fail(
            f"the YAML tag {event.tag!r} is not allowed (only standard scalars, lists, maps)"
        )
    if event.kind == "scalar":
        if len(event.value) > MAX_SCALAR:
            raise fail(f"a value of {len(event.value)} characters (at most {MAX_SCALAR})")
        if "\0" in event.value:
            raise fail("a value must not contain a NUL character")
        if path and path[-1].mapping and path[-1].index % 2 == 0:
            path[-1].key = event.value[:80]
        _advance(path)
    elif event.kind == "alias":
        _advance(path)
    elif event.kind in ("map", "seq"):
        if len(path) >= MAX_DEPTH:
            raise fail(f"collections nested more than {MAX_DEPTH} deep")
        path.append(_Frame(event.kind == "map"))
    elif event.kind == "end" and path:
        path.pop()
        _advance(path)


def _advance(path: list[_Frame]) -> None:
    if path:
        path[-1].index += 1


def check_tree(
    root: N | None, children: Callable[[N], list[N]], line: Callable[[N], int], filename: str
) -> None:
    """The composed tree's size with aliases expanded, computed once per node."""
    if root is None:
        return
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()  # on the path from the root: met again, a cycle
    # children before parents, without recursion (the depth is already bounded, but a
    # DAG of aliases must be sized per distinct node, not per path)
    stack: list[tuple[N, bool]] = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if id(node) in sizes:
            continue
        kids = children(node)
        if not expanded and kids:
            if id(node) in open_nodes:
                raise ConfigError(
                    "a recursive alias (a collection that contains itself)",
                    file=filename,
                    line=line(node),
                )
            open_nodes.add(id(node))
            stack.append((node, True))
            stack.extend((kid, False) for kid in kids if id(kid) not in sizes)
            continue
        open_nodes.discard(id(node))
        sizes[id(node)] = 1 + sum(sizes[id(kid)] for kid in kids)
        if sizes[id(node)] > MAX_NODES:
            raise ConfigError(
                f"the config expands to more than {MAX_NODES} values (aliases included)",
                file=filename,
                line=line(node),
            )


def count_limit(value: int, maximum: int, what: str) -> str | None:
    """An error message when ``value`` exceeds ``maximum`` (None: within it)."""
    if value > maximum:
        return f"{what} must be at most {maximum}, not {value}"
    return None
