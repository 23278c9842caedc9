"""Running sweeps in this process: resume after an interruption, failing trials,
selection on validation metrics only, best.toml, thread planning, the CLI.

Trials train on the 200-point ``linear`` toy set (well under a second each);
the MNIST runs on real executors are in test_sweep_e2e.py.
"""

from __future__ import annotations

import io
import json
import math

import pytest

from handprop.cli import main
from handprop.errors import ConfigError
from handprop.experiments import executors
from handprop.experiments.executors import InlineExecutor, plan_threads
from handprop.experiments.space import Space
from handprop.experiments.sweep import SweepProgress, SweepSpec, aggregate, best_toml, run_sweep

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

BASE = {"dataset": "linear", "val_size": 50, "hidden": [4], "epochs": 2, "backend": "cpu"}
QUIET = {"progress": False, "plots": False, "log": lambda *a: None}


class Counting:
    """Wraps the real trial function: counts calls, optionally interrupts at call N."""

    def __init__(self, interrupt_at=None):
        self.calls, self.interrupt_at = [], interrupt_at
        self.real = executors.run_trial

    def __call__(self, config, threads=None, plot=True):
        self.calls.append(config)
        if self.interrupt_at is not None and len(self.calls) == self.interrupt_at:
            raise KeyboardInterrupt  # as if Ctrl-C arrived during this trial
        return self.real(config, threads, plot)


def _spec(**space):
    return SweepSpec(base=BASE, space=Space(grid=space or {"lr": [0.05, 0.2, 1.0]}), seeds=[0, 1])


def test_resume_after_an_interruption_runs_only_the_missing_trials(tmp_path, monkeypatch):
    spec = _spec()
    interrupted = Counting(interrupt_at=3)
    monkeypatch.setattr(executors, "run_trial", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, tmp_path, InlineExecutor(), **QUIET)
    done = sorted(tmp_path.glob("trials/*/result.json"))
    assert len(done) == 2  # the two trials before the interrupt were written
    rows = (tmp_path / "results.csv").read_text().splitlines()
    assert len(rows) == 1 + 2  # partial table written as trials finished
    stamps = {p: p.stat().st_mtime_ns for p in done}

    again = Counting()
    monkeypatch.setattr(executors, "run_trial", again)
    result = run_sweep(spec, tmp_path, InlineExecutor(), **QUIET)
    assert len(again.calls) == 4 and result["ran"] == 4 and result["skipped"] == 2
    assert {p: p.stat().st_mtime_ns for p in done} == stamps  # finished trials untouched
    assert len(result["records"]) == 6 and all(r["status"] == "ok" for r in result["records"])

    # Same command once more: nothing to do. Then lose one result: only that one runs.
    third = Counting()
    monkeypatch.setattr(executors, "run_trial", third)
    assert run_sweep(spec, tmp_path, InlineExecutor(), **QUIET)["skipped"] == 6
    assert third.calls == []
    lost = done[0]
    lost_seed = json.loads(lost.read_text())["seed"]
    lost.unlink()
    run_sweep(spec, tmp_path, InlineExecutor(), **QUIET)
    assert len(third.calls) == 1 and third.calls[0]["seed"] == lost_seed
    assert lost.exists()


def test_a_failing_trial_is_reported_and_the_sweep_goes_on(tmp_path):
    spec = _spec(activation=["sigmoid", "no_such_activation"])
    result = run_sweep(spec, tmp_path, InlineExecutor(), **QUIET)
    failed = [r for r in result["records"] if r["status"] == "failed"]
    assert len(failed) == 2 and result["failed"] == 2 and result["ran"] == 4
    assert all("ConfigError: unknown activation 'no_such_activation'" in r["error"]
               for r in failed)
    assert "Traceback" in failed[0]["traceback"]
    assert result["best"]["point"] == {"activation": "sigmoid"}
    markdown = (tmp_path / "results.md").read_text()
    assert "## Failed trials" in markdown and "unknown activation" in markdown
    assert "0 (2 failed)" in markdown
    csv_rows = (tmp_path / "results.csv").read_text().splitlines()
    assert sum(",failed," in row for row in csv_rows) == 2
    # Rerunning retries the failed trials only (their cause may have been fixed).
    again = run_sweep(spec, tmp_path, InlineExecutor(), **QUIET)
    assert again["ran"] == 2 and again["skipped"] == 2


