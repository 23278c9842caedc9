"""One forward pass, one backward pass and one SGD step of a small network, shown in full.

This is the pen-and-paper backpropagation exercise checked by the machine, for
dense networks and for networks with convolution and pooling; the NET.json
format is described in ``handprop.teach.net_file``.

The numbers come from the library itself, in float64: a ``Sequential`` of the
library's layers (``Dense``, ``Conv2D``, ``MaxPool2D``, ``AvgPool2D``,
``Flatten``) loaded with ``set_weights``, the loss objects of
``handprop.nn.losses``, ``Sequential.backward`` and one ``SGD`` step. The only
quantities computed here are the ones the layers do not keep: the
pre-activations ``z`` and the deltas ``dL/dz`` (through the engine's own
``act_backward``).

Python use::

    from handprop.trace import load_net, trace
    result = trace(load_net("examples/trace_mse_2-2-2.json"))
    print(result.format())
    result.to_dict()["updated"][1]["weights"]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import NumericalError
from .net_file import ConvNetSpec, NetSpec, build_conv_model, parse_net
from .trace_format import format_conv_trace, format_trace


# ------------------------------------------------------------------- records
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


# ------------------------------------------------------------------- tracing
def trace(net, engine=None):
    """Run one forward pass, backward pass and SGD step of ``net`` with the library, in float64.

    ``net`` is a ``NetSpec``, a ``ConvNetSpec`` or a decoded NET.json object. A ``Trace`` for
    dense networks; a ``ConvTrace`` for networks with convolution or pooling (both have
    ``format()`` and ``to_dict()``).
    """
    if isinstance(net, dict):
        net = parse_net(net)
    if isinstance(net, ConvNetSpec):
        return _conv_step(net, engine)
    return _dense_step(net, engine)


def _dense_step(net: NetSpec, engine) -> Trace:
    """One forward pass, backward pass and SGD step of a dense ``net`` with the library."""
    from ..engines import get_engine
    from ..nn.layers import Dense
    from ..nn.losses import check_targets, get_loss
    from ..nn.model import Sequential
    from ..optim.optimizers import SGD

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


class _RecordingDense:
    """Mixin for ``Dense``: remember the gradient that arrives at the layer's output.

    ``Dense.backward`` turns it into ``dz`` and does not keep it; the trace
    needs it to show the deltas.
    """

    def backward(self, grad_out, need_input_grad=True):
        self.grad_out = grad_out
        return super().backward(grad_out, need_input_grad)


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


def _conv_step(net: ConvNetSpec, engine) -> ConvTrace:
    """One forward pass, backward pass and SGD step of a conv ``net`` with the library."""
    from ..engines import get_engine
    from ..nn.losses import get_loss
    from ..optim.optimizers import SGD

    engine = get_engine(engine)
    model = build_conv_model(net, engine, wrap=_recording)
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


__all__ = ["ConvTrace", "LayerTrace", "Trace", "trace"]
