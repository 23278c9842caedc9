"""A sweep trial brings back every file a finished run writes (through the run-folder list)."""

from __future__ import annotations

import os

from handprop.experiments.trial import run_trial
from handprop.train import make_config, run_training
from handprop.train.run_folder import CHECKPOINT, FINISHED_FILES, RunFolder

XOR = {"dataset": "xor", "hidden": [3], "activation": "sigmoid", "loss": None, "epochs": 3,
       "val_size": 0, "batch_size": 4, "lr": 2.0, "backend": "cpu"}


def test_a_trial_returns_every_file_a_finished_run_writes(tmp_path):
    config = make_config({k: v for k, v in XOR.items() if v is not None})
    result = run_trial(config)
    assert result["status"] == "ok", result.get("error")
    direct = tmp_path / "run"
    run_training(config, direct, progress=False, log=lambda *a, **k: None)
    written = {p.name for p in direct.iterdir()}
    assert CHECKPOINT in written
    assert set(result["files"]) == written - {CHECKPOINT}
    # The three the trial's own list used to miss:
    assert {"batch_loss.csv", "gradients.png", "decision.png"} <= set(result["files"])
    assert set(result["files"]) <= set(FINISHED_FILES)


def test_a_trial_records_the_threads_it_ran_with():
    """A worker pinned to 1 thread says so in its result (kept in the trial's result.json)."""
    from handprop.experiments.executors import LocalExecutor

    config = make_config({k: v for k, v in XOR.items() if v is not None})
    with LocalExecutor(workers=1, threads=1) as executor:
        ((key, result, error),) = list(executor.run([("xor", config)], plot=False))
    assert key == "xor" and error is None and result["status"] == "ok", result.get("error")
    report = result["threads"]
    assert report["pid"] != os.getpid()  # measured in the worker, not here
    assert report["env"]["OPENBLAS_NUM_THREADS"] == "1"
    assert report["pools"] and all(pool["num_threads"] == 1 for pool in report["pools"])


def test_the_run_folder_reader_sees_what_train_wrote(tmp_path):
    config = make_config({k: v for k, v in XOR.items() if v is not None})
    summary = run_training(config, tmp_path, progress=False, log=lambda *a, **k: None)
    folder = RunFolder.read(tmp_path)
    assert folder.finished and folder.summary == summary
    assert folder.config == config
    assert [row["epoch"] for row in folder.history] == [1, 2, 3]
    assert folder.load_model("cpu").num_parameters() == summary["parameters"]
