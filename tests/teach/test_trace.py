"""`handprop trace` and handprop.teach: the pen-and-paper backprop exercise.

Expected numbers come from two independent sources: Matt Mazur's published
worked example (rounded to 8-9 decimals), and scalar formulas written out by
hand in these tests with ``math``, never from the library's own output.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from handprop.cli import main
from handprop.errors import ConfigError, DataError, ShapeError
from handprop.teach.net_file import load_net, parse_net
from handprop.teach.trace import trace

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MAZUR = EXAMPLES / "trace_mse_2-2-2.json"
SOFTMAX = EXAMPLES / "trace_softmax.json"


def run_trace(capsys, *args):
    rc = main(["trace", *map(str, args)])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def trace_json(capsys, path, backend="cpu"):
    rc, out, err = run_trace(capsys, path, "--json", "--backend", backend)
    assert rc == 0, err
    return json.loads(out)


def sig(z):
    return 1.0 / (1.0 + math.exp(-z))


# ------------------------------------------------------------------ Mazur 2-2-2
def mazur_by_hand():
    """Mazur's network written out scalar by scalar (w1..w8 named as in his post)."""
    i1, i2, t1, t2, lr = 0.05, 0.10, 0.01, 0.99, 0.5
    w1, w2, w3, w4, w5, w6, w7, w8 = 0.15, 0.20, 0.25, 0.30, 0.40, 0.45, 0.50, 0.55
    b1, b2 = 0.35, 0.60
    h1, h2 = sig(w1 * i1 + w2 * i2 + b1), sig(w3 * i1 + w4 * i2 + b1)
    o1, o2 = sig(w5 * h1 + w6 * h2 + b2), sig(w7 * h1 + w8 * h2 + b2)
    error = 0.5 * (t1 - o1) ** 2 + 0.5 * (t2 - o2) ** 2
    d_o1, d_o2 = (o1 - t1) * o1 * (1 - o1), (o2 - t2) * o2 * (1 - o2)
    d_h1 = (d_o1 * w5 + d_o2 * w7) * h1 * (1 - h1)
    d_h2 = (d_o1 * w6 + d_o2 * w8) * h2 * (1 - h2)
    return {
        "h": (h1, h2), "o": (o1, o2), "error": error,
        "delta_out": (d_o1, d_o2), "delta_hidden": (d_h1, d_h2),
        "w5": w5 - lr * d_o1 * h1, "w6": w6 - lr * d_o1 * h2,
        "w7": w7 - lr * d_o2 * h1, "w8": w8 - lr * d_o2 * h2,
        "w1": w1 - lr * d_h1 * i1, "w2": w2 - lr * d_h1 * i2,
        "w3": w3 - lr * d_h2 * i1, "w4": w4 - lr * d_h2 * i2,
    }


def test_mazur_published_numbers(capsys):
    r = trace_json(capsys, MAZUR)
    hidden, output = r["forward"]
    assert hidden["z"][0] == pytest.approx(0.3775, abs=1e-12)  # net_h1 in the post
    assert hidden["a"] == pytest.approx([0.593269992, 0.596884378], abs=1e-8)
    assert output["a"] == pytest.approx([0.75136507, 0.772928465], abs=1e-8)
    assert r["loss"] == pytest.approx(0.298371109, abs=1e-8)
    (w5, w7), (w6, w8) = r["updated"][1]["weights"]  # fan_in x fan_out: row = from h1/h2
    assert [w5, w6, w7, w8] == pytest.approx([0.35891648, 0.408666186, 0.511301270, 0.561370121],
                                             abs=1e-8)
    (w1, w3), (w2, w4) = r["updated"][0]["weights"]
    assert [w1, w2, w3, w4] == pytest.approx([0.149780716, 0.19956143, 0.24975114, 0.29950229],
                                             abs=1e-8)


def test_mazur_matches_scalar_hand_derivation(capsys):
    hand = mazur_by_hand()
    r = trace_json(capsys, MAZUR)
    assert r["loss"] == pytest.approx(hand["error"], abs=1e-14)
    assert r["deltas"][1] == pytest.approx(hand["delta_out"], abs=1e-14)
    assert r["deltas"][0] == pytest.approx(hand["delta_hidden"], abs=1e-14)
    assert np.allclose(r["updated"][1]["weights"], [[hand["w5"], hand["w7"]], [hand["w6"], hand["w8"]]],
                       rtol=0, atol=1e-14)
    assert np.allclose(r["updated"][0]["weights"], [[hand["w1"], hand["w3"]], [hand["w2"], hand["w4"]]],
                       rtol=0, atol=1e-14)


