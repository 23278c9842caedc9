"""The ``--arch`` grammar (``handprop.nn.arch``): every token kind, fusion, round trips, and
the messages for malformed tokens and for shapes that do not fit."""

from __future__ import annotations

import numpy as np
import pytest

from handprop.errors import ConfigError, ShapeError
from handprop.nn import (Activation, AvgPool2D, BatchNorm, Conv2D, Dense, Dropout, Flatten,
                         MaxPool2D, mlp)
from handprop.nn.arch import (arch_model, arch_tokens, format_arch, normalize_arch, parse_arch,
                              uses_images)

ISSUE_CNN = "conv:16:5:1:same,relu,maxpool:2,conv:32:5:1:same,relu,maxpool:2,flatten,dense:128,relu"


@pytest.mark.parametrize("text, kind, config", [
    ("conv:16:5", Conv2D, {"filters": 16, "kernel_size": [5, 5], "stride": [1, 1],
                           "padding": [0, 0, 0, 0], "activation": "identity", "use_bias": True}),
    ("conv:8:3:2", Conv2D, {"filters": 8, "kernel_size": [3, 3], "stride": [2, 2],
                            "padding": [0, 0, 0, 0]}),
    ("conv:8:3:2:1", Conv2D, {"stride": [2, 2], "padding": [1, 1, 1, 1]}),
    ("conv:4:4:1:same", Conv2D, {"kernel_size": [4, 4], "padding": "same"}),
    ("maxpool:2", MaxPool2D, {"pool_size": [2, 2], "stride": [2, 2]}),
    ("maxpool:3:1", MaxPool2D, {"pool_size": [3, 3], "stride": [1, 1]}),
    ("avgpool:2", AvgPool2D, {"pool_size": [2, 2], "stride": [2, 2]}),
    ("avgpool:3:2", AvgPool2D, {"pool_size": [3, 3], "stride": [2, 2]}),
    ("flatten", Flatten, {}),
    ("dense:128", Dense, {"units": 128, "activation": "identity", "use_bias": True}),
    ("tanh", Activation, {"kind": "tanh"}),
    ("leaky_relu", Activation, {"kind": "leaky_relu", "alpha": 0.01}),
    ("dropout:0.25", Dropout, {"rate": 0.25}),
    ("batchnorm", BatchNorm, {"momentum": 0.9, "eps": 1e-5}),
])
def test_every_token_kind_parses_to_its_layer(text, kind, config):
    (layer,) = parse_arch(text)
    assert type(layer) is kind
    assert {key: layer.config()[key] for key in config} == config


def test_an_activation_after_conv_or_dense_is_fused_and_elsewhere_stands_alone():
    layers = parse_arch("conv:4:3,relu,maxpool:2,tanh,flatten,dense:10,sigmoid,lecun_tanh")
    assert [type(l).__name__ for l in layers] == ["Conv2D", "MaxPool2D", "Activation", "Flatten",
                                                   "Dense", "Activation"]
    assert layers[0].activation == "relu" and layers[0].init == "he"  # auto init follows it
    assert layers[2].kind == "tanh"
    assert layers[4].activation == "sigmoid" and layers[4].init == "xavier_uniform"
    assert layers[5].kind == "lecun_tanh"


def test_a_layer_before_batchnorm_has_no_bias_and_its_init_follows_the_activation_after():
    conv, norm, act = parse_arch("conv:4:3,batchnorm,relu")
    assert not conv.use_bias and conv.activation == "identity" and conv.init == "he"
    assert isinstance(norm, BatchNorm) and act.kind == "relu"
    dense, _ = parse_arch("dense:8,relu,batchnorm")  # activation first: the bias stays
    assert dense.use_bias and dense.activation == "relu"


def test_init_applies_to_every_conv_and_dense_layer():
    layers = parse_arch("conv:4:3,relu,flatten,dense:5,tanh", init="lecun")
    assert [l.init for l in layers if isinstance(l, (Conv2D, Dense))] == ["lecun", "lecun"]
    with pytest.raises(ConfigError, match="unknown initializer 'bogus'"):
        parse_arch("dense:5", init="bogus")


def test_text_lists_case_and_spaces_normalize_to_one_text():
    expected = "conv:16:5:1:same,relu,maxpool:2"
    assert normalize_arch(" Conv:16 : 5:1:SAME , relu,maxpool:2") == expected
    assert normalize_arch(["conv:16:5:1:same", "relu", "maxpool:2"]) == expected
    assert normalize_arch(["conv:16:5:1:same,relu", "maxpool:2"]) == expected
    assert normalize_arch(None) is None and normalize_arch("") == "" and normalize_arch([]) == ""
    assert [t.kind for t in arch_tokens(expected)] == ["conv", "activation", "maxpool"]
    assert arch_tokens(expected)[0].args == (16, 5, 1, "same")


