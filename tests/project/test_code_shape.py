"""The shape rules of the code, checked: modules of at most 500 lines, functions of at most
80 (a compiled kernel kept whole for speed says so in the comment line above it), and the
engines importing nothing of the floors above them."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "handprop"
MODULES = sorted(SRC.rglob("*.py"))
WHOLE_FOR_SPEED = "# One function for speed:"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_modules_and_functions_stay_short(path):
    text = path.read_text()
    lines = text.splitlines()
    assert len(lines) <= 500, f"{path.name}: {len(lines)} lines"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            excused = lines[first - 2].strip().startswith(WHOLE_FOR_SPEED)
            assert length <= 80 or excused, f"{path.name}: {node.name} has {length} lines"


def test_the_engines_import_nothing_from_the_floors_above():
    pattern = re.compile(r"from \.+(nn|optim|train)\b")
    found = [f"{p.relative_to(SRC)}:{i}" for p in (SRC / "engines").rglob("*.py")
             for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert found == []


def test_layers_never_name_an_engine():
    for path in (SRC / "nn").rglob("*.py"):
        code = "\n".join(line.split("#")[0] for line in path.read_text().splitlines())
        assert not re.search(r"engine\.name\s*==|['\"](numba|cuda|cpu)['\"]", code), path.name
