"""The package's shape: one-way imports, hydra only at the edge, small modules and functions.

Every ``import`` statement counts, wherever it stands (module top, function body or
``TYPE_CHECKING`` block): a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from archsearch.resources import PACKAGE_DIR

MAX_MODULE_LINES = 420
MAX_FUNCTION_LINES = 80
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


def _imports(name: str, path: Path) -> Iterator[str]:
    """Absolute names of everything ``path`` imports (``from a import b`` is a.b if that is a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
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
    return {
        name: {m for m in _imports(name, path) if m in MODULES and m != name and m != "archsearch"}
        for name, path in MODULES.items()
    }


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


def test_only_the_cli_imports_hydra_or_omegaconf() -> None:
    offenders = [
        f"{name} imports {dep}"
        for name, path in MODULES.items()
        if not name.startswith(EDGE) and name.split(".")[-1] != "__main__"
        for dep in _imports(name, path)
        if dep.split(".")[0] in ("hydra", "omegaconf")
    ]
    assert offenders == []


def test_no_module_is_a_hub() -> None:
    """No module below the CLI imports more than a third of the package."""
    graph = _graph()
    limit = len(MODULES) // 3
    hubs = {
        n: len(d) for n, d in graph.items() if len(d) > limit and not n.startswith(EDGE) and n != "archsearch"
    }
    assert hubs == {}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_and_functions_stay_small(name: str) -> None:
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
