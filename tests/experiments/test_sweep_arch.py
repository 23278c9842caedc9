"""Sweeps over architectures: `;` between values on the command line, lists of tokens in a
sweep TOML, canonical arch text in trial names and tables, and a 2-point sweep end to end."""

from __future__ import annotations

import csv
import json

import pytest

from handprop.cli import main
from handprop.errors import ConfigError
from handprop.experiments.space import Space, parse_distribution, parse_grid_flag, space_from_toml
from handprop.train.config import load_toml, make_config

CNN = "conv:4:3,relu,maxpool:2,flatten"
TINY = ["--train-subset", "200", "--val-size", "50", "--epochs", "1", "--batch-size", "32",
        "--backend", "cpu", "--no-progress", "--no-plots"]


def test_arch_values_on_the_command_line_are_separated_by_semicolons():
    key, values = parse_grid_flag("arch=Dense:128, relu;dense:256,relu ; none")
    assert key == "arch" and values == ["Dense:128, relu", "dense:256,relu", None]
    assert Space({key: values}).grid["arch"] == ["dense:128,relu", "dense:256,relu", None]
    (single,) = parse_grid_flag("--arch=dense:64,tanh")[1]  # one value: no ';' needed
    assert single == "dense:64,tanh"
    assert parse_grid_flag("hidden=64;128,128") == ("hidden", [64, "128,128"])
    assert parse_grid_flag("lr=0.1,1") == ("lr", [0.1, 1])  # other options as before
    dist = Space(random={"arch": parse_distribution("choice(dense:8,relu; dense:16,tanh)")})
    assert dist.random["arch"].args == ("dense:8,relu", "dense:16,tanh")


def test_a_malformed_swept_arch_is_named():
    with pytest.raises(ConfigError, match="swept arch 'conv:16': arch token 'conv:16': write conv:FILTERS"):
        Space({"arch": parse_grid_flag("arch=dense:8;conv:16")[1]})
    with pytest.raises(ConfigError, match="choice"):
        Space(random={"arch": parse_distribution("uniform(1, 2)")})


def test_a_sweep_toml_takes_each_architecture_as_a_string_or_a_list_of_tokens():
    space = space_from_toml({"arch": [["conv:4:3", "relu", "maxpool:2", "flatten"],
                                      "dense:8,relu"]})
    assert space.grid["arch"] == [CNN, "dense:8,relu"]
    grid = space_from_toml({"grid": {"arch": [["dense:8", "relu"]]}})
    assert grid.grid["arch"] == ["dense:8,relu"]


def test_a_two_point_arch_sweep_end_to_end(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(["sweep", *TINY, "--optimizer", "adam", "--lr", "0.003",
                 "--grid", f"arch=dense:16,relu;{CNN}", "--out", str(out)]) == 0
    with (out / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(r["arch"] for r in rows) == sorted(["dense:16,relu", CNN])
    assert all(r["status"] == "ok" for r in rows)
    assert len({r["trial"] for r in rows}) == 2
    for row in rows:
        trial = out / "trials" / row["trial"]
        saved = json.loads((trial / "config.json").read_text())
        assert saved["config"]["arch"] == row["arch"]
        assert saved["model_input_shape"] == ([1, 28, 28] if row["arch"] == CNN else [784])
    # best.toml trains as it is: no --hidden & co. beside its arch.
    best = load_toml(out / "best.toml")
    assert best["arch"] in ("dense:16,relu", CNN) and "hidden" not in best
    assert make_config(best)["arch"] == best["arch"]


def test_a_sweep_toml_with_an_arch_axis_plans_one_trial_per_architecture(tmp_path, capsys):
    config = tmp_path / "archs.toml"
    config.write_text('[base]\ndataset = "mnist"\nval_size = 50\n\n[space]\n'
                      'arch = [["conv:4:3", "relu", "maxpool:2", "flatten"], "dense:8,relu"]\n'
                      '\n[sweep]\nseeds = [0, 1]\n')
    assert main(["sweep", "--config", str(config), "--dry-run", "--out", str(tmp_path / "s")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].startswith("4 trials")
    assert sum(line.startswith("arch=conv-4-3-relu-maxpool-2-flatten_seed=") for line in lines) == 2


def test_a_sweep_refuses_hidden_when_every_trial_has_an_arch(tmp_path, capsys):
    assert main(["sweep", *TINY, "--hidden", "32", "--grid", "arch=dense:8;dense:16",
                 "--dry-run", "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "--hidden" in err and "every trial" in err
    # With the MLP as one of the points, --hidden is used there and applied.
    assert main(["sweep", *TINY, "--hidden", "32", "--grid", "arch=dense:8;none",
                 "--dry-run", "--out", str(tmp_path / "s")]) == 0
    assert "2 trials" in capsys.readouterr().out
