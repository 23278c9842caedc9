"""Convolution, pooling and flattening layers, NCHW as in PyTorch and CS231n.

A convolution is one matrix product over the windows ``im2col`` gathers: with
``W2 = W.reshape(filters, channels * kh * kw)``, forward is
``Z = im2col(x) @ W2.T`` followed by the fused bias + activation on Z's
``(N*OH*OW, filters)`` rows; backward is ``dW = dZ.T @ im2col(x)``, ``db`` the
column sums of ``dZ``, and ``dx = col2im(dZ @ W2)``. Each of the three products
is one engine call (``im2col_matmul``, ``im2col_t_matmul``, ``matmul_col2im``):
the reference builds the window matrix and multiplies, as written; the numba
engine builds it a few images at a time, in cache, and never whole. Pooling is
an engine primitive too. Layers see one sample's shape at ``build``: ``(C, H, W)``.
"""

from __future__ import annotations

import numpy as np

from ..engines.base import activation_code, window_output_size
from ..errors import ConfigError, ShapeError
from .init import init_weights, resolve_init
from .layers import InputShapeError, Layer, activation_tokens, as_shape


def as_pair(value, what: str) -> tuple[int, int]:
    """``5`` -> ``(5, 5)``; a pair stays a pair; anything else is a ``ConfigError``."""
    pair = (value, value) if isinstance(value, (int, np.integer)) else value
    if (isinstance(value, bool) or not isinstance(pair, (tuple, list)) or len(pair) != 2
            or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1
                       for v in pair)):
        raise ConfigError(f"{what} must be a positive whole number or a pair (h, w) of them, "
                          f"got {value!r}")
    return int(pair[0]), int(pair[1])


def resolve_padding(padding, kernel: tuple[int, int], stride: tuple[int, int]) -> tuple:
    """``(top, bottom, left, right)`` from ``0``, ``p``, ``(ph, pw)``, four numbers or ``"same"``.

    ``"same"`` keeps the size at stride 1 as PyTorch does: ``k - 1`` padding per
    axis, the odd one of an even kernel at the bottom/right. PyTorch refuses
    ``"same"`` with a stride > 1, and so does this.
    """
    if isinstance(padding, str):
        if padding != "same":
            raise ConfigError(f"padding must be a number, (top, bottom, left, right) or 'same', "
                              f"got {padding!r}")
        if stride != (1, 1):
            raise ConfigError(f"padding 'same' needs stride 1 (got stride {stride[0]}x{stride[1]}); "
                              f"give the padding as a number instead, e.g. "
                              f"{(kernel[0] - 1) // 2} for a {kernel[0]}x{kernel[1]} kernel")
        return ((kernel[0] - 1) // 2, kernel[0] // 2, (kernel[1] - 1) // 2, kernel[1] // 2)
    values = padding
    if isinstance(padding, (int, np.integer)) and not isinstance(padding, bool):
        values = (padding,) * 4
    elif isinstance(padding, (tuple, list)) and len(padding) == 2:
        values = (padding[0], padding[0], padding[1], padding[1])
    if (not isinstance(values, (tuple, list)) or len(values) != 4
            or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0
                       for v in values)):
        raise ConfigError(f"padding must be a whole number >= 0, (ph, pw), (top, bottom, left, "
                          f"right) or 'same', got {padding!r}")
    return tuple(int(v) for v in values)


def _image_shape(layer: Layer, input_shape) -> tuple[int, int, int]:
    shape = as_shape(input_shape)
    if len(shape) != 3:
        raise InputShapeError(f"{layer.describe()} needs image samples (channels, height, width) "
                              f"but gets shape {shape}; build the model with input_shape=(C, H, W) "
                              f"and keep Flatten() after the last convolution or pooling layer",
                              "images", shape)
    return shape


def _output_size(layer: Layer, shape, window, stride, padding=(0, 0, 0, 0)) -> tuple[int, int]:
    """``(OH, OW)`` of ``layer``'s window over images of ``shape``; a window larger than its
    (padded) input is an ``InputShapeError`` that names the window and the padded size."""
    try:
        return window_output_size(shape, window, stride, padding, what=layer.describe())
    except ShapeError as exc:
        padded = None
        if any(padding):
            padded = (shape[1] + padding[0] + padding[1], shape[2] + padding[2] + padding[3])
        raise InputShapeError(str(exc), "window", shape, window=window, padded=padded) from None


def _square(layer: Layer, what: str, pair) -> int:
    """The side of a square ``pair``, or a ``ConfigError``: arch tokens write one number."""
    if pair[0] != pair[1]:
        raise ConfigError(f"{layer.describe()}: the arch grammar writes square {what}s only, "
                          f"not {pair[0]}x{pair[1]}")
    return pair[0]


