"""The package's shape: layers that import downwards only, no hubs, hydra only at the edge.

These checks look at structure rather than size: every ``import`` counts, wherever it stands
(module top or function body: a lazy import is still a dependency), except those under
``if TYPE_CHECKING:`` (annotations, never run) and the package's own ``__init__`` re-exports
(``import archsearch as A`` is the public face, not a layer). A loose size backstop catches
runaway modules; it is not a target.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from archsearch.resources import PACKAGE_DIR

#: The packages from the bottom up: each may import those listed before it, never one after it.
#: A top-level module (``archsearch.errors``) is a layer of its own, named here too.
LAYERS = (
    (
        "archsearch.errors",
        "archsearch.checks",
        "archsearch.devices",
        "archsearch.pareto",
        "archsearch.resources",
    ),
    ("archsearch.targets",),
    ("archsearch.net",),
    ("archsearch.hardware",),
    ("archsearch.data", "archsearch.train"),
    ("archsearch.storage",),
    ("archsearch.results",),
    ("archsearch.supernet",),
    ("archsearch.search",),
    ("archsearch.testing",),
    ("archsearch.cli",),
    # ``python -m archsearch.export`` and friends: entry points that hand over to cli/.
    (
        "archsearch.__main__",
        "archsearch.calibrate",
        "archsearch.export",
        "archsearch.finalize",
        "archsearch.report",
        "archsearch.reroot",
    ),
)
#: Most of the package's modules one module may import (a module importing more is a hub).
MAX_IMPORTS = 10
#: A backstop against runaway modules, far above what a concept needs.
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 120
#: The command-line edge: the only place hydra and omegaconf may be imported.
EDGE = ("archsearch.cli",)


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _type_checking_nodes(tree: ast.AST) -> set[ast.AST]:
    """The import statements inside ``if TYPE_CHECKING:`` blocks."""
    skipped: set[ast.AST] = set()
    for node in ast.walk(tree):
        test = node.test if isinstance(node, ast.If) else None
        name = test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else ""
        if name == "TYPE_CHECKING":
            for inner in node.body:
                skipped.update(ast.walk(inner))
    return skipped


def _imports(name: str, path: Path, *, typing_too: bool = False) -> Iterator[str]:
    """Absolute names of everything ``path`` imports (``from a import b`` is a.b if that is a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    skipped = set() if typing_too else _type_checking_nodes(tree)
    for node in ast.walk(tree):
        if node in skipped:
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                yield full if full in MODULES else base


def _graph() -> dict[str, set[str]]:
    """Each module's imports of the package's modules (the package's own ``__init__`` left out)."""
    return {
        name: {m for m in _imports(name, path) if m in MODULES and m != name and m != "archsearch"}
        for name, path in MODULES.items()
        if name != "archsearch"
    }


def _layer(module: str) -> int:
    for rank, names in enumerate(LAYERS):
        if any(module == n or module.startswith(n + ".") for n in names):
            return rank
    raise AssertionError(f"{module} belongs to no layer: add its package to LAYERS in tests/test_layout.py")


def test_the_import_graph_has_no_cycle() -> None:
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycle = [*stack[stack.index(dep) :], dep]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)


def test_no_package_imports_a_package_above_it() -> None:
    """search <-> results and net <-> hardware included: the layers in LAYERS, bottom up."""
    upward = [
        f"{name} imports {dep}"
        for name, deps in sorted(_graph().items())
        for dep in sorted(deps)
        if _layer(dep) > _layer(name)
    ]
    assert upward == []


def test_every_module_belongs_to_a_layer() -> None:
    for name in MODULES:
        if name != "archsearch":
            _layer(name)


def test_only_the_cli_imports_hydra_or_omegaconf() -> None:
    offenders = [
        f"{name} imports {dep}"
        for name, path in MODULES.items()
        if not name.startswith(EDGE) and name.split(".")[-1] != "__main__"
        for dep in _imports(name, path, typing_too=True)
        if dep.split(".")[0] in ("hydra", "omegaconf")
    ]
    assert offenders == []


def test_no_module_is_a_hub() -> None:
    """No module imports more than MAX_IMPORTS of the package's modules."""
    hubs = {n: len(d) for n, d in _graph().items() if len(d) > MAX_IMPORTS}
    assert hubs == {}


def test_the_checks_see_lazy_imports_and_skip_type_checking_ones(tmp_path: Path) -> None:
    """The rules above would pass vacuously if the parser missed an import: pin what it sees."""
    path = tmp_path / "mod.py"
    path.write_text(
        "from typing import TYPE_CHECKING\n"
        "import archsearch.errors\n"
        "if TYPE_CHECKING:\n    from archsearch.cli import main\n"
        "def f():\n    from archsearch.net import spec\n"
    )
    seen = set(_imports("archsearch.mod", path))
    assert {"archsearch.errors", "archsearch.net.spec"} <= seen
    assert "archsearch.cli.main" not in seen
    assert "archsearch.cli.main" in set(_imports("archsearch.mod", path, typing_too=True))


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_or_function_runs_away(name: str) -> None:
    path = MODULES[name]
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_MODULE_LINES, f"{path} has {len(text.splitlines())} lines"
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(text))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert long == [], f"{path}: {', '.join(long)}"
