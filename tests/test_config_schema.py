"""Tests of the declarations as a whole: the parser's generic walk over them reads,
rejects and documents every declared setting the same way."""

from __future__ import annotations

import pytest

from supervisord_lite.config import reference
from supervisord_lite.config.parser import TOP_LEVEL, parse_config, read_setting
from supervisord_lite.config.schema import Setting, settings
from supervisord_lite.config.validators import Context
from supervisord_lite.config.yaml_reader import read_tree
from supervisord_lite.errors import ConfigError

FILE = "/srv/conf/supervisor.yaml"
# Not values at all for most settings: a mapping, a list of lists, a stray string.
WRONG_VALUES = ("{zzz: 1}", "[[1]]", '"%zzz%"')
# Its default is computed when the config is read (root or not), so its docs are prose.
COMPUTED = {"supervisor.state_dir"}


def _leaves() -> list[tuple[str, Setting]]:
    return [
        (section.path, s)
        for section in reference.sections()
        for s in settings(section.cls)
        if s.section is None
    ]


def _all() -> list[tuple[str, Setting]]:
    return [(section.path, s) for section in reference.sections() for s in settings(section.cls)]


def yaml_at(path: str, value: str) -> tuple[str, int, str]:
    """A config setting key ``path`` to ``value``: (text, line of the key, key path)."""
    parts = path.replace("NAME", "web").split(".")
    lines = [f"{'  ' * depth}{part}:" for depth, part in enumerate(parts[:-1])]
    if len(parts) > 2 and parts[0] == "apps" and parts[2:] != ["command"]:
        lines.insert(2, "    command: x")
    lines.append(f"{'  ' * (len(parts) - 1)}{parts[-1]}: {value}")
    return "\n".join(lines) + "\n", len(lines), ".".join(parts)


@pytest.mark.parametrize(("section", "s"), _all(), ids=[f"{p}.{s.key}" for p, s in _all()])
def test_a_wrong_value_of_every_setting_names_file_line_and_key(section: str, s: Setting) -> None:
    """For every declared setting some value of the wrong type is refused, and every
    refusal names the file, the key's line and its path."""
    refused = 0
    for value in WRONG_VALUES:
        text, line, path = yaml_at(f"{section}.{s.key}", value)
        try:
            parse_config(text, FILE)
        except ConfigError as exc:
            if exc.reason.startswith("missing required key"):
                continue  # the value was accepted; its section lacks another key
            refused += 1
            assert (exc.file, exc.line) == (FILE, line), (value, str(exc))
            assert exc.path is not None and exc.path.startswith(path), (value, str(exc))
            assert str(exc).startswith(f"{FILE}:{line}: {exc.path}: ")
    assert refused, f"{section}.{s.key} accepted every one of {WRONG_VALUES}"


SECTIONS = [(section.path, section.cls) for section in reference.sections()]


@pytest.mark.parametrize(("path", "cls"), SECTIONS, ids=[p for p, _ in SECTIONS])
def test_the_keys_a_section_accepts_are_the_documented_ones(path: str, cls: type) -> None:
    """An unknown key is refused with the list of valid keys, which are exactly the
    keys the reference documents for that section, in its order."""
    text, line, key_path = yaml_at(path, "{zzz_undocumented: 1}")
    documented = ", ".join(s.key for s in settings(cls))
    with pytest.raises(ConfigError) as info:
        parse_config(text, FILE)
    assert (info.value.line, info.value.path) == (line, f"{key_path}.zzz_undocumented")
    assert info.value.reason == f"unknown key (expected one of: {documented})"


def test_the_top_level_keys_are_the_documented_sections() -> None:
    """The top level accepts exactly the sections the reference starts from."""
    assert tuple(s.path.split(".")[0] for s in reference.TOP_SECTIONS) == TOP_LEVEL
    with pytest.raises(ConfigError, match=r"expected one of: supervisor, apps\)"):
        parse_config("zzz: 1\n", FILE)


LEAVES = [(p, s) for p, s in _leaves() if f"{p}.{s.key}" not in COMPUTED and not s.required]


@pytest.mark.parametrize(("section", "s"), LEAVES, ids=[f"{p}.{s.key}" for p, s in LEAVES])
def test_every_documented_default_reads_back_as_the_default(section: str, s: Setting) -> None:
    """The default the reference shows, written in a config, is the declared default:
    the docs say what a missing key means."""
    root = read_tree(f"value: {reference.show_default(s)}\n", "<doc>")
    assert root is not None
    value = root.entries()["value"]
    assert read_setting(Context(), s, value) == s.default


def test_required_settings_are_documented_as_required() -> None:
    """command, release.root and reload's signal and pidfile have no default to show."""
    required = {f"{p}.{s.key}" for p, s in _all() if s.required}
    assert required == {
        "apps.NAME.command",
        "apps.NAME.reload.signal",
        "apps.NAME.reload.pidfile",
        "apps.NAME.release.root",
    }
    assert all(reference.show_default(s) == "required" for _, s in _all() if s.required)