def test_mazur_on_every_engine(engine):
    """The library path gives the same trace on each engine (float64)."""
    hand = mazur_by_hand()
    result = trace(load_net(MAZUR), engine=engine).to_dict()
    assert result["loss"] == pytest.approx(hand["error"], abs=1e-12)
    assert result["updated"][1]["weights"][0][0] == pytest.approx(hand["w5"], abs=1e-12)
    assert result["updated"][0]["weights"][0][0] == pytest.approx(hand["w1"], abs=1e-12)


def test_mazur_tables(capsys):
    rc, out, err = run_trace(capsys, MAZUR, "--backend", "cpu")
    assert rc == 0 and err == ""
    for section in ("FORWARD", "LOSS", "BACKWARD", "GRADIENTS AND SGD STEP"):
        assert section in out
    # ~6 significant digits of the published values, on the rows they belong to.
    assert "L = 0.298371" in out
    assert any(line.split()[:1] == ["W[0,0]"] and line.split()[-1] == "0.358916" for line in out.splitlines())
    assert any(line.split()[:1] == ["W[0,0]"] and line.split()[-1] == "0.149781" for line in out.splitlines())


def test_table_columns_are_decimal_aligned(capsys):
    _, out, _ = run_trace(capsys, MAZUR, "--backend", "cpu")
    lines = out.splitlines()
    start = lines.index("  layer 1") + 2  # the output layer's parameter rows, after the header
    rows = lines[start:start + 6]
    assert [r.split()[0] for r in rows] == ["W[0,0]", "W[0,1]", "W[1,0]", "W[1,1]", "b[0]", "b[1]"]
    # The gradients (third field) have mixed signs and lengths; their decimal points line up.
    points = {r.index(" " + r.split()[2]) + 1 + r.split()[2].index(".") for r in rows}
    assert len(points) == 1, rows


# --------------------------------------------------------------------- softmax
def test_softmax_example_by_hand(capsys):
    """examples/trace_softmax.json, derived on paper.

    x = (1, 2); hidden relu: z1 = x @ W1 + b1 = (1 + 1 + 0, -1 + 2 - 3) = (2, -2), a1 = (2, 0);
    logits z2 = 2 * (0.5, 0, -0.5) + 0 * (1, 2, 3) + (0, 0, 1) = (1, 0, 0);
    p = (e, 1, 1) / (e + 2); target 1, so L = log(e + 2) and
    delta2 = p - onehot = (e, 1 - (e + 2), 1) / (e + 2);
    dL/da1 = W2 @ delta2 = ((e - 1) / 2, 1 - e) / (e + 2); relu' = (1, 0).
    """
    e = math.e
    s = e + 2
    delta2 = [e / s, 1 / s - 1, 1 / s]
    d = (e - 1) / 2 / s  # delta of hidden unit 0; unit 1 is dead
    r = trace_json(capsys, SOFTMAX)

    assert r["forward"][0]["z"] == pytest.approx([2, -2], abs=1e-15)
    assert r["forward"][0]["a"] == pytest.approx([2, 0], abs=1e-15)
    assert r["forward"][1]["z"] == pytest.approx([1, 0, 0], abs=1e-15)
    assert r["softmax"] == pytest.approx([e / s, 1 / s, 1 / s], abs=1e-15)
    assert r["loss"] == pytest.approx(math.log(s), abs=1e-14)
    assert r["deltas"][1] == pytest.approx(delta2, abs=1e-15)
    assert r["deltas"][0] == pytest.approx([d, 0.0], abs=1e-15)
    assert np.allclose(r["grads"][1]["weights"], [[2 * v for v in delta2], [0, 0, 0]], atol=1e-15)
    assert r["grads"][1]["bias"] == pytest.approx(delta2, abs=1e-15)
    assert np.allclose(r["grads"][0]["weights"], [[d, 0], [2 * d, 0]], atol=1e-15)
    assert r["grads"][0]["bias"] == pytest.approx([d, 0], abs=1e-15)
    assert np.allclose(r["updated"][0]["weights"], [[1 - 0.1 * d, -1], [0.5 - 0.2 * d, 1]], atol=1e-15)


