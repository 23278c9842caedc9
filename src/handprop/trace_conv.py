"""``handprop trace`` for networks with convolution and pooling: every feature map, delta and
gradient of one forward pass, backward pass and SGD step, the pen-and-paper conv exercise.

A NET.json whose layers carry a ``type`` (see ``examples/trace_conv.json``)::

    {"input": [[1, 2, 0, 1], ...],          # (H, W) for one channel, or (C, H, W)
     "layers": [{"type": "conv", "weights": [[1, 0], [-1, 1]], "bias": [0.5],
                 "activation": "relu", "stride": 1, "padding": 0},
                {"type": "maxpool", "size": 2, "stride": 1},
                {"type": "flatten"},
                {"type": "dense", "weights": [[0.1, -0.1], ...], "bias": [0, 0],
                 "activation": "identity"}],
     "loss": "softmax_cross_entropy", "target": 1, "learning_rate": 0.1}

Conv ``weights`` are (filters, channels, kh, kw), or (kh, kw) for one filter on
one channel; ``padding`` is a number, four numbers (top, bottom, left, right)
or ``"same"``. Pooling layers (``maxpool``, ``avgpool``) take ``size`` and
``stride`` (default: the size). Dense layers are as in ``handprop.trace``.

The numbers come from the library's own layers (``Conv2D``, ``MaxPool2D``,
``AvgPool2D``, ``Flatten``, ``Dense``) in float64; only the pre-activations
and the deltas, which layers do not keep, are computed here.
"""

from __future__ import annotations

import json
import math
import textwrap
from dataclasses import dataclass, field

import numpy as np

from .engines.base import ACTIVATIONS
from .errors import ConfigError, ShapeError
from .trace import (_check_keys, _check_top_level, _matrix, _num, _number, _parse_target,
                    _suggest, _table, _vector)

LAYER_FIELDS = {
    "conv": (("type", "weights", "bias", "activation"), ("stride", "padding", "alpha")),
    "maxpool": (("type", "size"), ("stride",)),
    "avgpool": (("type", "size"), ("stride",)),
    "flatten": (("type",), ()),
    "dense": (("weights", "bias", "activation"), ("type", "alpha")),
}


@dataclass
class ConvNetSpec:
    layers: list[dict]  # one dict per layer: "type" plus its parsed fields
    loss: str
    input: np.ndarray  # (C, H, W), float64
    target: int | np.ndarray
    learning_rate: float
    source: str = "NET.json"
    description: str = ""


def is_conv_net(obj) -> bool:
    """A NET.json object whose layers say their ``type``."""
    layers = obj.get("layers") if isinstance(obj, dict) else None
    return isinstance(layers, list) and any(isinstance(raw, dict) and "type" in raw
                                            for raw in layers)


def _tensor(value, depth: int, where: str) -> np.ndarray:
    """A rectangular nested list of ``depth`` levels of finite numbers."""
    if depth == 2:
        return _matrix(value, where)
    if not isinstance(value, list) or not value:
        raise ShapeError(f"{where} must be a non-empty nested list {depth} levels deep")
    parts = [_tensor(v, depth - 1, f"{where}[{i}]") for i, v in enumerate(value)]
    for i, part in enumerate(parts):
        if part.shape != parts[0].shape:
            raise ShapeError(f"{where} is ragged: [{i}] has shape {part.shape} but [0] has "
                             f"{parts[0].shape}")
    return np.stack(parts)


def _depth(value) -> int:
    depth = 0
    while isinstance(value, list) and value:
        value, depth = value[0], depth + 1
    return depth


def _positive_pair(value, where: str) -> list[int]:
    pair = [value, value] if not isinstance(value, list) else value
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1
                                 for v in pair):
        raise ConfigError(f"{where} must be a positive whole number or [h, w], got "
                          f"{json.dumps(value)}")
    return pair


