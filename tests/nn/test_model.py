"""Sequential: parameter count, summary, save/load, checkpoint errors, atomic writes."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from handprop import io as hio
from handprop.errors import CheckpointError, ConfigError, ShapeError
from handprop.nn import Activation, Dense, Sequential, mlp


def small_model(engine, dtype="float64", seed=3):
    return Sequential([Dense(5, "relu"), Activation("tanh"), Dense(3, "sigmoid", bias_init=0.1)],
                      input_dim=4, engine=engine, dtype=dtype, seed=seed)


def test_parameter_count_by_hand(cpu):
    model = small_model(cpu)
    # 4*5 weights + 5 biases, nothing for the activation, 5*3 + 3.
    assert model.num_parameters() == 4 * 5 + 5 + 5 * 3 + 3 == 43
    big = mlp(784, [100, 50], 10, engine=cpu)
    assert big.num_parameters() == 784 * 100 + 100 + 100 * 50 + 50 + 50 * 10 + 10
    assert [n for n, _, _ in model.named_parameters()] == ["layer0.W", "layer0.b", "layer2.W", "layer2.b"]
    assert model.output_dim == 3


def test_summary_table(cpu):
    model = mlp(784, [100], 10, engine=cpu, dtype="float32")
    text = model.summary()
    lines = text.splitlines()
    assert lines[0].split() == ["#", "layer", "output", "parameters"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert lines[2].split() == ["0", "Dense(100,", "relu)", "100", "78,500"]
    assert lines[3].split() == ["1", "Dense(10,", "identity)", "10", "1,010"]
    assert "total parameters 79,510" in lines[-1]
    assert "input 784" in lines[-1] and "float32" in lines[-1] and "engine cpu" in lines[-1]


def test_unbuilt_model_and_bad_construction(cpu):
    model = Sequential([Dense(2)], engine=cpu)
    assert not model.built
    with pytest.raises(ConfigError, match="build the model first"):
        model.summary()
    with pytest.raises(ConfigError, match="at least one layer"):
        Sequential([], engine=cpu)
    with pytest.raises(ConfigError, match="dtype must be one of float32, float64"):
        Sequential([Dense(2)], input_dim=3, engine=cpu, dtype="float16")
    with pytest.raises(ConfigError, match="input_dim must be a positive whole number"):
        Sequential([Dense(2)], input_dim=0, engine=cpu)


def test_forward_refuses_wrong_input_width(engine):
    model = small_model(engine)
    with pytest.raises(ShapeError, match=r"expects inputs of shape \(batch, 4\); got \(2, 3\)"):
        model.forward(engine.asarray(np.zeros((2, 3)), "float64"))
    with pytest.raises(ShapeError, match=r"got \(2, 2, 4\)"):
        model.forward(engine.asarray(np.zeros((2, 2, 4)), "float64"))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_save_load_round_trip(engine, tmp_path, dtype, rng):
    model = small_model(engine, dtype)
    x = engine.asarray(rng.normal(size=(7, 4)), dtype)
    before = engine.to_numpy(model(x)).copy()
    path = tmp_path / "model.npz"
    model.save(path, extra={"note": "hello"})

    loaded = Sequential.load(path, engine=engine)
    assert loaded.dtype == dtype and loaded.input_dim == 4
    assert [layer.describe() for layer in loaded.layers] == [layer.describe() for layer in model.layers]
    assert loaded.layers[2].bias_init == 0.1
    for name, value in model.get_weights().items():
        got = loaded.get_weights()[name]
        assert got.dtype == value.dtype
        np.testing.assert_array_equal(got, value)
    np.testing.assert_array_equal(engine.to_numpy(loaded(x)), before)

    # A plain NumPy .npz, readable without pickle.
    with np.load(path, allow_pickle=False) as archive:
        assert set(archive.files) == {"layer0.W", "layer0.b", "layer2.W", "layer2.b", "__meta__"}
        np.testing.assert_array_equal(archive["layer2.W"], model.get_weights()["layer2.W"])
        meta = json.loads(archive["__meta__"].tobytes().decode("utf-8"))
    assert meta["format"] == "handprop.model" and meta["extra"] == {"note": "hello"}


def test_load_weights_into_same_architecture(cpu, tmp_path):
    src = small_model(cpu, seed=1)
    dst = small_model(cpu, seed=2)
    assert not np.array_equal(src.get_weights()["layer0.W"], dst.get_weights()["layer0.W"])
    src.save(tmp_path / "m.npz")
    dst.load_weights(tmp_path / "m.npz")
    for name, value in src.get_weights().items():
        np.testing.assert_array_equal(dst.get_weights()[name], value)


def test_load_into_different_architecture_names_the_differences(cpu, tmp_path):
    small_model(cpu).save(tmp_path / "m.npz")
    other = Sequential([Dense(6, "relu"), Activation("tanh"), Dense(3, "sigmoid")], input_dim=4, engine=cpu)
    with pytest.raises(CheckpointError) as info:
        other.load_weights(tmp_path / "m.npz")
    msg = str(info.value)
    assert "layer0.W: saved shape (4, 5), model shape (4, 6)" in msg
    assert "layer0.b: saved shape (5,), model shape (6,)" in msg
    assert "layer2.W: saved shape (5, 3), model shape (6, 3)" in msg
    assert "layer2.b" not in msg  # (3,) fits: only the differing tensors are named

    deeper = mlp(4, [5, 5], 3, engine=cpu)
    with pytest.raises(CheckpointError) as info:
        deeper.load_weights(tmp_path / "m.npz")
    msg = str(info.value)
    assert "layer1.W: missing (expected shape (5, 5))" in msg
    assert "layer0.W" not in msg


def test_set_weights_reports_extra_tensors(cpu):
    model = small_model(cpu)
    weights = model.get_weights()
    weights["layer9.W"] = np.zeros((1, 1))
    with pytest.raises(CheckpointError, match="layer9.W: in the file but not in the model"):
        model.set_weights(weights)


def test_get_weights_is_a_snapshot(cpu):
    model = small_model(cpu)
    snap = model.get_weights()
    kept = {k: v.copy() for k, v in snap.items()}
    for layer in model.layers:
        layer.grads = {k: cpu.xp.ones_like(v) for k, v in layer.params.items()}
    from handprop.optim import SGD

    SGD(lr=0.5).step(model)
    for name in kept:
        np.testing.assert_array_equal(snap[name], kept[name])


def test_set_weights_does_not_share_memory_between_models(cpu):
    a, b = small_model(cpu, seed=1), small_model(cpu, seed=2)
    b.set_weights(a.get_weights())
    a.layers[0].params["W"] += 1.0
    assert not np.array_equal(cpu.to_numpy(a.layers[0].params["W"]),
                              cpu.to_numpy(b.layers[0].params["W"]))


# ------------------------------------------------------------ corrupt files
def test_missing_file(cpu, tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        Sequential.load(tmp_path / "nope.npz", engine=cpu)


@pytest.mark.parametrize("keep", [0, 10, 100, 0.5, 0.9, -1])
def test_truncated_file_is_a_checkpoint_error(cpu, tmp_path, keep):
    path = tmp_path / "m.npz"
    small_model(cpu).save(path)
    data = path.read_bytes()
    cut = int(len(data) * keep) if isinstance(keep, float) else (len(data) + keep if keep < 0 else keep)
    path.write_bytes(data[:cut])
    with pytest.raises(CheckpointError, match="truncated or corrupt|not a readable"):
        Sequential.load(path, engine=cpu)


def test_garbage_file_is_a_checkpoint_error(cpu, tmp_path):
    path = tmp_path / "m.npz"
    path.write_bytes(b"this is not a zip archive at all" * 10)
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        Sequential.load(path, engine=cpu)


def test_corrupted_bytes_are_a_checkpoint_error(cpu, tmp_path):
    path = tmp_path / "m.npz"
    small_model(cpu).save(path)
    data = bytearray(path.read_bytes())
    # Flip bytes inside the stored arrays (after the first local header):
    # the zip CRC check must catch it.
    for i in range(200, 260):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError):
        Sequential.load(path, engine=cpu)


def test_npz_without_metadata_or_of_another_kind(cpu, tmp_path):
    plain = tmp_path / "plain.npz"
    np.savez(plain, w=np.zeros(3))
    with pytest.raises(CheckpointError, match="no handprop metadata"):
        Sequential.load(plain, engine=cpu)
    other = tmp_path / "other.npz"
    hio.save_arrays(other, {"w": np.zeros(3)}, {"format": "something.else"})
    with pytest.raises(CheckpointError, match="is not a handprop model file"):
        Sequential.load(other, engine=cpu)
    bad_meta = tmp_path / "badmeta.npz"
    np.savez(bad_meta, __meta__=np.frombuffer(b"{not json", dtype=np.uint8))
    with pytest.raises(CheckpointError, match="unreadable metadata"):
        Sequential.load(bad_meta, engine=cpu)


def test_object_arrays_are_never_unpickled(cpu, tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, w=np.array([{"a": 1}], dtype=object),
             __meta__=np.frombuffer(json.dumps({"format": "handprop.model"}).encode(), dtype=np.uint8))
    with pytest.raises(CheckpointError):
        Sequential.load(path, engine=cpu)


# ------------------------------------------------------------ atomic writes
def test_atomic_writes_leave_no_temp_files(cpu, tmp_path):
    model = small_model(cpu)
    path = tmp_path / "sub" / "m.npz"
    model.save(path)
    model.save(path)  # overwrite in place
    hio.atomic_write_json(tmp_path / "sub" / "x.json", {"a": 1})
    assert sorted(os.listdir(tmp_path / "sub")) == ["m.npz", "x.json"]
    assert json.loads((tmp_path / "sub" / "x.json").read_text()) == {"a": 1}


def test_failed_write_keeps_old_file_and_removes_temp(cpu, tmp_path, monkeypatch):
    path = tmp_path / "m.npz"
    small_model(cpu, seed=1).save(path)
    original = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(hio.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        small_model(cpu, seed=2).save(path)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["m.npz"]
    assert path.read_bytes() == original


def test_meta_key_is_reserved(tmp_path):
    with pytest.raises(ValueError, match="reserved"):
        hio.save_arrays(tmp_path / "x.npz", {"__meta__": np.zeros(1)}, {})


# ------------------------------------------------------------- flat buffers
def test_parameters_and_gradients_are_views_of_flat_buffers(engine):
    model = small_model(engine)
    xp = engine.xp
    assert model.flat_params.shape == (model.num_parameters(),)
    assert model.flat_grads.shape == model.flat_params.shape
    # Writing the flat buffer shows through every parameter, in named_parameters order.
    model.flat_params[...] = xp.arange(model.num_parameters(), dtype=xp.float64)
    weights, offset = model.get_weights(), 0
    for name, layer, key in model.named_parameters():
        size = int(np.prod(layer.params[key].shape))
        np.testing.assert_array_equal(weights[name].ravel(), np.arange(offset, offset + size))
        offset += size
    assert [entry[0] for entry in model.param_layout] == [n for n, _, _ in model.named_parameters()]
    # Backward writes each gradient into its view of flat_grads.
    model = small_model(engine)
    W_grad = model.layers[0].grads["W"]
    x = engine.asarray(np.linspace(-1, 1, 8).reshape(2, 4))
    model.forward(x, training=True)
    model.backward(engine.asarray(np.ones((2, 3))))
    assert model.layers[0].grads["W"] is W_grad
    model.gather_grads()
    expected = np.concatenate([engine.to_numpy(layer.grads[key]).ravel()
                               for _, layer, key in model.named_parameters()])
    np.testing.assert_array_equal(engine.to_numpy(model.flat_grads), expected)
    assert np.abs(expected).sum() > 0


def test_set_weights_copies_into_the_views(engine):
    model, other = small_model(engine), small_model(engine, seed=9)
    W = model.layers[0].params["W"]
    model.set_weights(other.get_weights())
    assert model.layers[0].params["W"] is W  # not rebound
    np.testing.assert_array_equal(engine.to_numpy(model.flat_params),
                                  engine.to_numpy(other.flat_params))


def test_gather_grads_copies_a_fresh_gradient_into_its_view(engine):
    model = small_model(engine)
    layer = model.layers[2]
    view = layer.grads["b"]
    layer.grads["b"] = engine.asarray(np.array([1.0, 2.0, 3.0]))
    model.gather_grads()
    assert layer.grads["b"] is view
    offset = dict((n, o) for n, o, _ in model.param_layout)["layer2.b"]
    np.testing.assert_array_equal(engine.to_numpy(model.flat_grads)[offset:offset + 3], [1, 2, 3])


def test_one_registry_names_every_layer_type_a_model_file_holds(cpu, tmp_path):
    import handprop.nn as nn
    from handprop.nn.model import LAYER_TYPES, layer_from_config

    layer_classes = {getattr(nn, name) for name in nn.__all__
                     if isinstance(getattr(nn, name), type) and issubclass(getattr(nn, name), nn.Layer)}
    assert set(LAYER_TYPES.values()) == layer_classes - {nn.Layer}
    layers = [nn.Conv2D(2, 3, padding="same", use_bias=False), nn.BatchNorm(), nn.Activation("relu"),
              nn.MaxPool2D(2), nn.AvgPool2D(2, 1), nn.Flatten(), nn.Dropout(0.1), nn.Dense(3)]
    for layer in layers:
        assert LAYER_TYPES[layer.config()["type"]] is type(layer)
        assert layer_from_config(layer.config()).config() == layer.config()
    model = Sequential(layers, input_shape=(1, 6, 6), engine=cpu, seed=2)
    model.save(tmp_path / "m.npz")
    loaded = Sequential.load(tmp_path / "m.npz", engine=cpu)
    assert loaded.config() == model.config()
    for name, value in model.get_weights().items():
        np.testing.assert_array_equal(loaded.get_weights()[name], value)
    with pytest.raises(ConfigError, match="unknown layer type 'Conv'; known types: Dense, "
                                          "Activation, Dropout, BatchNorm, Conv2D, MaxPool2D"):
        layer_from_config({"type": "Conv"})
