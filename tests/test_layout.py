"""The house rules of the package, checked on its source (nothing is imported).

Imports run one way (no cycle, and DESIGN.md's layering ``errors <- config <- states
<- model <- oslayer <- instance <- app <- supervisor <- {control, http_api, notify}
<- daemon <- cli`` holds for the modules of each layer); each third-party library is
imported by one module; every module says what it owns in a docstring; and docs/layout.md's
table names every module and only modules that exist (it cannot drift from
the code).
"""

from __future__ import annotations

import ast
import fnmatch
import json
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "supervisord_lite"
LAYOUT = PACKAGE.parent / "docs" / "layout.md"

# DESIGN.md's layers, lowest first, by subpackage (a module may import only from its
# own layer or lower ones; a package's __init__ is its docstring and sits lowest)
LAYERS: tuple[tuple[str, ...], ...] = (
    # the packages' docstrings, and what needs nothing of the project
    (
        "__init__",
        "errors",
        "paths",
        "instance.state",
        "instance.states",
        *("config", "host", "instance", "app", "supervisor", "state", "daemon"),
        *("control", "httpapi", "supctl"),
    ),
    # what a command declaration is; the wire format and what a handler gets (both ends)
    ("log", "snapshots", "control.commands.spec"),
    ("control.protocol", "control.commands.call"),
    # one module per command (declaration, handler, printer), the registry, the dispatch
    ("control.commands", "control.commands.*"),
    ("config.*",),
    ("host.*",),
    ("importer", "importer.*"),  # `supervisord-lite import`: the config and env files
    ("state.journal", "state.handover", "state.history"),
    ("instance.*",),
    ("app.*",),
    ("state.recovery", "state.recorder", "state.directory"),
    ("supervisor.*",),
    ("control.*", "httpapi.*", "daemon.notify"),
    ("supctl.*",),
    ("daemon.*",),
    ("cli",),
    ("demo", "demo.*"),  # the quick start's app: imports nothing of the daemon
)
# each third-party library, and the modules that may import it: one, except aiohttp's
# server and client, two jobs (docs/design.md "Decisions")
THIRD_PARTY: dict[str, set[str]] = {
    "yaml": {"config.yaml_reader"},
    "sdnotify": {"daemon.notify"},
    "structlog": {"log"},
    "psutil": {"host.procs"},
    "aiohttp": {"httpapi.server", "host.fetch"},
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


def _imports(name: str, path: Path, typed: bool = False) -> tuple[set[str], set[str]]:
    """(our modules, top-level third-party or stdlib names) that ``name`` imports at
    run time (and, with ``typed``, for the type checker too)."""
    ours: set[str] = set()
    others: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node) and not typed:
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
# with the imports for the type checker: a cycle there is a cycle of ideas too
TYPED_GRAPH = {name: _imports(name, path, typed=True) for name, path in MODULES.items()}


def _layer(name: str) -> int | None:
    for n, patterns in enumerate(LAYERS):
        if any(fnmatch.fnmatchcase(name, p) for p in patterns):
            return n
    return None


def test_imports_have_no_cycle() -> None:
    """No cycle, counting the imports made only for the type checker."""
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def walk(name: str, stack: list[str]) -> None:
        state[name] = 1
        stack.append(name)
        for dep in sorted(TYPED_GRAPH[name][0]):
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
        for name, (ours, _) in TYPED_GRAPH.items()
        for dep in sorted(ours)
        if _layer(name) is not None and _layer(dep) is not None and _layer(dep) > _layer(name)  # type: ignore[operator]
    ]
    assert not upward, "\n".join(upward)


def test_every_module_is_in_a_layer() -> None:
    assert not [name for name in MODULES if _layer(name) is None]


def test_the_layers_name_modules_that_exist() -> None:
    for patterns in LAYERS:
        for pattern in patterns:
            assert any(fnmatch.fnmatchcase(m, pattern) for m in MODULES), pattern


@pytest.mark.parametrize("library", sorted(THIRD_PARTY))
def test_each_third_party_library_is_imported_by_one_module(library: str) -> None:
    importers = {name for name, (_, others) in GRAPH.items() if library in others}
    assert importers and importers <= THIRD_PARTY[library], sorted(importers)