def test_a_trial_function_that_raises_is_recorded_as_failed(tmp_path, monkeypatch):
    # What a lost worker looks like to the client: the future raises instead of returning.
    real = executors.run_trial

    def flaky(config, threads=None, plot=True):
        if config["lr"] == 1.0:
            raise RuntimeError("worker lost")
        return real(config, threads, plot)

    monkeypatch.setattr(executors, "run_trial", flaky)
    result = run_sweep(_spec(), tmp_path, InlineExecutor(), **QUIET)
    failed = [r for r in result["records"] if r["status"] == "failed"]
    assert [r["error"] for r in failed] == ["RuntimeError: worker lost"] * 2
    assert result["best"] is not None and result["best"]["point"]["lr"] != 1.0


def _record(point, seed, val_acc, val_loss, test_acc):
    metrics = {"val_accuracy": val_acc, "val_loss": val_loss, "test_accuracy": test_acc,
               "test_loss": 1.0, "train_accuracy": 1.0, "train_loss": 0.1}
    return {"trial": f"{point}-{seed}", "stage": 1, "point": point, "seed": seed,
            "status": "ok", "error": None, "metrics": metrics, "history": [],
            "config": {**BASE, **point, "seed": seed}, "seconds": 1.0}


def test_selection_uses_mean_validation_accuracy_never_test():
    records = [
        # a: better test accuracy, worse mean validation accuracy
        _record({"lr": "a"}, 0, 0.80, 0.5, 0.99), _record({"lr": "a"}, 1, 0.84, 0.5, 0.99),
        _record({"lr": "b"}, 0, 0.85, 0.5, 0.50), _record({"lr": "b"}, 1, 0.83, 0.5, 0.50),
        # c: one lucky seed is not enough; the mean counts
        _record({"lr": "c"}, 0, 0.95, 0.5, 0.50), _record({"lr": "c"}, 1, 0.60, 0.5, 0.50),
    ]
    rows = aggregate(records)
    assert [r["point"]["lr"] for r in rows] == ["b", "a", "c"]
    assert rows[0]["val_accuracy"] == pytest.approx(0.84)
    assert rows[0]["val_accuracy_std"] == pytest.approx(math.sqrt(2 * 0.01 ** 2))  # n-1


def test_ties_go_to_the_lower_validation_loss():
    rows = aggregate([_record({"lr": "x"}, 0, 0.9, 0.40, 0.9),
                      _record({"lr": "y"}, 0, 0.9, 0.30, 0.1)])
    assert rows[0]["point"] == {"lr": "y"}


def test_best_toml_trains_the_best_point_as_is(tmp_path):
    spec = SweepSpec(base={**BASE, "eta_min": None},
                     space=Space(grid={"lr": [0.05, 1.0], "hidden": ["4", "3x3"]}), seeds=[3])
    result = run_sweep(spec, tmp_path, InlineExecutor(), **QUIET)
    text = (tmp_path / "best.toml").read_text()
    assert text == best_toml(result["best"])
    loaded = tomllib.loads(text)["train"]
    best_config = result["best"]["records"][0]["config"]
    from handprop.train.config import load_toml, make_config

    assert make_config(load_toml(tmp_path / "best.toml")) == best_config
    assert loaded["seed"] == 3 and "eta_min" not in loaded  # TOML has no null


def test_threads_are_planned_within_the_cores():
    assert plan_threads(2, cores=8) == 4
    assert plan_threads(3, cores=8) == 2
    assert plan_threads(2, 3, cores=8) == 3
    with pytest.raises(ConfigError, match="oversubscribe"):
        plan_threads(4, 2, cores=4)
    with pytest.raises(ConfigError, match="oversubscribe"):
        plan_threads(5, cores=4)