def parse_conv_net(obj: dict, source: str = "NET.json") -> ConvNetSpec:
    """Validate a decoded conv NET.json object; errors name the offending key."""
    from .nn.conv import resolve_padding

    loss, lr = _check_top_level(obj, source)
    depth = _depth(obj["input"])
    if depth not in (2, 3):
        raise ShapeError(f"{source}: input must be an image, (height, width) nested lists for one "
                         f"channel or (channels, height, width); got {depth} levels of nesting")
    x = _tensor(obj["input"], depth, f"{source}: input")
    x = x[None] if depth == 2 else x
    if not isinstance(obj["layers"], list) or not obj["layers"]:
        raise ConfigError(f"{source}: layers must be a non-empty list of objects")
    layers = []
    for i, raw in enumerate(obj["layers"]):
        where = f"{source}: layers[{i}]"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where} must be an object with a 'type'")
        kind = raw.get("type", "dense")
        if kind not in LAYER_FIELDS:
            raise ConfigError(f"{where}.type: unknown layer type {kind!r}"
                              f"{_suggest(str(kind), LAYER_FIELDS)}; choose one of: "
                              f"{', '.join(LAYER_FIELDS)}")
        _check_keys(raw, *LAYER_FIELDS[kind], where)
        spec = {"type": kind}
        if kind in ("conv", "dense"):
            act = raw["activation"]
            if act not in ACTIVATIONS:
                raise ConfigError(f"{where}.activation: unknown activation {act!r}"
                                  f"{_suggest(str(act), ACTIVATIONS)}; choose one of: "
                                  f"{', '.join(ACTIVATIONS)}")
            spec["activation"] = act
            spec["alpha"] = _number(raw.get("alpha", 0.01), f"{where}.alpha")
            spec["bias"] = _vector(raw["bias"], f"{where}.bias")
        if kind == "conv":
            w_depth = _depth(raw["weights"])
            if w_depth not in (2, 4):
                raise ShapeError(f"{where}.weights must be (filters, channels, kh, kw) nested "
                                 f"lists, or (kh, kw) for one filter on one channel; got "
                                 f"{w_depth} levels of nesting")
            W = _tensor(raw["weights"], w_depth, f"{where}.weights")
            spec["weights"] = W[None, None] if w_depth == 2 else W
            if len(spec["bias"]) != spec["weights"].shape[0]:
                raise ShapeError(f"{where}.bias has {len(spec['bias'])} numbers but there are "
                                 f"{spec['weights'].shape[0]} filters; give one bias per filter")
            spec["stride"] = _positive_pair(raw.get("stride", 1), f"{where}.stride")
            padding = raw.get("padding", 0)
            spec["padding"] = padding if padding == "same" else list(resolve_padding(
                padding, tuple(spec["weights"].shape[2:]), tuple(spec["stride"])))
        elif kind == "dense":
            spec["weights"] = _matrix(raw["weights"], f"{where}.weights")
        elif kind in ("maxpool", "avgpool"):
            spec["size"] = _positive_pair(raw["size"], f"{where}.size")
            spec["stride"] = _positive_pair(raw.get("stride", raw["size"]), f"{where}.stride")
        layers.append(spec)
    description = obj.get("description", "")
    if not isinstance(description, str):
        raise ConfigError(f"{source}: description must be a string")
    net = ConvNetSpec(layers, loss, x, None, float(lr), source, description)
    model = _build(net, "cpu")  # shapes checked by the layers themselves
    net.target = _parse_target(obj["target"], loss, model.output_dim, source)
    return net


# ------------------------------------------------------------------- tracing
def _recording(cls):
    """``cls`` that remembers its input and the gradient arriving at its output."""

    def forward(self, x, training=False):
        self.seen_input = x
        return cls.forward(self, x, training)

    def backward(self, grad_out, need_input_grad=True):
        self.grad_out = grad_out
        self.grad_in = cls.backward(self, grad_out, True)
        return self.grad_in

    return type(cls.__name__, (cls,), {"forward": forward, "backward": backward})


def _build(net: ConvNetSpec, engine):
    from .nn.conv import AvgPool2D, Conv2D, Flatten, MaxPool2D
    from .nn.layers import Dense
    from .nn.model import Sequential

    layers = []
    for spec in net.layers:
        kind = spec["type"]
        if kind == "conv":
            W = spec["weights"]
            layer = _recording(Conv2D)(W.shape[0], tuple(W.shape[2:]), tuple(spec["stride"]),
                                       spec["padding"], spec["activation"], alpha=spec["alpha"])
        elif kind == "dense":
            layer = _recording(Dense)(spec["weights"].shape[1], spec["activation"],
                                      alpha=spec["alpha"])
        elif kind == "flatten":
            layer = _recording(Flatten)()
        else:
            pool = MaxPool2D if kind == "maxpool" else AvgPool2D
            layer = _recording(pool)(tuple(spec["size"]), tuple(spec["stride"]))
        layers.append(layer)
    try:
        model = Sequential(layers, input_shape=net.input.shape, engine=engine, dtype="float64")
    except ShapeError as exc:
        raise ShapeError(f"{net.source}: {exc} (layers are numbered from 0 as in the file)") from None
    weights = {}
    for i, (spec, layer) in enumerate(zip(net.layers, model.layers)):
        if "weights" not in spec:
            continue
        want = tuple(layer.params["W"].shape)
        if spec["weights"].shape != want:
            raise ShapeError(f"{net.source}: layers[{i}].weights has shape "
                             f"{spec['weights'].shape} but this layer needs {want} for inputs of "
                             f"shape {layer.input_shape}")
        units = want[1] if spec["type"] == "dense" else want[0]
        if len(spec["bias"]) != units:
            raise ShapeError(f"{net.source}: layers[{i}].bias has {len(spec['bias'])} numbers but "
                             f"the layer has {units} units; give one bias per unit")
        weights[f"layer{i}.W"], weights[f"layer{i}.b"] = spec["weights"], spec["bias"]
    model.set_weights(weights)
    return model


