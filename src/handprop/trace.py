"""One forward pass, one backward pass and one SGD step of a small network, shown in full.

This is the pen-and-paper backpropagation exercise checked by the machine. A
network description (the ``NET.json`` format of ``handprop trace``)::

    {"layers": [{"weights": [[0.15, 0.25], [0.20, 0.30]],   # fan_in x fan_out
                 "bias": [0.35, 0.35], "activation": "sigmoid"}, ...],
     "loss": "mse",                  # or "softmax_cross_entropy"
     "input": [0.05, 0.10],          # one sample
     "target": [0.01, 0.99],         # a target vector, or a class index
     "learning_rate": 0.5}

``weights[i][j]`` connects input ``i`` to unit ``j``, so ``z = a_prev @ W + b``.
A layer may also give ``alpha`` (the leaky_relu slope); the file may carry a
free-text ``description``. Layers with a ``type`` (``conv``, ``maxpool``,
``avgpool``, ``flatten``, ``dense``) and image inputs are traced by
``handprop.trace_conv`` (see ``examples/trace_conv.json``).

The numbers come from the library itself, in float64: a ``Sequential`` of
``Dense`` layers loaded with ``set_weights``, the loss objects of
``handprop.nn.losses``, ``Sequential.backward`` and one ``SGD`` step. The only
quantities computed here are the ones the library does not keep: the
pre-activations ``z`` and the deltas ``dL/dz`` (through the engine's own
``act_backward``).

Python use::

    from handprop.trace import load_net, trace
    result = trace(load_net("examples/trace_mse_2-2-2.json"))
    print(result.format())
    result.to_dict()["updated"][1]["weights"]
"""

from __future__ import annotations

import difflib
import json
import math
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .engines.base import ACTIVATIONS
from .errors import ConfigError, DataError, NumericalError, ShapeError

TRACE_LOSSES = ("softmax_cross_entropy", "mse")
REQUIRED_KEYS = ("layers", "loss", "input", "target", "learning_rate")
OPTIONAL_KEYS = ("description",)
LAYER_KEYS = ("weights", "bias", "activation")
OPTIONAL_LAYER_KEYS = ("alpha",)


# --------------------------------------------------------------------- parsing
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


def load_net(path) -> NetSpec:
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


def parse_net(obj, source: str = "NET.json"):
    """Validate a decoded NET.json object; errors name the offending key. Networks with
    convolution or pooling (layers with a ``type``) are parsed by ``handprop.trace_conv``."""
    from .trace_conv import is_conv_net, parse_conv_net

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


# ------------------------------------------------------------------- tracing
@dataclass
class LayerTrace:
    activation: str
    weights: np.ndarray  # before the step
    bias: np.ndarray
    z: np.ndarray
    a: np.ndarray
    grad_a: np.ndarray  # dL/da, flowing into this layer's output
    act_deriv: np.ndarray  # f'(z)
    delta: np.ndarray  # dL/dz
    grad_weights: np.ndarray
    grad_bias: np.ndarray
    new_weights: np.ndarray
    new_bias: np.ndarray


@dataclass
class Trace:
    net: NetSpec
    engine: str
    layers: list[LayerTrace] = field(default_factory=list)
    loss: float = 0.0
    target_vector: np.ndarray | None = None  # the target as the loss sees it
    probabilities: np.ndarray | None = None  # softmax of the outputs (softmax loss only)

    def to_dict(self) -> dict:
        """The ``--json`` object: forward, loss, deltas, grads, updated (plain lists)."""
        net = self.net
        target = net.target if isinstance(net.target, int) else net.target.tolist()
        out = {
            "source": net.source,
            "engine": self.engine,
            "dtype": "float64",
            "loss_function": net.loss,
            "learning_rate": net.learning_rate,
            "input": net.input.tolist(),
            "target": target,
            "forward": [{"z": t.z.tolist(), "a": t.a.tolist()} for t in self.layers],
            "loss": self.loss,
            "deltas": [t.delta.tolist() for t in self.layers],
            "grads": [{"weights": t.grad_weights.tolist(), "bias": t.grad_bias.tolist()}
                      for t in self.layers],
            "updated": [{"weights": t.new_weights.tolist(), "bias": t.new_bias.tolist()}
                        for t in self.layers],
        }
        if self.probabilities is not None:
            out["softmax"] = self.probabilities.tolist()
        return out

    def format(self) -> str:
        return format_trace(self)


