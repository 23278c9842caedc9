"""The README's "Convolutional networks" subsection: its grammar table is the library's, and
every recipe command parses, is accepted as a configuration and builds its model."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from handprop.cli import build_parser
from handprop.cli.train import flags_to_config
from handprop.nn.arch import GRAMMAR
from handprop.train.config import make_config
from handprop.train.run import build_model

README = Path(__file__).resolve().parents[2] / "README.md"


def section() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("### Convolutional networks")
    return text[start:text.index("\n### ", start + 1)]


def test_the_grammar_table_lists_every_token_of_the_library():
    rows = re.findall(r"^\| `?([^|`]+?)`? \| ", section(), re.M)
    assert [row for row in rows if row not in ("token", "recipe")][:len(GRAMMAR)] == \
           [token for token, _ in GRAMMAR]


def test_every_recipe_parses_and_builds_its_model():
    commands = re.findall(r"`(handprop train [^`]+)`", section())
    assert len(commands) == 3
    parser = build_parser()
    for command in commands:
        args = parser.parse_args(shlex.split(command)[1:])
        config = make_config(flags_to_config(args))
        shape = (1, 28, 28) if config["arch"] else (784,)
        model = build_model(config, shape, 10, "cpu")
        assert model.output_dim == 10
        assert config["backend"] == "numba" and config["dataset"] in ("mnist", "fashion-mnist")
