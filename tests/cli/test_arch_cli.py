"""`--arch` through the command line: a conv run on a subset, then `evaluate`, `predict`
(a .npy and a PNG), `--resume` and `lr-find`; a TOML `arch = [...]`; the refusals and shape
messages (exit 2, one line, no run folder); and `--arch dense:...` as the `--hidden` MLP."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from handprop.cli import main
from handprop.data import load_dataset

CNN = "conv:4:5:1:same,relu,maxpool:2,conv:6:3,relu,maxpool:2,flatten,dropout:0.2,dense:16,relu"
QUICK = ["--train-subset", "500", "--val-size", "100", "--batch-size", "32", "--optimizer",
         "adam", "--lr", "0.01", "--backend", "cpu", "--no-progress"]


def weights(path):
    with np.load(path, allow_pickle=False) as saved:
        return {name: saved[name] for name in saved.files if name != "__meta__"}


@pytest.fixture(scope="module")
def conv_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("arch") / "run"
    assert main(["train", *QUICK, "--arch", CNN, "--epochs", "2", "--out", str(out)]) == 0
    return out


def test_a_conv_run_records_its_model_and_channel_first_inputs(conv_run, capsys):
    saved = json.loads((conv_run / "config.json").read_text())
    assert saved["config"]["arch"] == CNN
    assert saved["model_input_shape"] == [1, 28, 28]
    assert saved["preprocessing"]["channels_first"] and not saved["preprocessing"]["flatten"]
    with np.load(conv_run / "model.npz", allow_pickle=False) as model:
        assert model["layer0.W"].shape == (4, 1, 5, 5)
        assert model["layer7.W"].shape == (16, 10)  # the output layer added for 10 classes
    summary = json.loads((conv_run / "summary.json").read_text())
    assert summary["parameters"] == 104 + 222 + 6 * 6 * 6 * 16 + 16 + 170 == 3968
    assert summary["test_accuracy"] > 0.3  # two epochs on 500 images: well above chance


def test_the_header_names_the_arch_and_shows_the_output_shapes(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *QUICK, "--train-subset", "64", "--arch", CNN, "--epochs", "1",
                 "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (f"engine cpu, model 1x28x28 {CNN} -> 10 (3,968 parameters), "
                        f"64 training samples")
    assert lines[3].split() == ["0", "Conv2D(4,", "5x5,", "same,", "relu)", "4x28x28", "104"]
    assert any(line.split()[:2] == ["4", "Flatten"] and line.split()[2] == "216"
               for line in lines)


def test_evaluate_a_conv_run_agrees_with_its_summary(conv_run, capsys):
    assert main(["evaluate", str(conv_run), "--json", "--plot"]) == 0
    report = json.loads(capsys.readouterr().out)
    summary = json.loads((conv_run / "summary.json").read_text())
    assert report["n"] == 10000
    assert report["accuracy"] == pytest.approx(summary["test_accuracy"])
    assert report["loss"] == pytest.approx(summary["test_loss"], rel=1e-5)
    assert [p.rsplit("/", 1)[-1] for p in report["plots"]] == [
        "confusion-test.png", "mistakes-test.png", "filters-layer1.png", "feature-maps-test.png"]
    with Image.open(conv_run / "mistakes-test.png") as picture:
        assert picture.width > 300


def test_predict_a_conv_run_from_npy_and_png(conv_run, tmp_path, capsys):
    from handprop.nn import Sequential

    data = load_dataset("mnist")
    np.save(tmp_path / "batch.npy", data.x_test[:4])
    assert main(["predict", str(conv_run), str(tmp_path / "batch.npy"), "--json"]) == 0
    batch = json.loads(capsys.readouterr().out)["samples"]
    # The same predictions as the model on the scaled images, in NCHW.
    model = Sequential.load(conv_run / "model.npz", engine="cpu")
    logits = model.forward(model.engine.asarray(data.x_test[:4, None] / 255.0, "float32"))
    assert [s["prediction"] for s in batch] == np.argmax(logits, axis=1).tolist()
    Image.fromarray(data.x_test[1]).save(tmp_path / "one.png")
    assert main(["predict", str(conv_run), str(tmp_path / "one.png"), "--json"]) == 0
    (from_png,) = json.loads(capsys.readouterr().out)["samples"]
    assert from_png["prediction"] == batch[1]["prediction"]
    assert from_png["top"][0]["score"] == pytest.approx(batch[1]["top"][0]["score"], rel=1e-5)


def test_resume_a_conv_run_trains_on_exactly_like_a_longer_run(tmp_path):
    short, long = tmp_path / "short", tmp_path / "long"
    flags = [*QUICK, "--train-subset", "200", "--arch", CNN]
    assert main(["train", *flags, "--epochs", "1", "--out", str(short)]) == 0
    assert main(["train", "--resume", str(short), "--epochs", "2", "--no-progress"]) == 0
    assert main(["train", *flags, "--epochs", "2", "--out", str(long)]) == 0
    a, b = weights(short / "model.npz"), weights(long / "model.npz")
    assert sorted(a) == sorted(b) and "layer0.W" in a
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_lr_find_with_arch(tmp_path, capsys):
    png = tmp_path / "lr.png"
    assert main(["lr-find", *QUICK[:2], "--arch", "conv:4:3,relu,maxpool:2,flatten",
                 "--optimizer", "adam", "--batch-size", "16", "--backend", "cpu",
                 "--steps", "20", "--json", "--out", str(png)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["losses"]) == 20 and all(np.isfinite(result["losses"]))
    assert png.exists()


def test_a_toml_arch_list_trains_like_the_flag(tmp_path):
    config = tmp_path / "cnn.toml"
    config.write_text('[train]\narch = ["conv:3:3", "relu", "maxpool:2", "flatten"]\n'
                      'epochs = 1\n')
    from_file, from_flag = tmp_path / "file", tmp_path / "flag"
    small = [*QUICK, "--train-subset", "100"]
    assert main(["train", "--config", str(config), *small, "--out", str(from_file)]) == 0
    assert main(["train", *small, "--arch", "conv:3:3,relu,maxpool:2,flatten", "--epochs", "1",
                 "--out", str(from_flag)]) == 0
    saved = json.loads((from_file / "config.json").read_text())["config"]
    assert saved["arch"] == "conv:3:3,relu,maxpool:2,flatten"
    a, b = weights(from_file / "model.npz"), weights(from_flag / "model.npz")
    assert sorted(a) == ["layer0.W", "layer0.b", "layer3.W", "layer3.b"]
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_arch_dense_is_the_hidden_mlp_through_the_cli(tmp_path):
    mlp_run, arch_run = tmp_path / "hidden", tmp_path / "arch"
    flags = ["--train-subset", "500", "--val-size", "100", "--batch-size", "32", "--lr", "0.5",
             "--epochs", "1", "--backend", "cpu", "--no-progress"]
    assert main(["train", *flags, "--hidden", "100", "--activation", "sigmoid",
                 "--out", str(mlp_run)]) == 0
    assert main(["train", *flags, "--arch", "dense:100,sigmoid", "--out", str(arch_run)]) == 0
    a, b = weights(mlp_run / "model.npz"), weights(arch_run / "model.npz")
    assert sorted(a) == sorted(b) == ["layer0.W", "layer0.b", "layer1.W", "layer1.b"]
    for name in a:  # same initial weights, same batches: the same trained weights
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    prep = json.loads((arch_run / "config.json").read_text())["preprocessing"]
    assert prep["flatten"] and not prep["channels_first"]  # dense-only: flat rows as before


@pytest.mark.parametrize("extra, words", [
    (["--arch", "conv:16"], ["'conv:16'", "conv:FILTERS:KERNEL"]),
    (["--arch", "maxpool:x"], ["'maxpool:x'", "SIZE"]),
    (["--arch", "dense:0"], ["'dense:0'", "UNITS"]),
    (["--arch", "swishy"], ["'swishy'", "unknown arch token"]),
    (["--arch", "conv:4:29"], ["'conv:4:29'", "29x29 window", "1x28x28", "below 1"]),
    (["--arch", "conv:4:3," + ",".join(["maxpool:2"] * 5) + ",flatten"],
     ["'maxpool:2' (token 6)", "4x1x1", "below 1"]),
    (["--arch", "flatten,conv:4:3"], ["'conv:4:3'", "after flatten", "784 features"]),
    (["--arch", "conv:4:3,relu,dense:10"], ["'dense:10'", "4x26x26", "add flatten"]),
    (["--arch", "conv:4:3"], ["output layer", "end the arch with flatten"]),
    (["--arch", "dense:10", "--hidden", "20"], ["--hidden", "dense:256,relu"]),
    (["--arch", "dense:10", "--activation", "relu"], ["--activation", "--arch"]),
    (["--arch", "dense:10", "--dropout", "0.1"], ["--dropout", "dropout:0.2"]),
    (["--arch", "dense:10", "--batch-norm"], ["--batch-norm", "batchnorm"]),
    (["--arch", "dense:4,batchnorm", "--batch-size", "1"], ["batch_size >= 2"]),
])
def test_bad_arch_is_one_line_exit_2_and_no_run_folder(tmp_path, capsys, extra, words):
    out = tmp_path / "run"
    assert main(["train", "--train-subset", "50", "--epochs", "1", "--backend", "cpu",
                 "--no-progress", *extra, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for word in words:
        assert word in err, err
    assert not out.exists()


def test_a_toml_with_hidden_and_a_flag_arch_is_refused(tmp_path, capsys):
    config = tmp_path / "mlp.toml"
    config.write_text("[train]\nhidden = [64]\n")
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--arch", "dense:64,relu", "--epochs", "1",
                 "--out", str(out)]) == 2
    assert "--hidden" in capsys.readouterr().err and not out.exists()


def fake_cifar(folder, per_batch=8):
    """CIFAR-10's python batches (pickle protocol 2, bytes keys), with random pixels."""
    import pickle

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"batch_label": name.encode(), b"labels": rng.integers(0, 10, per_batch).tolist(),
                 b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 b"filenames": [b"x.png"] * per_batch}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    names = [n.encode() for n in ("airplane automobile bird cat deer dog frog horse ship "
                                  "truck").split()]
    meta = {b"num_cases_per_batch": per_batch, b"label_names": names, b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))