def test_the_daemon_imports_no_library_it_does_not_declare() -> None:
    """A library the tests use and the daemon does not declare (THIRD_PARTY) is not
    imported by the package (prometheus_client is the tests' only)."""
    for library in {"aiohttp", "prometheus_client", "psutil", "structlog"} - set(THIRD_PARTY):
        importers = sorted(name for name, (_, others) in GRAPH.items() if library in others)
        assert not importers, f"{library} imported by {importers}"


def _proc_files(tree: ast.AST) -> set[str]:
    """The /proc files a piece of code names (``{pid}`` and ``self`` both as PID)."""
    found: set[str] = set()
    pieces = {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values}
    for node in ast.walk(tree):
        if id(node) in pieces:
            continue
        if isinstance(node, ast.JoinedStr):
            text = "".join(
                v.value if isinstance(v, ast.Constant) and isinstance(v.value, str) else "{}"
                for v in node.values
            )
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
        else:
            continue
        if text.startswith("/proc/") and "\n" not in text:
            found.add(re.sub(r"^/proc/(self|\{\})/", "/proc/PID/", text).replace("{}", "N"))
    return found


def test_each_proc_file_has_one_reader() -> None:
    """One parser per fact: each /proc file is named in one function (or module-level
    constant) of the package; psutil (os_proc) reads the rest."""
    readers: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        inside: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                body = node.body[1:] if ast.get_docstring(node) else node.body
                for statement in body:
                    for file in _proc_files(statement):
                        readers.setdefault(file, set()).add(f"{name}.{node.name}")
                    inside.update(id(n) for n in ast.walk(statement))
        for statement in tree.body[1:] if ast.get_docstring(tree) else tree.body:
            if isinstance(statement, ast.Assign | ast.AnnAssign) and id(statement) not in inside:
                for file in _proc_files(statement):
                    readers.setdefault(file, set()).add(name)
    shared = {file: sorted(where) for file, where in readers.items() if len(where) > 1}
    assert "/proc/PID/stat" in readers
    assert not shared, shared


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_says_what_it_owns(name: str) -> None:
    """(A module is as long as its concept needs: no line budget.)"""
    path = MODULES[name]
    source = path.read_text()
    assert ast.get_docstring(ast.parse(source)), f"{path}: no module docstring"


def _layout_names() -> list[str]:
    names: list[str] = []
    for row in LAYOUT.read_text().splitlines():
        if row.startswith("| `"):
            first_cell = row.split("|")[1]
            names += re.findall(r"`([^`]+)`", first_cell)
    return names


def _as_pattern(entry: str) -> str:
    """``control/commands/*.py`` -> the pattern ``control.commands.*``."""
    return entry.rstrip("/").removesuffix(".py").replace("/", ".")


def test_layout_table_names_every_module() -> None:
    patterns = [_as_pattern(e) for e in _layout_names()]
    documented = {
        m
        for m in MODULES
        if any(
            fnmatch.fnmatchcase(m, p) or (m.startswith(p + ".") and "*" not in p) for p in patterns
        )
    }
    missing = sorted(set(MODULES) - documented - {"__init__"})
    assert not missing, f"docs/layout.md does not name: {missing}"


def test_layout_table_names_only_modules_that_exist() -> None:
    for entry in _layout_names():
        pattern = _as_pattern(entry)
        assert any(fnmatch.fnmatchcase(m, pattern) for m in MODULES), entry


def test_the_state_names_have_one_source() -> None:
    """supctl's colours and the status page's list are the State enum's, not copies."""
    from supervisord_lite.httpapi import page
    from supervisord_lite.instance.state import State
    from supervisord_lite.supctl import output as supctl_output

    assert set(supctl_output.STATE_COLOURS) == set(State)
    script = page.page().body.decode().split("<script>", 1)[1]
    found = re.search(r"const STATES = (\[[^\]]*\]);", script)
    assert found is not None, "the status page's STATES list"
    assert json.loads(found.group(1)) == [s.value for s in State]
