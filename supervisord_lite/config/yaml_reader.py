"""The YAML reader with line numbers: the only module that imports yaml.

The text is composed into a node tree (never constructed into Python objects
wholesale), after the checks of :mod:`config_limits`, so that every value keeps
the line it came from. A :class:`Value` is one node with its key path and line;
it knows how to list a mapping's entries (duplicate keys are errors; anchors,
aliases and ``<<`` merge keys work, explicit keys override merged ones) and a
list's items, and every error it raises names the file, the line and the path.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml

from ..errors import ConfigError
from . import limits

_YAML_TAG = "tag:yaml.org,2002:"
_MERGE_TAG = _YAML_TAG + "merge"
# Scalars are converted one at a time by PyYAML's own rules (octal 0600, 1_000,
# yes/no), so the values are exactly what yaml.safe_load would give.
_CONSTRUCTOR = yaml.constructor.SafeConstructor()


@dataclass(frozen=True)
class Source:
    """The file a tree was read from, and the directory relative paths are resolved in.

    ``base_dir`` is None for a pseudo name such as ``<config>`` (text that does not
    come from a file on disk): relative paths are then kept as given.
    """

    filename: str

    @property
    def base_dir(self) -> str | None:
        name = self.filename
        if name.startswith("<") and name.endswith(">"):
            return None
        return os.path.dirname(os.path.abspath(name))


@dataclass(frozen=True)
class Value:
    """A YAML node with its key path and the 1-based line of the key that holds it.

    The key's line (not the value's) is what an operator looks for: a block mapping
    or list value starts on the line after its key. List items carry their own line.
    """

    source: Source
    node: yaml.Node
    path: str
    line: int

    def child(self, name: str, node: yaml.Node, line: int) -> Value:
        return Value(self.source, node, f"{self.path}.{name}" if self.path else name, line)

    # what it is

    @property
    def kind(self) -> str:
        """The short YAML type: str, int, float, bool, null, map, seq or the tag."""
        if isinstance(self.node, yaml.MappingNode):
            return "map"
        if isinstance(self.node, yaml.SequenceNode):
            return "seq"
        return str(self.node.tag).removeprefix(_YAML_TAG)

    @property
    def is_null(self) -> bool:
        return self.kind == "null"

    @property
    def is_scalar(self) -> bool:
        return isinstance(self.node, yaml.ScalarNode)

    @property
    def text(self) -> str:
        """A scalar as it is written (``10`` and ``yes`` stay text)."""
        return str(self.node.value)

    def describe(self) -> str:
        """How an error message names what was found instead of what was expected."""
        kind = self.kind
        if kind == "map":
            return "a mapping"
        if kind == "seq":
            return "a list"
        text = self.text
        if len(text) > 40:
            text = text[:37] + "..."
        names = {
            "null": "null",
            "bool": f"a bool ({text})",
            "int": f"an integer ({text})",
            "float": f"a number ({text})",
            "str": f"a string ({text!r})",
        }
        return names.get(kind, f"a value tagged {self.node.tag} ({text!r})")

    def construct(self) -> Any:
        """The Python value of a scalar, by PyYAML's rules."""
        try:
            return _CONSTRUCTOR.construct_object(self.node)
        except (ValueError, KeyError, TypeError, yaml.YAMLError) as exc:
            # Only an explicit tag can get here (`!!int abc`): the resolver
            # gives implicit tags to well-formed scalars only.
            raise self.error(f"is not a valid {self.kind}: {self.node.value!r}") from exc

    # errors

    def error(self, message: str) -> ConfigError:
        return ConfigError(
            message, file=self.source.filename, line=self.line, path=self.path or None
        )

    def type_error(self, expected: str) -> ConfigError:
        return self.error(f"{expected}, not {self.describe()}")

    # collections

    def entries(self, allowed: tuple[str, ...] | None = None) -> dict[str, Value]:
        """The entries of a mapping (null: none), checking duplicates and unknown keys."""
        if self.is_null:
            return {}
        if not isinstance(self.node, yaml.MappingNode):
            keys = f" with keys {', '.join(allowed)}" if allowed else ""
            raise self.type_error(f"must be a mapping{keys}")
        return self._entries(self.node, allowed, frozenset())

    def _entries(
        self, node: yaml.MappingNode, allowed: tuple[str, ...] | None, visiting: frozenset[int]
    ) -> dict[str, Value]:
        visiting = visiting | {id(node)}
        own: dict[str, Value] = {}
        merged: dict[str, Value] = {}
        for key, value in node.value:
            if key.tag == _MERGE_TAG:
                source = self.child("<<", value, key.start_mark.line + 1)
                for merged_node in source._merge_sources(visiting):
                    for name, entry in self._entries(merged_node, allowed, visiting).items():
                        merged.setdefault(name, entry)
                continue
            name, entry = self._entry(key, value, allowed)
            if name in own:
                raise entry.error(f"duplicate key (first given on line {own[name].line})")
            own[name] = entry
        # Explicit keys override merged ones, as in YAML's merge-key convention.
        return {**merged, **own}

    def _entry(
        self, key: yaml.Node, value: yaml.Node, allowed: tuple[str, ...] | None
    ) -> tuple[str, Value]:
        line = key.start_mark.line + 1
        key_value = Value(self.source, key, self.path, line)
        if not key_value.is_scalar or key_value.is_null:
            raise key_value.error("keys must be plain strings")
        # The key as written: `0: ...` under listen names instance "0", not int 0.
        name = key_value.text
        entry = self.child(name, value, line)
        if allowed is not None and name not in allowed:
            raise entry.error(f"unknown key (expected one of: {', '.join(allowed)})")
        return name, entry

    def _merge_sources(self, visiting: frozenset[int]) -> list[yaml.MappingNode]:
        nodes = self.node.value if isinstance(self.node, yaml.SequenceNode) else [self.node]
        if not all(isinstance(node, yaml.MappingNode) for node in nodes):
            raise self.type_error("must be a mapping or a list of mappings to merge")
        if any(id(node) in visiting for node in nodes):
            raise self.error("a mapping cannot merge itself")
        return list(nodes)

    def items(self, expected: str) -> list[Value]:
        """The items of a list, each with its own path (``a.b[0]``) and line."""
        if not isinstance(self.node, yaml.SequenceNode):
            raise self.type_error(expected)
        return [
            Value(self.source, item, f"{self.path}[{i}]", item.start_mark.line + 1)
            for i, item in enumerate(self.node.value)
        ]

    @property
    def is_sequence(self) -> bool:
        return isinstance(self.node, yaml.SequenceNode)

    @property
    def is_mapping(self) -> bool:
        return isinstance(self.node, yaml.MappingNode)