class _RecordingDense:
    """Mixin for ``Dense``: remember the gradient that arrives at the layer's output.

    ``Dense.backward`` turns it into ``dz`` and does not keep it; the trace
    needs it to show the deltas.
    """

    def backward(self, grad_out, need_input_grad=True):
        self.grad_out = grad_out
        return super().backward(grad_out, need_input_grad)


def trace(net, engine=None):
    """Run one forward pass, backward pass and SGD step of ``net`` with the library, in float64.

    A ``Trace`` for dense networks; a ``trace_conv.ConvTrace`` for networks with convolution
    or pooling (both have ``format()`` and ``to_dict()``).
    """
    from .engines import get_engine
    from .trace_conv import ConvNetSpec, trace_conv
    from .nn.layers import Dense
    from .nn.losses import check_targets, get_loss
    from .nn.model import Sequential
    from .optim.optimizers import SGD

    if isinstance(net, dict):
        net = parse_net(net)
    if isinstance(net, ConvNetSpec):
        return trace_conv(net, engine)
    engine = get_engine(engine)

    recording_dense = type("Dense", (_RecordingDense, Dense), {})
    layers = [recording_dense(spec.weights.shape[1], spec.activation, alpha=spec.alpha)
              for spec in net.layers]
    model = Sequential(layers, input_dim=len(net.input), engine=engine, dtype="float64")
    model.set_weights({f"layer{i}.{key}": value for i, spec in enumerate(net.layers)
                       for key, value in (("W", spec.weights), ("b", spec.bias))})

    loss_fn = get_loss(net.loss)
    if isinstance(net.target, int):
        host_targets = np.array([net.target], dtype=np.int64)
    else:
        host_targets = net.target[None, :]
    check_targets(host_targets, 1, model.output_dim, loss_fn)
    xs = engine.asarray(net.input[None, :], "float64")
    ts = engine.asarray(host_targets)

    outputs = model.forward(xs, training=True)
    loss_value, grad_outputs = loss_fn(engine, outputs, ts)
    loss_value = engine.to_float(loss_value)
    if not math.isfinite(loss_value):
        raise NumericalError(f"the loss is {loss_value}; the weights or inputs are too large "
                             f"for float64 here")
    model.backward(grad_outputs)

    host = engine.to_numpy
    xp = engine.xp
    result = Trace(net=net, engine=engine.name, loss=float(loss_value))
    result.target_vector = host(loss_fn.targets_as_array(engine, outputs, ts))[0].copy()
    if net.loss == "softmax_cross_entropy":
        result.probabilities = host(xp.exp(engine.log_softmax(outputs)))[0].copy()

    # Everything that the step changes in place is copied before the step.
    for layer in model.layers:
        W, b = layer.params["W"], layer.params["b"]
        z = layer.x @ W + b  # the same expression Dense.forward hands to bias_act
        ones = xp.ones_like(layer.out)
        result.layers.append(LayerTrace(
            activation=layer.activation,
            weights=np.array(host(W)), bias=np.array(host(b)),
            z=np.array(host(z))[0], a=np.array(host(layer.out))[0],
            grad_a=np.array(host(layer.grad_out))[0],
            act_deriv=np.array(host(engine.act_backward(ones, layer.out, layer.activation,
                                                        layer.alpha)))[0],
            delta=np.array(host(engine.act_backward(layer.grad_out, layer.out, layer.activation,
                                                    layer.alpha)))[0],
            grad_weights=np.array(host(layer.grads["W"])),
            grad_bias=np.array(host(layer.grads["b"])),
            new_weights=None, new_bias=None,
        ))

    SGD(lr=net.learning_rate).step(model)
    for layer, record in zip(model.layers, result.layers):
        record.new_weights = np.array(host(layer.params["W"]))
        record.new_bias = np.array(host(layer.params["b"]))
    return result


# ---------------------------------------------------------------- formatting
def _num(value: float) -> str:
    value = float(value)
    if value == 0.0:
        value = 0.0  # no "-0"
    return f"{value:.6g}"


