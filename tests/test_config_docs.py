"""Tests of the generated config reference: docs/configuration.md's section and --help-config are
what the declarations generate, and DESIGN.md's config keys are all declared, with
DESIGN.md's defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from supervisord_lite import cli
from supervisord_lite.config import reference
from supervisord_lite.config.parser import read_setting
from supervisord_lite.config.schema import Setting, settings
from supervisord_lite.config.validators import Context
from supervisord_lite.config.yaml_reader import Value, read_tree

REPO = Path(__file__).resolve().parents[1]
# beside a checkout of main (../shared) or of a worktree (../../shared)
DESIGNS = [REPO.parent / "shared" / "DESIGN.md", REPO.parents[1] / "shared" / "DESIGN.md"]
# Keys DESIGN.md's example sets to an example value, not to the default.
EXAMPLES = {
    "apps.NAME.command",
    "apps.NAME.cwd",
    "apps.NAME.env",
    "apps.NAME.env_file",
    "apps.NAME.user",
    "apps.NAME.instances",  # [primary, backup]; its comment says "default [primary]"
    "apps.NAME.listen",
    "apps.NAME.ready.http",
    "apps.NAME.health.http",
}


def test_documented_reference_is_what_the_declarations_generate() -> None:
    """The drift test (regenerate: `python -m supervisord_lite.config.reference`)."""
    document = (REPO / reference.DOCUMENT).read_text()
    assert reference.BEGIN in document and reference.END in document
    assert reference.replace_reference(document) == document


def test_the_readme_holds_no_copy_of_the_reference() -> None:
    """The reference lives in one document; README links to it."""
    readme = (REPO / "README.md").read_text()
    assert reference.BEGIN not in readme
    assert reference.DOCUMENT in readme


def test_write_regenerates_a_stale_reference(tmp_path: Path) -> None:
    """--write replaces what is between the markers and nothing else."""
    document = tmp_path / "configuration.md"
    document.write_text(f"# x\n{reference.BEGIN}\nstale\n{reference.END}\nafter\n")
    reference.main(["--write", str(document)])
    text = document.read_text()
    assert "stale" not in text
    assert text.startswith(f"# x\n{reference.BEGIN}\n- daemon: the supervisor itself\n")
    assert "\n**`supervisor`** (daemon): " in text
    assert "\n**`apps.NAME.health`** (check): " in text
    assert text.endswith(f"{reference.END}\nafter\n")
    assert "| `shutdown_timeout` | seconds > 0 | `60` |" in text


def test_help_config_prints_every_key(capsys: pytest.CaptureFixture[str]) -> None:
    """`supervisord-lite --help-config` lists every section and key, and exits 0."""
    with pytest.raises(SystemExit) as info:
        cli.main(["--help-config"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out == reference.reference_text()
    for path, _, doc in reference.describe_settings():
        section, _, key = path.rpartition(".")
        assert f"\n{section}:\n" in "\n" + out
        assert f"  {key}  (" in out and doc in out
    assert "  timeout  (seconds > 0; default 30)" in out


def _design_config() -> str:
    design = next((path for path in DESIGNS if path.exists()), None)
    if design is None:
        pytest.skip("DESIGN.md is not beside this checkout")
    section = design.read_text().split("## Config (YAML)", 1)[1]
    return section.split("```yaml\n", 1)[1].split("```", 1)[0]


def _design_keys(
    v: Value, path: str, cls: type[Any], out: list[tuple[str, Setting, Value]]
) -> None:
    declared = {s.key: s for s in settings(cls)}
    for key, entry in v.entries().items():
        assert key in declared, f"DESIGN.md's {path}.{key} is not declared"
        s = declared[key]
        out.append((f"{path}.{key}", s, entry))
        if s.section is not None and entry.is_mapping:
            _design_keys(entry, f"{path}.{key}", s.section, out)


def test_design_keys_are_declared_with_designs_defaults() -> None:
    """Every key of DESIGN.md's config example is declared; where the example shows a
    default (everything but EXAMPLES), it is the declared default, read by the
    setting's own validator (``"0600"``, ``50MiB``, ``TERM``)."""
    root = read_tree(_design_config(), "DESIGN.md")
    assert root is not None
    top = root.entries()
    found: list[tuple[str, Setting, Value]] = []
    for section in reference.TOP_SECTIONS:
        entry = top[section.path.split(".")[0]]
        if section.path.endswith(".NAME"):
            (entry,) = entry.entries().values()  # the example's one app
        _design_keys(entry, section.path, section.cls, found)
    paths = {path for path, _, _ in found}
    assert paths >= EXAMPLES
    assert len(paths) > 40  # every leaf of the example, not just its sections
    for path, s, entry in found:
        if path in EXAMPLES or (s.section is not None and entry.is_mapping):
            continue
        if s.shown_default is not None and not entry.is_null:
            assert s.shown_default.startswith(entry.text), path  # the state dir: root's
            continue
        assert read_setting(Context(), s, entry) == s.default, path
