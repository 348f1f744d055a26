"""The code keeps its shape: small functions and no import cycles, in flows/ and serving/.

Both are read from the source with `ast`, so a long function or a new cycle fails here, named,
before review has to find it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("flows", "serving")
LIMIT = 60


def _sources() -> Iterator[tuple[str, ast.Module]]:
    """(dotted module name, parsed source) for every module of kiln's packages."""
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join(parts), ast.parse(path.read_text(), str(path))


def test_no_function_over_60_lines():
    long = []
    for module, tree in _sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > LIMIT:
                    long.append(f"{module}:{node.lineno} {node.name}: {lines} lines")
    assert long == []


def _import_time_imports(module: str, tree: ast.Module, known: set[str]) -> set[str]:
    """kiln modules this one imports when it is imported (not inside functions, not for typing)."""
    found: set[str] = set()
    package = module if module in PACKAGES or _is_package(module) else module.rpartition(".")[0]
    for node in _top_level(tree.body):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from flows import store` imports the module flows.store
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        found |= {name for name in names if name in known}
    found.discard(module)
    return found


def _is_package(module: str) -> bool:
    return (ROOT / module.replace(".", "/") / "__init__.py").exists()


def _top_level(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Statements run at import: the body and its if/try blocks, minus `if TYPE_CHECKING:`."""
    for node in body:
        if isinstance(node, ast.If):
            if "TYPE_CHECKING" in ast.unparse(node.test):
                yield from _top_level(node.orelse)
                continue
            yield from _top_level(node.body + node.orelse)
        elif isinstance(node, ast.Try):
            yield from _top_level(node.body + node.orelse + node.finalbody)
            for handler in node.handlers:
                yield from _top_level(handler.body)
        else:
            yield node


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected group of modules that import each other."""
    found: list[list[str]] = []
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(module: str) -> None:
        state[module] = "open"
        stack.append(module)
        for imported in sorted(graph[module]):
            if state.get(imported) == "open":
                found.append(stack[stack.index(imported) :] + [imported])
            elif imported not in state:
                visit(imported)
        stack.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module)
    return found


def test_no_import_cycles():
    trees = dict(_sources())
    known = set(trees)
    graph = {module: _import_time_imports(module, tree, known) for module, tree in trees.items()}
    assert [" -> ".join(cycle) for cycle in _cycles(graph)] == []


def test_the_cycle_check_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c", "a"]]
