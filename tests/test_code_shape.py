"""The code a newcomer opens first stays readable: no function in sentiment/ or stream/ runs over 150 lines."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 150


def long_functions(source: str, where: str) -> list[str]:
    """Every function (also a nested one or a method) of ``source`` longer than MAX_LINES, with its length."""
    return [
        f"{where}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(source, where))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno + 1 > MAX_LINES
    ]


def test_no_function_over_150_lines():
    found = [
        problem
        for package in ("sentiment", "stream")
        for path in sorted((ROOT / package).rglob("*.py"))
        for problem in long_functions(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    ]
    assert not found, f"functions over {MAX_LINES} lines (split them):\n" + "\n".join(found)


def test_the_check_sees_a_long_function():
    def lines(n: int, indent: str) -> str:
        return "".join(f"{indent}x{i} = {i}\n" for i in range(n))

    assert long_functions(f"def fits():\n{lines(MAX_LINES - 1, '    ')}", "a.py") == []
    too_long = f"class C:\n    async def long(self):\n{lines(MAX_LINES, '        ')}"
    assert long_functions(too_long, "b.py") == [f"b.py:2 long ({MAX_LINES + 1} lines)"]
