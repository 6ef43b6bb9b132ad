"""The house rules of the package, checked on its source (nothing is imported).

Imports run one way (no cycle, and DESIGN.md's layering ``errors <- config <- states
<- model <- oslayer <- instance <- app <- supervisor <- {control, http_api, notify}
<- daemon <- cli`` holds for the modules of each layer); each third-party library is
imported by one module; every module says what it owns in a docstring; and README's
Layout table names every module and only modules that exist (it cannot drift from
the code).
"""

from __future__ import annotations

import ast
import fnmatch
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "supervisord_lite"
README = PACKAGE.parent / "README.md"

# DESIGN.md's layers, lowest first; each names the modules that are its parts here
# (a module of a layer may import only from its own layer or lower ones).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors",),
    ("config", "config_*"),
    ("importer", "importer.*"),  # `supervisord-lite import`: reads the config layer only
    ("states",),
    ("model",),
    ("oslayer", "os_*", "fetch", "unpack"),
    ("instance", "instance_*", "generation"),
    ("app", "app_*", "deploys", "artifacts"),
    ("supervisor", "durable", "ordering", "sampler", "updater", "hooks"),
    (
        "control",
        "protocol",
        "peers",
        "commands",
        "commands.*",
        "http_api",
        "httpserver",
        "status_page",
        "status_page_*",
        "metrics",
        "notify",
    ),
    ("daemon", "statedir"),
    ("cli",),
)
# each third-party library, and the modules that may import it: one, except aiohttp's
# server (http_api) and client (fetch), two jobs (README "Decisions")
THIRD_PARTY: dict[str, set[str]] = {
    "yaml": {"config_yaml"},
    "sdnotify": {"notify"},
    "aiohttp": {"http_api", "fetch"},
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name or "__init__"] = path
    return found


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(name: str, path: Path) -> tuple[set[str], set[str]]:
    """(our modules, top-level third-party or stdlib names) that ``name`` imports at
    run time (imports only for the type checker are left out)."""
    ours: set[str] = set()
    others: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for branch in node.orelse:
                visit(branch)
            return
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
                candidates = [target] + [f"{target}.{a.name}".lstrip(".") for a in node.names]
                ours.update(c for c in candidates if c in MODULES)
            elif node.module and node.module.split(".")[0] == "supervisord_lite":
                rest = node.module.partition(".")[2]
                candidates = [rest] + [f"{rest}.{a.name}".lstrip(".") for a in node.names]
                ours.update(c for c in candidates if c in MODULES)
            elif node.module:
                others.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            others.update(a.name.split(".")[0] for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    ours.discard(name)
    return ours, others


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _layer(name: str) -> int | None:
    for n, patterns in enumerate(LAYERS):
        if any(fnmatch.fnmatchcase(name, p) for p in patterns):
            return n
    return None


def test_imports_have_no_cycle() -> None:
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def walk(name: str, stack: list[str]) -> None:
        state[name] = 1
        stack.append(name)
        for dep in sorted(GRAPH[name][0]):
            if state.get(dep) == 1:
                cycles.append([*stack[stack.index(dep) :], dep])
            elif dep not in state:
                walk(dep, stack)
        stack.pop()
        state[name] = 2

    for name in sorted(GRAPH):
        if name not in state:
            walk(name, [])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_imports_follow_the_design_layers() -> None:
    upward = [
        f"{name} (layer {_layer(name)}) imports {dep} (layer {_layer(dep)})"
        for name, (ours, _) in GRAPH.items()
        for dep in sorted(ours)
        if _layer(name) is not None and _layer(dep) is not None and _layer(dep) > _layer(name)  # type: ignore[operator]
    ]
    assert not upward, "\n".join(upward)


def test_the_layers_name_modules_that_exist() -> None:
    for patterns in LAYERS:
        for pattern in patterns:
            assert any(fnmatch.fnmatchcase(m, pattern) for m in MODULES), pattern


@pytest.mark.parametrize("library", sorted(THIRD_PARTY))
def test_each_third_party_library_is_imported_by_one_module(library: str) -> None:
    importers = {name for name, (_, others) in GRAPH.items() if library in others}
    assert importers and importers <= THIRD_PARTY[library], sorted(importers)


def test_the_daemon_imports_no_library_it_does_not_declare() -> None:
    """prometheus_client is the tests' only; psutil too."""
    for library in ("prometheus_client", "psutil", "structlog"):
        importers = sorted(name for name, (_, others) in GRAPH.items() if library in others)
        assert not importers, f"{library} imported by {importers}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_says_what_it_owns(name: str) -> None:
    """(A module is as long as its concept needs: no line budget.)"""
    path = MODULES[name]
    source = path.read_text()
    assert ast.get_docstring(ast.parse(source)), f"{path}: no module docstring"


def _layout_names() -> list[str]:
    text = README.read_text()
    section = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    names: list[str] = []
    for row in section.splitlines():
        if row.startswith("| `"):
            first_cell = row.split("|")[1]
            names += re.findall(r"`([^`]+)`", first_cell)
    return names


def _as_pattern(entry: str) -> str:
    """README's ``commands/*_handlers.py`` -> the module pattern ``commands.*_handlers``."""
    if entry.endswith("/"):
        return entry.rstrip("/")
    return entry.removesuffix(".py").replace("/", ".")


def test_readme_layout_names_every_module() -> None:
    patterns = [_as_pattern(e) for e in _layout_names()]
    documented = {
        m
        for m in MODULES
        if any(
            fnmatch.fnmatchcase(m, p) or (m.startswith(p + ".") and "*" not in p) for p in patterns
        )
    }
    missing = sorted(set(MODULES) - documented - {"__init__"})
    assert not missing, f"README's Layout does not name: {missing}"


def test_readme_layout_names_only_modules_that_exist() -> None:
    for entry in _layout_names():
        pattern = _as_pattern(entry)
        assert any(fnmatch.fnmatchcase(m, pattern) for m in MODULES), entry


def test_state_names_repeated_outside_the_daemon_are_exactly_the_states() -> None:
    """supctl (which does not load the config machinery states.py needs) and the status
    page's script repeat the state names; they must be exactly ``states.State``'s."""
    from supervisord_lite import status_page_assets, supctl_output
    from supervisord_lite.states import State

    names = [s.value for s in State]
    assert sorted(supctl_output.STATE_COLOURS) == sorted(names)
    found = re.search(r"const STATES = (\[[^\]]*\]);", status_page_assets.JS)
    assert found is not None, "the status page's STATES list"
    assert ast.literal_eval(found.group(1)) == names