class Conv2D(Layer):
    """``out = activation(conv(x, W) + b)``: ``filters`` kernels of ``kernel_size``
    over every channel, moved by ``stride``, over inputs padded by ``padding``
    (a number, (ph, pw), (top, bottom, left, right) or ``"same"``).

    ``W`` is (filters, channels, kh, kw) and ``b`` is (filters,). ``init`` as for
    ``Dense`` (``auto``: He for ReLU-like activations); ``use_bias=False`` for a
    convolution followed by BatchNorm.
    """

    image_layer = True

    weight_keys = ("W",)

    def __init__(self, filters: int, kernel_size, stride=1, padding=0,
                 activation: str = "identity", init: str = "auto", alpha: float = 0.01,
                 use_bias: bool = True):
        super().__init__()
        if isinstance(filters, bool) or not isinstance(filters, (int, np.integer)) or filters < 1:
            raise ConfigError(f"Conv2D needs a positive whole number of filters, got {filters!r}")
        activation_code(activation)
        if not 0.0 <= alpha < 1.0:
            raise ConfigError(f"leaky_relu alpha must be in [0, 1), got {alpha}")
        self.filters = int(filters)
        self.kernel = as_pair(kernel_size, "Conv2D kernel_size")
        self.stride = as_pair(stride, "Conv2D stride")
        self.padding = resolve_padding(padding, self.kernel, self.stride)
        self.same = isinstance(padding, str)
        self.activation, self.alpha = activation, float(alpha)
        self.init = resolve_init(init, activation)
        self.use_bias = bool(use_bias)

    def build(self, input_shape, engine, dtype, rng):
        channels, height, width = _image_shape(self, input_shape)
        kh, kw = self.kernel
        oh, ow = _output_size(self, (channels, height, width), self.kernel, self.stride,
                              self.padding)
        self.engine, self.input_shape = engine, (channels, height, width)
        self.output_shape = (self.filters, oh, ow)
        fan_in = channels * kh * kw
        weights = init_weights(self.init, fan_in, self.filters * kh * kw, rng,
                               size=(fan_in, self.filters))
        # C-contiguous, as every saved and reloaded array is: the same layout means the same
        # BLAS calls, which a resumed run needs to continue bit for bit.
        weights = np.ascontiguousarray(weights.T).reshape(self.filters, channels, kh, kw)
        self.params = {"W": engine.asarray(weights, dtype)}
        if self.use_bias:
            self.params["b"] = engine.asarray(np.zeros(self.filters), dtype)
        self.grads = {}
        return self.output_shape

    def forward(self, x, training=False):
        e, xp = self.engine, self.engine.xp
        _, oh, ow = self.output_shape
        W2 = xp.reshape(self.params["W"], (self.filters, -1))  # (F, C*kh*kw)
        # f(im2col(x) @ W2.T + b): rows (N*OH*OW, F), one per window
        z = e.im2col_matmul(x, W2.T, self.kernel, self.stride, self.padding,
                            self.params.get("b"), self.activation, self.alpha)
        if training:
            self.x, self.out_rows = x, z
        # (N, OH, OW, F) rows seen as (N, F, OH, OW): a view, no copy.
        return xp.permute_dims(xp.reshape(z, (x.shape[0], oh, ow, self.filters)), (0, 3, 1, 2))

    def backward(self, grad_out, need_input_grad=True):
        e, xp = self.engine, self.engine.xp
        W = self.params["W"]
        grad_rows = xp.reshape(xp.permute_dims(grad_out, (0, 2, 3, 1)), (-1, self.filters))
        window = (self.kernel, self.stride, self.padding)
        if self.use_bias and not need_input_grad:  # a first layer: dz only for dW and db
            dw_t, self.grads["b"] = e.act_backward_weight_grad(
                self.x, grad_rows, self.out_rows, self.activation, self.alpha, *window)
            self.grads["W"] = xp.reshape(dw_t.T, W.shape)
            return None
        if self.use_bias:  # dz = grad * f'(z), and its column sums, in one pass
            dz, self.grads["b"] = e.act_backward_bias_grad(grad_rows, self.out_rows,
                                                           self.activation, self.alpha)
        else:
            dz = e.act_backward(grad_rows, self.out_rows, self.activation, self.alpha)
        # dW = dz.T @ im2col(x), as (im2col(x).T @ dz).T: the orientation OpenBLAS runs faster.
        self.grads["W"] = xp.reshape(e.im2col_t_matmul(self.x, dz, *window).T, W.shape)
        if not need_input_grad:
            return None
        W2 = xp.reshape(W, (self.filters, -1))
        return e.matmul_col2im(dz, W2, tuple(self.x.shape), *window)  # col2im(dz @ W2)

    def config(self):
        padding = "same" if self.same else list(self.padding)
        return {"type": "Conv2D", "filters": self.filters, "kernel_size": list(self.kernel),
                "stride": list(self.stride), "padding": padding, "activation": self.activation,
                "init": self.init, "alpha": self.alpha, "use_bias": self.use_bias}

    def arch_tokens(self):
        fields = [self.filters, _square(self, "kernel", self.kernel)]
        stride = _square(self, "stride", self.stride)
        if self.same:
            fields += [stride, "same"]
        elif any(self.padding):
            if len(set(self.padding)) != 1:
                raise ConfigError(f"{self.describe()}: the arch grammar writes the same "
                                  f"padding on every side only")
            fields += [stride, self.padding[0]]
        elif stride != 1:
            fields.append(stride)
        return [":".join(map(str, ["conv", *fields])), *activation_tokens(self.activation)]

    def window_geometry(self):
        return self.filters, self.input_shape[0], self.kernel, self.stride, self.padding

    def fuses_first_backward(self) -> bool:
        """As a first layer (no input gradient), its backward pass is one fused primitive."""
        return self.use_bias

    def describe(self):
        parts = [str(self.filters), _pair_text(self.kernel)]
        if self.stride != (1, 1):
            parts.append(f"stride {_pair_text(self.stride)}")
        if self.same:
            parts.append("same")
        elif any(self.padding):
            t, b, left, r = self.padding
            parts.append(f"padding {t}" if len({t, b, left, r}) == 1 else
                         f"padding {t},{b},{left},{r}")
        parts.append(self.activation + ("" if self.use_bias else ", no bias"))
        return f"Conv2D({', '.join(parts)})"