@dataclass
class ConvTrace:
    net: ConvNetSpec
    engine: str
    layers: list[dict] = field(default_factory=list)  # one record per layer (host arrays)
    loss: float = 0.0
    target_vector: np.ndarray | None = None
    probabilities: np.ndarray | None = None

    def to_dict(self) -> dict:
        """The ``--json`` object: per layer its forward maps, backward maps, gradients and
        updated parameters (plain nested lists; ``null`` where a layer has none)."""
        def lists(record, keys):
            return {k: record[k].tolist() for k in keys if k in record}

        net = self.net
        out = {"source": net.source, "engine": self.engine, "dtype": "float64",
               "loss_function": net.loss, "learning_rate": net.learning_rate,
               "input": net.input.tolist(),
               "target": net.target if isinstance(net.target, int) else net.target.tolist(),
               "layers": [r["name"] for r in self.layers],
               "forward": [lists(r, ("z", "a", "argmax")) for r in self.layers],
               "loss": self.loss,
               "backward": [lists(r, ("grad_a", "act_deriv", "delta", "grad_input"))
                            for r in self.layers],
               "grads": [{"weights": r["grad_weights"].tolist(), "bias": r["grad_bias"].tolist()}
                         if "grad_weights" in r else None for r in self.layers],
               "updated": [{"weights": r["new_weights"].tolist(), "bias": r["new_bias"].tolist()}
                           if "new_weights" in r else None for r in self.layers]}
        if self.probabilities is not None:
            out["softmax"] = self.probabilities.tolist()
        return out

    def format(self) -> str:
        return format_conv_trace(self)


def trace_conv(net: ConvNetSpec, engine=None) -> ConvTrace:
    """One forward pass, backward pass and SGD step of a conv ``net`` with the library."""
    from .engines import get_engine
    from .errors import NumericalError
    from .nn.losses import get_loss
    from .optim.optimizers import SGD

    engine = get_engine(engine)
    model = _build(net, engine)
    loss_fn = get_loss(net.loss)
    targets = (np.array([net.target]) if isinstance(net.target, int) else net.target[None, :])
    ts = engine.asarray(targets)
    outputs = model.forward(engine.asarray(net.input[None], "float64"), training=True)
    value, grad = loss_fn(engine, outputs, ts)
    value = engine.to_float(value)
    if not math.isfinite(value):
        raise NumericalError(f"the loss is {value}; the weights or inputs are too large for "
                             f"float64 here")
    model.backward(grad)
    xp, host = engine.xp, (lambda a: np.array(engine.to_numpy(a))[0])
    result = ConvTrace(net=net, engine=engine.name, loss=value)
    result.target_vector = host(loss_fn.targets_as_array(engine, outputs, ts))
    if net.loss == "softmax_cross_entropy":
        result.probabilities = host(xp.exp(engine.log_softmax(outputs)))
    for spec, layer in zip(net.layers, model.layers):
        record = {"name": layer.describe(), "type": spec["type"], "layer": layer,
                  "in_shape": layer.input_shape, "out_shape": layer.output_shape,
                  "input": host(layer.seen_input), "grad_a": host(layer.grad_out),
                  "grad_input": host(layer.grad_in)}
        if spec["type"] in ("conv", "dense"):
            record.update(_pre_activations(engine, layer, spec["type"], host))
        if spec["type"] == "maxpool":
            record["argmax"] = host(layer.argmax)
        result.layers.append(record)
    # Each layer's output is what the next one saw; the last one's, the model's.
    for record, following in zip(result.layers, result.layers[1:]):
        record["a"] = following["input"]
    result.layers[-1]["a"] = host(outputs)
    SGD(lr=net.learning_rate).step(model)
    for record, layer in zip(result.layers, model.layers):
        if "W" in layer.params:
            record["new_weights"] = np.array(engine.to_numpy(layer.params["W"]))
            record["new_bias"] = np.array(engine.to_numpy(layer.params["b"]))
    return result


