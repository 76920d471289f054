"""The floor plan holds: files and functions stay readable (STYLE.md), and the layer contracts
run.

The sizes are advisory: a file over 400 lines or a function over 50 is reported (run with
``-rP`` or ``-s`` to see the list) so that a split is considered where the code has more than
one job; the test fails only far beyond, at 600 lines / 80 lines, where a file surely holds
several rooms. A file is never split just to meet the numbers.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "rewardtune"
ADVISED_FILE_LINES, MAX_FILE_LINES = 400, 600
ADVISED_FUNCTION_LINES, MAX_FUNCTION_LINES = 50, 80


def _sources() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def _file_lengths() -> dict[str, int]:
    return {str(p.relative_to(SRC)): p.read_text().count("\n") for p in _sources()}


def _function_lengths() -> dict[str, int]:
    lengths = {}
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                name = f"{path.relative_to(SRC)}:{node.lineno} {node.name}"
                lengths[name] = node.end_lineno - node.lineno + 1
    return lengths


def test_no_source_file_is_far_over_the_advised_400_lines():
    lengths = _file_lengths()
    advised = {name: n for name, n in lengths.items() if n > ADVISED_FILE_LINES}
    if advised:
        print(f"files over the advised {ADVISED_FILE_LINES} lines: {advised}")
    too_long = {name: n for name, n in lengths.items() if n > MAX_FILE_LINES}
    assert not too_long, too_long


def test_no_function_is_far_over_the_advised_50_lines():
    lengths = _function_lengths()
    advised = {name: n for name, n in lengths.items() if n > ADVISED_FUNCTION_LINES}
    if advised:
        print(f"functions over the advised {ADVISED_FUNCTION_LINES} lines: {advised}")
    too_long = {name: n for name, n in lengths.items() if n > MAX_FUNCTION_LINES}
    assert not too_long, too_long
