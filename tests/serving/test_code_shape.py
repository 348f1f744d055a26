"""The server stays small-grained: no function in serving/ longer than 60 lines."""

from __future__ import annotations

import ast
from pathlib import Path

SERVING = Path(__file__).resolve().parents[2] / "serving"
LIMIT = 60


def _functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


def test_no_function_over_60_lines():
    long = []
    for path in sorted(SERVING.rglob("*.py")):
        for node in _functions(ast.parse(path.read_text())):
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            if lines > LIMIT:
                where = f"{path.relative_to(SERVING.parent)}:{node.lineno}"
                long.append(f"{where} {node.name}: {lines} lines")
    assert long == []