def _pre_activations(engine, layer, kind, host):
    """z, f'(z) and the delta dL/dz of a conv or dense layer, shaped like its output."""
    xp = engine.xp
    W, b = layer.params["W"], layer.params["b"]
    if kind == "dense":
        z, out, grad = layer.x @ W + b, layer.out, layer.grad_out
        shape = None
    else:  # the rows the layer multiplied, as (positions, filters)
        cols = engine.im2col(layer.x, layer.kernel, layer.stride, layer.padding)
        z = cols @ xp.reshape(W, (W.shape[0], -1)).T + b
        out = layer.out_rows
        grad = xp.reshape(xp.permute_dims(layer.grad_out, (0, 2, 3, 1)), (-1, W.shape[0]))
        _, oh, ow = layer.output_shape
        shape = (oh, ow, W.shape[0])

    def maps(rows):
        rows = np.array(engine.to_numpy(rows))
        return rows[0] if shape is None else rows.reshape(shape).transpose(2, 0, 1)

    ones = xp.ones_like(out)
    return {"z": maps(z),
            "act_deriv": maps(engine.act_backward(ones, out, layer.activation, layer.alpha)),
            "delta": maps(engine.act_backward(grad, out, layer.activation, layer.alpha)),
            "weights": np.array(engine.to_numpy(W)), "bias": np.array(engine.to_numpy(b)),
            "grad_weights": np.array(engine.to_numpy(layer.grads["W"])),
            "grad_bias": np.array(engine.to_numpy(layer.grads["b"]))}


# ---------------------------------------------------------------- formatting
def _grid(matrix: np.ndarray, indent: str = "      ", marks=None) -> list[str]:
    """A 2-D array as right-aligned columns; ``marks`` (bools) are starred."""
    cells = [[_num(v) + ("*" if marks is not None and marks[r, c] else "")
              for c, v in enumerate(row)] for r, row in enumerate(matrix)]
    width = max(len(cell) for row in cells for cell in row)
    return [indent + "  ".join(cell.rjust(width) for cell in row) for row in cells]


def _maps(label: str, maps: np.ndarray, indent: str = "    ", marks=None) -> list[str]:
    """Each channel of a (C, H, W) array as a grid, titled ``label[c]``."""
    out = []
    for c in range(maps.shape[0]):
        out.append(f"{indent}{label}[{c}]")
        out += _grid(maps[c], indent + "  ", None if marks is None else marks[c])
    return out


