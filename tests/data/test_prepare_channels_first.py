"""``prepare(..., channels_first=True)``: image samples as (C, H, W) for convolutions, and the
preprocessing record that turns new raw inputs into the same layout."""

from __future__ import annotations

import numpy as np
import pytest

from handprop.data import Dataset, apply_preprocessing, prepare
from handprop.errors import ConfigError


def images(shape, n_train=30, n_test=6, seed=0) -> Dataset:
    rng = np.random.default_rng(seed)
    return Dataset(name="tiny", x_train=rng.integers(0, 256, (n_train, *shape), dtype=np.uint8),
                   y_train=rng.integers(0, 3, n_train).astype(np.int64),
                   x_test=rng.integers(0, 256, (n_test, *shape), dtype=np.uint8),
                   y_test=rng.integers(0, 3, n_test).astype(np.int64), classes=3)


def test_grey_images_get_one_channel():
    data = images((5, 4))
    p = prepare(data, val_size=6, channels_first=True, seed=1)
    assert p.x_train.shape == (24, 1, 5, 4) and p.x_val.shape == (6, 1, 5, 4)
    assert p.model_input_shape == (1, 5, 4) and p.input_shape == (5, 4) and p.input_dim == 20
    assert p.x_train.flags.c_contiguous and p.x_train.dtype == np.float32
    np.testing.assert_allclose(p.x_test[:, 0], data.x_test / 255.0, rtol=1e-6)
    assert p.preprocessing["channels_first"] and not p.preprocessing["flatten"]


def test_colour_images_are_transposed_to_nchw():
    data = images((4, 5, 3))
    p = prepare(data, val_size=0, channels_first=True, normalize="none", dtype="float64")
    assert p.x_train.shape == (30, 3, 4, 5) and p.x_train.flags.c_contiguous
    np.testing.assert_array_equal(p.x_train, data.x_train.transpose(0, 3, 1, 2))
    # Channel 1 of sample 2 is the green plane of the picture.
    np.testing.assert_array_equal(p.x_train[2, 1], data.x_train[2, :, :, 1])


def test_per_feature_zscore_is_fitted_in_the_channel_first_layout():
    data = images((4, 5, 3))
    p = prepare(data, val_size=0, channels_first=True, normalize="zscore-feature",
                dtype="float64")
    np.testing.assert_allclose(p.x_train.mean(axis=0), 0.0, atol=1e-12)
    assert np.asarray(p.preprocessing["normalize"]["offset"]).shape == (3, 4, 5)
    flat = prepare(data, val_size=0, normalize="zscore-feature", dtype="float64")
    np.testing.assert_allclose(p.x_test.transpose(0, 2, 3, 1).reshape(6, -1), flat.x_test)


@pytest.mark.parametrize("shape", [(5, 4), (4, 5, 3)])
def test_the_record_turns_raw_inputs_into_the_same_layout(shape):
    data = images(shape)
    p = prepare(data, val_size=5, channels_first=True, normalize="zscore")
    np.testing.assert_allclose(apply_preprocessing(p.preprocessing, data.x_test), p.x_test,
                               rtol=1e-6)
    flat_rows = data.x_test.reshape(6, -1)  # raw samples given flattened work too
    np.testing.assert_allclose(apply_preprocessing(p.preprocessing, flat_rows), p.x_test,
                               rtol=1e-6)


def test_records_from_before_channels_first_stay_as_they_were():
    data = images((5, 4))
    p = prepare(data, val_size=0, flatten=False)
    record = {k: v for k, v in p.preprocessing.items() if k != "channels_first"}
    assert apply_preprocessing(record, data.x_test).shape == (6, 5, 4)
    flat = prepare(data, val_size=0).preprocessing
    del flat["channels_first"]
    assert apply_preprocessing(flat, data.x_test).shape == (6, 20)


def test_samples_that_are_not_images_keep_their_shape_and_flatten_excludes_channels_first():
    points = Dataset(name="pts", x_train=np.zeros((8, 2)), y_train=np.zeros(8, np.int64),
                     x_test=np.zeros((2, 2)), y_test=np.zeros(2, np.int64), classes=2,
                     value_range=(0.0, 1.0))
    assert prepare(points, channels_first=True).x_train.shape == (8, 2)
    with pytest.raises(ConfigError, match="exclude each other"):
        prepare(images((5, 4)), flatten=True, channels_first=True)
