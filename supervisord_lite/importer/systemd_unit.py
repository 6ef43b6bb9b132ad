"""systemd's unit file syntax (systemd.syntax(7)), read with every line remembered.

No well-kept Python library reads units (configparser cannot: keys repeat, an empty
assignment resets a list, lines continue with a backslash), so this is a small
reader of exactly that syntax:

- ``[Section]`` headers; ``Key=Value`` assignments (whitespace around both trimmed);
  ``#`` and ``;`` comment lines, also inside a continuation; a line ending in ``\\``
  continues on the next one (the backslash becomes a space);
- keys repeat: :meth:`Unit.values` gives a list setting's values after the last
  empty assignment (which resets it), :meth:`Unit.last` a single setting's last;
- :func:`split_words`: a command line or an ``Environment=`` value split into words
  with systemd's quoting (``"..."``, ``'...'``, C escapes such as ``\\n``, ``\\x41``,
  ``\\s``);
- :func:`timespan`: ``90``, ``1min 30s``, ``500ms``, ``infinity`` in seconds.

A line that is none of these (no ``=``, a setting before any section, a bad header,
an unterminated quote) is a SourceError naming the file and line.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from .report import Where
from .source import read_text

_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
            "s": " ", "\\": "\\", '"': '"', "'": "'"}  # fmt: skip
_TIME_UNITS = {
    "us": 1e-6, "usec": 1e-6, "ms": 1e-3, "msec": 1e-3,
    "": 1.0, "s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0,
    "m": 60.0, "min": 60.0, "minute": 60.0, "minutes": 60.0,
    "h": 3600.0, "hr": 3600.0, "hour": 3600.0, "hours": 3600.0,
    "d": 86400.0, "day": 86400.0, "days": 86400.0, "w": 604800.0, "week": 604800.0,
    "weeks": 604800.0,
}  # fmt: skip
_TIME_PART = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-z]*)")


@dataclass(frozen=True)
class Assignment:
    section: str
    key: str
    value: str
    where: Where


@dataclass
class Unit:
    path: str
    assignments: list[Assignment] = field(default_factory=list)
    sections: dict[str, Where] = field(default_factory=dict)

    @property
    def file_name(self) -> str:
        return os.path.basename(self.path)

    def values(self, section: str, key: str) -> list[Assignment]:
        """A list setting's assignments after its last reset (an empty assignment)."""
        found: list[Assignment] = []
        for a in self.assignments:
            if a.section == section and a.key == key:
                found = [] if a.value == "" else [*found, a]
        return found

    def last(self, section: str, key: str) -> Assignment | None:
        """A single setting's last assignment (None when unset, or reset to its default)."""
        found = [a for a in self.assignments if a.section == section and a.key == key]
        return found[-1] if found and found[-1].value != "" else None


def read_unit(path: str) -> Unit:
    unit = Unit(path)
    section: str | None = None
    pending: list[str] = []  # the parts of a continued line
    start = 0
    for n, raw in enumerate(read_text(path).split("\n"), 1):
        line = raw.strip()
        if pending and line[:1] in ("#", ";"):
            continue  # a comment inside a continuation is skipped
        if line.endswith("\\"):
            start = start if pending else n
            pending.append(line[:-1])
            continue
        if pending:
            line, pending = " ".join([*pending, line]), []
        else:
            start = n
        where = Where(path, start)
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            if not line.endswith("]") or len(line) < 3:
                raise where.error(f"bad section header {line!r}")
            section = line[1:-1]
            unit.sections.setdefault(section, where)
            continue
        key, eq, value = line.partition("=")
        key = key.strip()
        if not eq or not _KEY.fullmatch(key):
            raise where.error(f"cannot parse {line[:60]!r} (expected Key=Value)")
        if section is None:
            raise where.error(f"{key}= before any [Section]")
        unit.assignments.append(Assignment(section, key, value.strip(), where))
    if pending:
        where = Where(path, start)
        raise where.error("the file ends inside a continued line (a trailing backslash)")
    return unit


def split_words(text: str, where: Where) -> list[str]:
    """Words by systemd's rules: whitespace apart, quotes, C-style escapes."""
    words: list[str] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            return words
        word: list[str] = []
        quote: str | None = None
        while i < n and (quote or not text[i].isspace()):
            c = text[i]
            if c == "\\":
                char, i = _escape(text, i, where)
                word.append(char)
                continue
            if quote and c == quote:
                quote = None
            elif not quote and c in "\"'":
                quote = c
            else:
                word.append(c)
            i += 1
        if quote:
            raise where.error(f"unterminated {quote} quote in {text[:60]!r}")
        words.append("".join(word))


def _escape(text: str, i: int, where: Where) -> tuple[str, int]:
    """The character of the escape at ``text[i]`` (a backslash), and the index after it."""
    nxt = text[i + 1 : i + 2]
    if nxt in _ESCAPES:
        return _ESCAPES[nxt], i + 2
    try:
        if nxt == "x":
            return chr(int(text[i + 2 : i + 4], 16)), i + 4
        if nxt == "u":
            return chr(int(text[i + 2 : i + 6], 16)), i + 6
        if nxt == "U":
            return chr(int(text[i + 2 : i + 10], 16)), i + 10
        if nxt.isdigit():
            return chr(int(text[i + 1 : i + 4], 8)), i + 4
    except ValueError:
        pass
    raise where.error(f"bad escape \\{nxt} in {text[:60]!r}")


def timespan(assignment: Assignment) -> float | int | None:
    """Seconds of a time span (a bare number is seconds); None for ``infinity``."""
    text = assignment.value.strip().lower()
    if text == "infinity":
        return None
    total, pos = 0.0, 0
    while pos < len(text):
        part = _TIME_PART.match(text, pos)
        if part is None or part.group(2) not in _TIME_UNITS:
            raise assignment.where.error(
                f"{assignment.key}: not a time span: {assignment.value!r} (e.g. 90, 1min 30s)"
            )
        total += float(part.group(1)) * _TIME_UNITS[part.group(2)]
        pos = part.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    if not text:
        raise assignment.where.error(f"{assignment.key}: empty time span")
    return int(total) if total.is_integer() else total
