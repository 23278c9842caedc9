"""Bad input gives the right HandpropError subclass with a message naming the problem."""

from __future__ import annotations

import numpy as np
import pytest

from handprop import errors
from handprop.engines import get_engine
from handprop.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    EngineUnavailableError,
    HandpropError,
    NumericalError,
    ShapeError,
)
from handprop.gradcheck import gradcheck
from handprop.nn import Activation, Dense, mlp
from handprop.nn.losses import (
    BinaryCrossEntropy,
    MeanSquaredError,
    SoftmaxCrossEntropy,
    check_inputs,
    check_targets,
    get_loss,
)
from handprop.optim import make_optimizer, make_schedule


def test_error_family():
    for cls in (ConfigError, ShapeError, DataError, EngineUnavailableError, CheckpointError,
                NumericalError):
        assert issubclass(cls, HandpropError)
    # Also the matching built-in, so generic handlers still work.
    assert issubclass(ConfigError, ValueError) and issubclass(ShapeError, ValueError)
    assert issubclass(DataError, ValueError) and issubclass(NumericalError, FloatingPointError)
    assert issubclass(EngineUnavailableError, RuntimeError)
    assert errors.HandpropError.__mro__[1] is Exception


# ---------------------------------------------------------------- inputs
@pytest.mark.parametrize("shape", [(5,), (2, 3, 4), ()])
def test_inputs_must_be_2d(shape):
    with pytest.raises(ShapeError) as info:
        check_inputs(np.zeros(shape))
    assert f"inputs must be 2-D (samples, features); got shape {shape}" in str(info.value)


def test_inputs_width_must_match_model():
    with pytest.raises(ShapeError, match="inputs have 3 features but the model expects 4"):
        check_inputs(np.zeros((2, 3)), input_dim=4)
    check_inputs(np.zeros((2, 4)), input_dim=4)  # fine


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_inputs_with_nan_or_inf(bad):
    x = np.ones((3, 2))
    x[1, 0] = bad
    x[2, 1] = bad
    with pytest.raises(DataError, match="validation inputs contain 2 NaN or Inf values"):
        check_inputs(x, what="validation inputs")


def test_integer_inputs_are_accepted():
    check_inputs(np.arange(6).reshape(3, 2), input_dim=2)


# --------------------------------------------------------------- targets
def test_labels_out_of_range():
    loss = SoftmaxCrossEntropy()
    with pytest.raises(DataError, match=r"labels must lie in 0..2 for a model with 3 outputs; "
                                        r"found values from 0 to 3"):
        check_targets(np.array([0, 1, 3]), 3, 3, loss)
    with pytest.raises(DataError, match=r"found values from -1 to 2"):
        check_targets(np.array([-1, 1, 2]), 3, 3, loss)
    # A single-output model takes binary labels 0..1.
    with pytest.raises(DataError, match=r"labels must lie in 0..1"):
        check_targets(np.array([0, 2]), 2, 1, BinaryCrossEntropy())
    check_targets(np.array([0, 1]), 2, 1, BinaryCrossEntropy())


def test_labels_must_be_integers():
    with pytest.raises(DataError, match="class labels must be integers, got dtype float64"):
        check_targets(np.array([0.0, 1.0]), 2, 3, SoftmaxCrossEntropy())


def test_target_count_must_match_samples():
    with pytest.raises(ShapeError, match="got 4 samples but 3 targets"):
        check_targets(np.array([0, 1, 2]), 4, 3, SoftmaxCrossEntropy())


def test_softmax_needs_two_outputs_and_class_indices():
    with pytest.raises(ShapeError, match="softmax cross-entropy needs at least 2 outputs"):
        check_targets(np.array([0, 1]), 2, 1, SoftmaxCrossEntropy())
    with pytest.raises(DataError, match="softmax cross-entropy takes class indices"):
        check_targets(np.zeros((2, 3)), 2, 3, SoftmaxCrossEntropy())


def test_target_arrays_checked():
    with pytest.raises(ShapeError, match="targets have 2 columns but the model has 3 outputs"):
        check_targets(np.zeros((4, 2)), 4, 3, MeanSquaredError())
    t = np.zeros((4, 3))
    t[0, 0] = np.nan
    with pytest.raises(DataError, match="targets contain NaN or Inf"):
        check_targets(t, 4, 3, MeanSquaredError())
    with pytest.raises(ShapeError, match=r"targets must be class indices \(n,\) or an array"):
        check_targets(np.zeros((4, 3, 1)), 4, 3, MeanSquaredError())


def test_gradcheck_refuses_bad_labels(cpu):
    model = mlp(3, [4], 3, engine=cpu, dtype="float64")
    with pytest.raises(DataError, match="labels must lie in 0..2"):
        gradcheck(model, "softmax_cross_entropy", np.zeros((2, 3)), np.array([0, 5]))


# ----------------------------------------------------------- unknown names
@pytest.mark.parametrize("make, bad, kind, valid", [
    (lambda n: Dense(3, n), "gelu", "activation",
     ["identity", "sigmoid", "tanh", "relu", "leaky_relu", "lecun_tanh"]),
    (lambda n: Activation(n), "softplus", "activation", ["sigmoid", "relu"]),
    (lambda n: Dense(3, "relu", init=n), "orthogonal", "initializer",
     ["auto", "uniform", "lecun", "xavier_uniform", "xavier_normal", "he", "he_uniform"]),
    (get_loss, "huber", "loss", ["softmax_cross_entropy", "mse", "binary_cross_entropy"]),
    (lambda n: make_optimizer(n, lr=0.1), "adagrad", "optimizer", ["sgd", "momentum", "nesterov", "adam"]),
    (lambda n: make_schedule(n, 0.1), "cosine", "schedule",
     ["constant", "step", "exponential", "inverse_time", "cyclic"]),
    (get_engine, "opencl", "engine", ["cpu", "numba", "cuda", "auto"]),
])
def test_unknown_names_list_the_valid_ones(make, bad, kind, valid):
    with pytest.raises(ConfigError) as info:
        make(bad)
    msg = str(info.value)
    assert f"unknown {kind} {bad!r}" in msg
    for name in valid:
        assert name in msg


# ------------------------------------------------------- learning rates etc.
@pytest.mark.parametrize("name", ["sgd", "momentum", "nesterov", "adam"])
@pytest.mark.parametrize("lr", [0, 0.0, -1e-3, -5])
def test_zero_or_negative_learning_rate(name, lr):
    with pytest.raises(ConfigError, match=rf"learning rate must be a positive number, got {lr!r}"):
        make_optimizer(name, lr=lr)


def test_bad_momentum_and_betas_name_the_option():
    with pytest.raises(ConfigError, match=r"momentum must be in \[0, 1\), got 1.2"):
        make_optimizer("momentum", lr=0.1, momentum=1.2)
    with pytest.raises(ConfigError, match=r"momentum must be in \[0, 1\), got -0.5"):
        make_optimizer("nesterov", lr=0.1, momentum=-0.5)
    with pytest.raises(ConfigError, match=r"beta1 must be in \[0, 1\), got 1.0"):
        make_optimizer("adam", lr=0.1, beta1=1.0)
    with pytest.raises(ConfigError, match=r"beta2 must be in \[0, 1\), got -0.1"):
        make_optimizer("adam", lr=0.1, beta2=-0.1)
    with pytest.raises(ConfigError, match="weight_decay must be >= 0, got -0.1"):
        make_optimizer("adam", lr=0.1, weight_decay=-0.1)
