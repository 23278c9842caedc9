"""Conv2D, pooling and Flatten as layers of a Sequential: shapes, summary, config, save/load,
shape errors, L2, batch norm per channel, dropout on images, and training on image inputs."""

from __future__ import annotations

import numpy as np
import pytest

from handprop.errors import ConfigError, ShapeError
from handprop.io import load_arrays, save_arrays
from handprop.nn import (Activation, AvgPool2D, BatchNorm, Conv2D, Dense, Dropout, Flatten,
                         MaxPool2D, Sequential)
from handprop.nn.losses import check_inputs
from handprop.optim import SGD
from handprop.train import Trainer


def mnist_cnn(engine, dtype="float32", seed=0):
    """The issue's MNIST CNN."""
    return Sequential([Conv2D(16, 5, padding="same", activation="relu"), MaxPool2D(2),
                       Conv2D(32, 5, padding="same", activation="relu"), MaxPool2D(2),
                       Flatten(), Dense(10)], input_shape=(1, 28, 28), engine=engine,
                      dtype=dtype, seed=seed)


def test_shapes_and_parameter_counts_through_the_mnist_cnn(cpu):
    model = mnist_cnn(cpu)
    assert [layer.output_shape for layer in model.layers] == [
        (16, 28, 28), (16, 14, 14), (32, 14, 14), (32, 7, 7), (1568,), (10,)]
    assert model.input_shape == (1, 28, 28) and model.input_dim == 784
    assert model.output_shape == (10,) and model.output_dim == 10
    # 16*1*5*5 + 16, 32*16*5*5 + 32, 1568*10 + 10
    assert model.num_parameters() == 416 + 12832 + 15690
    assert model.layers[0].params["W"].shape == (16, 1, 5, 5)
    # Contiguous as a reloaded array is (same BLAS calls after a resume; fused in-place updates).
    assert all(layer.params["W"].flags.c_contiguous for layer in model.layers if layer.params)
    assert model.layers[2].params["b"].shape == (32,)


def test_summary_shows_output_shapes_and_parameters(cpu):
    lines = mnist_cnn(cpu).summary().splitlines()
    assert lines[2].split() == ["0", "Conv2D(16,", "5x5,", "same,", "relu)", "16x28x28", "416"]
    assert lines[3].split() == ["1", "MaxPool2D(2x2)", "16x14x14", "0"]
    assert lines[6].split() == ["4", "Flatten", "1568", "0"]
    assert lines[7].split() == ["5", "Dense(10,", "identity)", "10", "15,690"]
    assert "input 1x28x28, total parameters 28,938" in lines[-1]


def test_output_sizes_for_stride_and_padding(cpu):
    model = Sequential([Conv2D(2, 3, stride=2), Conv2D(2, (2, 4), padding=(1, 0, 2, 3)),
                        AvgPool2D(3, stride=1), MaxPool2D((1, 2))],
                       input_shape=(3, 11, 10), engine=cpu)
    # (11-3)//2+1 = 5, (10-3)//2+1 = 4; then (5+1-2)+1 = 5, (4+5-4)+1 = 6; then 3, 4; then 3, 2.
    assert [layer.output_shape for layer in model.layers] == [(2, 5, 4), (2, 5, 6), (2, 3, 4),
                                                               (2, 3, 2)]
    assert model.layers[1].describe() == "Conv2D(2, 2x4, padding 1,0,2,3, identity)"
    assert model.layers[2].describe() == "AvgPool2D(3x3, stride 1x1)"


