"""Toy sets, dataset names, splits and preprocessing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from handprop.data import (Dataset, apply_preprocessing, load_dataset, make_linear, make_xor,
                           one_hot, prepare, train_val_indices)
from handprop.errors import ConfigError, DataError, ShapeError


def tiny_images(n_train=40, n_test=10, seed=0) -> Dataset:
    rng = np.random.default_rng(seed)
    return Dataset(
        name="tiny",
        x_train=rng.integers(0, 256, (n_train, 4, 3), dtype=np.uint8),
        y_train=rng.integers(0, 3, n_train).astype(np.int64),
        x_test=rng.integers(0, 256, (n_test, 4, 3), dtype=np.uint8),
        y_test=rng.integers(0, 3, n_test).astype(np.int64),
        classes=3,
    )


# --- toy sets ---

def test_xor_is_the_classic_21_points():
    data = make_xor(seed=None)
    x, y = data.x_train, data.y_train
    assert x.shape == (21, 2) and x.dtype == np.float64 and y.dtype == np.int64
    expected_zero = {(round(0.1 * i, 10), round(0.1 * i, 10)) for i in range(11)}
    expected_one = {(round(0.1 * i, 10), round(1 - 0.1 * i, 10)) for i in range(11) if i != 5}
    points = [tuple(np.round(p, 10)) for p in x]
    assert {p for p, label in zip(points, y) if label == 0} == expected_zero
    assert {p for p, label in zip(points, y) if label == 1} == expected_one
    assert (0.5, 0.5) in expected_zero and int(y.sum()) == 10


def test_xor_seed_only_reorders_and_test_is_the_same_points():
    a, b = make_xor(seed=1), make_xor(seed=2)
    canonical = make_xor(seed=None)
    assert not np.array_equal(a.x_train, b.x_train)
    for data in (a, b):
        order = np.lexsort((data.x_train[:, 1], data.x_train[:, 0], data.y_train))
        ref = np.lexsort((canonical.x_train[:, 1], canonical.x_train[:, 0], canonical.y_train))
        np.testing.assert_array_equal(data.x_train[order], canonical.x_train[ref])
        np.testing.assert_array_equal(data.x_test, canonical.x_train)
    np.testing.assert_array_equal(make_xor(seed=1).x_train, a.x_train)


def test_linear_labels_follow_the_diagonal_and_seed():
    data = load_dataset("linear", n_linear=300, seed=7)
    for x, y in ((data.x_train, data.y_train), (data.x_test, data.y_test)):
        assert x.shape == (300, 2) and x.min() >= 0 and x.max() < 1
        np.testing.assert_array_equal(y, (x[:, 1] > x[:, 0]).astype(np.int64))
    assert not np.array_equal(data.x_train, data.x_test)
    np.testing.assert_array_equal(make_linear(300, 7).x_train, data.x_train)
    assert not np.array_equal(make_linear(300, 8).x_train, data.x_train)
    assert 0.3 < data.y_train.mean() < 0.7


@pytest.mark.parametrize("n", [0, -3, 2.5, True])
def test_linear_needs_a_positive_count(n):
    with pytest.raises(ConfigError, match="positive whole number"):
        make_linear(n)


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ConfigError, match="mnist, cifar10, linear, xor"):
        load_dataset("imagenet")


def test_dataset_rejects_out_of_range_labels():
    with pytest.raises(DataError, match="0..2"):
        Dataset("bad", np.zeros((2, 1)), np.array([0, 3]), np.zeros((1, 1)), np.array([0]), classes=3)


# --- splits ---

def test_split_by_count_and_fraction_is_seeded_and_disjoint():
    train, val = train_val_indices(100, 30, seed=3)
    assert len(val) == 30 and len(train) == 70
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(100))
    train2, val2 = train_val_indices(100, 0.3, seed=3)
    np.testing.assert_array_equal(val, val2)
    assert not np.array_equal(train_val_indices(100, 30, seed=4)[1], val)
    assert len(train_val_indices(100, 0.001, seed=0)[1]) == 1  # a positive fraction gives >= 1
    assert len(train_val_indices(100, 0, seed=0)[1]) == 0


@pytest.mark.parametrize("bad", [-1, 1.0, 1.5, -0.1, 100, 150, True, "0.1", None])
def test_bad_val_size_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="val_size"):
        train_val_indices(100, bad)


# --- prepare ---

def test_prepare_scale_flatten_and_split():
    data = tiny_images()
    p = prepare(data, val_size=10, normalize="scale", seed=1)
    assert p.x_train.shape == (30, 12) and p.x_val.shape == (10, 12) and p.x_test.shape == (10, 12)
    assert p.x_train.dtype == np.float32 and p.y_train.dtype == np.int64
    assert p.input_dim == 12 and p.input_shape == (4, 3) and p.classes == 3 and len(p.y_val) == 10
    assert 0 <= p.x_train.min() and p.x_train.max() <= 1
    np.testing.assert_allclose(p.x_test, data.x_test.reshape(10, 12) / 255.0, rtol=1e-6)
    # Validation rows are training rows, and train + val recover the whole training split.
    rows = {tuple(r) for r in np.concatenate([p.x_train, p.x_val])}
    assert rows == {tuple(r) for r in (data.x_train.reshape(40, 12) / 255.0).astype(np.float32)}


def test_prepare_without_validation_and_without_flatten():
    p = prepare(tiny_images(), val_size=0, flatten=False, normalize="none", dtype="float64")
    assert p.x_train.shape == (40, 4, 3) and p.x_val.shape == (0, 4, 3) and len(p.y_val) == 0
    assert p.x_train.dtype == np.float64 and p.x_train.max() > 1


def test_zscore_uses_training_part_only_and_ignores_test():
    data = tiny_images()
    p = prepare(data, val_size=10, normalize="zscore", seed=0)
    assert abs(float(p.x_train.mean())) < 1e-5 and abs(float(p.x_train.std()) - 1) < 1e-4
    assert abs(float(p.x_val.mean())) > 1e-6  # val was not part of the statistics
    altered = tiny_images()
    altered.x_test[:] = 255
    q = prepare(altered, val_size=10, normalize="zscore", seed=0)
    assert q.preprocessing == p.preprocessing
    np.testing.assert_array_equal(q.x_train, p.x_train)


def test_zscore_feature_keeps_per_feature_stats_and_constant_features_finite():
    data = tiny_images()
    data.x_train[:, 0, 0] = 7  # a constant feature, like MNIST's blank border
    p = prepare(data, normalize="zscore-feature")
    spec = p.preprocessing["normalize"]
    assert len(spec["offset"]) == 12 and len(spec["scale"]) == 12 and spec["scale"][0] == 1.0
    assert np.isfinite(p.x_train).all() and np.all(p.x_train[:, 0] == 0)
    np.testing.assert_allclose(p.x_train[:, 1:].mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(p.x_train[:, 1:].std(axis=0), 1, atol=1e-4)


@pytest.mark.parametrize("normalize", ["scale", "zscore", "zscore-feature", "none"])
def test_preprocessing_is_json_and_reapplies_exactly(normalize):
    data = tiny_images()
    p = prepare(data, val_size=0.2, normalize=normalize, seed=5)
    recipe = json.loads(json.dumps(p.preprocessing))
    np.testing.assert_array_equal(apply_preprocessing(recipe, data.x_test), p.x_test)
    flat = data.x_test.reshape(len(data.x_test), -1)
    np.testing.assert_array_equal(apply_preprocessing(recipe, flat), p.x_test)


def test_apply_preprocessing_rejects_wrong_shapes_and_nan():
    p = prepare(tiny_images())
    with pytest.raises(ShapeError, match=r"\(n, 4, 3\) or \(n, 12\)"):
        apply_preprocessing(p.preprocessing, np.zeros((2, 5)))
    with pytest.raises(DataError, match="NaN"):
        apply_preprocessing(p.preprocessing, np.full((1, 12), np.nan))
    with pytest.raises(ConfigError, match="preprocessing record"):
        apply_preprocessing({"dtype": "float32"}, np.zeros((1, 12)))


def test_prepare_does_not_modify_the_dataset():
    data = tiny_images()
    before = [a.copy() for a in (data.x_train, data.y_train, data.x_test, data.y_test)]
    prepare(data, val_size=5, normalize="zscore-feature")
    for old, new in zip(before, (data.x_train, data.y_train, data.x_test, data.y_test)):
        np.testing.assert_array_equal(old, new)


@pytest.mark.parametrize("kwargs, match", [
    ({"normalize": "minmax"}, "scale, zscore, zscore-feature, none"),
    ({"dtype": "int8"}, "float32 or float64"),
    ({"val_size": 40}, "leaves no training data"),
])
def test_prepare_validates_options(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        prepare(tiny_images(), **kwargs)


def test_toy_sets_scale_is_identity():
    data = make_xor(seed=None)
    p = prepare(data, normalize="scale", dtype="float64")
    np.testing.assert_array_equal(p.x_train, data.x_train)


def test_one_hot():
    out = one_hot(np.array([2, 0, 1]), 3)
    np.testing.assert_array_equal(out, np.eye(3, dtype=np.float32)[[2, 0, 1]])
    assert out.dtype == np.float32
    with pytest.raises(DataError, match="0..2"):
        one_hot(np.array([3]), 3)
    with pytest.raises(ShapeError):
        one_hot(np.array([0.5]), 3)
