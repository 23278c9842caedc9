"""``Sequential``: a stack of layers, its L2 term, summary, save and load."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from ..engines import get_engine
from ..errors import CheckpointError, ConfigError, ShapeError
from ..io import load_arrays, save_arrays
from .image import AvgPool2D, Conv2D, Flatten, MaxPool2D
from .init import resolve_init
from .layers import Activation, BatchNorm, Dense, Dropout, Layer, as_shape, shape_text

DTYPES = ("float32", "float64")
FORMAT_VERSION = 1

#: Every layer type a model file names (``Layer.config()["type"]``), for ``Sequential.load``;
#: a new layer type is one entry here.
LAYER_TYPES = {"Dense": Dense, "Activation": Activation, "Dropout": Dropout, "BatchNorm": BatchNorm,
               "Conv2D": Conv2D, "MaxPool2D": MaxPool2D, "AvgPool2D": AvgPool2D, "Flatten": Flatten}


def layer_from_config(config: dict) -> Layer:
    """The unbuilt layer that ``config`` (one ``Layer.config()``) describes."""
    config = dict(config)
    kind = config.pop("type", None)
    if kind not in LAYER_TYPES:
        raise ConfigError(f"unknown layer type {kind!r}; known types: {', '.join(LAYER_TYPES)}")
    return LAYER_TYPES[kind](**config)


def check_dtype(dtype) -> str:
    name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
    if name not in DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    return name


def check_input_shape(input_shape) -> None:
    """A ``ConfigError`` unless ``input_shape`` is a width N or (features,) or (C, H, W) of
    positive whole numbers: the samples a model can be built for."""
    if isinstance(input_shape, (int, np.integer)) and not isinstance(input_shape, bool):
        if input_shape < 1:
            raise ConfigError(f"input_dim must be a positive whole number, got {input_shape!r}")
    elif (isinstance(input_shape, (bool, str)) or not isinstance(input_shape, (tuple, list))
          or len(input_shape) not in (1, 3)
          or not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 1
                     for d in input_shape)):
        raise ConfigError(f"input_dim must be a positive whole number and input_shape (features,) "
                          f"or (channels, height, width) of positive whole numbers; got "
                          f"{input_shape!r}")


class Sequential:
    """Layers applied in order. Built for one input sample's shape, on one engine.

    ``input_dim=N`` builds for flat inputs (batch, N); ``input_shape=(C, H, W)``
    for images (batch, C, H, W) (``input_shape=(N,)`` is the same as
    ``input_dim=N``). L2 regularization convention: ``l2/2 * sum(W**2)`` over every
    layer's weights (``Layer.weight_keys``: Dense and Conv2D ``W``, no biases) is
    added to the loss, and ``l2 * W`` to each weight gradient.

    Once built, every parameter is a view of one flat buffer ``flat_params`` and
    every gradient a view of ``flat_grads`` (same layout, ``named_parameters``
    order), so an optimizer updates all of them in one pass and a compiled
    training path updates the very arrays that checkpoints and evaluation read.
    """

    def __init__(self, layers: list[Layer], input_dim: int | None = None, engine=None,
                 dtype="float32", seed: int = 0, input_shape=None):
        if not layers:
            raise ConfigError("a Sequential model needs at least one layer")
        self.layers = list(layers)
        self.engine = get_engine(engine)
        self.dtype = check_dtype(dtype)
        self.seed = int(seed)
        self.input_dim = self.input_shape = None
        if input_dim is not None and input_shape is not None:
            if as_shape(input_shape) != (input_dim,):
                raise ConfigError(f"give input_dim or input_shape, not both "
                                  f"(got {input_dim!r} and {input_shape!r})")
        if input_dim is not None or input_shape is not None:
            self.build(input_dim if input_shape is None else input_shape)

    @property
    def has_image_layers(self) -> bool:
        """Whether any layer works on images (an engine's threads for it, ``threads_for``)."""
        return any(layer.image_layer for layer in self.layers)

    # ----------------------------------------------------------------- building
    def build(self, input_shape) -> Sequential:
        """Build every layer for samples of ``input_shape``: a width N or a tuple such as (C, H, W)."""
        check_input_shape(input_shape)
        rng = np.random.default_rng(self.seed)
        shape = as_shape(input_shape)
        for i, layer in enumerate(self.layers):
            try:
                shape = layer.build(shape, self.engine, self.dtype, rng)
            except ShapeError as exc:
                raise ShapeError(f"layer {i} of the model: {exc}") from None
            shape = as_shape(shape)
        self.input_shape = as_shape(input_shape)
        self.input_dim = int(np.prod(self.input_shape))
        self.output_shape = shape
        self.output_dim = int(np.prod(shape))
        self._flatten()
        return self

    def _flatten(self) -> None:
        """Move every parameter into ``flat_params`` and give every gradient its view of
        ``flat_grads``; ``param_layout`` holds each one's ``(name, offset, shape)``."""
        xp, entries = self.engine.xp, self.named_parameters()
        shapes = [tuple(layer.params[key].shape) for _, layer, key in entries]
        total = sum(int(np.prod(shape)) for shape in shapes)
        dtype = getattr(xp, self.dtype)
        self.flat_params = xp.zeros((total,), dtype=dtype)
        self.flat_grads = xp.zeros((total,), dtype=dtype)
        self.param_layout, self._grad_views, offset = [], {}, 0
        for (name, layer, key), shape in zip(entries, shapes):
            size = int(np.prod(shape))
            view = xp.reshape(self.flat_params[offset:offset + size], shape)
            view[...] = layer.params[key]
            layer.params[key] = view
            layer.grads[key] = self._grad_views[name] = xp.reshape(
                self.flat_grads[offset:offset + size], shape)
            self.param_layout.append((name, offset, shape))
            offset += size

    def gather_grads(self) -> None:
        """Make every ``layer.grads`` entry the view of ``flat_grads`` again, copying in
        any gradient a layer computed into a fresh array."""
        views = self._grad_views
        for name, layer, key in self.named_parameters():
            grad = layer.grads[key]
            if grad is not views[name]:
                views[name][...] = grad
                layer.grads[key] = views[name]

    @property
    def built(self) -> bool:
        return self.input_shape is not None

    def _require_built(self):
        if not self.built:
            raise ConfigError("build the model first: Sequential(..., input_dim=N) or model.build(N)")

    # --------------------------------------------------------- forward/backward
    def forward(self, x, training: bool = False):
        self._require_built()
        if tuple(x.shape[1:]) != self.input_shape:
            want = ", ".join(map(str, self.input_shape))
            raise ShapeError(f"model expects inputs of shape (batch, {want}); got {tuple(x.shape)}")
        for layer in self.layers:
            x = layer.forward(x, training)
        return x

    def backward(self, grad_out, need_input_grad: bool = False):
        """Backpropagate ``grad_out``; the input gradient is skipped unless asked for."""
        for i in range(len(self.layers) - 1, -1, -1):
            grad_out = self.layers[i].backward(grad_out, need_input_grad or i > 0)
        return grad_out

    def __call__(self, x):
        return self.forward(x, training=False)

    @contextmanager
    def state_preserved(self):
        """Run a training-mode pass without side effects: the layers' random generators and
        buffers (BatchNorm's running statistics) are put back afterwards."""
        rng_states = self.rng_states()
        buffers = [dict(layer.buffers) for layer in self.layers]
        try:
            yield self
        finally:
            self.set_rng_states(rng_states)
            for layer, saved in zip(self.layers, buffers):
                layer.buffers = saved

    def rng_states(self) -> dict:
        """States of the layers' own random generators (dropout masks), by layer."""
        states = {f"layer{i}": layer.rng_state() for i, layer in enumerate(self.layers)}
        return {name: state for name, state in states.items() if state is not None}

    def set_rng_states(self, states: dict) -> None:
        for i, layer in enumerate(self.layers):
            if f"layer{i}" in states:
                layer.set_rng_state(states[f"layer{i}"])

    # -------------------------------------------------------------- parameters
    def named_parameters(self):
        """``(name, layer, key)`` for every parameter, in a stable order."""
        return [(f"layer{i}.{key}", layer, key)
                for i, layer in enumerate(self.layers) for key in layer.params]

    def named_buffers(self):
        """``(name, layer, key)`` for every buffer (saved, not trained), in a stable order."""
        return [(f"layer{i}.{key}", layer, key)
                for i, layer in enumerate(self.layers) for key in layer.buffers]

    def _named_arrays(self):
        """Parameters then buffers, each as ``(name, store, key)``: what weights files hold."""
        return ([(name, layer.params, key) for name, layer, key in self.named_parameters()]
                + [(name, layer.buffers, key) for name, layer, key in self.named_buffers()])

    def named_weights(self):
        """``(name, layer, key)`` for every weight (``Layer.weight_keys``): what L2 covers."""
        return [(name, layer, key) for name, layer, key in self.named_parameters()
                if key in layer.weight_keys]

    def num_parameters(self) -> int:
        return int(sum(int(np.prod(layer.params[key].shape))
                       for _, layer, key in self.named_parameters()))

    def l2_penalty(self, l2: float) -> float:
        """``l2/2 * sum(W**2)`` over every layer's weights (Dense and Conv2D ``W``)."""
        if not l2:
            return 0.0
        return 0.5 * l2 * sum(self.engine.sum_squares(layer.params[key])
                              for _, layer, key in self.named_weights())

    def add_l2_gradient(self, l2: float) -> None:
        if not l2:
            return
        for _, layer, key in self.named_weights():
            layer.grads[key] += l2 * layer.params[key]  # in place: a view of flat_grads

    def get_weights(self) -> dict[str, np.ndarray]:
        """Host copies of every parameter and buffer, by name."""
        return {name: np.array(self.engine.to_numpy(store[key]), copy=True)
                for name, store, key in self._named_arrays()}

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        expected = {name: tuple(store[key].shape) for name, store, key in self._named_arrays()}
        problems = []
        for name, shape in expected.items():
            if name not in weights:
                problems.append(f"{name}: missing (expected shape {shape})")
            elif tuple(np.shape(weights[name])) != shape:
                problems.append(f"{name}: saved shape {tuple(np.shape(weights[name]))}, model shape {shape}")
        for name in sorted(set(weights) - set(expected)):
            problems.append(f"{name}: in the file but not in the model")
        if problems:
            raise CheckpointError("saved weights do not fit this model:\n  " + "\n  ".join(problems))
        # Parameters are views of flat_params: copy into them, never rebind.
        for name, store, key in self._named_arrays():
            store[key][...] = self.engine.asarray(np.asarray(weights[name]), self.dtype)

    # ------------------------------------------------------------- description
    def summary(self) -> str:
        self._require_built()
        rows = [("#", "layer", "output", "parameters")]
        for i, layer in enumerate(self.layers):
            count = sum(int(np.prod(p.shape)) for p in layer.params.values())
            rows.append((str(i), layer.describe(), shape_text(layer.output_shape), f"{count:,}"))
        widths = [max(len(row[c]) for row in rows) for c in range(4)]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines.append(f"input {shape_text(self.input_shape)}, "
                     f"total parameters {self.num_parameters():,}, "
                     f"dtype {self.dtype}, engine {self.engine.name}")
        return "\n".join(lines)

    def config(self) -> dict:
        # input_dim too for flat inputs, so that older versions read MLP files as before.
        shape = {"input_dim": self.input_dim} if len(self.input_shape) == 1 else {}
        return {**shape, "input_shape": list(self.input_shape), "dtype": self.dtype,
                "seed": self.seed, "layers": [layer.config() for layer in self.layers]}

    @classmethod
    def from_config(cls, config: dict, engine=None, dtype=None) -> Sequential:
        """Rebuild from ``config()``; files written before ``input_shape`` carry ``input_dim``."""
        layers = [layer_from_config(c) for c in config["layers"]]
        shape = config.get("input_shape")
        return cls(layers, input_dim=None if shape else config["input_dim"],
                   input_shape=tuple(shape) if shape else None, engine=engine,
                   dtype=dtype or config.get("dtype", "float32"), seed=config.get("seed", 0))

    # ------------------------------------------------------------- persistence
    def save(self, path, extra: dict | None = None) -> None:
        """One .npz (no pickle) holding the weights and the JSON architecture."""
        self._require_built()
        meta = {"format": "handprop.model", "version": FORMAT_VERSION, "model": self.config(),
                "extra": extra or {}}
        save_arrays(path, self.get_weights(), meta)

    @classmethod
    def load(cls, path, engine=None, dtype=None) -> Sequential:
        arrays, meta = load_arrays(path)
        if meta.get("format") != "handprop.model":
            raise CheckpointError(f"{path} is not a handprop model file")
        model = cls.from_config(meta["model"], engine=engine, dtype=dtype)
        model.set_weights(arrays)
        return model

    def load_weights(self, path) -> None:
        """Load weights saved from a model of the same architecture into this one."""
        arrays, _ = load_arrays(path)
        self.set_weights(arrays)


def mlp(input_dim: int, hidden: list[int], outputs: int, activation="relu",
        output_activation="identity", init="auto", engine=None, dtype="float32", seed=0,
        dropout: float = 0.0, batch_norm: bool = False) -> Sequential:
    """A multi-layer perceptron: ``hidden`` Dense layers, then an output layer.

    ``batch_norm``: each hidden layer becomes Dense (no bias) -> BatchNorm ->
    activation, normalizing before the nonlinearity as in the original paper.
    ``dropout`` > 0: a Dropout layer follows each hidden layer.
    """
    layers = []
    for width in hidden:
        if batch_norm:
            layers += [Dense(width, "identity", init=resolve_init(init, activation), use_bias=False),
                       BatchNorm(), Activation(activation)]
        else:
            layers.append(Dense(width, activation, init=init))
        if dropout:
            layers.append(Dropout(dropout))
    layers.append(Dense(outputs, output_activation, init=init))
    return Sequential(layers, input_dim=input_dim, engine=engine, dtype=dtype, seed=seed)