# -------------------------------------------------------------- JSON and SGD
def test_json_schema(capsys):
    r = trace_json(capsys, MAZUR)
    for key in ("forward", "loss", "deltas", "grads", "updated"):
        assert key in r
    assert isinstance(r["loss"], float)
    assert len(r["forward"]) == len(r["deltas"]) == len(r["grads"]) == len(r["updated"]) == 2
    assert all(set(f) == {"z", "a"} for f in r["forward"])
    assert all(set(g) == {"weights", "bias"} for g in r["grads"] + r["updated"])
    assert np.shape(r["grads"][0]["weights"]) == (2, 2)  # fan_in x fan_out
    assert r["engine"] == "cpu" and r["dtype"] == "float64"


@pytest.mark.parametrize("path", [MAZUR, SOFTMAX], ids=["mse", "softmax"])
def test_sgd_step_is_w_minus_lr_grad(capsys, path):
    net = json.loads(path.read_text())
    lr = net["learning_rate"]
    r = trace_json(capsys, path)
    for layer, grad, new in zip(net["layers"], r["grads"], r["updated"]):
        for key, name in (("weights", "weights"), ("bias", "bias")):
            expected = np.asarray(layer[key]) - lr * np.asarray(grad[name])
            assert np.allclose(new[name], expected, rtol=0, atol=1e-15)
            assert not np.allclose(new[name], layer[key]) or not np.any(grad[name])


@pytest.mark.parametrize("path", [MAZUR, SOFTMAX], ids=["mse", "softmax"])
def test_gradients_are_outer_products_of_deltas(capsys, path):
    net = json.loads(path.read_text())
    r = trace_json(capsys, path)
    inputs = [net["input"]] + [f["a"] for f in r["forward"][:-1]]
    for a_prev, delta, grad in zip(inputs, r["deltas"], r["grads"]):
        assert np.allclose(grad["weights"], np.outer(a_prev, delta), rtol=0, atol=1e-15)
        assert np.allclose(grad["bias"], delta, rtol=0, atol=1e-15)


def test_mse_class_index_target_is_one_hot(capsys, tmp_path):
    net = json.loads(MAZUR.read_text())
    net["target"] = 1  # same as [0, 1]
    by_index = tmp_path / "index.json"
    by_index.write_text(json.dumps(net))
    net["target"] = [0.0, 1.0]
    by_vector = tmp_path / "vector.json"
    by_vector.write_text(json.dumps(net))
    assert trace_json(capsys, by_index)["loss"] == trace_json(capsys, by_vector)["loss"]


def test_python_api_accepts_a_dict():
    net = json.loads(MAZUR.read_text())
    result = trace(net, engine="cpu")
    assert result.loss == pytest.approx(0.298371109, abs=1e-8)
    assert "GRADIENTS AND SGD STEP" in result.format()


# ------------------------------------------------------------------ validation
def _mazur(**changes):
    net = json.loads(MAZUR.read_text())
    net.update(changes)
    return net


def _softmax(**changes):
    net = json.loads(SOFTMAX.read_text())
    net.update(changes)
    return net


def _layer_change(net, index, **changes):
    net["layers"][index].update(changes)
    return net


def _without(net, key):
    del net[key]
    return net


