"""`handprop evaluate --plot`: confusion matrix, most confident mistakes, first-layer weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from handprop.cli import main
from handprop.train.evaluation import most_confident_mistakes
from handprop.train.plots import is_image_shape, weight_tiles

QUICK = ["--train-subset", "400", "--val-size", "100", "--hidden", "16", "--epochs", "2",
         "--batch-size", "32", "--backend", "cpu", "--no-progress"]


def test_most_confident_mistakes_ranks_by_margin():
    outputs = np.array([[2.0, 0.0], [0.0, 3.0], [1.0, 1.5], [5.0, -5.0]])
    truth = np.array([1, 1, 0, 1])
    pred = outputs.argmax(axis=1)  # [0, 1, 1, 0]: rows 0, 2 and 3 are wrong
    # Margins of the wrong rows: 2 - 0 = 2, 1.5 - 1 = 0.5, 5 - (-5) = 10.
    assert most_confident_mistakes(outputs, truth, pred, 10).tolist() == [3, 0, 2]
    assert most_confident_mistakes(outputs, truth, pred, 2).tolist() == [3, 0]
    assert most_confident_mistakes(outputs, pred, pred, 5).tolist() == []


def test_most_confident_mistakes_with_one_output_uses_the_threshold():
    outputs = np.array([[0.9], [0.2], [0.6], [0.45]])
    truth = np.array([0, 1, 1, 1])
    pred = (outputs[:, 0] > 0.5).astype(int)  # [1, 0, 1, 0]: rows 0, 1, 3 wrong
    assert most_confident_mistakes(outputs, truth, pred, 5, threshold=0.5).tolist() == [0, 1, 3]


def test_weight_tiles_are_the_columns_as_images():
    rng = np.random.default_rng(0)
    gray = rng.normal(size=(28 * 28, 5))
    tiles = weight_tiles(gray, (28, 28), count=3)
    assert len(tiles) == 3
    for j, tile in enumerate(tiles):
        column = gray[:, j].reshape(28, 28)
        np.testing.assert_allclose(tile, column / np.abs(column).max())  # sign kept
    colour = weight_tiles(rng.normal(size=(32 * 32 * 3, 2)), (32, 32, 3))
    assert all(t.shape == (32, 32, 3) and t.min() == 0.0 and t.max() == 1.0 for t in colour)
    assert weight_tiles(np.zeros((4, 2)), (2, 2))[0].tolist() == [[0.0, 0.0], [0.0, 0.0]]


@pytest.mark.parametrize("shape, image", [((28, 28), True), ((32, 32, 3), True), ((2,), False),
                                          ((1, 7), False), ((4, 4, 5), False)])
def test_is_image_shape(shape, image):
    assert is_image_shape(shape) is image


def test_evaluate_plot_on_mnist_writes_three_pictures(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *QUICK, "--lr", "0.5", "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--plot", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    expected = [run / "confusion-test.png", run / "mistakes-test.png", run / "weights-layer1.png"]
    assert report["plots"] == [str(p) for p in expected]
    for path in expected:
        with Image.open(path) as picture:
            picture.load()
            assert picture.width > 300 and picture.height > 200
            # Not a blank canvas: a real figure has many distinct colours.
            assert len(picture.convert("RGB").getcolors(maxcolors=1 << 20)) > 50
    matrix = np.array(report["confusion_matrix"])
    shares = [matrix[i, i] / matrix[i].sum() for i in range(10)]
    np.testing.assert_allclose(report["per_class_accuracy"], shares)
    # The table gives each class's accuracy too.
    assert main(["evaluate", str(run)]) == 0
    rows = capsys.readouterr().out.splitlines()
    zero = next(r for r in rows if r.split() and r.split()[0] == "0" and r.endswith("%"))
    assert zero.split()[-1] == f"{shares[0]:.1%}"


def test_evaluate_plot_on_points_draws_only_the_confusion_matrix(tmp_path, capsys):
    run = tmp_path / "xor"
    assert main(["train", "--dataset", "xor", "--hidden", "3", "--activation", "sigmoid",
                 "--loss", "mse", "--val-size", "0", "--epochs", "3", "--backend", "cpu",
                 "--no-progress", "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--split", "train", "--plot", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["plots"] == [str(run / "confusion-train.png"), str(run / "decision-train.png")]
    assert not (run / "mistakes-train.png").exists() and not (run / "weights-layer1.png").exists()
    assert (run / "decision.png").exists()  # drawn by train itself for two inputs


def test_decision_grid_is_the_models_prediction_over_the_plane():
    from handprop.nn import Dense, Sequential
    from handprop.train.plots import decision_grid

    # Identity weights: the predicted class is the larger input, so class 1 above the diagonal.
    model = Sequential([Dense(2, "identity")], input_dim=2, engine="cpu", dtype="float64")
    model.set_weights({"layer0.W": np.eye(2), "layer0.b": np.zeros(2)})
    x = np.array([[0.0, 0.0], [1.0, 2.0]])
    g0, g1, classes = decision_grid(model, "softmax_cross_entropy", x, resolution=41)
    assert g0.shape == g1.shape == classes.shape == (41, 41)
    assert g0.min() == pytest.approx(-0.1) and g1.max() == pytest.approx(2.2)  # 10 % margins
    off_diagonal = g0 != g1
    np.testing.assert_array_equal(classes[off_diagonal], (g1 > g0)[off_diagonal].astype(int))


def test_batch_positions_fill_each_epoch():
    from handprop.train.plots import batch_positions

    np.testing.assert_allclose(batch_positions([1.0, 2.0, 3.0, 4.0], 2), [0.5, 1.0, 1.5, 2.0])
    assert batch_positions([1.0, 2.0, 3.0], 2) is None  # does not split into epochs
    assert batch_positions([], 2) is None