def test_cli_dry_run_lists_the_trials(capsys, tmp_path):
    code = main(["sweep", "--dataset", "linear", "--grid", "lr=0.1,1", "--grid", "l2=0,1e-4",
                 "--seeds", "0,1,2", "--out", str(tmp_path / "s"), "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0
    assert "12 trials" in out and "lr=0.1_l2=0_seed=2-" in out
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("args, message", [
    (["--val-size", "0", "--grid", "lr=0.1,1"], "needs a validation split"),
    (["--grid", "lrr=0.1"], "not a training option.*did you mean lr"),
    (["--random", "l2=loguniform(0,1)"], "bounds must be > 0"),
    (["--grid", "lr=0.1", "--trials", "5"], "--trials counts random points"),
    (["--seeds", "0,x"], "--seeds takes whole numbers"),
    (["--workers", "64"], "oversubscribe"),
])
def test_cli_errors_are_one_line_with_exit_2(capsys, tmp_path, args, message):
    code = main(["sweep", "--dataset", "linear", "--out", str(tmp_path / "s"), *args])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("handprop sweep: error: ") and len(err.strip().splitlines()) == 1
    import re

    assert re.search(message, err)


def test_cli_runs_a_toml_sweep_and_flags_win(tmp_path, capsys):
    config = tmp_path / "s.toml"
    config.write_text('[base]\ndataset = "linear"\noptimizer = "momentum"\nval_size = 50\nhidden = [4]\nepochs = 1\n'
                      'backend = "cpu"\n\n[space]\nlr = [0.05, 0.5]\n'
                      'momentum = "uniform(0.1, 0.9)"\n\n[sweep]\nseeds = [0]\ntrials = 2\n')
    out = tmp_path / "out"
    code = main(["sweep", "--config", str(config), "--epochs", "2", "--out", str(out),
                 "--no-progress", "--no-plots"])
    assert code == 0
    rows = (out / "results.csv").read_text().splitlines()
    assert len(rows) == 1 + 4  # 2 grid values x 2 random samples x 1 seed
    assert all(r["config"]["epochs"] == 2 for r in
               (json.loads(p.read_text()) for p in out.glob("trials/*/result.json")))
    assert "| rank | lr | momentum |" in capsys.readouterr().out


@pytest.mark.parametrize("name, trials", [("l2_accuracy", 21), ("lr_curves", 5),
                                          ("decay_curves", 4), ("l2_coarse_to_fine", 10),
                                          ("multi_seed", 4), ("dropout_accuracy", 12)])
def test_example_studies_parse(name, trials, capsys):
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "examples" / "sweeps" / f"{name}.toml"
    assert main(["sweep", "--config", str(path), "--dry-run"]) == 0
    assert f"{trials} trials" in capsys.readouterr().out


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_on_a_terminal_and_plain_lines_elsewhere():
    record = {"trial": "t", "point": {"lr": 0.1}, "seed": 0, "status": "ok", "seconds": 1.0,
              "metrics": {"val_accuracy": 0.5}, "error": None}
    best = {"val_accuracy": 0.75, "point": {"lr": 1.0}}
    terminal = _Terminal()
    bar = SweepProgress(3, stream=terminal)
    bar.update(record, best)
    bar.update({**record, "status": "failed", "error": "ConfigError: bad"}, best)
    bar.close()
    text = terminal.getvalue()
    assert "trials" in text and "2/3" in text and "best 75.00%" in text
    assert "ConfigError: bad" in text  # failures are written above the bar
    plain = io.StringIO()
    lines = SweepProgress(2, stream=plain)
    lines.update(record, best)
    assert plain.getvalue().startswith("[1/2] ") and "val_acc 50.00%" in plain.getvalue()
    assert "\r" not in plain.getvalue()
