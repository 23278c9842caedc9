"""The ``--arch`` grammar: any supported model as comma-separated tokens, and back.

========================================  ==========================================
token                                     layer
========================================  ==========================================
``conv:FILTERS:KERNEL[:STRIDE[:PADDING]]``  ``Conv2D`` (PADDING a number or ``same``)
``maxpool:SIZE[:STRIDE]``                 ``MaxPool2D`` (STRIDE defaults to SIZE)
``avgpool:SIZE[:STRIDE]``                 ``AvgPool2D``
``flatten``                               ``Flatten``
``dense:UNITS``                           ``Dense``
an activation name (``relu``, ...)        ``Activation``
``dropout:RATE``                          ``Dropout``
``batchnorm``                             ``BatchNorm`` (per channel after a conv)
========================================  ==========================================

An activation right after a conv or dense token is fused into that layer
(``Conv2D``/``Dense`` ``activation=``), so the engine's fused bias + activation
runs. A conv or dense token right before ``batchnorm`` has no bias (BatchNorm's
shift makes it redundant), and its ``auto`` initializer follows the activation
after the batchnorm, as ``mlp(batch_norm=True)`` does. Image layers need a
``flatten`` before the first dense layer; nothing is inserted silently.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from ..errors import ConfigError, HandpropError, ShapeError

#: (token, meaning) rows, for help texts and the README table.
GRAMMAR = (
    ("conv:FILTERS:KERNEL[:STRIDE[:PADDING]]", "convolution; PADDING is a number or same"),
    ("maxpool:SIZE[:STRIDE]", "max pooling (STRIDE defaults to SIZE)"),
    ("avgpool:SIZE[:STRIDE]", "average pooling"),
    ("flatten", "images to flat vectors (needed before the first dense layer)"),
    ("dense:UNITS", "dense layer"),
    ("an activation name", "activation (fused into a conv or dense right before it)"),
    ("dropout:RATE", "dropout"),
    ("batchnorm", "batch norm (per channel after a conv)"),
)
USAGE = {"conv": "conv:FILTERS:KERNEL[:STRIDE[:PADDING]], e.g. conv:16:5 or conv:16:5:1:same",
         "maxpool": "maxpool:SIZE[:STRIDE], e.g. maxpool:2", "avgpool": "avgpool:SIZE[:STRIDE], "
         "e.g. avgpool:2", "dense": "dense:UNITS, e.g. dense:128", "dropout": "dropout:RATE "
         "with RATE in [0, 1), e.g. dropout:0.25", "flatten": "flatten", "batchnorm": "batchnorm"}
IMAGE_KINDS = ("conv", "maxpool", "avgpool")


def _activations() -> tuple[str, ...]:
    from ..engines.base import ACTIVATIONS

    return ACTIVATIONS


@dataclass(frozen=True)
class Token:
    """One token: its normalized ``text``, its ``kind`` (conv, maxpool, avgpool, flatten,
    dense, activation, dropout, batchnorm) and its parsed ``args``."""

    text: str
    kind: str
    args: tuple


def _split(arch) -> list[str]:
    """``"a,b"``, ``["a", "b"]`` or ``["a,b", "c"]`` -> the token texts, stripped, lower case."""
    if isinstance(arch, str):
        parts = arch.split(",") if arch.strip() else []
    elif isinstance(arch, (list, tuple)) and all(isinstance(p, str) for p in arch):
        parts = [t for p in arch for t in p.split(",")]
    else:
        raise ConfigError(f"arch is text such as 'conv:16:5,relu,maxpool:2,flatten,dense:128,relu' "
                          f"or a list of such tokens; got {arch!r}")
    texts = [":".join(field.strip() for field in p.split(":")).lower() for p in parts]
    for i, text in enumerate(texts, 1):
        if not text:
            raise ConfigError(f"arch token {i} of {arch!r} is empty; separate tokens by single "
                              f"commas, e.g. conv:16:5,relu,maxpool:2")
    return texts


def _whole(text: str, name: str, field: str, low: int, kind: str) -> int:
    if not field.isdigit() or int(field) < low:
        raise ConfigError(f"arch token {text!r}: {name} must be a whole number >= {low}, got "
                          f"{field!r}; write {USAGE[kind]}")
    return int(field)


def _parse_token(text: str) -> Token:
    kind, *fields = text.split(":")
    if kind in _activations() and not fields:
        return Token(text, "activation", (kind,))
    counts = {"conv": (2, 4), "maxpool": (1, 2), "avgpool": (1, 2), "dense": (1, 1),
              "dropout": (1, 1), "flatten": (0, 0), "batchnorm": (0, 0)}
    if kind not in counts:
        known = [*USAGE, *_activations()]
        close = difflib.get_close_matches(kind, known, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(f"unknown arch token {text!r}{hint}; tokens are conv:..., maxpool:..., "
                          f"avgpool:..., flatten, dense:UNITS, dropout:RATE, batchnorm or an "
                          f"activation ({', '.join(_activations())})")
    low, high = counts[kind]
    if not low <= len(fields) <= high:
        raise ConfigError(f"arch token {text!r}: write {USAGE[kind]}")
    if kind == "conv":
        filters = _whole(text, "FILTERS", fields[0], 1, kind)
        kernel = _whole(text, "KERNEL", fields[1], 1, kind)
        stride = _whole(text, "STRIDE", fields[2], 1, kind) if len(fields) > 2 else 1
        padding = 0
        if len(fields) > 3:
            padding = "same" if fields[3] == "same" else _whole(text, "PADDING", fields[3], 0, kind)
        if padding == "same" and stride != 1:
            raise ConfigError(f"arch token {text!r}: padding 'same' needs stride 1; give the "
                              f"padding as a number instead, e.g. conv:{filters}:{kernel}:"
                              f"{stride}:{(kernel - 1) // 2}")
        return Token(text, kind, (filters, kernel, stride, padding))
    if kind in ("maxpool", "avgpool"):
        size = _whole(text, "SIZE", fields[0], 1, kind)
        stride = _whole(text, "STRIDE", fields[1], 1, kind) if len(fields) > 1 else size
        return Token(text, kind, (size, stride))
    if kind == "dense":
        return Token(text, kind, (_whole(text, "UNITS", fields[0], 1, kind),))
    if kind == "dropout":
        try:
            rate = float(fields[0])
        except ValueError:
            rate = None
        if rate is None or not 0.0 <= rate < 1.0:
            raise ConfigError(f"arch token {text!r}: RATE must be a number in [0, 1), got "
                              f"{fields[0]!r}; write {USAGE[kind]}")
        return Token(text, kind, (rate,))
    return Token(text, kind, ())


def arch_tokens(arch) -> list[Token]:
    """The tokens of ``arch`` (text or a list of tokens); a ``ConfigError`` names a bad one."""
    return [_parse_token(text) for text in _split(arch)]


def normalize_arch(arch) -> str | None:
    """``arch`` as one canonical comma-separated text (None stays None); checks every token."""
    if arch is None:
        return None
    return ",".join(token.text for token in arch_tokens(arch))


def uses_images(arch) -> bool:
    """Whether the model takes image samples (C, H, W): it has a conv, pooling or flatten token."""
    return any(t.kind in (*IMAGE_KINDS, "flatten") for t in arch_tokens(arch))


def _layer_makers() -> dict:
    """Token kind -> ``make(args, activation, init, use_bias)``, the layer of that token."""
    from .image import AvgPool2D, Conv2D, Flatten, MaxPool2D
    from .layers import Activation, BatchNorm, Dense, Dropout

    return {"conv": lambda args, act, init, bias: Conv2D(*args, activation=act, init=init,
                                                          use_bias=bias),
            "dense": lambda args, act, init, bias: Dense(args[0], act, init=init, use_bias=bias),
            "maxpool": lambda args, *_: MaxPool2D(*args),
            "avgpool": lambda args, *_: AvgPool2D(*args),
            "flatten": lambda args, *_: Flatten(),
            "activation": lambda args, *_: Activation(args[0]),
            "dropout": lambda args, *_: Dropout(args[0]),
            "batchnorm": lambda args, *_: BatchNorm()}


def _groups(tokens: list[Token], init: str) -> list[tuple[str, object]]:
    """``(what, layer)`` per layer, ``what`` naming its tokens for messages: a conv or dense
    takes the activation token after it."""
    from .init import resolve_init

    makers, groups, i = _layer_makers(), [], 0
    while i < len(tokens):
        token, start = tokens[i], i
        following = tokens[i + 1:i + 3]
        text, activation, layer_init, normed = token.text, "identity", None, False
        try:
            if token.kind in ("conv", "dense"):
                feeds = "identity"
                normed = bool(following) and following[0].kind == "batchnorm"
                if following and following[0].kind == "activation":
                    activation = feeds = following[0].args[0]
                    text, i = f"{text},{following[0].text}", i + 1
                elif normed and len(following) > 1 and following[1].kind == "activation":
                    feeds = following[1].args[0]
                layer_init = resolve_init(init, feeds)
            layer = makers[token.kind](token.args, activation, layer_init, not normed)
        except ConfigError as exc:
            raise ConfigError(f"arch token {text!r}: {exc}") from None
        groups.append((f"arch token {text!r} (token {start + 1})", layer))
        i += 1
    return groups


def parse_arch(arch, init: str = "auto") -> list:
    """The layers ``arch`` describes (text or a list of tokens), unbuilt; ``init`` is the
    initializer of every conv and dense layer (``auto``: suited to its activation)."""
    return [layer for _, layer in _groups(arch_tokens(arch), init)]


def _shape_text(shape) -> str:
    return "x".join(map(str, shape))


def check_shapes(groups, input_shape) -> list[tuple]:
    """The output shape after each ``(what, layer)`` for samples of ``input_shape``, found by
    building each layer for the shape before it on the reference engine; a misfit is a
    ``ShapeError`` that names ``what`` (the token) and the shapes."""
    import numpy as np

    from ..engines import reference_engine
    from .layers import InputShapeError

    engine, rng = reference_engine(), np.random.default_rng(0)
    shape, shapes, flattened = tuple(int(d) for d in input_shape), [], False
    for what, layer in groups:
        try:
            shape = tuple(int(d) for d in layer.build(shape, engine, "float32", rng))
        except InputShapeError as exc:
            raise ShapeError(_misfit(what, exc, flattened)) from None
        except (ArithmeticError, ValueError) as exc:
            if isinstance(exc, HandpropError) or min(shape, default=1) >= 1:
                raise
            # No weights fit an empty or negative size: refused as the model itself refuses it.
            from .model import check_input_shape

            check_input_shape(input_shape)
            raise
        flattened = flattened or _is_flatten(layer)
        shapes.append(shape)
    return shapes


def _is_flatten(layer) -> bool:
    try:
        return layer.arch_tokens() == ["flatten"]
    except ConfigError:  # a layer the grammar cannot write is no flatten token either
        return False


def _misfit(what: str, exc, flattened: bool) -> str:
    """The ``--arch`` wording of a layer's ``InputShapeError``, naming the token ``what``."""
    shape = exc.shape
    if exc.needs == "images":
        where = ("it comes after flatten; image layers (conv, maxpool, avgpool) go "
                 "before flatten" if flattened else "the inputs are not images; use dense layers")
        return (f"{what} needs images (channels, height, width) but gets flat samples of "
                f"{shape[0]} features: {where}")
    if exc.needs == "window":
        padded = "" if exc.padded is None else f" ({exc.padded[0]}x{exc.padded[1]} after padding)"
        return (f"{what}: its {exc.window[0]}x{exc.window[1]} window is larger than its input "
                f"{_shape_text(shape)}{padded}, so the output size would be below 1; use a "
                f"smaller window, padding or fewer poolings before it")
    if exc.needs == "flat":
        fix = ("end the arch with flatten" if what.startswith("the output layer")
               else "add flatten before it")
        return f"{what} needs flat inputs but gets images {_shape_text(shape)}: {fix}"
    return (f"{what} normalizes features or image channels; it gets samples of shape "
            f"{_shape_text(shape)}")


