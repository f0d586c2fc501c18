"""The package's layers: which folders may import which, and no import cycles (read from the source, not run).

Every import counts, also those inside functions (a lazy import is still a dependency); only imports under
`if TYPE_CHECKING:` (annotations) are left out.
"""

from __future__ import annotations

import ast
import importlib
import types
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "sagenano"

# A folder of the package, and the folders it must never import.
FORBIDDEN = {
    "inverse": {"eval", "serve", "train"},
    "data": {"inverse", "eval", "serve", "train"},
    "train": {"eval", "serve"},
    "eval": {"serve"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(tree: ast.AST):
    """Every import statement, skipping `if TYPE_CHECKING:` blocks."""
    for node in ast.iter_child_nodes(tree):
        if _type_checking_only(node):
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        yield from _imports(node)


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that `name` imports (a package's `__init__` counts as the package)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in _imports(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            # `from x import y`: the module x.y when y is one, else x itself
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in known else module for a in node.names]
        found.update(target for target in targets if target in known)
    return found - {name}


def import_graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imported_modules(name, path, set(found)) for name, path in found.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


LAYERS = {"data", "inverse", "eval", "serve", "train"}


def layer(name: str) -> str | None:
    """The folder of the package a module lives in, the folder's own `__init__` included (None: a top-level
    module)."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def test_the_graph_sees_the_package():
    graph = import_graph()
    assert "sagenano.inverse.engine" in graph and "sagenano.decoding" in graph["sagenano.inverse.engine"]
    assert "sagenano.inverse.options" in graph["sagenano.inverse.report"]


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_layers_import_only_downwards(folder):
    wrong = [
        f"{name} imports {other}"
        for name, edges in import_graph().items()
        if layer(name) == folder
        for other in sorted(edges)
        if layer(other) in FORBIDDEN[folder]
    ]
    assert not wrong, f"{folder}/ must not import {sorted(FORBIDDEN[folder])}: " + "; ".join(wrong)


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_the_rules_can_fail():
    """The checks above see a forbidden import and a cycle when there is one."""
    graph = {"sagenano.inverse.a": {"sagenano.eval.b"}, "sagenano.eval.b": {"sagenano.inverse.a"}}
    assert cycles(graph) == [["sagenano.eval.b", "sagenano.inverse.a"]]
    assert layer("sagenano.eval.b") in FORBIDDEN["inverse"]
    assert layer("sagenano.eval") in FORBIDDEN["inverse"]  # `from ..eval import x` goes through the package


@pytest.mark.parametrize("package", ["sagenano", "sagenano.inverse", "sagenano.inverse.render"])
def test_lazy_exports_are_the_named_objects_once_every_module_is_imported(package):
    """A submodule named like an export would replace it on the package when imported (`inverse.validate` was)."""
    for name in sorted(modules()):
        if name.startswith(package + ".") and not name.startswith("sagenano.cli"):
            importlib.import_module(name)
    loaded = importlib.import_module(package)
    assert loaded._EXPORTS
    shadowed = [name for name in loaded._EXPORTS if isinstance(getattr(loaded, name), types.ModuleType)]
    assert shadowed == [], f"{package}: these exports are modules: {shadowed}"