@pytest.mark.parametrize("text", [
    ISSUE_CNN,
    "conv:8:3:2,tanh,avgpool:3:1,conv:4:3:1:2,flatten,dropout:0.5,dense:32,leaky_relu",
    "conv:6:5:1:same,batchnorm,relu,maxpool:2:1,flatten,dense:64,batchnorm,sigmoid,dropout:0.2",
    "dense:100,sigmoid", "flatten,dense:10,relu,relu", "batchnorm,dense:3", "",
])
def test_format_and_parse_round_trip(text):
    layers = parse_arch(text)
    assert format_arch(layers) == text
    assert [l.config() for l in parse_arch(format_arch(layers))] == [l.config() for l in layers]


def test_format_arch_refuses_what_the_grammar_cannot_write():
    for layers, words in [([Conv2D(2, (3, 5))], "square kernel"),
                          ([Conv2D(2, 3, padding=(1, 2))], "same padding on every side"),
                          ([Dense(3, use_bias=False)], "only before batchnorm"),
                          ([Activation("leaky_relu", 0.2)], "alpha"),
                          ([BatchNorm(momentum=0.5)], "momentum")]:
        with pytest.raises(ConfigError, match=words):
            format_arch(layers)


@pytest.mark.parametrize("text, words", [
    ("conv:16", ["'conv:16'", "conv:FILTERS:KERNEL"]),
    ("conv:16:5:1:2:3", ["'conv:16:5:1:2:3'", "conv:FILTERS:KERNEL"]),
    ("conv:0:5", ["'conv:0:5'", "FILTERS must be a whole number >= 1"]),
    ("conv:16:5:1:half", ["'conv:16:5:1:half'", "PADDING"]),
    ("conv:16:5:2:same", ["'conv:16:5:2:same'", "needs stride 1", "conv:16:5:2:2"]),
    ("maxpool:x", ["'maxpool:x'", "SIZE must be a whole number"]),
    ("avgpool", ["'avgpool'", "avgpool:SIZE[:STRIDE]"]),
    ("dense:0", ["'dense:0'", "UNITS must be a whole number >= 1"]),
    ("dense:1.5", ["'dense:1.5'", "UNITS"]),
    ("dropout:1", ["'dropout:1'", "[0, 1)"]),
    ("dropout:x", ["'dropout:x'", "RATE"]),
    ("flatten:2", ["'flatten:2'", "write flatten"]),
    ("relu:2", ["'relu:2'"]),
    ("swishy", ["unknown arch token 'swishy'", "relu"]),
    ("convv:16:5", ["'convv:16:5'", "did you mean conv"]),
    ("dense:8,,relu", ["token 2", "empty"]),
])
def test_malformed_tokens_are_named(text, words):
    with pytest.raises(ConfigError) as info:
        normalize_arch(text)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message


def test_arch_must_be_text_or_a_list_of_text():
    for value in (3, ["dense:3", 4], {"dense": 3}):
        with pytest.raises(ConfigError, match="arch is text"):
            normalize_arch(value)


@pytest.mark.parametrize("text, shape, words", [
    ("conv:8:30", (1, 28, 28), ["'conv:8:30' (token 1)", "30x30 window", "1x28x28",
                                "output size would be below 1"]),
    ("conv:8:7:1:1", (1, 4, 4), ["'conv:8:7:1:1'", "1x4x4 (6x6 after padding)"]),
    ("conv:4:3,relu," + ",".join(["maxpool:2"] * 5), (1, 28, 28),
     ["'maxpool:2' (token 7)", "4x1x1", "below 1"]),
    ("conv:4:3,flatten,conv:2:3", (1, 8, 8), ["'conv:2:3' (token 3)", "after flatten",
                                              "144 features"]),
    ("conv:4:3,relu,dense:10", (1, 8, 8), ["'dense:10' (token 3)", "4x6x6", "add flatten"]),
    ("conv:4:3", (1, 8, 8), ["output layer", "4x6x6", "end the arch with flatten"]),
    ("conv:4:3", (2,), ["'conv:4:3'", "2 features", "not images"]),
    ("dense:4", (1, 8, 8), ["'dense:4'", "1x8x8", "add flatten"]),
])
def test_shapes_that_do_not_fit_name_the_token_and_the_shapes(text, shape, words):
    with pytest.raises(ShapeError) as info:
        arch_model(text, shape, outputs=10, engine="cpu")
    for word in words:
        assert word in str(info.value), str(info.value)


def test_arch_model_builds_the_issue_cnn_with_its_output_layer(cpu):
    model = arch_model(ISSUE_CNN, (1, 28, 28), 10, engine=cpu)
    assert [l.output_shape for l in model.layers] == [
        (16, 28, 28), (16, 14, 14), (32, 14, 14), (32, 7, 7), (1568,), (128,), (10,)]
    assert [type(l).__name__ for l in model.layers][-1] == "Dense"
    assert model.layers[-1].activation == "identity"
    assert model.num_parameters() == 416 + 12832 + 1568 * 128 + 128 + 1290
    out = model.forward(cpu.asarray(np.zeros((2, 1, 28, 28)), "float32"))
    assert out.shape == (2, 10)


