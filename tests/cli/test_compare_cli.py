"""`handprop compare`: run folders side by side."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from handprop.cli import main
from handprop.cli.compare import differing_options

QUICK = ["--train-subset", "300", "--val-size", "100", "--hidden", "8", "--epochs", "2",
         "--batch-size", "50", "--backend", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    made = {}
    for name, extra in {"a": ["--lr", "0.1", "--seed", "0"], "b": ["--lr", "0.1", "--seed", "1"],
                        "c": ["--lr", "0.5", "--seed", "0"]}.items():
        assert main(["train", *QUICK, *extra, "--out", str(root / name)]) == 0
        made[name] = root / name
    return made


def test_differing_options_ignore_the_seed_and_compare_lists():
    configs = [{"lr": 0.1, "hidden": [8], "seed": 0, "data_dir": "x"},
               {"lr": 0.1, "hidden": [8, 4], "seed": 1, "data_dir": "y"},
               {"lr": 0.5, "hidden": [8], "seed": 0}]
    assert differing_options(configs) == ["hidden", "lr"]
    assert differing_options(configs[:1]) == []


def test_compare_labels_runs_by_what_differs(runs, tmp_path, capsys):
    out = tmp_path / "cmp.png"
    capsys.readouterr()
    assert main(["compare", *(str(runs[k]) for k in "abc"), "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["options"] == ["lr"]
    assert [(r["lr"], r["seed"]) for r in report["runs"]] == [(0.1, 0), (0.1, 1), (0.5, 0)]
    for key, row in zip("abc", report["runs"]):
        summary = json.loads((runs[key] / "summary.json").read_text())
        assert row["test_accuracy"] == summary["test_accuracy"]
        assert row["epochs"] == 2 and row["finished"] is True
    with Image.open(out) as picture:
        assert picture.width > 600 and len(picture.convert("RGB").getcolors(1 << 20)) > 50

    assert main(["compare", str(runs["a"]), str(runs["c"]), "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["run", "lr", "seed"]
    assert len(lines) == 2 + 2 + 1  # header, rule, two runs, where the curves are
    assert lines[-1] == f"curves: {out}"


def test_runs_that_differ_only_in_seed(runs, tmp_path, capsys):
    assert main(["compare", str(runs["a"]), str(runs["b"]), "--out", str(tmp_path / "s.png")]) == 0
    assert capsys.readouterr().out.startswith("the runs have the same configuration except the seed")


def test_an_unfinished_run_is_shown_as_such(runs, tmp_path, capsys):
    import shutil

    partial = tmp_path / "partial"
    shutil.copytree(runs["c"], partial)
    (partial / "summary.json").unlink()
    assert main(["compare", str(runs["a"]), str(partial), "--out", str(tmp_path / "p.png"),
                 "--json"]) == 0
    row = json.loads(capsys.readouterr().out)["runs"][1]
    assert row["finished"] is False and row["test_accuracy"] is None and row["epochs"] == 2
    assert row["val_accuracy"] is not None  # taken from its last epoch


def test_bad_folders_are_one_line_errors(runs, tmp_path, capsys):
    assert main(["compare", str(runs["a"]), str(tmp_path)]) == 2
    assert "is not a handprop run folder" in capsys.readouterr().err
    assert main(["compare", str(runs["a"]), str(runs["a"])]) == 2
    assert "named twice" in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    assert main(["compare", str(broken)]) == 2
    assert "damaged" in capsys.readouterr().err
