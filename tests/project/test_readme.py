"""The README's Python example runs as printed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def test_python_example_runs(capsys):
    if not README.exists():
        pytest.fail("README.md is missing from the checkout")
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert len(blocks) == 1, "expected exactly one Python example in the README"
    exec(compile(blocks[0], "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "Dropout(0.2)" in out  # the summary
    loss, accuracy = eval(out.strip().splitlines()[-1])  # the printed (loss, accuracy)
    assert accuracy > 0.95 and loss < 0.2


def test_the_labs_python_example_prints_what_it_says(capsys):
    teaching = README.parent / "docs" / "teaching.md"
    blocks = re.findall(r"```python\n(.*?)```", teaching.read_text(encoding="utf-8"), re.S)
    assert len(blocks) == 1, "expected exactly one Python example in docs/teaching.md"
    promised = re.search(r"# (overfit check .*)$", blocks[0], re.M).group(1)
    exec(compile(blocks[0], "docs/teaching.md", "exec"), {})
    assert capsys.readouterr().out.strip() == promised
