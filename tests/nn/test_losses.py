"""Losses: hand-computed values, gradients and numerical stability, on every engine."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from handprop.errors import ConfigError
from handprop.nn.losses import (
    LOSSES,
    BinaryCrossEntropy,
    MeanSquaredError,
    SoftmaxCrossEntropy,
    get_loss,
)


def test_softmax_cross_entropy_2x3_by_hand(engine):
    logits = np.array([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]])
    labels = np.array([2, 0])
    # Row 0: softmax denominators relative to the max (3): 1 + e^-1 + e^-2.
    s0 = 1.0 + math.exp(-1.0) + math.exp(-2.0)          # 1.5032147244
    loss0 = math.log(s0)                                # -log p(class 2) = 0.4076059645
    p0 = [math.exp(-2.0) / s0, math.exp(-1.0) / s0, 1.0 / s0]
    # Row 1: all equal, p = 1/3 each, loss = log 3.
    loss1 = math.log(3.0)
    p1 = [1 / 3, 1 / 3, 1 / 3]
    assert loss0 == pytest.approx(0.4076059645, abs=1e-10)
    expected_loss = (loss0 + loss1) / 2                 # 0.7531091266
    expected_grad = np.array([[p0[0], p0[1], p0[2] - 1.0],
                              [p1[0] - 1.0, p1[1], p1[2]]]) / 2

    loss, grad = SoftmaxCrossEntropy()(engine, engine.asarray(logits, "float64"),
                                       engine.asarray(labels))
    assert isinstance(loss, float)
    assert loss == pytest.approx(expected_loss, rel=1e-13)
    assert loss == pytest.approx(0.7531091266, abs=1e-10)
    np.testing.assert_allclose(engine.to_numpy(grad), expected_grad, rtol=1e-12, atol=1e-15)
    # Each row of the gradient sums to zero (softmax sums to one).
    np.testing.assert_allclose(engine.to_numpy(grad).sum(axis=1), 0.0, atol=1e-15)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("scale", [1e4, -1e4])
def test_softmax_cross_entropy_stable_for_huge_logits(engine, dtype, scale):
    logits = np.array([[1.0, -1.0, 0.0], [-1.0, 1.0, 1.0], [0.0, 0.0, 0.0]], dtype=dtype) * scale
    labels = np.array([0, 1, 2])
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        loss, grad = engine.softmax_xent(engine.asarray(logits), engine.asarray(labels))
        grad = engine.to_numpy(grad)
    assert math.isfinite(loss) and np.isfinite(grad).all()
    if scale > 0:
        # Row 0: class 0 wins by 1e4 -> loss 0, grad 0.
        # Row 1: classes 1 and 2 tie far ahead -> p = (0, .5, .5), loss log 2.
        # Row 2: uniform -> loss log 3.
        expected = (0.0 + math.log(2.0) + math.log(3.0)) / 3
        expected_grad = np.array([[0, 0, 0], [0, -0.5, 0.5], [1 / 3, 1 / 3, -2 / 3]]) / 3
    else:
        # Row 0: class 0 is 2e4 below class 1 -> loss 2e4.
        # Row 1: class 0 wins alone -> label 1 is 2e4 below -> loss 2e4.
        expected = (2e4 + 2e4 + math.log(3.0)) / 3
        expected_grad = np.array([[-1, 1, 0], [1, -1, 0], [1 / 3, 1 / 3, -2 / 3]]) / 3
    rtol = 1e-6 if dtype == "float32" else 1e-12
    assert loss == pytest.approx(expected, rel=rtol)
    np.testing.assert_allclose(grad, expected_grad, atol=1e-6 if dtype == "float32" else 1e-15)


def test_mse_by_hand_with_half_sum_convention(engine):
    out = np.array([[0.2, 0.7], [1.0, -0.5]])
    t = np.array([[0.0, 1.0], [0.5, 0.5]])
    # per sample 1/2 sum_k (a-t)^2: 0.5*(0.04+0.09)=0.065 and 0.5*(0.25+1.0)=0.625; mean over 2.
    loss, grad = MeanSquaredError()(engine, engine.asarray(out, "float64"), engine.asarray(t, "float64"))
    assert loss == pytest.approx((0.065 + 0.625) / 2, rel=1e-13)
    np.testing.assert_allclose(engine.to_numpy(grad), (out - t) / 2, rtol=1e-13)


def test_mse_with_class_indices_uses_one_hot(engine):
    out = np.array([[0.2, 0.7, 0.1]])
    loss, grad = MeanSquaredError()(engine, engine.asarray(out, "float64"), engine.asarray(np.array([1])))
    # targets (0, 1, 0): 0.5 * (0.04 + 0.09 + 0.01)
    assert loss == pytest.approx(0.07, rel=1e-13)
    np.testing.assert_allclose(engine.to_numpy(grad), [[0.2, -0.3, 0.1]], rtol=1e-13)


def test_binary_cross_entropy_on_logits_by_hand(engine):
    z = np.array([[0.0, 2.0], [-3.0, 0.5]])
    t = np.array([[1.0, 0.0], [0.0, 1.0]])

    def bce(zv, tv):  # -[t log s(z) + (1-t) log(1-s(z))], written naively (fine for small z)
        s = 1.0 / (1.0 + math.exp(-zv))
        return -(tv * math.log(s) + (1 - tv) * math.log(1 - s))

    expected = (bce(0.0, 1.0) + bce(2.0, 0.0) + bce(-3.0, 0.0) + bce(0.5, 1.0)) / 2
    assert bce(0.0, 1.0) == pytest.approx(math.log(2.0))
    sig = 1.0 / (1.0 + np.exp(-z))
    loss, grad = BinaryCrossEntropy()(engine, engine.asarray(z, "float64"), engine.asarray(t, "float64"))
    assert loss == pytest.approx(expected, rel=1e-13)
    np.testing.assert_allclose(engine.to_numpy(grad), (sig - t) / 2, rtol=1e-12)


def test_binary_cross_entropy_single_output_with_labels(engine):
    z = np.array([[1.0], [-2.0]])
    loss, grad = BinaryCrossEntropy()(engine, engine.asarray(z, "float64"), engine.asarray(np.array([1, 0])))
    expected = (math.log1p(math.exp(-1.0)) + math.log1p(math.exp(-2.0))) / 2
    assert loss == pytest.approx(expected, rel=1e-13)
    s = 1.0 / (1.0 + np.exp(-z[:, 0]))
    np.testing.assert_allclose(engine.to_numpy(grad)[:, 0], (s - [1.0, 0.0]) / 2, rtol=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_binary_cross_entropy_stable_for_huge_logits(engine, dtype):
    z = np.array([[1e4, -1e4, 1e4, -1e4]], dtype=dtype)
    t = np.array([[1.0, 0.0, 0.0, 1.0]], dtype=dtype)
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        loss, grad = BinaryCrossEntropy()(engine, engine.asarray(z), engine.asarray(t))
        grad = engine.to_numpy(grad)
    # Right with confidence 1e4 costs 0; wrong costs 1e4, twice.
    assert loss == pytest.approx(2e4, rel=1e-6)
    np.testing.assert_allclose(grad, [[0.0, 0.0, 1.0, -1.0]], atol=1e-7)


def test_predict_argmax_and_thresholds(engine):
    out = engine.asarray(np.array([[0.1, 0.9, 0.3], [2.0, -1.0, 1.0]]), "float64")
    np.testing.assert_array_equal(engine.to_numpy(SoftmaxCrossEntropy().predict(engine, out)), [1, 0])
    single = engine.asarray(np.array([[0.6], [0.4], [-0.1], [0.1]]), "float64")
    # mse on one output thresholds probabilities at 0.5; bce thresholds logits at 0.
    np.testing.assert_array_equal(engine.to_numpy(MeanSquaredError().predict(engine, single)), [1, 0, 0, 0])
    np.testing.assert_array_equal(engine.to_numpy(BinaryCrossEntropy().predict(engine, single)), [1, 1, 0, 1])


def test_get_loss_names_and_aliases():
    assert set(LOSSES) == {"softmax_cross_entropy", "mse", "binary_cross_entropy"}
    assert isinstance(get_loss("xent"), SoftmaxCrossEntropy)
    assert isinstance(get_loss("cross_entropy"), SoftmaxCrossEntropy)
    assert isinstance(get_loss("bce"), BinaryCrossEntropy)
    assert isinstance(get_loss("mse"), MeanSquaredError)
    existing = MeanSquaredError()
    assert get_loss(existing) is existing
    with pytest.raises(ConfigError, match="unknown loss 'hinge'") as info:
        get_loss("hinge")
    for name in LOSSES:
        assert name in str(info.value)
