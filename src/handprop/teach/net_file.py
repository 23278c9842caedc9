"""The NET.json file of ``handprop trace``: reading it and checking every key, dense and conv.

A dense network (``examples/trace_mse_2-2-2.json``)::

    {"layers": [{"weights": [[0.15, 0.25], [0.20, 0.30]],   # fan_in x fan_out
                 "bias": [0.35, 0.35], "activation": "sigmoid"}, ...],
     "loss": "mse",                  # or "softmax_cross_entropy"
     "input": [0.05, 0.10],          # one sample
     "target": [0.01, 0.99],         # a target vector, or a class index
     "learning_rate": 0.5}

``weights[i][j]`` connects input ``i`` to unit ``j``, so ``z = a_prev @ W + b``.
A layer may also give ``alpha`` (the leaky_relu slope); the file may carry a
free-text ``description``.

A network whose layers carry a ``type`` takes an image input
(``examples/trace_conv.json``)::

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
``stride`` (default: the size). Dense layers are as in a dense network.

Every error names the offending key.
"""

from __future__ import annotations

import difflib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..engines.base import ACTIVATIONS
from ..errors import ConfigError, DataError, ShapeError

TRACE_LOSSES = ("softmax_cross_entropy", "mse")
REQUIRED_KEYS = ("layers", "loss", "input", "target", "learning_rate")
OPTIONAL_KEYS = ("description",)
LAYER_KEYS = ("weights", "bias", "activation")
OPTIONAL_LAYER_KEYS = ("alpha",)

LAYER_FIELDS = {
    "conv": (("type", "weights", "bias", "activation"), ("stride", "padding", "alpha")),
    "maxpool": (("type", "size"), ("stride",)),
    "avgpool": (("type", "size"), ("stride",)),
    "flatten": (("type",), ()),
    "dense": (("weights", "bias", "activation"), ("type", "alpha")),
}


# --------------------------------------------------------------------- specs
@dataclass
class LayerSpec:
    weights: np.ndarray  # (fan_in, fan_out), float64
    bias: np.ndarray  # (fan_out,)
    activation: str
    alpha: float = 0.01


@dataclass
class NetSpec:
    layers: list[LayerSpec]
    loss: str
    input: np.ndarray  # (features,)
    target: int | np.ndarray  # class index, or a vector of the output width
    learning_rate: float
    source: str = "NET.json"
    description: str = ""


@dataclass
class ConvNetSpec:
    layers: list[dict]  # one dict per layer: "type" plus its parsed fields
    loss: str
    input: np.ndarray  # (C, H, W), float64
    target: int | np.ndarray
    learning_rate: float
    source: str = "NET.json"
    description: str = ""


