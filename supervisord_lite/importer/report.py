"""The fidelity report of an import, and the error of input that cannot be imported.

Every source setting gets one entry: **mapped** (to which of our keys), **approximated**
(to which key, and what differs) or **not mapped** (why, and what to use instead), each
naming the source file and line. The exit status follows from the worst entry: 0 all
mapped, 1 something approximated or not mapped. Input that cannot be read or parsed is
a :class:`SourceError` (exit 2), which names the file and line as a config error does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from ..errors import ConfigError


class SourceError(ConfigError):
    """The input cannot be read or parsed; ``str()`` is ``FILE:LINE: message``."""


class Fidelity(Enum):
    MAPPED = "mapped"
    APPROXIMATED = "approximated"
    NOT_MAPPED = "not mapped"


@dataclass(frozen=True)
class Where:
    """A place in a source file (1-based line)."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"

    def error(self, message: str) -> SourceError:
        return SourceError(message, file=self.file, line=self.line)


@dataclass(frozen=True)
class Entry:
    fidelity: Fidelity
    where: Where
    subject: str  # the source setting, as written: "[program:web] startsecs=5"
    outcome: str  # our key, and what differs or why not

    def __str__(self) -> str:
        return f"{self.where}: {self.fidelity.value}: {self.subject}: {self.outcome}"


@dataclass
class Report:
    entries: list[Entry] = field(default_factory=list)

    def mapped(self, where: Where, subject: str, to: str) -> None:
        self.entries.append(Entry(Fidelity.MAPPED, where, subject, f"-> {to}"))

    def approximated(self, where: Where, subject: str, to: str, differs: str) -> None:
        self.entries.append(Entry(Fidelity.APPROXIMATED, where, subject, f"-> {to} ({differs})"))

    def not_mapped(self, where: Where, subject: str, why: str) -> None:
        self.entries.append(Entry(Fidelity.NOT_MAPPED, where, subject, why))

    def count(self, fidelity: Fidelity) -> int:
        return sum(1 for e in self.entries if e.fidelity is fidelity)

    @property
    def exit_status(self) -> int:
        """0 when every setting was mapped, else 1 (the YAML is valid either way)."""
        return 0 if self.count(Fidelity.MAPPED) == len(self.entries) else 1

    def text(self) -> str:
        """One line per entry, by file (in the order first met) and line, then a summary."""
        files = list(dict.fromkeys(e.where.file for e in self.entries))
        ordered = sorted(self.entries, key=lambda e: (files.index(e.where.file), e.where.line))
        lines = [str(e) for e in ordered]
        counts = ", ".join(f"{self.count(f)} {f.value}" for f in Fidelity)
        lines.append(f"summary: {counts}")
        return "\n".join(lines) + "\n"
