"""`handprop trace` on convolutional networks (handprop.teach, layers with a ``type``).

The numbers of ``examples/trace_conv.json`` are worked out by hand in this file (see the
example's description); a second network is checked against PyTorch's autograd.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from handprop.cli import main
from handprop.teach.net_file import ConvNetSpec, load_net, parse_net
from handprop.teach.trace import trace

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "trace_conv.json"
# p = softmax(logits)[0] for the logits (1, 0.15): every gradient is a multiple of it.
P = 1.0 / (1.0 + math.exp(-0.85))


def trace_json(capsys, path, backend="cpu"):
    rc = main(["trace", str(path), "--json", "--backend", backend])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    return json.loads(captured.out)


def test_example_worked_by_hand(capsys):
    r = trace_json(capsys, EXAMPLE)
    assert r["layers"] == ["Conv2D(1, 2x2, relu)", "MaxPool2D(2x2, stride 1x1)", "Flatten",
                           "Dense(2, identity)"]
    conv, pool, flat, dense = r["forward"]
    # z[p, q] = x[p, q] - x[p + 1, q] + x[p + 1, q + 1] + 0.5 for the filter [[1, 0], [-1, 1]].
    assert conv["z"] == [[[2.5, 4.5, -1.5], [-0.5, 0.5, 3.5], [1.5, 2.5, 1.5]]]
    assert conv["a"] == [[[2.5, 4.5, 0.0], [0.0, 0.5, 3.5], [1.5, 2.5, 1.5]]]
    assert pool["a"] == [[[4.5, 4.5], [2.5, 3.5]]]
    # Window positions (row-major in the 2x2 window): both top windows pick a[0, 1].
    assert pool["argmax"] == [[[1, 0], [3, 1]]]
    assert flat["a"] == [4.5, 4.5, 2.5, 3.5]
    assert dense["a"] == pytest.approx([1.0, 0.15], abs=1e-15)
    assert r["softmax"] == pytest.approx([P, 1 - P], rel=1e-14)
    assert r["loss"] == pytest.approx(-math.log(1 - P), rel=1e-14)

    back = r["backward"]
    assert back[3]["delta"] == pytest.approx([P, -P], rel=1e-14)
    # dL/d(pooled) = W_dense @ delta = P * (W[:, 0] - W[:, 1]) = P * (0.2, 0.2, -0.1, -0.2).
    assert back[2]["grad_a"] == pytest.approx([0.2 * P, 0.2 * P, -0.1 * P, -0.2 * P], rel=1e-13)
    assert np.allclose(back[1]["grad_a"], [[[0.2 * P, 0.2 * P], [-0.1 * P, -0.2 * P]]], rtol=1e-13)
    # Routed to the arg-maxes; the pixel picked by both top windows gets both gradients.
    routed = [[[0.0, 0.4 * P, 0.0], [0.0, 0.0, -0.2 * P], [0.0, -0.1 * P, 0.0]]]
    np.testing.assert_allclose(back[1]["grad_input"], routed, rtol=1e-13)
    np.testing.assert_allclose(back[0]["grad_a"], routed, rtol=1e-13)
    assert back[0]["act_deriv"] == [[[1.0, 1.0, 0.0], [0.0, 1.0, 1.0], [1.0, 1.0, 1.0]]]
    np.testing.assert_allclose(back[0]["delta"], routed, rtol=1e-13)  # every routed a is > 0

    # dL/dW[i, j] = sum_pq delta[p, q] x[p + i, q + j]; dL/db = sum delta.
    grads, updated = r["grads"], r["updated"]
    np.testing.assert_allclose(grads[0]["weights"], [[[[0.1 * P, -0.2 * P], [0.4 * P, 1.1 * P]]]],
                               rtol=1e-12)
    assert grads[0]["bias"] == pytest.approx([0.1 * P], rel=1e-12)
    assert grads[1] is None and grads[2] is None and updated[1] is None
    np.testing.assert_allclose(grads[3]["weights"], np.outer([4.5, 4.5, 2.5, 3.5], [P, -P]),
                               rtol=1e-14)
    np.testing.assert_allclose(updated[0]["weights"],
                               np.array([[[[1.0, 0.0], [-1.0, 1.0]]]]) - 0.1 * np.array(
                                   grads[0]["weights"]), rtol=1e-15)
    assert updated[0]["bias"] == pytest.approx([0.5 - 0.01 * P], rel=1e-15)


def test_example_on_every_engine(engine):
    got = trace(load_net(EXAMPLE), engine=engine).to_dict()
    want = trace(load_net(EXAMPLE), engine="cpu").to_dict()
    assert got["engine"] == engine.name
    for key in ("forward", "backward", "grads", "updated"):
        for mine, ref in zip(got[key], want[key]):
            if ref is None:
                assert mine is None
                continue
            for name in ref:
                np.testing.assert_allclose(mine[name], ref[name], rtol=1e-13, atol=1e-15,
                                           err_msg=f"{key} {name}")
    assert got["loss"] == pytest.approx(want["loss"], rel=1e-14)


def test_text_shows_every_map_delta_and_gradient(capsys):
    assert main(["trace", str(EXAMPLE), "--backend", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "network: input 1x4x4 -> Conv2D(1, 2x2, relu) 1x3x3 -> MaxPool2D(2x2, stride 1x1) " \
           "1x2x2 -> Flatten 4 -> Dense(2, identity) 2" in text
    for heading in ("FORWARD", "LOSS", "BACKWARD", "GRADIENTS AND SGD STEP", "z[0]", "a[0]",
                    "f'(z)[0]", "delta[0]", "dL/dx[0]", "W[0, 0] grad", "W[0, 0] new"):
        assert heading in text, heading
    # The picked inputs of the max-pool are starred: the 4.5 both top windows chose, etc.
    assert "4.5*" in text and "3.5*" in text and "2.5*" in text
    lines = text.splitlines()
    grid = lines.index("    z[0]")
    assert lines[grid + 1].split() == ["2.5", "4.5", "-1.5"]


def test_a_conv_net_with_two_channels_matches_torch(capsys, tmp_path):
    """Stride 2, "same"-free padding, two filters, average pooling and mse, against autograd."""
    torch = pytest.importorskip("torch", reason="PyTorch is the optional reference (extra 'compare')")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 6, 5)).round(2)
    W1, b1 = rng.normal(size=(3, 2, 3, 3)).round(2), rng.normal(size=3).round(2)
    W2, b2 = rng.normal(size=(9, 2)).round(2), rng.normal(size=2).round(2)
    target = [0.25, 0.75]
    net = {"input": x.tolist(), "loss": "mse", "target": target, "learning_rate": 0.5,
           "layers": [{"type": "conv", "weights": W1.tolist(), "bias": b1.tolist(),
                       "activation": "tanh", "stride": 2, "padding": [1, 0, 1, 1]},
                      {"type": "avgpool", "size": [2, 1]}, {"type": "flatten"},
                      {"type": "dense", "weights": W2.tolist(), "bias": b2.tolist(),
                       "activation": "sigmoid"}]}
    path = tmp_path / "net.json"
    path.write_text(json.dumps(net))
    r = trace_json(capsys, path)

    xt = torch.tensor(x[None], requires_grad=True)
    params = [torch.tensor(p, requires_grad=True) for p in (W1, b1, W2, b2)]
    z = torch.nn.functional.conv2d(torch.nn.functional.pad(xt, (1, 1, 1, 0)), params[0],
                                   params[1], stride=2)
    pooled = torch.nn.functional.avg_pool2d(torch.tanh(z), (2, 1))
    out = torch.sigmoid(pooled.flatten(1) @ params[2] + params[3])
    loss = 0.5 * ((out - torch.tensor([target])) ** 2).sum()
    loss.backward()
    assert r["loss"] == pytest.approx(loss.item(), rel=1e-13)
    np.testing.assert_allclose(r["forward"][0]["z"], z.detach().numpy()[0], rtol=1e-13)
    np.testing.assert_allclose(r["forward"][1]["a"], pooled.detach().numpy()[0], rtol=1e-13)
    for i, (w, b) in ((0, params[:2]), (3, params[2:])):
        np.testing.assert_allclose(r["grads"][i]["weights"], w.grad.numpy(), rtol=1e-11)
        np.testing.assert_allclose(r["grads"][i]["bias"], b.grad.numpy(), rtol=1e-11)
        np.testing.assert_allclose(r["updated"][i]["weights"],
                                   w.detach().numpy() - 0.5 * w.grad.numpy(), rtol=1e-12)


def test_one_channel_shorthands_and_the_python_api():
    net = parse_net({"input": [[1.0, 2.0], [3.0, 4.0]], "loss": "mse", "target": [1.0],
                     "learning_rate": 1.0,
                     "layers": [{"type": "conv", "weights": [[0.5]], "bias": [0.0],
                                 "activation": "identity"},
                                {"type": "maxpool", "size": 2}, {"type": "flatten"},
                                {"weights": [[2.0]], "bias": [0.0], "activation": "identity"}]})
    assert isinstance(net, ConvNetSpec) and net.input.shape == (1, 2, 2)
    assert net.layers[0]["weights"].shape == (1, 1, 1, 1)
    r = trace(net).to_dict()
    assert r["forward"][3]["a"] == [4.0]  # 2 * max(0.5 * x)
    assert r["loss"] == pytest.approx(4.5)


BASE = {"input": [[1, 2, 0], [0, 1, 3], [2, 1, 0]], "loss": "mse", "target": [0.0],
        "learning_rate": 0.1}


def layers(*specs):
    return {**BASE, "layers": list(specs)}


CONV = {"type": "conv", "weights": [[1, 0], [0, 1]], "bias": [0], "activation": "relu"}
DENSE = {"type": "dense", "weights": [[1.0]] * 4, "bias": [0], "activation": "identity"}


@pytest.mark.parametrize("net, expected", [
    (layers({"type": "maxpol", "size": 2}), "layers[0].type: unknown layer type 'maxpol' "
                                             "(did you mean 'maxpool'?)"),
    (layers({**CONV, "weights": [[[1, 0], [0, 1]]]}), "layers[0].weights must be (filters, "
                                                      "channels, kh, kw)"),
    (layers({**CONV, "bias": [0, 1]}), "layers[0].bias has 2 numbers but there are 1 filters"),
    (layers({**CONV, "weights": [[1, 0, 1, 1]] * 4}), "a 4x4 window does not fit inputs of "
                                                       "shape (1, 3, 3)"),
    (layers(CONV, {"type": "maxpool", "size": 2}, DENSE), "Dense(1, identity) needs flat inputs"),
    (layers(CONV, {"type": "flatten"}, {**DENSE, "weights": [[1.0]] * 3}),
     "layers[2].weights has shape (3, 1) but this layer needs (4, 1) for inputs of shape (4,)"),
    (layers({**CONV, "padding": "valid"}), "padding must be a number"),
    (layers({**CONV, "stride": 0}), "layers[0].stride must be a positive whole number"),
    (layers({"type": "maxpool", "size": 2, "pading": 1}), "unknown key 'pading'"),
    (layers(CONV, {"type": "flatten"}, DENSE, {"type": "flatten", "size": 2}), "unknown key 'size'"),
    ({**BASE, "input": [[[[1.0]]]], "layers": [CONV]}, "input must be an image"),
    ({**BASE, "input": [[1, 2], [3]], "layers": [CONV]}, "ragged"),
])
def test_invalid_conv_net_exits_2_with_one_line(capsys, tmp_path, net, expected):
    path = tmp_path / "net.json"
    path.write_text(json.dumps(net))
    rc = main(["trace", str(path), "--backend", "cpu"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert expected in err, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