def test_config_save_and_load_round_trip(cpu, tmp_path, rng):
    model = Sequential([Conv2D(3, (3, 2), stride=(1, 2), padding=1,
                               activation="tanh", use_bias=False),
                        BatchNorm(), Activation("relu"), MaxPool2D(2, 1), Conv2D(2, 2, padding="same"),
                        AvgPool2D(2), Flatten(), Dropout(0.2), Dense(4)],
                       input_shape=(2, 8, 7), engine=cpu, dtype="float64", seed=5)
    config = model.config()
    assert config["input_shape"] == [2, 8, 7] and "input_dim" not in config
    assert config["layers"][4]["padding"] == "same"
    assert config["layers"][0]["padding"] == [1, 1, 1, 1]
    x = rng.normal(size=(3, 2, 8, 7))
    model.forward(cpu.asarray(x), training=True)  # move BatchNorm's running statistics
    model.save(tmp_path / "cnn.npz")
    loaded = Sequential.load(tmp_path / "cnn.npz", engine=cpu)
    assert loaded.input_shape == (2, 8, 7)
    assert [layer.describe() for layer in loaded.layers] == [layer.describe() for layer in model.layers]
    np.testing.assert_array_equal(loaded.forward(cpu.asarray(x)), model.forward(cpu.asarray(x)))
    assert loaded.summary() == model.summary()


def test_old_model_files_with_input_dim_still_load(cpu, tmp_path, rng):
    model = Sequential([Dense(3, "relu"), Dense(2)], input_dim=4, engine=cpu, dtype="float64")
    config = model.config()
    assert config["input_dim"] == 4 and config["input_shape"] == [4]
    old = {k: v for k, v in config.items() if k != "input_shape"}  # as written before images
    save_arrays(tmp_path / "old.npz", model.get_weights(),
                {"format": "handprop.model", "version": 1, "model": old, "extra": {}})
    loaded = Sequential.load(tmp_path / "old.npz", engine=cpu)
    assert loaded.input_dim == 4 and loaded.input_shape == (4,)
    x = cpu.asarray(rng.normal(size=(5, 4)))
    np.testing.assert_array_equal(loaded(x), model(x))
    _, meta = load_arrays(tmp_path / "old.npz")
    assert "input_shape" not in meta["model"]


def test_input_dim_and_input_shape_agree_or_are_refused(cpu):
    assert Sequential([Dense(2)], input_shape=(5,), engine=cpu).input_dim == 5
    assert Sequential([Dense(2)], input_dim=5, input_shape=(5,), engine=cpu).input_shape == (5,)
    with pytest.raises(ConfigError, match="not both"):
        Sequential([Dense(2)], input_dim=5, input_shape=(1, 2, 3), engine=cpu)
    with pytest.raises(ConfigError, match="input_shape"):
        Sequential([Flatten()], input_shape=(1, 0, 3), engine=cpu)
    with pytest.raises(ConfigError, match="input_shape"):
        Sequential([Flatten()], input_shape=(2, 3), engine=cpu)


@pytest.mark.parametrize("layers, shape, message", [
    ([Conv2D(4, 5)], (1, 4, 4), r"layer 0 of the model: Conv2D\(4, 5x5, identity\): a 5x5 window "
                                r"does not fit inputs of shape \(1, 4, 4\)"),
    ([Conv2D(4, 5, padding=1)], (1, 2, 6),
     r"a 5x5 window does not fit inputs of shape \(1, 2, 6\) \(4x8 after padding\)"),
    ([MaxPool2D(2), MaxPool2D(2), MaxPool2D(2)], (3, 6, 6),
     r"layer 2 of the model: MaxPool2D\(2x2\): a 2x2 window does not fit inputs of shape "
     r"\(3, 1, 1\)"),
    ([Conv2D(2, 3)], (784,), r"Conv2D\(2, 3x3, identity\) needs image samples \(channels, height, "
                             r"width\) but gets shape \(784,\)"),
    ([Conv2D(2, 3), Dense(10)], (1, 8, 8), r"layer 1 of the model: Dense\(10, identity\) needs "
                                           r"flat inputs .* \(2, 6, 6\); put Flatten\(\) before it"),
    ([Flatten(), AvgPool2D(2)], (1, 4, 4), r"layer 1 .*AvgPool2D\(2x2\) needs image samples"),
])
def test_shape_errors_name_the_layer_and_the_shapes(cpu, layers, shape, message):
    with pytest.raises(ShapeError, match=message):
        Sequential(layers, input_shape=shape, engine=cpu)


