"""The comparators train the same model from the same weights on the same batches as
handprop: their first per-batch losses match handprop's. No speed is asserted."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from handprop import bench
from handprop.bench.comparators import (COMPARATORS, HANDPROP_ROWS, comparator_unavailable,
                                        handprop_rows, make_comparator)

BATCH, STEPS, EPOCHS = 16, 4, 2  # two epochs: the batch order is redrawn each epoch
has_torch = importlib.util.find_spec("torch") is not None
has_jax = (importlib.util.find_spec("jax") is not None
           and importlib.util.find_spec("optax") is not None)
needs_torch = pytest.mark.skipif(not has_torch, reason="PyTorch not installed "
                                 "(pip install 'handprop[compare]')")
needs_jax = pytest.mark.skipif(not has_jax, reason="JAX/optax not installed "
                               "(pip install 'handprop[compare]')")


def handprop_losses(model, optimizer):
    runner = bench.HandpropRunner("cpu", model, BATCH, optimizer, STEPS)
    assert len(runner.epochs(EPOCHS)) == EPOCHS
    return np.asarray(runner.batch_losses())


def comparator_losses(name, model, optimizer, isolate=False):
    runner = make_comparator(name, model, BATCH, optimizer, STEPS, isolate=isolate)
    try:
        assert runner.label == name
        seconds = runner.epochs(EPOCHS)
        assert len(seconds) == EPOCHS and all(s > 0 for s in seconds)
        return np.asarray(runner.batch_losses())
    finally:
        runner.close()


CASES = [("784-100-10 sigmoid", "sgd"), ("784-100-10 sigmoid", "adam"),
         ("784-256-256-10 relu", "adam"),
         # The MNIST CNN: torch.nn.Conv2d, and JAX's lax.conv_general_dilated in NCHW.
         (bench.CNN_MODEL, "sgd"), (bench.CNN_MODEL, "adam")]


@pytest.mark.parametrize("model, optimizer", CASES)
@pytest.mark.parametrize("name", [
    pytest.param("torch", marks=needs_torch),
    pytest.param("jax scan", marks=needs_jax),
    pytest.param("jax step", marks=needs_jax)])
def test_first_losses_match_handprop(name, model, optimizer):
    expected = handprop_losses(model, optimizer)
    got = comparator_losses(name, model, optimizer)
    assert got.shape == (EPOCHS * STEPS,)
    np.testing.assert_allclose(got, expected, rtol=2e-5)
    assert not np.allclose(got[:STEPS], got[STEPS:])  # it trained: the loss moved


@needs_torch
def test_the_torch_cnn_runs_in_channels_last_memory_and_the_mlp_as_it_is():
    """PyTorch's CNN comparator is written as its best CPU user writes it: the model and each
    batch in channels-last memory (oneDNN's faster convolutions); the MLPs need no format."""
    import torch

    seen = []
    cnn = make_comparator("torch", bench.CNN_MODEL, BATCH, "sgd", STEPS, isolate=False)
    forward = cnn.loop.forward
    cnn.loop.forward = lambda xb: seen.append(xb) or forward(xb)
    cnn.epochs(1)
    conv = cnn.loop.net[3]  # (32, 16, 5, 5): its layouts differ (one input channel's do not)
    assert cnn.loop.memory_format is torch.channels_last
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous()
    assert len(seen) == STEPS
    mlp = make_comparator("torch", "784-100-10 sigmoid", BATCH, "sgd", STEPS, isolate=False)
    assert mlp.loop.memory_format is None


@pytest.mark.slow
@needs_torch
def test_torch_compile_matches_handprop():
    """torch.compile works on this CPU (its compile runs in the warm-up)."""
    expected = handprop_losses("784-100-10 sigmoid", "sgd")
    got = comparator_losses("torch.compile", "784-100-10 sigmoid", "sgd")
    np.testing.assert_allclose(got, expected, rtol=2e-5)


@needs_jax
def test_a_worker_process_gives_the_in_process_results():
    inside = comparator_losses("jax scan", "784-100-10 sigmoid", "adam", isolate=False)
    worker = comparator_losses("jax scan", "784-100-10 sigmoid", "adam", isolate=True)
    np.testing.assert_allclose(worker, inside, rtol=1e-6)


def test_a_failing_worker_reports_why():
    from handprop.bench.worker import ProcessRunner

    with pytest.raises(RuntimeError, match="unknown benchmark model"):
        ProcessRunner("torch", model="no such model", batch=4, optimizer="sgd", steps=2)
    with pytest.raises(ValueError, match="unknown worker kind"):
        ProcessRunner("tensorflow")


def test_unavailable_comparators_say_why(monkeypatch):
    from handprop.bench import comparators

    monkeypatch.setattr(comparators, "torch_available", lambda: False)
    monkeypatch.setattr(comparators, "jax_available", lambda: False)
    assert "PyTorch is not installed" in comparator_unavailable("torch.compile")
    assert "JAX" in comparator_unavailable("jax scan")
    assert comparators.available_comparators() == []
    with pytest.raises(KeyError):
        comparator_unavailable("tensorflow")


def test_a_compiled_row_is_one_line(monkeypatch):
    """Splitting an engine's row in two (as numba compiled / layer-by-layer) is one
    entry in HANDPROP_ROWS; each row passes its own compile option."""
    assert handprop_rows(["cpu", "numba"]) == [("cpu", "cpu", None),
                                               ("numba compiled", "numba", True),
                                               ("numba layer-by-layer", "numba", False)]
    # nothing compiles the CNN: one row per engine there
    assert handprop_rows(["cpu", "numba"], bench.CNN_MODEL) == [("cpu", "cpu", None),
                                                                ("numba", "numba", None)]
    monkeypatch.setitem(HANDPROP_ROWS, "cpu", [("cpu fast", True), ("cpu slow", False)])
    assert handprop_rows(["cpu"]) == [("cpu fast", "cpu", True), ("cpu slow", "cpu", False)]
    seen = []

    class Recorder(bench.HandpropRunner):
        def __init__(self, *args, compile=None, label=None, **kwargs):
            seen.append((label, compile))
            super().__init__(*args, label=label, **kwargs)

    monkeypatch.setattr("handprop.bench.measure.HandpropRunner", Recorder)
    rows = bench.measure_training(["784-100-10 sigmoid"], [8], ["sgd"], ["cpu"], repeats=1,
                                  steps=2, comparators=[], with_ceiling=False)
    assert seen == [("cpu fast", True), ("cpu slow", False)]
    assert [r["engine"] for r in rows] == ["cpu fast", "cpu slow"]


@needs_jax
def test_rows_carry_every_comparator():
    rows = bench.measure_training(["784-100-10 sigmoid"], [8], ["adam"], ["cpu"], repeats=1,
                                  steps=2, comparators=["jax scan"], sgemm=bench.Stat([1.0]))
    row = rows[0]
    assert row["jax_scan_samples_per_s"] > 0 and row["jax_scan_warmup_seconds"] > 0
    assert row["ratio_to_jax_scan"] == pytest.approx(
        row["samples_per_s"] / row["jax_scan_samples_per_s"])
    assert "torch_samples_per_s" not in row and row["ceiling_samples_per_s"] > 0
    assert set(COMPARATORS.values()) >= {"jax_scan", "torch", "torch_compile", "jax_step"}


def test_the_plan():
    plan = bench.plan_configs()
    assert ("784-100-10 sigmoid", 1024, "adam") in plan
    assert ("784-256-256-10 relu", 128, "sgd") in plan
    assert ("784-300-10 sigmoid", 1, "sgd") in plan
    assert ("784-300-10 sigmoid", 1, "adam") not in plan and len(plan) == 9
    assert all(o == "sgd" for _, _, o in bench.plan_configs(optimizers=["sgd"]))
    assert bench.plan_configs(["784-256-256-10 relu"], [64, 1024], ["sgd"]) == [
        ("784-256-256-10 relu", 64, "sgd"), ("784-256-256-10 relu", 1024, "sgd")]
