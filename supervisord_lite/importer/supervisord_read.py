"""supervisord's config files read as supervisord reads them: sections and their lines.

The parsing is the stdlib's configparser, set up as supervisord sets it up
(``RawConfigParser`` with ``;`` and ``#`` inline comments after whitespace, repeated
keys allowed, the later winning, keys lower-cased). configparser keeps no line
numbers, so each file's lines are indexed beside it: a section's header line, and
each key's line (the last time it is given, as configparser keeps the last value).

``[include] files=`` globs are resolved relative to the including file's directory
(``%(here)s`` and ``%(ENV_X)s`` expanded first) and read after it, nested includes
too; a file that includes itself through any chain is an include loop: a
SourceError naming the ``files=`` line that closes it. The ``%(name)s`` expansion
of values (:func:`expand`) is supervisord's: Python %-formatting against a dict.
"""

from __future__ import annotations

import configparser
import glob
import os
import re
from dataclasses import dataclass, field

from .report import SourceError, Where
from .source import read_text

_SECTION_LINE = re.compile(r"\[(?P<name>.+)\]")
_OPTION_LINE = re.compile(r"(?P<key>[^=:\s][^=:]*?)\s*[=:]")
# %(process_num)s, %(process_num)02d ...: kept apart, to become {instance}
PROCESS_NUM = re.compile(r"%\(process_num\)([-#0 +]*[0-9]*(?:\.[0-9]+)?[diouxXs])")
MARK = "\0"  # surrounds a process_num conversion in an expanded value
_ENV_REF = re.compile(r"%\(ENV_([^)]*)\)")


@dataclass(frozen=True)
class Option:
    value: str
    where: Where
    here: str  # the directory of the file it was given in


@dataclass
class Section:
    name: str
    where: Where
    options: dict[str, Option] = field(default_factory=dict)


def read_all(path: str) -> list[Section]:
    """The sections of ``path`` and of every file it includes, merged by name in order."""
    sections: dict[str, Section] = {}
    _read(path, (), None, sections)
    return list(sections.values())


def _read(
    path: str, chain: tuple[str, ...], included_at: Where | None, into: dict[str, Section]
) -> None:
    real = os.path.realpath(path)
    if real in chain:
        assert included_at is not None
        raise included_at.error(f"include loop: {path} is already being read (it includes itself)")
    text = read_text(path)
    parser = configparser.RawConfigParser(
        inline_comment_prefixes=(";", "#"), strict=False, interpolation=None
    )
    try:
        parser.read_string(text, source=path)
    except configparser.MissingSectionHeaderError as exc:
        raise SourceError("a setting before any [section]", file=path, line=exc.lineno) from None
    except configparser.ParsingError as exc:
        line, content = exc.errors[0]
        message = f"cannot parse {content.strip()!r} (expected key = value)"
        raise SourceError(message, file=path, line=line) from None
    except configparser.Error as exc:
        raise SourceError(f"cannot parse: {exc.message}", file=path) from None
    headers, keys = _index(text)
    here = os.path.dirname(os.path.abspath(path))
    for name in parser.sections():
        section = into.setdefault(name, Section(name, Where(path, headers.get(name, 1))))
        for key, value in parser.items(name):
            line = keys.get((name, key), headers.get(name, 1))
            section.options[key] = Option(value, Where(path, line), here)
    include = into.pop("include", None)
    if include is None:
        return
    files = include.options.get("files")
    if files is None:
        raise include.where.error("[include] has no files= setting")
    for pattern in expand(files, {"here": files.here}).split():
        found = sorted(glob.glob(os.path.join(os.path.dirname(path), pattern)))
        if not found:
            raise files.where.error(f"[include] files: no file matches {pattern!r}")
        for match in found:
            _read(match, (*chain, real), files.where, into)


def _index(text: str) -> tuple[dict[str, int], dict[tuple[str, str], int]]:
    """Line numbers of section headers and of keys (the last time each is set)."""
    headers: dict[str, int] = {}
    keys: dict[tuple[str, str], int] = {}
    section: str | None = None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line[0].isspace() or line.lstrip()[0] in "#;":
            continue  # blank, a continuation or a comment
        header = _SECTION_LINE.match(line)
        if header:
            section = header.group("name")
            headers.setdefault(section, n)
            continue
        option = _OPTION_LINE.match(line)
        if option and section is not None:
            keys[(section, option.group("key").strip().lower())] = n
    return headers, keys


def expand(option: Option, expansions: dict[str, str]) -> str:
    """``option``'s value with supervisord's %(name)s expansions (ENV_X from os.environ).

    ``%(process_num)...`` conversions are not expanded: each is kept as
    ``MARK + conversion + MARK`` (one app holds every process, so it becomes
    ``{instance}``). An unknown name, or a bad ``%``, is a SourceError.
    """
    value = option.value
    if "%" not in value:
        return value
    names = dict(expansions)
    names.update({f"ENV_{k}": v for k, v in os.environ.items()})
    marked = PROCESS_NUM.sub(lambda m: "%%" + MARK + m.group(1) + MARK, value)
    try:
        expanded = marked % names
    except KeyError as exc:
        raise option.where.error(
            f"%({exc.args[0]})s cannot be expanded (known: "
            f"{', '.join(sorted(expansions))}, ENV_X for environment variables)"
        ) from None
    except (ValueError, TypeError) as exc:
        raise option.where.error(f"badly formatted %-expansion in {value!r}: {exc}") from None
    return expanded.replace("%" + MARK, MARK)


def env_names(option: Option) -> list[str]:
    """The environment variables ``option`` expands (``%(ENV_HOME)s`` -> ``HOME``)."""
    return _ENV_REF.findall(option.value)