INVALID = [
    ("missing-key", _without(_mazur(), "learning_rate"), "missing key 'learning_rate'"),
    ("misspelled-key", {**_mazur(), "learning_rat": 0.1}, "did you mean 'learning_rate'"),
    ("top-level-list", [1, 2], "top level must be a JSON object"),
    ("layer-missing-bias", {**_mazur(), "layers": [{"weights": [[1.0], [1.0]], "activation": "relu"}]},
     "layers[0]: missing key 'bias'"),
    ("ragged", _layer_change(_mazur(), 0, weights=[[0.15, 0.25], [0.2]]), "is ragged: row 1 has 1"),
    ("input-vs-fan-in", _mazur(input=[0.05, 0.1, 0.2]),
     "layers[0].weights has 2 rows (fan_in) but the input has 3"),
    ("chain", _layer_change(_mazur(), 1, weights=[[0.4, 0.5], [0.45, 0.55], [0.1, 0.1]]),
     "layers[1].weights has 3 rows (fan_in) but layers[0] output has 2"),
    ("bias-length", _layer_change(_mazur(), 0, bias=[0.35]),
     "layers[0].bias has 1 numbers but the layer has 2 units"),
    ("activation", _layer_change(_mazur(), 0, activation="sigmoidd"),
     "unknown activation 'sigmoidd' (did you mean 'sigmoid'?)"),
    ("class-out-of-range", _softmax(target=3), "class index 3 is out of range"),
    ("negative-class", _softmax(target=-1), "class index -1 is out of range"),
    ("fractional-class", _softmax(target=1.5), "must be a class index (a whole number)"),
    ("softmax-vector", _softmax(target=[0, 1, 0]), "softmax_cross_entropy takes a class index"),
    ("target-length", _mazur(target=[0.01]), "target has length 1 but the network has 2 outputs"),
    ("lr-zero", _mazur(learning_rate=0), "learning_rate must be a positive number"),
    ("lr-negative", _mazur(learning_rate=-0.5), "learning_rate must be a positive number"),
    ("lr-string", _mazur(learning_rate="0.5"), "learning_rate must be a positive number"),
    ("loss", _mazur(loss="hinge"), "choose one of: softmax_cross_entropy, mse"),
    ("bool-weight", _layer_change(_mazur(), 0, weights=[[True, 0.25], [0.2, 0.3]]),
     "must be a number, got true"),
    ("no-layers", _mazur(layers=[]), "layers must be a non-empty list"),
    ("nested-input", _mazur(input=[[0.05, 0.1]]), "input must be a flat list"),
]


@pytest.mark.parametrize("net,expected", [pytest.param(n, e, id=i) for i, n, e in INVALID])
def test_invalid_net_exits_2_with_one_line(capsys, tmp_path, net, expected):
    path = tmp_path / "net.json"
    path.write_text(json.dumps(net))
    rc, out, err = run_trace(capsys, path)
    assert rc == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("handprop trace: error: "), err
    assert expected in err
    assert "Traceback" not in err


# Column 18 is the "]" after the trailing comma: 2 spaces, "input" (7), ":", " ", "[1, 2,".
@pytest.mark.parametrize("text,expected", [
    ('{\n  "loss": "mse",\n  "input": [1, 2,]\n}\n', "not valid JSON: Expecting value at line 3, column 18"),
    ('{"loss": "mse", "input": [NaN]}', "NaN is not a valid JSON number"),
    ("", "not valid JSON"),
], ids=["trailing-comma", "nan", "empty"])
def test_bad_json_names_line_and_column(capsys, tmp_path, text, expected):
    path = tmp_path / "net.json"
    path.write_text(text)
    rc, _, err = run_trace(capsys, path)
    assert rc == 2 and expected in err and err.count("\n") == 1


def test_missing_file(capsys, tmp_path):
    rc, _, err = run_trace(capsys, tmp_path / "nope.json")
    assert rc == 2 and "not found" in err and "nope.json" in err and err.count("\n") == 1


def test_directory_instead_of_file(capsys, tmp_path):
    rc, _, err = run_trace(capsys, tmp_path)
    assert rc == 2 and "is a directory" in err


def test_library_raises_the_error_family():
    with pytest.raises(ShapeError):
        parse_net(_mazur(input=[1.0]))
    with pytest.raises(DataError):
        parse_net(_softmax(target=7))
    with pytest.raises(ConfigError):
        parse_net(_mazur(learning_rate=0))


def test_unknown_env_backend_exits_2_with_valid_names(capsys, monkeypatch):
    monkeypatch.setenv("HANDPROP_BACKEND", "gpu")
    rc, out, err = run_trace(capsys, MAZUR)
    assert rc == 2 and out == ""
    assert "unknown engine 'gpu'" in err and "cpu, numba, cuda, auto" in err


def test_explicit_unavailable_engine_names_the_reason(capsys):
    from handprop.engines import engine_status

    status = engine_status("cuda")
    if status.available:
        pytest.skip("cuda is usable here")
    rc, _, err = run_trace(capsys, MAZUR, "--backend", "cuda")
    assert rc == 2 and status.reason in err and err.count("\n") == 1


def test_console_script_prints_no_traceback(tmp_path):
    """A real process: the error path must not leak a traceback to the terminal."""
    path = tmp_path / "net.json"
    path.write_text(json.dumps(_mazur(learning_rate=-1)))
    proc = subprocess.run([sys.executable, "-m", "handprop", "trace", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "learning_rate" in proc.stderr
    assert "Traceback" not in proc.stderr