def test_dense_arch_is_the_hidden_mlp_weight_for_weight(cpu):
    for text, kwargs in [("dense:100,sigmoid", {"activation": "sigmoid"}),
                         ("dense:32,relu,dropout:0.2,dense:16,relu,dropout:0.2",
                          {"activation": "relu", "dropout": 0.2}),
                         ("dense:12,batchnorm,tanh", {"activation": "tanh", "batch_norm": True})]:
        hidden = [t.args[0] for t in arch_tokens(text) if t.kind == "dense"]
        a = arch_model(text, (784,), 10, engine=cpu, seed=3)
        b = mlp(784, hidden, 10, engine=cpu, seed=3, **kwargs)
        assert [l.config() for l in a.layers] == [l.config() for l in b.layers], text
        wa, wb = a.get_weights(), b.get_weights()
        assert wa.keys() == wb.keys()
        for name in wa:
            np.testing.assert_array_equal(wa[name], wb[name], err_msg=name)


def test_uses_images():
    assert uses_images(ISSUE_CNN) and uses_images("flatten,dense:3")
    assert not uses_images("dense:100,sigmoid") and not uses_images("batchnorm,dense:3")


@pytest.mark.parametrize("text, shape", [
    (ISSUE_CNN, (1, 28, 28)),
    ("conv:8:3:2,tanh,avgpool:3:1,conv:4:3:1:2,flatten,dropout:0.5,dense:32,leaky_relu", (3, 17, 13)),
    ("conv:6:5:1:same,batchnorm,relu,maxpool:2:1,flatten,dense:64,batchnorm,sigmoid", (2, 9, 9)),
    ("batchnorm,dense:3,relu,dropout:0.1", (7,)),
])
def test_check_shapes_is_what_building_gives(cpu, text, shape):
    from handprop.nn.arch import _groups, check_shapes

    groups = _groups(arch_tokens(text), "auto")
    shapes = check_shapes(groups, shape)
    model = arch_model(text, shape, engine=cpu)
    assert shapes == [l.output_shape for l in model.layers]


def test_a_misfit_is_the_layers_own_shape_error_in_arch_words():
    from handprop.nn.layers import InputShapeError

    with pytest.raises(InputShapeError) as info:
        MaxPool2D(3).build((2, 4, 2), "unused engine", "float32", np.random.default_rng(0))
    assert (info.value.needs, info.value.shape, info.value.window, info.value.padded) == (
        "window", (2, 4, 2), (3, 3), None)
    with pytest.raises(InputShapeError) as info:
        Conv2D(1, 5, padding=1).build((1, 2, 6), None, "float32", np.random.default_rng(0))
    assert (info.value.needs, info.value.padded) == ("window", (4, 8))
    assert "a 5x5 window does not fit inputs of shape (1, 2, 6) (4x8 after padding)" in str(
        info.value)
    for layer, shape, needs in [(Dense(2), (1, 2, 2), "flat"), (Conv2D(1, 1), (4,), "images"),
                                (BatchNorm(), (2, 3), "features")]:
        with pytest.raises(InputShapeError) as info:
            layer.build(shape, None, "float32", np.random.default_rng(0))
        assert (info.value.needs, info.value.shape) == (needs, shape)


def test_zero_sized_inputs_are_the_models_config_error():
    with pytest.raises(ConfigError, match=r"positive whole numbers; got \(0,\)"):
        arch_model("dense:3,batchnorm,relu", (0,), 10, engine="cpu")


def test_each_layer_writes_its_own_tokens_and_format_arch_joins_them():
    from handprop.nn import Layer

    assert Conv2D(4, 3, stride=2, padding=1, activation="relu").arch_tokens() == [
        "conv:4:3:2:1", "relu"]
    assert Conv2D(4, 3, padding="same").arch_tokens() == ["conv:4:3:1:same"]
    assert MaxPool2D(2).arch_tokens() == ["maxpool:2"]
    assert AvgPool2D(3, 1).arch_tokens() == ["avgpool:3:1"]
    assert Dense(5, "tanh").arch_tokens() == ["dense:5", "tanh"]
    assert [Flatten().arch_tokens(), Dropout(0.25).arch_tokens(), BatchNorm().arch_tokens(),
            Activation("sigmoid").arch_tokens()] == [["flatten"], ["dropout:0.25"],
                                                     ["batchnorm"], ["sigmoid"]]

    class Twice(Layer):
        def arch_tokens(self):
            return ["relu", "relu"]

    assert format_arch([Twice(), Dense(3)]) == "relu,relu,dense:3"
    with pytest.raises(ConfigError, match="Layer has no arch token"):
        format_arch([Layer()])
