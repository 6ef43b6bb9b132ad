"""Our YAML for the imported apps: what each source-format module builds, and its text.

An :class:`ImportedApp` holds our settings by their YAML keys (nested sections as
dicts); :func:`emit` writes them in the order :class:`AppConfig` declares its fields,
each app under a comment naming the source it came from. Text that goes into a
setting taking placeholders is escaped with :func:`literal` (``{`` -> ``{{``).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from ..config.settings import AppConfig
from ..config.values import escape_braces
from ..config.yaml_reader import dump
from .report import Report, Where

# AppConfig's settings in declaration order (its first field is the app's name)
_KEY_ORDER = [f.name for f in dataclasses.fields(AppConfig) if f.name != "name"]
_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")
_NOT_NAME_RE = re.compile(r"[^A-Za-z0-9_.-]+")


def literal(text: str) -> str:
    """``text`` as the value of a setting that takes placeholders (braces kept)."""
    return escape_braces(text)


@dataclass
class ImportedApp:
    name: str
    where: Where
    origin: str  # how the source names it: "[program:web]", "web.service", "Procfile: web"
    settings: dict[str, Any] = field(default_factory=dict)

    def set(self, key: str, value: Any) -> None:
        """Set ``key`` (``"stop.timeout"`` for a nested one)."""
        *sections, last = key.split(".")
        target = self.settings
        for section in sections:
            target = target.setdefault(section, {})
        target[last] = value

    def get(self, key: str) -> Any:
        target: Any = self.settings
        for part in key.split("."):
            if not isinstance(target, dict) or part not in target:
                return None
            target = target[part]
        return target


def app_name(raw: str, where: Where, report: Report, subject: str) -> str:
    """``raw`` as one of our app names (letters, digits, ``_ . -``); a change is reported."""
    if _NAME_RE.fullmatch(raw):
        return raw
    name = _NOT_NAME_RE.sub("-", raw).strip("-") or "app"
    report.approximated(where, subject, f"app {name!r}", f"{raw!r} is not a valid app name here")
    return name


def unique_names(apps: list[ImportedApp], report: Report) -> None:
    """Rename apps whose names repeat (``web``, ``web-2``), reporting each rename."""
    taken: set[str] = set()
    for app in apps:
        name, n = app.name, 1
        while name in taken:
            n += 1
            name = f"{app.name}-{n}"
        if name != app.name:
            report.approximated(
                app.where, app.origin, f"app {name!r}", f"another source already names {app.name!r}"
            )
            app.name = name
        taken.add(name)


def emit(apps: list[ImportedApp], sources: list[str]) -> str:
    """The config text: a header, then ``apps:`` with each app in declaration order."""
    head = [
        f"# Imported by `supervisord-lite import` from {', '.join(sources)}.",
        "# Read the fidelity report before using it; check it with:",
        "#   supervisord-lite -c THIS_FILE --check",
    ]
    if not apps:
        return "\n".join([*head, "apps: {}"]) + "\n"
    body = ["apps:"]
    for app in apps:
        ordered = {k: app.settings[k] for k in _KEY_ORDER if k in app.settings}
        body.append(f"  # {app.origin} ({app.where})")
        text = dump({app.name: ordered})
        body.extend("  " + line for line in text.splitlines())
    return "\n".join([*head, *body]) + "\n"