# -------------------------------------------------------------------- reading
def load_net(path) -> NetSpec | ConvNetSpec:
    """Read and validate a NET.json file (see the module docstring)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"network file {str(path)!r} not found; give the path of a NET.json "
                          f"file (examples/trace_mse_2-2-2.json shows the format)") from None
    except IsADirectoryError:
        raise ConfigError(f"{str(path)!r} is a directory; give the path of a NET.json file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); "
                          f"save the network as a UTF-8 JSON file") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    return parse_net(_loads(text, str(path)), source=str(path))


def _loads(text: str, source: str):
    def reject_constant(name):
        # Python's json accepts NaN/Infinity, which are not JSON and not usable weights.
        raise ConfigError(f"{source}: {name} is not a valid JSON number; use finite numbers only")

    try:
        return json.loads(text, parse_constant=reject_constant)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{source}: not valid JSON: {exc.msg} at line {exc.lineno}, "
                          f"column {exc.colno}") from None


def _suggest(key: str, choices) -> str:
    close = difflib.get_close_matches(key, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_top_level(obj: dict, source: str) -> tuple[str, float]:
    """The keys, the loss and the learning rate of any NET.json (dense or conv)."""
    _check_keys(obj, REQUIRED_KEYS, OPTIONAL_KEYS, source)
    loss = obj["loss"]
    if loss not in TRACE_LOSSES:
        raise ConfigError(f"{source}: loss {loss!r} is not supported by trace; "
                          f"choose one of: {', '.join(TRACE_LOSSES)}")
    lr = obj["learning_rate"]
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ConfigError(f"{source}: learning_rate must be a positive number, got {json.dumps(lr)}")
    return loss, lr


def _check_keys(obj: dict, required, optional, where: str) -> None:
    missing = [k for k in required if k not in obj]
    if missing:
        raise ConfigError(f"{where}: missing key{'s' if len(missing) > 1 else ''} "
                          f"{', '.join(repr(k) for k in missing)}; it needs "
                          f"{', '.join(repr(k) for k in required)}")
    unknown = [k for k in obj if k not in required and k not in optional]
    if unknown:
        k = unknown[0]
        raise ConfigError(f"{where}: unknown key {k!r}{_suggest(k, tuple(required) + tuple(optional))}; "
                          f"allowed keys are {', '.join(repr(k) for k in tuple(required) + tuple(optional))}")


def _number(value, where: str) -> float:
    # bool is an int subclass in Python, but `true` is no weight.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where} must be a number, got {json.dumps(value)}")
    value = float(value)
    if not math.isfinite(value):
        raise DataError(f"{where} must be finite, got {value}")
    return value


def _vector(value, where: str, what: str = "numbers") -> np.ndarray:
    if not isinstance(value, list):
        raise ConfigError(f"{where} must be a list of {what}, got {json.dumps(value)[:60]}")
    if not value:
        raise ShapeError(f"{where} is empty; it needs at least one number")
    if any(isinstance(v, list) for v in value):
        raise ShapeError(f"{where} must be a flat list of numbers, not nested lists")
    return np.array([_number(v, f"{where}[{i}]") for i, v in enumerate(value)], dtype=np.float64)


def _matrix(value, where: str) -> np.ndarray:
    if not isinstance(value, list) or not value or not all(isinstance(r, list) for r in value):
        raise ShapeError(f"{where} must be a fan_in x fan_out nested list (one row per input, "
                         f"one number per unit in each row), got {json.dumps(value)[:60]}")
    rows = [_vector(r, f"{where}[{i}]") for i, r in enumerate(value)]
    width = len(rows[0])
    for i, r in enumerate(rows):
        if len(r) != width:
            raise ShapeError(f"{where} is ragged: row {i} has {len(r)} numbers but row 0 has {width}; "
                             f"every row (one per input) needs one number per unit")
    return np.stack(rows)


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


# -------------------------------------------------------------------- parsing
def parse_net(obj, source: str = "NET.json"):
    """Validate a decoded NET.json object; errors name the offending key. Networks with
    convolution or pooling (layers with a ``type``) are parsed by ``parse_conv_net``."""
    if is_conv_net(obj):
        return parse_conv_net(obj, source)
    if not isinstance(obj, dict):
        raise ConfigError(f"{source}: the top level must be a JSON object with keys "
                          f"{', '.join(REQUIRED_KEYS)}")
    loss, lr = _check_top_level(obj, source)

    x = _vector(obj["input"], f"{source}: input")

    raw_layers = obj["layers"]
    if not isinstance(raw_layers, list) or not raw_layers:
        raise ConfigError(f"{source}: layers must be a non-empty list of objects with "
                          f"{', '.join(LAYER_KEYS)}")
    layers = []
    width, width_from = len(x), "the input"
    for i, raw in enumerate(raw_layers):
        where = f"{source}: layers[{i}]"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where} must be an object with {', '.join(LAYER_KEYS)}")
        _check_keys(raw, LAYER_KEYS, OPTIONAL_LAYER_KEYS, where)
        act = raw["activation"]
        if act not in ACTIVATIONS:
            suggestion = _suggest(act, ACTIVATIONS) if isinstance(act, str) else ""
            raise ConfigError(f"{where}.activation: unknown activation {act!r}{suggestion}; "
                              f"choose one of: {', '.join(ACTIVATIONS)}")
        alpha = _number(raw.get("alpha", 0.01), f"{where}.alpha")
        if not 0.0 <= alpha < 1.0:
            raise ConfigError(f"{where}.alpha: the leaky_relu slope must be in [0, 1), got {alpha}")
        W = _matrix(raw["weights"], f"{where}.weights")
        fan_in, fan_out = W.shape
        if fan_in != width:
            raise ShapeError(f"{where}.weights has {fan_in} rows (fan_in) but {width_from} has "
                             f"{width} values; weights are fan_in x fan_out, one row per input")
        b = _vector(raw["bias"], f"{where}.bias")
        if len(b) != fan_out:
            raise ShapeError(f"{where}.bias has {len(b)} numbers but the layer has {fan_out} units "
                             f"(columns of weights); give one bias per unit")
        layers.append(LayerSpec(W, b, act, alpha))
        width, width_from = fan_out, f"layers[{i}] output"

    target = _parse_target(obj["target"], loss, width, source)
    description = obj.get("description", "")
    if not isinstance(description, str):
        raise ConfigError(f"{source}: description must be a string")
    return NetSpec(layers, loss, x, target, float(lr), source, description)


def _parse_target(target, loss: str, outputs: int, source: str):
    where = f"{source}: target"
    if isinstance(target, list):
        if loss == "softmax_cross_entropy":
            raise DataError(f"{where}: softmax_cross_entropy takes a class index "
                            f"(0..{outputs - 1}), not a list")
        t = _vector(target, where)
        if len(t) != outputs:
            raise ShapeError(f"{where} has length {len(t)} but the network has {outputs} outputs; "
                             f"give one target per output unit")
        return t
    if isinstance(target, bool) or not isinstance(target, (int, float)) or (
            isinstance(target, float) and not target.is_integer()):
        raise DataError(f"{where} must be a class index (a whole number) or a list of "
                        f"{outputs} numbers, got {json.dumps(target)}")
    index = int(target)
    if loss == "softmax_cross_entropy" and outputs < 2:
        raise ShapeError(f"{source}: softmax_cross_entropy needs at least 2 outputs; the last "
                         f"layer has {outputs}")
    # With one output a class index is a 0/1 target (the library's convention).
    classes = max(outputs, 2)
    if not 0 <= index < classes:
        raise DataError(f"{where}: class index {index} is out of range; the network has "
                        f"{outputs} outputs, so use 0..{classes - 1}")
    return index

def is_conv_net(obj) -> bool:
    """A NET.json object whose layers say their ``type``."""
    layers = obj.get("layers") if isinstance(obj, dict) else None
    return isinstance(layers, list) and any(isinstance(raw, dict) and "type" in raw
                                            for raw in layers)


def parse_conv_net(obj: dict, source: str = "NET.json") -> ConvNetSpec:
    """Validate a decoded conv NET.json object; errors name the offending key."""
    from ..nn.image import resolve_padding

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
    model = build_conv_model(net, "cpu")  # shapes checked by the layers themselves
    net.target = _parse_target(obj["target"], loss, model.output_dim, source)
    return net


def build_conv_model(net: ConvNetSpec, engine, wrap=None):
    """The float64 ``Sequential`` of a conv ``net`` with its weights loaded; ``wrap`` turns
    each layer class into the one to build (the trace's recording subclasses)."""
    from ..nn.image import AvgPool2D, Conv2D, Flatten, MaxPool2D
    from ..nn.layers import Dense
    from ..nn.model import Sequential

    wrap = wrap or (lambda cls: cls)
    layers = []
    for spec in net.layers:
        kind = spec["type"]
        if kind == "conv":
            W = spec["weights"]
            layer = wrap(Conv2D)(W.shape[0], tuple(W.shape[2:]), tuple(spec["stride"]),
                                 spec["padding"], spec["activation"], alpha=spec["alpha"])
        elif kind == "dense":
            layer = wrap(Dense)(spec["weights"].shape[1], spec["activation"], alpha=spec["alpha"])
        elif kind == "flatten":
            layer = wrap(Flatten)()
        else:
            pool = MaxPool2D if kind == "maxpool" else AvgPool2D
            layer = wrap(pool)(tuple(spec["size"]), tuple(spec["stride"]))
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


__all__ = ["ConvNetSpec", "LayerSpec", "NetSpec", "build_conv_model", "is_conv_net", "load_net",
           "parse_conv_net", "parse_net"]