def arch_model(arch, input_shape, outputs: int | None = None, output_activation="identity",
               init: str = "auto", engine=None, dtype="float32", seed: int = 0):
    """A ``Sequential`` built from ``arch`` for samples of ``input_shape`` (``(features,)`` or
    ``(C, H, W)``), plus a ``Dense(outputs, output_activation)`` output layer unless
    ``outputs`` is None. Shapes are checked first, so a misfit names its token."""
    from .layers import Dense
    from .model import Sequential

    groups = _groups(arch_tokens(arch), init)
    if outputs is not None:
        groups.append((f"the output layer (dense:{outputs}, added for the dataset)",
                       Dense(outputs, output_activation, init=init)))
    if not groups:
        raise ConfigError("arch has no layers and no output layer was asked for")
    shape = (input_shape,) if isinstance(input_shape, int) else tuple(input_shape)
    check_shapes(groups, shape)
    return Sequential([layer for _, layer in groups], input_shape=shape, engine=engine,
                      dtype=dtype, seed=seed)


def format_arch(layers) -> str:
    """The arch text of ``layers`` (the inverse of ``parse_arch``), each layer writing its own
    tokens (``Layer.arch_tokens``); a ``ConfigError`` for a layer the grammar cannot write
    (non-square kernels, a bias-free layer without BatchNorm after it, non-default leaky_relu
    alpha or BatchNorm settings)."""
    tokens = []
    for i, layer in enumerate(layers):
        nxt = layers[i + 1] if i + 1 < len(layers) else None
        if getattr(layer, "alpha", 0.01) != 0.01:
            raise ConfigError(f"{layer.describe()}: the arch grammar writes leaky_relu with its "
                              f"default alpha 0.01 only")
        # Which layers have no bias is the grammar's choice: exactly those before batchnorm.
        use_bias, normed = getattr(layer, "use_bias", None), getattr(nxt, "absorbs_bias", False)
        if use_bias is False and not normed:
            raise ConfigError(f"{layer.describe()}: the arch grammar drops a bias only "
                              f"before batchnorm")
        if use_bias and normed:
            raise ConfigError(f"{layer.describe()}: before batchnorm the arch grammar "
                              f"writes a layer without bias")
        tokens += layer.arch_tokens()
    return ",".join(tokens)


__all__ = ["GRAMMAR", "Token", "arch_model", "arch_tokens", "check_shapes", "format_arch",
           "normalize_arch", "parse_arch", "uses_images"]
