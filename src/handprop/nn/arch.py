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

from ..errors import ConfigError, ShapeError

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


def _groups(tokens: list[Token], init: str) -> list[tuple[str, object]]:
    """``(what, layer)`` per layer, ``what`` naming its tokens for messages: a conv or dense
    takes the activation token after it."""
    from .conv import AvgPool2D, Conv2D, Flatten, MaxPool2D
    from .init import resolve_init
    from .layers import Activation, BatchNorm, Dense, Dropout

    groups, i = [], 0
    while i < len(tokens):
        token, start = tokens[i], i
        following = tokens[i + 1:i + 3]
        text = token.text
        try:
            if token.kind in ("conv", "dense"):
                activation, feeds = "identity", "identity"
                normed = bool(following) and following[0].kind == "batchnorm"
                if following and following[0].kind == "activation":
                    activation = feeds = following[0].args[0]
                    text, i = f"{text},{following[0].text}", i + 1
                elif normed and len(following) > 1 and following[1].kind == "activation":
                    feeds = following[1].args[0]
                layer_init = resolve_init(init, feeds)
                if token.kind == "conv":
                    filters, kernel, stride, padding = token.args
                    layer = Conv2D(filters, kernel, stride, padding, activation=activation,
                                   init=layer_init, use_bias=not normed)
                else:
                    layer = Dense(token.args[0], activation, init=layer_init, use_bias=not normed)
            elif token.kind == "maxpool":
                layer = MaxPool2D(*token.args)
            elif token.kind == "avgpool":
                layer = AvgPool2D(*token.args)
            elif token.kind == "flatten":
                layer = Flatten()
            elif token.kind == "activation":
                layer = Activation(token.args[0])
            elif token.kind == "dropout":
                layer = Dropout(token.args[0])
            else:
                layer = BatchNorm()
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
    """The output shape after each ``(what, layer)`` for samples of ``input_shape``, or a
    ``ShapeError`` that names ``what`` (the token) and the shapes; no layer is built."""
    from .conv import Conv2D, Flatten, _Pool2D
    from .layers import BatchNorm, Dense

    shape, shapes, flattened = tuple(int(d) for d in input_shape), [], False
    for what, layer in groups:
        if isinstance(layer, (Conv2D, _Pool2D)):
            if len(shape) != 3:
                where = ("it comes after flatten; image layers (conv, maxpool, avgpool) go "
                         "before flatten" if flattened else
                         "the inputs are not images; use dense layers")
                raise ShapeError(f"{what} needs images (channels, height, width) "
                                 f"but gets flat samples of {shape[0]} features: {where}")
            channels, height, width = shape
            kernel = layer.kernel if isinstance(layer, Conv2D) else layer.size
            top, bottom, left, right = layer.padding if isinstance(layer, Conv2D) else (0,) * 4
            ph, pw = height + top + bottom, width + left + right
            oh = (ph - kernel[0]) // layer.stride[0] + 1
            ow = (pw - kernel[1]) // layer.stride[1] + 1
            if oh < 1 or ow < 1:
                padded = f" ({ph}x{pw} after padding)" if (top, bottom, left, right) != (0,) * 4 else ""
                raise ShapeError(f"{what}: its {kernel[0]}x{kernel[1]} window is "
                                 f"larger than its input {_shape_text(shape)}{padded}, so the "
                                 f"output size would be below 1; use a smaller window, padding "
                                 f"or fewer poolings before it")
            shape = (layer.filters if isinstance(layer, Conv2D) else channels, oh, ow)
        elif isinstance(layer, Dense):
            if len(shape) != 1:
                fix = ("end the arch with flatten" if what.startswith("the output layer")
                       else "add flatten before it")
                raise ShapeError(f"{what} needs flat inputs but gets images "
                                 f"{_shape_text(shape)}: {fix}")
            shape = (layer.units,)
        elif isinstance(layer, Flatten):
            shape, flattened = (int(_product(shape)),), True
        elif isinstance(layer, BatchNorm) and len(shape) not in (1, 3):
            raise ShapeError(f"{what} normalizes features or image channels; it "
                             f"gets samples of shape {_shape_text(shape)}")
        shapes.append(shape)
    return shapes


def _product(shape) -> int:
    out = 1
    for d in shape:
        out *= int(d)
    return out


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


def _square(layer, what: str, pair) -> int:
    if pair[0] != pair[1]:
        raise ConfigError(f"{layer.describe()}: the arch grammar writes square {what}s only, "
                          f"not {pair[0]}x{pair[1]}")
    return pair[0]


def format_arch(layers) -> str:
    """The arch text of ``layers`` (the inverse of ``parse_arch``); a ``ConfigError`` for a
    layer the grammar cannot write (non-square kernels, a bias-free layer without BatchNorm
    after it, non-default leaky_relu alpha or BatchNorm settings)."""
    from .conv import AvgPool2D, Conv2D, Flatten, MaxPool2D
    from .layers import Activation, BatchNorm, Dense, Dropout

    tokens = []
    for i, layer in enumerate(layers):
        nxt = layers[i + 1] if i + 1 < len(layers) else None
        if getattr(layer, "alpha", 0.01) != 0.01:
            raise ConfigError(f"{layer.describe()}: the arch grammar writes leaky_relu with its "
                              f"default alpha 0.01 only")
        if isinstance(layer, (Conv2D, Dense)):
            if not layer.use_bias and not isinstance(nxt, BatchNorm):
                raise ConfigError(f"{layer.describe()}: the arch grammar drops a bias only "
                                  f"before batchnorm")
            if layer.use_bias and isinstance(nxt, BatchNorm):
                raise ConfigError(f"{layer.describe()}: before batchnorm the arch grammar "
                                  f"writes a layer without bias")
            if isinstance(layer, Conv2D):
                fields = [layer.filters, _square(layer, "kernel", layer.kernel)]
                stride = _square(layer, "stride", layer.stride)
                if layer.same:
                    fields += [stride, "same"]
                elif any(layer.padding):
                    if len(set(layer.padding)) != 1:
                        raise ConfigError(f"{layer.describe()}: the arch grammar writes the same "
                                          f"padding on every side only")
                    fields += [stride, layer.padding[0]]
                elif stride != 1:
                    fields.append(stride)
                tokens.append(":".join(map(str, ["conv", *fields])))
            else:
                tokens.append(f"dense:{layer.units}")
            if layer.activation != "identity":
                tokens.append(layer.activation)
        elif isinstance(layer, (MaxPool2D, AvgPool2D)):
            name = "maxpool" if isinstance(layer, MaxPool2D) else "avgpool"
            size = _square(layer, "window", layer.size)
            stride = _square(layer, "stride", layer.stride)
            tokens.append(f"{name}:{size}" + ("" if stride == size else f":{stride}"))
        elif isinstance(layer, Flatten):
            tokens.append("flatten")
        elif isinstance(layer, Activation):
            tokens.append(layer.kind)
        elif isinstance(layer, Dropout):
            tokens.append(f"dropout:{layer.rate:g}")
        elif isinstance(layer, BatchNorm):
            if (layer.momentum, layer.eps) != (0.9, 1e-5):
                raise ConfigError("the arch grammar writes BatchNorm with its default momentum "
                                  "0.9 and eps 1e-5 only")
            tokens.append("batchnorm")
        else:
            raise ConfigError(f"{layer.describe()} has no arch token")
    return ",".join(tokens)


__all__ = ["GRAMMAR", "Token", "arch_model", "arch_tokens", "check_shapes", "format_arch",
           "normalize_arch", "parse_arch", "uses_images"]