def read_tree(text: str, filename: str) -> Value | None:
    """The root of ``text``'s node tree (None for an empty file), or ConfigError."""
    limits.check_size(text, filename)
    try:  # before the recursive composer runs: nesting, tags, NULs, sizes
        limits.check_events(_limit_events(text), filename)
    except yaml.YAMLError:
        pass  # a syntax error: the composer below reports it in its own words
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        if root is None:
            return None
        limits.check_tree(root, _node_children, _node_line, filename)
        return Value(Source(filename), root, "", 1)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(_yaml_message(exc), file=filename, line=line) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        message = f"invalid YAML: unacceptable character #x{exc.character:04x}: {exc.reason}"
        raise ConfigError(message, file=filename, line=line) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", file=filename) from None


def _limit_events(text: str) -> Iterator[limits.Event]:
    """PyYAML's parse events (made without recursion), in config_limits' terms."""
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        kind = _EVENT_KINDS.get(type(event))
        if kind is not None:
            line = event.start_mark.line + 1 if event.start_mark is not None else None
            tag = getattr(event, "tag", None)
            yield limits.Event(kind, tag, str(getattr(event, "value", "")), line)


_EVENT_KINDS: dict[type, str] = {
    yaml.ScalarEvent: "scalar",
    yaml.AliasEvent: "alias",
    yaml.MappingStartEvent: "map",
    yaml.SequenceStartEvent: "seq",
    yaml.MappingEndEvent: "end",
    yaml.SequenceEndEvent: "end",
}


def _node_children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _node_line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _yaml_message(exc: yaml.MarkedYAMLError) -> str:
    """PyYAML's problem, with its context: "while parsing X (line N)" or "expected X"."""
    problem, context = exc.problem or "", exc.context or ""
    if problem.startswith("but ") and context:
        return f"invalid YAML: {context}, {problem}"
    message = f"invalid YAML: {problem or context}"
    if problem and context and exc.context_mark is not None:
        message += f" ({context} on line {exc.context_mark.line + 1})"
    return message


def dump(data: dict[str, Any]) -> str:
    """``data`` as block-style YAML, keys in the given order (for ``import``'s output).

    Strings that would read back as another type (``"022"``, ``"yes"``) are quoted by
    PyYAML's own resolver, so the text reads back to exactly ``data``.
    """
    return yaml.safe_dump(
        data, sort_keys=False, default_flow_style=False, allow_unicode=True, width=4096
    )
