"""The numba engine's window primitives: im2col, the convolution's products, pooling.

The convolution's products over windows run as direct convolutions or a tile of images at a
time: the window matrix is never built whole. Which one runs is decided by one ordered table
per primitive (``IMPLEMENTATIONS``): direct, then tiled, then the reference, each with a named
predicate; the first that says yes runs. Kernel columns are in (i, j, c) order, so the
weights are permuted to it here and the weight gradient back. Pooling kernels read images of
any layout (a convolution's output is a view); channels-last memory is pooled by the
``_nhwc`` kernels, and out, argmax and dx keep it.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from ..base import ACTIVATION_CODES, _check_images, activation_code, window_output_size
from .arrays import floats

IDENTITY, RELU, LEAKY_RELU = (ACTIVATION_CODES[k] for k in ("identity", "relu", "leaky_relu"))


#: Rows a convolution's element-wise kernels take as one run.
ROWS_PER_RUN = 64


class WindowCall(NamedTuple):
    """What the implementation table decides from: a convolution's geometry."""

    filters: int
    channels: int
    dtype: np.dtype
    kernel: tuple
    stride: tuple
    padding: tuple


def _whole_vectors(engine, count: int, dtype) -> bool:
    return count % (engine.simd.VECTOR_BYTES // np.dtype(dtype).itemsize) == 0


def _slides(engine, call: WindowCall) -> bool:
    """A stride-1 window of a width the sliding-window kernels take."""
    return call.stride[1] == 1 and call.kernel[1] in engine.direct_kernels.SLIDE_TAPS


def direct_products(engine, call: WindowCall) -> bool:
    """Filters in whole vectors, and window rows long enough to stream (kw*C >= SHORT_RUN)
    or of a width the sliding-window kernels take; the engine's target has vector kernels."""
    long_rows = call.kernel[1] * call.channels >= engine.window_kernels.SHORT_RUN
    return (engine.direct_convolution and _whole_vectors(engine, call.filters, call.dtype)
            and (long_rows or _slides(engine, call)))


def direct_input_grad(engine, call: WindowCall) -> bool:
    """Channels in whole vectors, stride 1 both ways, a sliding width, padding within the
    window."""
    (kh, kw), (top, bottom, left, right) = call.kernel, call.padding
    return (engine.direct_convolution and _whole_vectors(engine, call.channels, call.dtype)
            and _slides(engine, call) and call.stride[0] == 1 and max(top, bottom) < kh
            and max(left, right) < kw)


def always(engine, call: WindowCall) -> bool:
    """Any shape, any CPU."""
    return True


#: primitive -> its implementations, in the order they are tried: (name, predicate).
IMPLEMENTATIONS = {  # in the order of base.WINDOW_PRODUCTS
    "im2col_matmul": (("direct", direct_products), ("tiled", always)),
    "im2col_t_matmul": (("direct", direct_products), ("tiled", always)),
    "act_backward_weight_grad": (("direct", direct_products), ("reference", always)),
    "matmul_col2im": (("direct", direct_input_grad), ("tiled", always)),
}


def _vector_aligned(shape, dtype):
    """An uninitialised C-contiguous array whose data starts on a 64-byte boundary (NumPy's
    own start 16 bytes past one), so vector loads and stores of its rows never straddle two
    cache lines."""
    dtype = np.dtype(dtype)
    size = math.prod(shape)
    raw = np.empty(size + 64 // dtype.itemsize, dtype)
    start = (-raw.ctypes.data % 64) // dtype.itemsize
    return raw[start:start + size].reshape(shape)


def _weight_grad_rows(partial, kernel, c):
    """The weight gradient (C*kh*kw, F), rows in (c, i, j) order, from the groups' partial
    sums (groups, kh*kw*C, F) in the kernels' (i, j, c) order, added in order."""
    (kh, kw), f = kernel, partial.shape[2]
    total = partial[0] if partial.shape[0] == 1 else partial.sum(axis=0)
    return np.ascontiguousarray(total.reshape(kh, kw, c, f).transpose(2, 0, 1, 3)).reshape(-1, f)


def _argmax_dtype(size) -> type:
    """Positions inside a pooling window: one byte each for windows of up to 127 values (a
    fraction of the memory traffic of the reference's int64), else int64."""
    return np.int8 if size[0] * size[1] <= 127 else np.int64


def channels_last(a) -> bool:
    """An NCHW array whose memory is (N, H, W, C) C-contiguous, as a convolution's output is."""
    return (a.ndim == 4 and not a.flags.c_contiguous
            and a.transpose(0, 2, 3, 1).flags.c_contiguous)


def reusable(out, shape, dtype) -> bool:
    """``out`` can take a kernel's result of ``shape`` and ``dtype`` in place."""
    return (type(out) is np.ndarray and out.shape == shape and out.dtype == dtype
            and out.flags.c_contiguous and out.flags.writeable)


class WindowPrimitives:
    """The window primitives of ``NumbaEngine`` (a mixin over the reference engine). The
    kernel modules are the engine's attributes (imported with Numba, when it is built)."""

    def _per_image(self, kernel, n: int, work: int, args) -> list:
        """``kernel(*args(per_unit), counter)`` over a batch of ``n`` images: units of
        ``images_per_unit(n)`` images shared between threads."""
        per_unit = self.threads.images_per_unit(n)
        return self.threads.share_units(kernel, -(-n // per_unit), work, args(per_unit))

    def window_implementation(self, primitive: str, call: WindowCall) -> str:
        """The name of the first implementation of ``primitive`` whose predicate holds."""
        return next(name for name, fits in IMPLEMENTATIONS[primitive] if fits(self, call))

    def window_implementations(self, filters, channels, kernel, stride, padding,
                               dtype="float32") -> dict[str, str]:
        call = WindowCall(int(filters), int(channels), np.dtype(dtype), tuple(kernel),
                          tuple(stride), tuple(padding))
        return {primitive: self.window_implementation(primitive, call)
                for primitive in IMPLEMENTATIONS}

    def _window_plan(self, x_shape, kernel, stride, padding, what):
        self.blas.register_blas()  # before the first kernel that calls gemm compiles
        n, c = int(x_shape[0]), int(x_shape[1])
        oh, ow = window_output_size(x_shape, kernel, stride, padding, what)
        kh, kw = kernel
        per_tile = self.window_kernels.images_per_tile(oh * ow, c * kh * kw)
        args = (kh, kw, stride[0], stride[1], padding[0], padding[2], oh, ow, per_tile)
        return n, c, oh * ow, args

    def im2col(self, x, kernel, stride, padding, out=None):
        if not floats(x) or x.ndim != 4:
            return super().im2col(x, kernel, stride, padding)
        n, c, _, _ = _check_images(x, "im2col")
        oh, ow = window_output_size(x.shape, kernel, stride, padding, "im2col")
        shape = (n * oh * ow, c * kernel[0] * kernel[1])
        # Reusing the caller's buffer saves the page faults of a fresh one (beyond malloc's
        # mmap threshold every allocation is new memory).
        cols = out if reusable(out, shape, x.dtype) else np.empty(shape, dtype=x.dtype)
        self._per_image(self.window_kernels.im2col, n, cols.size, lambda per_unit: (
            x, kernel[0], kernel[1], stride[0], stride[1], padding[0], padding[2], oh, ow,
            per_unit, cols))
        return cols

    def col2im(self, cols, x_shape, kernel, stride, padding):
        if not floats(cols) or cols.ndim != 2 or len(x_shape) != 4:
            return super().col2im(cols, x_shape, kernel, stride, padding)
        n, c = int(x_shape[0]), int(x_shape[1])
        oh, ow = window_output_size(x_shape, kernel, stride, padding, "col2im")
        if cols.shape != (n * oh * ow, c * kernel[0] * kernel[1]):
            return super().col2im(cols, x_shape, kernel, stride, padding)  # it names the shapes
        dx = np.empty(tuple(int(d) for d in x_shape), dtype=cols.dtype)
        cols = np.ascontiguousarray(cols)
        self._per_image(self.window_kernels.col2im, n, cols.size, lambda per_unit: (
            cols, kernel[0], kernel[1], stride[0], stride[1], padding[0], padding[2], oh, ow,
            per_unit, dx))
        return dx

    def im2col_matmul(self, x, w, kernel, stride, padding, bias=None, activation="identity",
                      alpha: float = 0.01):
        code = activation_code(activation)
        if (not floats(x, w) or x.ndim != 4 or w.ndim != 2
                or (bias is not None and not (floats(bias, x) and bias.shape == w.shape[1:]))):
            return super().im2col_matmul(x, w, kernel, stride, padding, bias, activation, alpha)
        n, c, rows, args = self._window_plan(x.shape, kernel, stride, padding, "im2col_matmul")
        kh, kw = kernel
        if w.shape[0] != c * kh * kw:  # the reference names the shapes
            return super().im2col_matmul(x, w, kernel, stride, padding, bias, activation, alpha)
        f = w.shape[1]
        # identity, relu and leaky_relu are applied to each tile's rows in the kernel; the
        # others (exp, tanh) after it, by bias_act, as the reference computes them.
        in_kernel = code in (IDENTITY, RELU, LEAKY_RELU)
        has_bias = bias is not None and in_kernel
        bias_rows = np.tile(bias if has_bias else np.zeros(f, x.dtype), ROWS_PER_RUN)
        epilogue = (bias_rows, has_bias, code if in_kernel else IDENTITY, float(alpha))
        w_ijc = np.ascontiguousarray(w.reshape(c, kh, kw, f).transpose(1, 2, 0, 3)).reshape(-1, f)
        z = _vector_aligned((n * rows, f), x.dtype)
        per_tile, work = args[-1], n * rows * c * kh * kw
        call = WindowCall(f, c, x.dtype, kernel, stride, padding)
        if self.window_implementation("im2col_matmul", call) == "direct":
            self.threads.share_units(self.direct_kernels.direct_conv_forward, n, work,
                                (x, w_ijc, *args[:-1], *epilogue, z))
        else:
            self.threads.share_units(self.window_kernels.im2col_matmul, -(-n // per_tile), work,
                                (x, w_ijc, *args, *epilogue, z))
        if in_kernel:
            return z
        if bias is not None:
            return self.bias_act(z, bias, activation, alpha)
        return self.activation(z, activation, alpha)

    def im2col_t_matmul(self, x, g, kernel, stride, padding):
        if not floats(x, g) or x.ndim != 4 or g.ndim != 2:
            return super().im2col_t_matmul(x, g, kernel, stride, padding)
        n, c, rows, args = self._window_plan(x.shape, kernel, stride, padding, "im2col_t_matmul")
        if g.shape[0] != n * rows:
            return super().im2col_t_matmul(x, g, kernel, stride, padding)  # it names the shapes
        (kh, kw), f = kernel, g.shape[1]
        per_group = max(self.window_kernels.IMAGES_PER_GROUP, args[-1])
        groups = -(-n // per_group)
        partial = np.empty((groups, kh * kw * c, f), dtype=x.dtype)
        g = np.ascontiguousarray(g)
        call = WindowCall(f, c, x.dtype, kernel, stride, padding)
        if self.window_implementation("im2col_t_matmul", call) == "direct":
            self.threads.share_units(self.direct_kernels.direct_conv_weight_grad, groups,
                                g.size * c * kh * kw, (x, g, *args[:-1], per_group, partial))
        else:
            self.threads.share_units(self.window_kernels.im2col_t_matmul, groups, g.size * c * kh * kw,
                                (x, g, *args, per_group, partial))
        return _weight_grad_rows(partial, kernel, c)

    def act_backward_weight_grad(self, x, grad, out, kind: str, alpha, kernel, stride,
                                 padding):
        code = activation_code(kind)
        if (code not in (RELU, LEAKY_RELU) or not floats(x, grad, out) or x.ndim != 4
                or grad.ndim != 2 or grad.shape != out.shape):
            return super().act_backward_weight_grad(x, grad, out, kind, alpha, kernel, stride,
                                                    padding)
        n, c, rows, args = self._window_plan(x.shape, kernel, stride, padding,
                                             "act_backward_weight_grad")
        (kh, kw), f = kernel, grad.shape[1]
        call = WindowCall(f, c, x.dtype, kernel, stride, padding)
        if (grad.shape[0] != n * rows
                or self.window_implementation("act_backward_weight_grad", call) != "direct"):
            return super().act_backward_weight_grad(x, grad, out, kind, alpha, kernel, stride,
                                                    padding)
        per_group = self.window_kernels.IMAGES_PER_GROUP
        groups = -(-n // per_group)
        partial = np.empty((groups, kh * kw * c, f), dtype=x.dtype)
        bias_partial = np.empty((groups, f))
        grad, out = np.ascontiguousarray(grad), np.ascontiguousarray(out)
        self.threads.share_units(self.direct_kernels.direct_conv_act_weight_grad, groups,
                            grad.size * c * kh * kw, (x, grad, out, code, float(alpha),
                                                      *args[:-1], per_group, partial,
                                                      bias_partial))
        db = (bias_partial[0] if groups == 1 else bias_partial.sum(axis=0)).astype(grad.dtype)
        return _weight_grad_rows(partial, kernel, c), db

    def matmul_col2im(self, g, w, x_shape, kernel, stride, padding):
        if not floats(g, w) or g.ndim != 2 or w.ndim != 2 or len(x_shape) != 4:
            return super().matmul_col2im(g, w, x_shape, kernel, stride, padding)
        n, c, rows, args = self._window_plan(x_shape, kernel, stride, padding, "matmul_col2im")
        (kh, kw), f = kernel, g.shape[1]
        if g.shape[0] != n * rows or w.shape != (f, c * kh * kw):
            return super().matmul_col2im(g, w, x_shape, kernel, stride, padding)
        h, width = int(x_shape[2]), int(x_shape[3])
        dx_t = _vector_aligned((n, h, width, c), g.dtype)  # channels-last, as a conv's output
        g, work = np.ascontiguousarray(g), g.size * c * kh * kw
        call = WindowCall(f, c, g.dtype, kernel, stride, padding)
        if self.window_implementation("matmul_col2im", call) == "direct":
            # the gradient's convolution with the flipped kernel, rows in (i, j, f) order
            w_flipped = np.ascontiguousarray(
                w.reshape(f, c, kh, kw)[:, :, ::-1, ::-1].transpose(2, 3, 0, 1)).reshape(-1, c)
            self.threads.share_units(self.direct_kernels.direct_conv_input_grad, n, work,
                                (g, w_flipped, kh, kw, padding[0], padding[2], *args[-3:-1],
                                 dx_t))
            return dx_t.transpose(0, 3, 1, 2)
        w_ijc = np.ascontiguousarray(w.reshape(f, c, kh, kw).transpose(0, 2, 3, 1)).reshape(f, -1)
        self.threads.share_units(self.window_kernels.matmul_col2im, -(-n // args[-1]), work,
                            (g, w_ijc, *args, dx_t))
        return dx_t.transpose(0, 3, 1, 2)

    def max_pool_forward(self, x, size, stride):
        if not floats(x) or x.ndim != 4:
            return super().max_pool_forward(x, size, stride)
        n, c = x.shape[:2]
        oh, ow = window_output_size(x.shape, size, stride, what="max_pool_forward")
        (ph, pw), (sh, sw), kernels = size, stride, self.pool_kernels
        if channels_last(x):
            out_t = np.empty((n, oh, ow, c), dtype=x.dtype)
            argmax_t = np.empty(out_t.shape, dtype=_argmax_dtype(size))
            out, argmax = out_t.transpose(0, 3, 1, 2), argmax_t.transpose(0, 3, 1, 2)
            if size == (2, 2):
                nan = self._per_image(kernels.max_pool_forward_2x2_nhwc, n, x.size, lambda per: (
                    x.transpose(0, 2, 3, 1), sh, sw, per, out_t, argmax_t))
        else:
            out = np.empty((n, c, oh, ow), dtype=x.dtype)
            argmax = np.empty(out.shape, dtype=_argmax_dtype(size))
            if size == (2, 2):
                nan = self._per_image(kernels.max_pool_forward_2x2, n, x.size, lambda per: (
                    x, sh, sw, per, out, argmax))
        if size != (2, 2):
            nan = self._per_image(kernels.max_pool_forward, n, x.size, lambda per: (
                x, ph, pw, sh, sw, False, per, out, argmax))
        if any(nan):
            self._per_image(kernels.max_pool_forward, n, x.size, lambda per: (
                x, ph, pw, sh, sw, True, per, out, argmax))
        return out, argmax

    def max_pool_backward(self, grad, argmax, x_shape, size, stride):
        if (not floats(grad) or type(argmax) is not np.ndarray or argmax.dtype.kind not in "iu"
                or argmax.shape != grad.shape or len(x_shape) != 4):
            return super().max_pool_backward(grad, argmax, x_shape, size, stride)
        self._check_pool_grad(grad, x_shape, size, stride, "max_pool_backward")
        n, c, h, w = (int(d) for d in x_shape)
        (ph, pw), (sh, sw), kernels, work = size, stride, self.pool_kernels, n * c * h * w
        if argmax.dtype not in (np.int8, np.int64):
            argmax = argmax.astype(np.int64)  # keeps the layout; two kernel variants, not more
        if channels_last(argmax):
            dx_t = np.empty((n, h, w, c), dtype=grad.dtype)
            # The gradient in the arg-max's channels-last layout (after Flatten it comes back
            # NCHW; a kernel reading it across channels would stride through memory).
            grad_t = np.ascontiguousarray(grad.transpose(0, 2, 3, 1))
            argmax_t = argmax.transpose(0, 2, 3, 1)
            if (sh, sw) == (ph, pw) and (h, w) == (grad.shape[2] * ph, grad.shape[3] * pw):
                self._per_image(kernels.max_pool_backward_tiled_nhwc, n, work, lambda per: (
                    grad_t, argmax_t, ph, pw, per, dx_t))
                return dx_t.transpose(0, 3, 1, 2)
            offsets = np.arange(ph * pw)
            self._per_image(kernels.max_pool_backward_nhwc, n, work, lambda per: (
                grad_t, argmax_t, offsets // pw, offsets % pw, sh, sw, per, dx_t))
            return dx_t.transpose(0, 3, 1, 2)
        dx = np.empty((n, c, h, w), dtype=grad.dtype)
        argmax = np.ascontiguousarray(argmax)
        self._per_image(kernels.max_pool_backward, n, work, lambda per: (
            grad, argmax, ph, pw, sh, sw, per, dx))
        return dx

    def avg_pool_forward(self, x, size, stride):
        if not floats(x) or x.ndim != 4:
            return super().avg_pool_forward(x, size, stride)
        oh, ow = window_output_size(x.shape, size, stride, what="avg_pool_forward")
        out = np.empty((x.shape[0], x.shape[1], oh, ow), dtype=x.dtype)
        self._per_image(self.pool_kernels.avg_pool_forward, x.shape[0], x.size, lambda per: (
            x, size[0], size[1], stride[0], stride[1], per, out))
        return out

    def avg_pool_backward(self, grad, x_shape, size, stride):
        if not floats(grad) or len(x_shape) != 4:
            return super().avg_pool_backward(grad, x_shape, size, stride)
        self._check_pool_grad(grad, x_shape, size, stride, "avg_pool_backward")
        dx = np.empty(tuple(int(d) for d in x_shape), dtype=grad.dtype)
        self._per_image(self.pool_kernels.avg_pool_backward, dx.shape[0], dx.size, lambda per: (
            grad, size[0], size[1], stride[0], stride[1], per, dx))
        return dx