def _table(header: list[str], rows: list[list], indent: str = "    ") -> list[str]:
    """Left-aligned first column; number columns aligned on the decimal point."""
    columns = [[str(r[0]) for r in rows]] + [[_num(r[c]) for r in rows] for c in range(1, len(header))]
    cells = [columns[0]]
    widths = [max([len(header[0])] + [len(s) for s in columns[0]])]
    for c, col in enumerate(columns[1:], start=1):
        heads = [s.split(".")[0] if "." in s else s.split("e")[0] for s in col]
        tails = [s[len(h):] for s, h in zip(col, heads)]
        left, right = max(map(len, heads)), max(map(len, tails))
        aligned = [h.rjust(left) + t.ljust(right) for h, t in zip(heads, tails)]
        width = max(len(header[c]), left + right)
        cells.append([s.rjust(width) for s in aligned])
        widths.append(width)
    lines = [indent + "  ".join([header[0].ljust(widths[0])] +
                                [h.rjust(w) for h, w in zip(header[1:], widths[1:])])]
    for i in range(len(rows)):
        lines.append(indent + "  ".join([cells[0][i].ljust(widths[0])] +
                                        [cells[c][i] for c in range(1, len(header))]))
    return [line.rstrip() for line in lines]


def format_trace(t: Trace) -> str:
    net = t.net
    sizes = " -> ".join(f"Dense {lt.weights.shape[1]} ({lt.activation})" for lt in t.layers)
    out = [f"trace of {net.source} on engine {t.engine}, float64"]
    if net.description:
        out.append(textwrap.fill(net.description, width=100))
    out.append(f"network: {len(net.input)} inputs -> {sizes}; loss {net.loss}; "
               f"learning rate {_num(net.learning_rate)}")

    out += ["", "FORWARD   z = a_prev @ W + b,   a = f(z)"]
    out += _table(["input", "x"], [[i, v] for i, v in enumerate(net.input)], indent="  ")
    for i, lt in enumerate(t.layers):
        fan_in, fan_out = lt.weights.shape
        out += ["", f"  layer {i}: Dense {fan_in} -> {fan_out}, {lt.activation}"]
        out += _table(["unit", "z", "a"], [[j, lt.z[j], lt.a[j]] for j in range(fan_out)])

    last = t.layers[-1]
    out.append("")
    if net.loss == "mse":
        out.append("LOSS   mse: L = 1/2 * sum_k (a_k - t_k)^2,   dL/da = a - t")
        out += _table(["unit", "a", "t", "dL/da"],
                      [[k, last.a[k], t.target_vector[k], last.grad_a[k]] for k in range(len(last.a))],
                      indent="  ")
    else:
        out.append("LOSS   softmax_cross_entropy: p = softmax(a), L = -log p[target],   dL/da = p - onehot")
        out += _table(["unit", "a (logit)", "p", "onehot", "dL/da"],
                      [[k, last.a[k], t.probabilities[k], t.target_vector[k], last.grad_a[k]]
                       for k in range(len(last.a))], indent="  ")
    out.append(f"  L = {_num(t.loss)}")

    out += ["", "BACKWARD   delta = dL/dz = dL/da * f'(z),   dL/da_prev = W @ delta"]
    for i in range(len(t.layers) - 1, -1, -1):
        lt = t.layers[i]
        out += ["", f"  layer {i}: {lt.activation}"]
        out += _table(["unit", "dL/da", "f'(z)", "delta"],
                      [[j, lt.grad_a[j], lt.act_deriv[j], lt.delta[j]] for j in range(len(lt.delta))])

    out += ["", f"GRADIENTS AND SGD STEP   dL/dW = outer(a_prev, delta),   dL/db = delta,   "
                f"new = old - {_num(net.learning_rate)} * grad",
            "  W[i,j] connects input i to unit j"]
    for i, lt in enumerate(t.layers):
        rows = [[f"W[{r},{c}]", lt.weights[r, c], lt.grad_weights[r, c], lt.new_weights[r, c]]
                for r in range(lt.weights.shape[0]) for c in range(lt.weights.shape[1])]
        rows += [[f"b[{c}]", lt.bias[c], lt.grad_bias[c], lt.new_bias[c]] for c in range(len(lt.bias))]
        out += ["", f"  layer {i}"]
        out += _table(["param", "old", "grad", "new"], rows)
    return "\n".join(out)


__all__ = ["LayerSpec", "NetSpec", "Trace", "format_trace", "load_net", "parse_net", "trace"]