def _argmax_marks(record) -> np.ndarray:
    """Which inputs of a max-pool were picked by some window."""
    c, h, w = record["in_shape"]
    picked = np.zeros((c, h, w), dtype=bool)
    layer = record["layer"]
    (_, pw), (sh, sw) = layer.size, layer.stride
    for ch, p, q in np.ndindex(*record["argmax"].shape):
        k = int(record["argmax"][ch, p, q])
        picked[ch, p * sh + k // pw, q * sw + k % pw] = True
    return picked


def format_conv_trace(t: ConvTrace) -> str:
    net = t.net
    shapes = " -> ".join(f"{r['name']} {'x'.join(map(str, r['out_shape']))}" for r in t.layers)
    out = [f"trace of {net.source} on engine {t.engine}, float64"]
    if net.description:
        out.append(textwrap.fill(net.description, width=100))
    out.append(f"network: input {'x'.join(map(str, net.input.shape))} -> {shapes}; "
               f"loss {net.loss}; learning rate {_num(net.learning_rate)}")
    out += ["", "FORWARD   conv: z[f] = sum_c W[f, c] (*) x[c] + b[f] (cross-correlation), "
                "a = f(z);   pool: a = max or mean of each window"]
    out += _maps("x", net.input, indent="  ")
    for i, r in enumerate(t.layers):
        out += ["", f"  layer {i}: {r['name']}"]
        kind = r["type"]
        if kind == "conv":
            for f in range(r["weights"].shape[0]):
                for c in range(r["weights"].shape[1]):
                    out.append(f"    W[{f}, {c}]")
                    out += _grid(r["weights"][f, c])
                out.append(f"    b[{f}] = {_num(r['bias'][f])}")
            out += _maps("z", r["z"]) + _maps("a", r["a"])
        elif kind in ("maxpool", "avgpool"):
            if kind == "maxpool":
                out.append("    * marks the inputs some window picked (gradients flow only there)")
                out += _maps("input", r["input"], marks=_argmax_marks(r))
            out += _maps("a", r["a"])
        elif kind == "flatten":
            out += _table(["index", "a"], [[j, v] for j, v in enumerate(r["a"])])
        else:
            out += _table(["unit", "z", "a"], [[j, r["z"][j], r["a"][j]] for j in range(len(r["a"]))])
    last = t.layers[-1]
    out.append("")
    if net.loss == "mse":
        out.append("LOSS   mse: L = 1/2 * sum_k (a_k - t_k)^2,   dL/da = a - t")
        out += _table(["unit", "a", "t", "dL/da"],
                      [[k, last["a"][k], t.target_vector[k], last["grad_a"][k]]
                       for k in range(len(last["a"]))], indent="  ")
    else:
        out.append("LOSS   softmax_cross_entropy: p = softmax(a), L = -log p[target],   "
                   "dL/da = p - onehot")
        out += _table(["unit", "a (logit)", "p", "onehot", "dL/da"],
                      [[k, last["a"][k], t.probabilities[k], t.target_vector[k], last["grad_a"][k]]
                       for k in range(len(last["a"]))], indent="  ")
    out.append(f"  L = {_num(t.loss)}")
    out += ["", "BACKWARD   delta = dL/dz = dL/da * f'(z);   max-pool: each dL/da goes to its "
                "window's arg-max;   avg-pool: spread evenly;   overlaps add up"]
    for i in range(len(t.layers) - 1, -1, -1):
        r = t.layers[i]
        out += ["", f"  layer {i}: {r['name']}"]
        if r["type"] == "dense":
            out += _table(["unit", "dL/da", "f'(z)", "delta"],
                          [[j, r["grad_a"][j], r["act_deriv"][j], r["delta"][j]]
                           for j in range(len(r["delta"]))])
        elif r["type"] == "conv":
            out += _maps("dL/da", r["grad_a"]) + _maps("f'(z)", r["act_deriv"])
            out += _maps("delta", r["delta"])
        elif r["type"] == "flatten":
            out.append("    dL/da reshaped to the input's maps:")
            out += _maps("dL/dx", r["grad_input"])
        else:
            out += _maps("dL/da", r["grad_a"]) + _maps("dL/dx", r["grad_input"])
        if r["type"] == "conv" and i > 0:
            out.append("    dL/dx[c] = sum_f (full convolution of delta[f] with W[f, c]):")
            out += _maps("dL/dx", r["grad_input"])
    out += ["", f"GRADIENTS AND SGD STEP   conv: dL/dW[f, c] = delta[f] (*) x[c], "
                f"dL/db[f] = sum delta[f];   dense: dL/dW = outer(a_prev, delta);   "
                f"new = old - {_num(net.learning_rate)} * grad"]
    for i, r in enumerate(t.layers):
        if "grad_weights" not in r:
            continue
        out += ["", f"  layer {i}: {r['name']}"]
        if r["type"] == "conv":
            for f in range(r["weights"].shape[0]):
                for c in range(r["weights"].shape[1]):
                    for label, key in (("old", "weights"), ("grad", "grad_weights"),
                                       ("new", "new_weights")):
                        out.append(f"    W[{f}, {c}] {label}")
                        out += _grid(r[key][f, c])
            out += _table(["param", "old", "grad", "new"],
                          [[f"b[{f}]", r["bias"][f], r["grad_bias"][f], r["new_bias"][f]]
                           for f in range(len(r["bias"]))])
        else:
            rows = [[f"W[{a},{c}]", r["weights"][a, c], r["grad_weights"][a, c],
                     r["new_weights"][a, c]]
                    for a in range(r["weights"].shape[0]) for c in range(r["weights"].shape[1])]
            rows += [[f"b[{c}]", r["bias"][c], r["grad_bias"][c], r["new_bias"][c]]
                     for c in range(len(r["bias"]))]
            out += _table(["param", "old", "grad", "new"], rows)
    return "\n".join(out)


__all__ = ["ConvNetSpec", "ConvTrace", "format_conv_trace", "is_conv_net", "parse_conv_net",
           "trace_conv"]