def test_a_colour_conv_run_takes_nchw_and_predicts_from_an_rgb_png(tmp_path, capsys):
    fake_cifar(tmp_path / "cifar")
    out = tmp_path / "run"
    assert main(["train", "--dataset", "cifar10", "--data-dir", str(tmp_path / "cifar"),
                 "--val-size", "8", "--batch-size", "8", "--epochs", "1", "--backend", "cpu",
                 "--arch", "conv:2:3,relu,maxpool:2,flatten", "--no-progress",
                 "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["model_input_shape"] == [3, 32, 32]
    assert main(["evaluate", str(out), "--plot", "--json"]) == 0
    assert "mistakes-test.png" in capsys.readouterr().out
    raw = load_dataset("cifar10", data_dir=tmp_path / "cifar").x_test[:1]  # (1, 32, 32, 3)
    np.save(tmp_path / "one.npy", raw)
    Image.fromarray(raw[0]).save(tmp_path / "one.png")
    assert main(["predict", str(out), str(tmp_path / "one.npy"), "--json"]) == 0
    (from_npy,) = json.loads(capsys.readouterr().out)["samples"]
    assert main(["predict", str(out), str(tmp_path / "one.png"), "--json"]) == 0
    (from_png,) = json.loads(capsys.readouterr().out)["samples"]
    assert from_png == from_npy


def test_evaluate_draws_dense_weights_of_channel_first_inputs_in_picture_order(
        tmp_path, capsys, monkeypatch):
    import handprop.train.plots as plots
    from handprop.nn import Sequential

    fake_cifar(tmp_path / "cifar")
    out = tmp_path / "run"
    assert main(["train", "--dataset", "cifar10", "--data-dir", str(tmp_path / "cifar"),
                 "--val-size", "8", "--batch-size", "8", "--epochs", "1", "--backend", "cpu",
                 "--arch", "flatten,dense:4,tanh", "--no-progress", "--out", str(out)]) == 0
    drawn = {}
    monkeypatch.setattr(plots, "plot_weights",
                        lambda weights, shape, path, **_: drawn.update(w=weights, shape=shape)
                        or path)
    assert main(["evaluate", str(out), "--plot", "--json"]) == 0
    w = Sequential.load(out / "model.npz", engine="cpu").layers[1].params["W"]  # (3072, 4) CHW
    assert drawn["shape"] == (32, 32, 3)
    for unit in range(4):
        np.testing.assert_array_equal(drawn["w"][:, unit].reshape(32, 32, 3),
                                      w[:, unit].reshape(3, 32, 32).transpose(1, 2, 0))


def test_init_applies_to_every_conv_and_dense_layer_of_an_arch(tmp_path):
    from handprop.nn import Sequential

    out = tmp_path / "run"
    assert main(["train", *QUICK, "--train-subset", "64", "--epochs", "1", "--init",
                 "xavier_normal", "--arch", "conv:2:3,relu,flatten,dense:8,relu",
                 "--out", str(out)]) == 0
    layers = Sequential.load(out / "model.npz", engine="cpu").layers
    inits = [layer.init for layer in layers if hasattr(layer, "init")]
    assert inits == ["xavier_normal"] * 3  # conv, dense and the output layer
