"""Small MNIST sweeps end to end on both executors, and the plots they write.

Local: two spawned worker processes pinned to one thread each. Dask: a real
``distributed.LocalCluster`` of two worker processes (no mock), with a trial
that raises; the cluster must be closed afterwards. Trials train on 300
images for 2 epochs with 16 hidden units, a couple of seconds each.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from handprop.experiments.executors import DaskExecutor, LocalExecutor, available_cores
from handprop.experiments.plots import plot_heatmap, write_plots
from handprop.experiments.space import Space
from handprop.experiments.sweep import SweepSpec, aggregate, run_sweep
from handprop.experiments.trial import thread_report

MNIST = {"dataset": "mnist", "train_subset": 300, "val_size": 500, "epochs": 2, "hidden": [16],
         "backend": "cpu", "eval_batch_size": 5000}
TRIAL_FILES = ("config.json", "metrics.jsonl", "model.npz", "curves.png", "summary.json",
               "result.json")

needs_two_cores = pytest.mark.skipif(available_cores() < 2, reason="needs 2 cores for 2 workers")


def assert_png(path, min_bytes=8_000):
    """A real picture: big enough, and not a blank canvas."""
    import matplotlib.image

    assert path.exists(), path
    assert path.stat().st_size > min_bytes, f"{path} is only {path.stat().st_size} bytes"
    pixels = matplotlib.image.imread(path)
    colours = np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)
    assert len(colours) > 20, f"{path} has only {len(colours)} colours"


@needs_two_cores
def test_local_processes_mnist_sweep_with_seeds_tables_and_plots(tmp_path):
    spec = SweepSpec(base=MNIST, space=Space(grid={"lr": [0.3, 3.0]}), seeds=[0, 1])
    result = run_sweep(spec, tmp_path, LocalExecutor(workers=2), progress=False,
                       log=lambda *a: None)
    assert result["ran"] == 4 and result["failed"] == 0
    for record in result["records"]:
        folder = tmp_path / "trials" / record["trial"]
        assert all((folder / name).exists() for name in TRIAL_FILES), folder
        assert len(record["history"]) == 2 and record["metrics"]["engine"] == "cpu"
    # Ranked by mean validation accuracy, mean +- std over the 2 seeds.
    rows = result["rows"]
    assert [r["n_ok"] for r in rows] == [2, 2]
    assert rows[0]["val_accuracy"] >= rows[1]["val_accuracy"]
    assert rows[0]["point"]["lr"] == 3.0  # 2 epochs of 300 images: the large step learns more
    table = (tmp_path / "results.md").read_text().splitlines()
    assert table[4].startswith("| rank | lr | seeds | val acc")
    assert "±" in table[6] and len(table) == 6 + 2
    assert len((tmp_path / "results.csv").read_text().splitlines()) == 1 + 4
    assert "lr = 3.0" in (tmp_path / "best.toml").read_text()
    # Plots: curves with seed bands, and final metrics against lr.
    assert sorted(p.name for p in result["plots"]) == ["curves.png", "val_vs_lr.png"]
    for path in result["plots"]:
        assert_png(path)


@needs_two_cores
def test_local_workers_are_pinned_to_their_share_of_the_cores():
    with LocalExecutor(workers=2) as executor:
        reports = [executor.submit(thread_report).result() for _ in range(2)]
    for report in reports:
        assert report["env"]["OPENBLAS_NUM_THREADS"] == str(available_cores() // 2)
        assert report["env"]["NUMBA_NUM_THREADS"] == str(available_cores() // 2)
        assert all(pool["num_threads"] <= available_cores() // 2 for pool in report["pools"])


@needs_two_cores
def test_dask_local_cluster_runs_trials_and_reports_one_that_raises(tmp_path):
    pytest.importorskip("distributed")
    spec = SweepSpec(base=MNIST, space=Space(grid={"activation": ["tanh", "no_such_fn"]}),
                     seeds=[0])
    executor = DaskExecutor("local", workers=2)
    with executor:  # held open around the sweep, which enters it again (one cluster)
        cluster = executor.cluster
        report = executor.submit(thread_report).result()
        result = run_sweep(spec, tmp_path, executor, progress=False, plots=False,
                           log=lambda *a: None)
        assert executor.cluster is cluster and cluster.status.name == "running"
    # Each worker's BLAS and Numba threads get its share of the cores.
    assert report["env"]["OPENBLAS_NUM_THREADS"] == str(available_cores() // 2)
    assert report["env"]["NUMBA_NUM_THREADS"] == str(available_cores() // 2)
    # The cluster and its client are shut down once the sweep returns.
    assert cluster is not None and cluster.status.name == "closed"
    assert executor.client.status == "closed"
    ok = [r for r in result["records"] if r["status"] == "ok"]
    failed = [r for r in result["records"] if r["status"] == "failed"]
    assert len(ok) == 1 and len(failed) == 1
    assert "unknown activation 'no_such_fn'" in failed[0]["error"]
    # Results came back to the client and were written here, not on the workers.
    trial = tmp_path / "trials" / ok[0]["trial"]
    assert all((trial / name).exists() for name in TRIAL_FILES if name != "curves.png")
    assert not (trial / "curves.png").exists()  # plots=False reaches the workers
    summary = json.loads((trial / "summary.json").read_text())
    assert summary["test_accuracy"] == ok[0]["metrics"]["test_accuracy"]
    assert result["best"]["point"] == {"activation": "tanh"}
    assert "no_such_fn" in (tmp_path / "results.md").read_text()


def _fake_record(point, seed, rng, epochs=5):
    """A finished trial without training: curves that look like learning."""
    history = []
    for e in range(1, epochs + 1):
        acc = 0.5 + 0.4 * (1 - np.exp(-e / 2)) + rng.normal(0, 0.01)
        history.append({"epoch": e, "train_loss": 1.5 / e, "train_acc": acc + 0.02,
                        "val_loss": 1.6 / e + 0.05, "val_acc": acc})
    last = history[-1]
    metrics = {"val_accuracy": last["val_acc"], "val_loss": last["val_loss"],
               "train_accuracy": last["train_acc"], "train_loss": last["train_loss"],
               "test_accuracy": last["val_acc"], "test_loss": last["val_loss"]}
    return {"trial": f"{point}-{seed}", "stage": 1, "point": point, "seed": seed,
            "status": "ok", "error": None, "metrics": metrics, "history": history}


def test_plots_for_a_grid_a_random_search_and_a_multi_seed_study(tmp_path):
    rng = np.random.default_rng(0)
    # Two grid options, two seeds: curves, metric against each option, a heat map.
    records = [_fake_record({"lr": lr, "hidden": hidden}, seed, rng)
               for lr in (0.01, 0.1, 1.0) for hidden in ([16], [8, 8]) for seed in (0, 1)]
    written = write_plots(records, aggregate(records), ["lr", "hidden"], tmp_path / "grid")
    assert sorted(p.name for p in written) == ["curves.png", "heatmap_lr_hidden.png",
                                               "val_vs_lr.png"]  # hidden is not a number
    for path in written:
        assert_png(path)
    # Random search over two continuous options: the heat map becomes a scatter.
    records = [_fake_record({"l2": float(10 ** rng.uniform(-5, -1)),
                             "momentum": float(rng.uniform(0, 0.9))}, 0, rng)
               for _ in range(20)]
    path = plot_heatmap(aggregate(records), "l2", "momentum", tmp_path / "scatter.png")
    assert_png(path)
    # One configuration, four seeds: only the curves (mean, +-1 std band, each seed).
    records = [_fake_record({}, seed, rng) for seed in range(4)]
    written = write_plots(records, aggregate(records), [], tmp_path / "seeds")
    assert [p.name for p in written] == ["curves.png"]
    assert_png(written[0])