@pytest.mark.parametrize("make, message", [
    (lambda: Conv2D(0, 3), "positive whole number of filters"),
    (lambda: Conv2D(2, 0), "kernel_size must be a positive whole number"),
    (lambda: Conv2D(2, (3, 3, 3)), "kernel_size must be"),
    (lambda: Conv2D(2, 3, stride=True), "stride must be"),
    (lambda: Conv2D(2, 3, padding=-1), "padding must be a whole number >= 0"),
    (lambda: Conv2D(2, 3, padding="valid"), "padding must be a number"),
    (lambda: Conv2D(2, 3, stride=2, padding="same"), r"padding 'same' needs stride 1 \(got stride 2x2\)"),
    (lambda: Conv2D(2, 3, activation="swish"), "unknown activation"),
    (lambda: MaxPool2D(0), "MaxPool2D pool_size must be"),
    (lambda: AvgPool2D(2, stride=(1, 0)), "AvgPool2D stride must be"),
])
def test_bad_layer_options_are_config_errors(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


def test_forward_refuses_inputs_of_another_shape(cpu):
    model = Sequential([Conv2D(2, 3), Flatten(), Dense(2)], input_shape=(1, 5, 5), engine=cpu)
    with pytest.raises(ShapeError, match=r"expects inputs of shape \(batch, 1, 5, 5\); got \(2, 25\)"):
        model.forward(cpu.asarray(np.zeros((2, 25), np.float32)))


def test_check_inputs_takes_image_shapes():
    check_inputs(np.zeros((3, 1, 5, 5)), input_shape=(1, 5, 5))
    with pytest.raises(ShapeError, match=r"reshape them to \(samples, 1, 5, 5\)"):
        check_inputs(np.zeros((3, 25)), input_shape=(1, 5, 5))
    with pytest.raises(ShapeError, match=r"expects images of shape \(samples, 1, 5, 5\)$"):
        check_inputs(np.zeros((3, 2, 5, 5)), input_shape=(1, 5, 5))
    check_inputs(np.zeros((3, 4)), input_shape=(4,))  # flat, as a shape
    check_inputs(np.zeros((3, 4)), 4)  # and as a width, as before
    with pytest.raises(ShapeError, match="Flatten images first"):
        check_inputs(np.zeros((3, 2, 2)), 4)


def test_l2_covers_convolution_weights_but_not_biases(cpu):
    model = Sequential([Conv2D(2, 2), Flatten(), Dense(3)], input_shape=(1, 3, 3), engine=cpu,
                       dtype="float64")
    assert [name for name, _, _ in model.named_weights()] == ["layer0.W", "layer2.W"]
    conv, dense = model.layers[0], model.layers[2]
    want = 0.5 * 0.1 * (np.sum(conv.params["W"] ** 2) + np.sum(dense.params["W"] ** 2))
    assert model.l2_penalty(0.1) == pytest.approx(want, rel=1e-14)
    model.forward(cpu.asarray(np.ones((2, 1, 3, 3))), training=True)
    model.backward(cpu.asarray(np.ones((2, 3))))
    before = {k: np.array(v) for k, v in conv.grads.items()}
    model.add_l2_gradient(0.1)
    np.testing.assert_allclose(conv.grads["W"], before["W"] + 0.1 * conv.params["W"])
    np.testing.assert_array_equal(conv.grads["b"], before["b"])


def test_batch_norm_after_a_convolution_normalizes_each_channel(cpu, rng):
    torch = pytest.importorskip("torch", reason="PyTorch is the optional reference (extra 'compare')")
    bn = BatchNorm(momentum=0.9)
    model = Sequential([bn], input_shape=(3, 4, 5), engine=cpu, dtype="float64")
    assert bn.params["gamma"].shape == (3,) and bn.output_shape == (3, 4, 5)
    gamma, beta = rng.normal(size=3), rng.normal(size=3)
    bn.params["gamma"], bn.params["beta"] = gamma.copy(), beta.copy()
    x = rng.normal(2.0, 3.0, size=(6, 3, 4, 5))
    g = rng.normal(size=x.shape)
    out = model.forward(x, training=True)
    dx = model.backward(g, need_input_grad=True)

    ref = torch.nn.BatchNorm2d(3, momentum=0.1, eps=1e-5).double()
    with torch.no_grad():
        ref.weight.copy_(torch.tensor(gamma))
        ref.bias.copy_(torch.tensor(beta))
    xt = torch.tensor(x, requires_grad=True)
    yt = ref(xt)
    yt.backward(torch.tensor(g))
    np.testing.assert_allclose(out, yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(bn.grads["gamma"], ref.weight.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(bn.grads["beta"], ref.bias.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(bn.buffers["running_mean"], ref.running_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(bn.buffers["running_var"], ref.running_var.numpy(), rtol=1e-12)
    ref.eval()
    np.testing.assert_allclose(model.forward(x), ref(torch.tensor(x)).detach().numpy(),
                               rtol=1e-10, atol=1e-12)


def test_dropout_masks_images_elementwise(cpu):
    model = Sequential([Dropout(0.5)], input_shape=(2, 3, 3), engine=cpu, dtype="float64", seed=1)
    x = np.ones((4, 2, 3, 3))
    out = model.forward(x, training=True)
    assert out.shape == x.shape and set(np.unique(out)) == {0.0, 2.0}
    np.testing.assert_array_equal(model.backward(np.ones_like(x), need_input_grad=True), out)


def test_training_keeps_the_input_and_inference_leaves_the_training_state_alone(engine, rng):
    """A training forward keeps each convolution's input and output rows for its backward
    pass (not the window matrix); an inference pass changes neither. Only the reference
    builds the window matrix (im2col) during a step: numba multiplies it tile by tile."""
    model = mnist_cnn(engine)
    conv = model.layers[2]
    x = engine.asarray(rng.random((3, 1, 28, 28)).astype("float32"))
    calls = []
    im2col, col2im = engine.im2col, engine.col2im
    engine.im2col = lambda *a, **k: calls.append("im2col") or im2col(*a, **k)
    engine.col2im = lambda *a, **k: calls.append("col2im") or col2im(*a, **k)
    try:
        pooled = model.layers[1].forward(model.layers[0].forward(x, training=True), True)
        model.forward(x, training=True)
        kept_x, kept_rows = conv.x, conv.out_rows
        model.backward(engine.asarray(np.ones((3, 10), dtype="float32")))
        model.forward(x[:2], training=False)
    finally:
        del engine.im2col, engine.col2im
    assert conv.x is kept_x and conv.out_rows is kept_rows
    assert tuple(kept_x.shape) == (3, 16, 14, 14) == tuple(pooled.shape)
    np.testing.assert_array_equal(engine.to_numpy(kept_x), engine.to_numpy(pooled))
    assert not hasattr(conv, "cols")
    if engine.name == "numba":
        assert calls == []
    elif engine.name == "cpu":
        assert "im2col" in calls and "col2im" in calls


def test_a_small_cnn_learns_on_image_inputs(engine):
    """Bright top half or bright bottom half: the trainer takes (N, C, H, W) inputs."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 64)
    x = rng.normal(0.0, 0.3, size=(64, 1, 6, 6))
    x[y == 0, :, :3] += 1.0
    x[y == 1, :, 3:] += 1.0
    model = Sequential([Conv2D(4, 3, padding="same", activation="relu"), MaxPool2D(2), Flatten(),
                        Dense(2)], input_shape=(1, 6, 6), engine=engine, dtype="float64", seed=0)
    trainer = Trainer(model, "softmax_cross_entropy", SGD(lr=0.1), batch_size=16, epochs=15,
                      progress=False)
    history = trainer.fit(x, y)
    assert history.rows[-1]["train_loss"] < 0.5 * history.rows[0]["train_loss"]
    assert trainer.evaluate(x, y)[1] > 0.95
    assert set(history.rows[-1]["grad_norms"]) == {"layer0.W", "layer3.W"}
    with pytest.raises(ShapeError, match="reshape them"):
        trainer.evaluate(x.reshape(64, 36), y)
