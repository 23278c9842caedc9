"""`handprop evaluate --plot` on a convolutional run: the first convolution's filters and one
input's feature maps, besides the confusion matrix and the mistakes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from handprop.cli import main
from handprop.cli.evaluate import model_inputs
from handprop.nn import Conv2D, Dense, Flatten, MaxPool2D, Sequential
from handprop.optim import Adam
from handprop.train import Trainer
from handprop.train.plots import filter_tiles
from handprop.train.run import prepare_data

QUICK = ["--train-subset", "400", "--val-size", "100", "--hidden", "16", "--epochs", "1",
         "--batch-size", "32", "--backend", "cpu", "--no-progress"]


def conv_run(tmp_path, capsys):
    """A run folder whose model is a small CNN trained on the run's own (reshaped) data."""
    run = tmp_path / "run"
    assert main(["train", *QUICK, "--out", str(run)]) == 0
    capsys.readouterr()
    config = json.loads((run / "config.json").read_text())["config"]
    data = prepare_data(config)
    model = Sequential([Conv2D(6, 5, padding="same", activation="relu"), MaxPool2D(2),
                        Conv2D(4, 3, activation="relu"), MaxPool2D(2), Flatten(), Dense(10)],
                       input_shape=(1, 28, 28), engine="numba", seed=0)
    x = data.x_train.reshape(-1, 1, 28, 28)
    Trainer(model, "softmax_cross_entropy", Adam(lr=3e-3), batch_size=32, epochs=3,
            progress=False).fit(x, data.y_train)
    model.save(run / "model.npz", extra={"preprocessing": data.preprocessing,
                                         "loss": "softmax_cross_entropy"})
    return run, model


def test_evaluate_plot_draws_filters_and_feature_maps(tmp_path, capsys):
    run, model = conv_run(tmp_path, capsys)
    assert main(["evaluate", str(run), "--split", "val", "--plot", "--json", "--backend", "cpu"]) == 0
    report = json.loads(capsys.readouterr().out)
    expected = [run / "confusion-val.png", run / "mistakes-val.png", run / "filters-layer1.png",
                run / "feature-maps-val.png"]
    assert report["plots"] == [str(p) for p in expected]
    assert not (run / "weights-layer1.png").exists()
    assert report["accuracy"] > 0.5  # 3 epochs on 400 images: well above chance
    for path in expected:
        with Image.open(path) as picture:
            picture.load()
            assert picture.width > 150 and picture.height > 150
            assert len(picture.convert("RGB").getcolors(maxcolors=1 << 20)) > 50, path
    with Image.open(run / "feature-maps-val.png") as maps:
        assert maps.height > 3 * 100  # the input's row and one row per convolution


def test_filter_tiles_keep_sign_and_layout():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 2, 3, 3))
    tiles = filter_tiles(w)
    assert len(tiles) == 4 and all(len(row) == 2 for row in tiles)
    for f in range(4):
        peak = np.abs(w[f]).max()
        for c in range(2):
            np.testing.assert_allclose(tiles[f][c], w[f, c] / peak)
    rgb = filter_tiles(rng.normal(size=(2, 3, 5, 5)))
    assert [len(row) for row in rgb] == [1, 1] and rgb[0][0].shape == (5, 5, 3)
    assert rgb[0][0].min() == 0.0 and rgb[0][0].max() == 1.0


def test_model_inputs_turns_rows_into_images():
    model = Sequential([Conv2D(1, 1), Flatten(), Dense(2)], input_shape=(3, 2, 4), engine="cpu")
    hwc = np.arange(2 * 2 * 4 * 3, dtype=np.float32).reshape(2, 2, 4, 3)  # (n, H, W, C)
    images = model_inputs(hwc.reshape(2, -1), model, (2, 4, 3))
    np.testing.assert_array_equal(images, hwc.transpose(0, 3, 1, 2))
    gray = Sequential([Conv2D(1, 1), Flatten(), Dense(2)], input_shape=(1, 2, 4), engine="cpu")
    np.testing.assert_array_equal(model_inputs(np.ones((5, 8)), gray, (2, 4)), np.ones((5, 1, 2, 4)))
    already = np.ones((5, 1, 2, 4))
    assert model_inputs(already, gray, (2, 4)) is already
    flat = np.ones((5, 8))
    mlp = Sequential([Dense(2)], input_dim=8, engine="cpu")
    assert model_inputs(flat, mlp, (2, 4)) is flat


def test_conv_run_evaluates_alike_on_numba(tmp_path, capsys):
    run, _ = conv_run(tmp_path, capsys)
    assert main(["evaluate", str(run), "--split", "val", "--json", "--backend", "cpu"]) == 0
    on_cpu = json.loads(capsys.readouterr().out)
    assert main(["evaluate", str(run), "--split", "val", "--json", "--backend", "numba"]) == 0
    other = json.loads(capsys.readouterr().out)
    assert other["confusion_matrix"] == on_cpu["confusion_matrix"]
    assert other["loss"] == pytest.approx(on_cpu["loss"], rel=1e-4)


def test_feature_maps_and_first_weights_are_library_functions():
    from handprop.train.evaluation import feature_maps, first_weights

    model = Sequential([Conv2D(3, 3, activation="relu"), MaxPool2D(2), Conv2D(2, 2), Flatten(),
                        Dense(4)], input_shape=(1, 8, 8), engine="cpu", seed=1)
    sample = np.random.default_rng(0).normal(size=(1, 8, 8))
    maps = feature_maps(model, sample)
    assert [(label, m.shape) for label, m in maps] == [("layer 0", (3, 6, 6)),
                                                      ("layer 2", (2, 2, 2))]
    h = model.engine.asarray(sample[None], model.dtype)
    for layer in model.layers[:3]:
        h = layer.forward(h)
    np.testing.assert_array_equal(maps[1][1], h[0])
    kind, weights = first_weights(model)
    assert kind == "filters" and weights.shape == (3, 1, 3, 3)
    dense = Sequential([Flatten(), Dense(2)], input_shape=(3, 2, 4), engine="cpu")
    kind, weights = first_weights(dense)
    w = dense.layers[1].params["W"]
    assert kind == "weights"
    np.testing.assert_array_equal(weights[:, 1].reshape(2, 4, 3),
                                  w[:, 1].reshape(3, 2, 4).transpose(1, 2, 0))
    assert feature_maps(dense, np.zeros((3, 2, 4))) == []
    assert first_weights(Sequential([Flatten()], input_shape=(1, 2, 2), engine="cpu")) == (None, None)
