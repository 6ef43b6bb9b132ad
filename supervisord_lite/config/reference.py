"""The config reference, generated from the declarations: --help-config, docs/configuration.md.

Every section (``supervisor``, ``apps.NAME`` and their sub-sections) is listed
with each key's type, default and doc, walking the same declarations the parser
walks, so the reference cannot list a key the parser does not accept or miss one
it does. ``python -m supervisord_lite.config.reference`` regenerates the section of
docs/configuration.md between the ``config-reference`` markers (``--write PATH``
for another file; a test checks that it is current).
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from .schema import Setting, settings
from .settings import AppConfig, CheckConfig, SupervisorConfig
from .values import ListenAddress

BEGIN = "<!-- config-reference:begin -->"
END = "<!-- config-reference:end -->"
DOCUMENT = "docs/configuration.md"  # where the reference lives, relative to the repository
_MIB = 1024 * 1024


@dataclass(frozen=True)
class Section:
    """A section of the reference; ``applies`` says what its settings are about."""

    path: str
    cls: type[Any]
    doc: str
    applies: str


APPLIES = {
    "daemon": "the supervisor itself",
    "app": "one app, the same for each of its instances",
    "check": "a probe, run against each instance by its own processes",
}


TOP_SECTIONS = (
    Section(
        "supervisor",
        SupervisorConfig,
        "The daemon itself; a change takes effect at the daemon's next start.",
        "daemon",
    ),
    Section(
        "apps.NAME",
        AppConfig,
        "One app; all its instances share these settings (listen may give each its own "
        "address). An app needs `command`; placeholders {app} {instance} {host} {port} "
        "{release} {release_dir} {generation} are allowed where a type says so.",
        "app",
    ),
)


def sections() -> list[Section]:
    """Every section, each followed by its sub-sections, depth first."""
    out: list[Section] = []

    def walk(section: Section) -> None:
        out.append(section)
        for s in settings(section.cls):
            if s.section is not None:
                applies = "check" if issubclass(s.section, CheckConfig) else section.applies
                walk(Section(f"{section.path}.{s.key}", s.section, s.doc, applies))

    for top in TOP_SECTIONS:
        walk(top)
    return out


def describe_settings() -> list[tuple[str, Any, str]]:
    """(key path, default, doc) of every setting, sub-sections included."""
    return [
        (f"{section.path}.{s.key}", s.default, s.doc)
        for section in sections()
        for s in settings(section.cls)
    ]


def show_default(s: Setting) -> str:
    """The default as it would be written in YAML (sections: their keys' defaults)."""
    if s.shown_default is not None:
        return s.shown_default
    if s.required:
        return "required"
    value = s.default
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, signal.Signals):
        return value.name.removeprefix("SIG")
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, ListenAddress):
        return f'"{value.address}"'
    if isinstance(value, int) and s.type.startswith("octal"):
        return f'"{value:04o}"'
    if isinstance(value, int) and s.type.startswith("size") and value % _MIB == 0:
        return f"{value // _MIB}MiB"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return "[" + ", ".join(value) + "]"
    if isinstance(value, dict):
        return "{}"
    if value == "":
        return '""'
    return str(value)


def reference_markdown() -> str:
    """docs/configuration.md's body: one table per section."""
    out = [f"- {name}: {what}" for name, what in APPLIES.items()] + [""]
    for section in sections():
        out += [f"**`{section.path}`** ({section.applies}): {section.doc}", ""]
        out += ["| key | type | default | doc |", "| --- | --- | --- | --- |"]
        for s in settings(section.cls):
            doc = s.doc.replace("|", "\\|")
            kind = s.type.replace("|", "\\|")
            default = f"`{show_default(s)}`".replace("|", "\\|")
            if s.section is not None and s.default is not None:
                default = f"see `{section.path}.{s.key}`"
            out.append(f"| `{s.key}` | {kind} | {default} | {doc} |")
        out.append("")
    return "\n".join(out)


def reference_text() -> str:
    """``supervisord-lite --help-config``: the same reference, for a terminal."""
    out: list[str] = []
    for section in sections():
        out += [f"{section.path}:", f"  ({section.applies}) {section.doc}"]
        for s in settings(section.cls):
            default = "required" if s.required else f"default {show_default(s)}"
            if s.section is not None and s.default is not None:
                default = f"see {section.path}.{s.key}"
            out.append(f"  {s.key}  ({s.type}; {default})")
            out.append(f"      {s.doc}")
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def replace_reference(document: str) -> str:
    """``document`` with the text between the markers replaced by the generated reference."""
    head, begin, rest = document.partition(BEGIN)
    _, end, tail = rest.partition(END)
    if not begin or not end:
        raise ValueError(f"the markers {BEGIN} and {END} are missing")
    return f"{head}{BEGIN}\n{reference_markdown()}{END}{tail}"


def main(argv: list[str] | None = None) -> None:
    import argparse  # only here: importing the config must stay cheap

    parser = argparse.ArgumentParser(
        prog="python -m supervisord_lite.config.reference",
        description="Regenerate the config reference between its markers "
        f"(run in the repository: {DOCUMENT} by default).",
    )
    parser.add_argument(
        "--write", metavar="PATH", type=Path, default=Path(DOCUMENT), help=f"default {DOCUMENT}"
    )
    args = parser.parse_args(argv)
    path: Path = args.write
    path.write_text(replace_reference(path.read_text()))


if __name__ == "__main__":
    main()