def _pair_text(pair) -> str:
    return f"{pair[0]}x{pair[1]}"


class _Pool2D(Layer):
    """Shared shape handling of the pooling layers; ``stride`` defaults to the window."""

    image_layer = True
    #: The arch token's name (``maxpool:SIZE[:STRIDE]``).
    arch_name = ""

    def __init__(self, pool_size, stride=None):
        super().__init__()
        name = type(self).__name__
        self.size = as_pair(pool_size, f"{name} pool_size")
        self.stride = self.size if stride is None else as_pair(stride, f"{name} stride")

    def build(self, input_shape, engine, dtype, rng):
        channels, height, width = _image_shape(self, input_shape)
        oh, ow = _output_size(self, (channels, height, width), self.size, self.stride)
        self.engine, self.input_shape = engine, (channels, height, width)
        self.output_shape = (channels, oh, ow)
        return self.output_shape

    def config(self):
        return {"type": type(self).__name__, "pool_size": list(self.size),
                "stride": list(self.stride)}

    def arch_tokens(self):
        if not self.arch_name:
            return super().arch_tokens()
        size = _square(self, "window", self.size)
        stride = _square(self, "stride", self.stride)
        return [f"{self.arch_name}:{size}" + ("" if stride == size else f":{stride}")]

    def describe(self):
        stride = "" if self.stride == self.size else f", stride {_pair_text(self.stride)}"
        return f"{type(self).__name__}({_pair_text(self.size)}{stride})"


class MaxPool2D(_Pool2D):
    """The largest value of each window; backward routes each gradient to that
    window's arg-max (the first one on ties)."""

    arch_name = "maxpool"

    def forward(self, x, training=False):
        out, argmax = self.engine.max_pool_forward(x, self.size, self.stride)
        if training:
            self.x_shape, self.argmax = tuple(x.shape), argmax
        return out

    def backward(self, grad_out, need_input_grad=True):
        if not need_input_grad:
            return None
        return self.engine.max_pool_backward(grad_out, self.argmax, self.x_shape, self.size,
                                             self.stride)


class AvgPool2D(_Pool2D):
    """The mean of each window; backward spreads each gradient evenly over its window."""

    arch_name = "avgpool"

    def forward(self, x, training=False):
        if training:
            self.x_shape = tuple(x.shape)
        return self.engine.avg_pool_forward(x, self.size, self.stride)

    def backward(self, grad_out, need_input_grad=True):
        if not need_input_grad:
            return None
        return self.engine.avg_pool_backward(grad_out, self.x_shape, self.size, self.stride)


class Flatten(Layer):
    """(N, C, H, W) -> (N, C*H*W), in (c, h, w) order as ``torch.flatten``."""

    def build(self, input_shape, engine, dtype, rng):
        self.engine, self.input_shape = engine, as_shape(input_shape)
        self.output_shape = (int(np.prod(self.input_shape)),)
        return self.output_shape

    def forward(self, x, training=False):
        if training:
            self.x_shape = tuple(x.shape)
        return self.engine.xp.reshape(x, (x.shape[0], self.output_shape[0]))

    def backward(self, grad_out, need_input_grad=True):
        return self.engine.xp.reshape(grad_out, self.x_shape)

    def config(self):
        return {"type": "Flatten"}

    def arch_tokens(self):
        return ["flatten"]


__all__ = ["AvgPool2D", "Conv2D", "Flatten", "MaxPool2D", "as_pair", "resolve_padding"]
