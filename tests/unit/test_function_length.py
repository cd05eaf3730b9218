"""No function outside the tests is over 80 lines (issue 18): a longer one is split where its steps are, so
each can be read, named and tested alone. Counted from `def` to the function's last line, docstring included."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PARTS = ("catalog", "policy", "infra", "lambda_layers", "ernie", "workloads", "benchmarks", "testing")
LIMIT = 80


def long_functions(path: Path, limit: int = LIMIT) -> list[str]:
    """`file:line: name (N lines)` for each function or method in `path` longer than `limit`."""
    tree = ast.parse(path.read_text(), str(path))
    return [f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path}:{node.lineno}: {node.name} "
            f"({node.end_lineno - node.lineno + 1} lines)"
            for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > limit]


def test_no_function_outside_the_tests_is_over_80_lines() -> None:
    found = [line for part in PARTS for path in sorted((REPO / part).rglob("*.py"))
             if "__pycache__" not in path.parts for line in long_functions(path)]
    assert not found, f"functions over {LIMIT} lines; split them where their steps are:\n" + "\n".join(found)


def test_the_count_sees_a_long_method(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text("class C:\n    async def long(self):\n" + "        x = 1\n" * 80 + "\ndef short():\n    pass\n")
    assert long_functions(planted) == [f"{planted}:2: long (81 lines)"]
