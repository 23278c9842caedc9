"""The ``numba`` engine: NumPy arrays, Numba-JIT fused kernels on the hot paths.

Every override checks its inputs at the boundary and calls the reference
(``super()``) for anything the kernels do not handle, so the answer is always
the reference's answer, only faster where it can be:

* Arrays must be plain ``numpy.ndarray`` of float32 or float64, all of one
  dtype and of the shapes the primitive documents; otherwise -> reference.
* Inputs that are only read and are not C-contiguous are copied to
  C-contiguous first (one cheap copy, then the fused kernel).
* Arrays updated in place (optimizer parameters and state) that are not
  C-contiguous or not writeable -> reference, which updates strided views
  in place correctly.
* Convolution and pooling kernels read images of any memory layout (no copy
  of a convolution's transposed output).
* ``softmax_xent`` labels must be integers; they are checked inside the
  kernel, and an out-of-range label raises ``ConfigError`` naming it (the
  reference would silently give a wrong loss).

Numba itself is imported only when this engine is constructed or asked
whether it is available, so ``import handprop`` stays light.
"""

from __future__ import annotations

import importlib
import math

import numpy as np

from ..errors import ConfigError
from .base import (ACTIVATION_CODES, LECUN_A, LECUN_S, _check_images, activation_code,
                   window_output_size)
from .numpy_engine import NumpyEngine

#: Oldest Numba whose behaviour the kernels were written against.
MIN_NUMBA = (0, 58)

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_RELU, _LEAKY, _SIGMOID, _TANH, _LECUN, _IDENTITY = (
    ACTIVATION_CODES[k] for k in ("relu", "leaky_relu", "sigmoid", "tanh", "lecun_tanh", "identity")
)


# These checks run on every call: plain loops, since a generator in
# ``all()`` alone cost more than a small kernel.
def _floats(first, *rest) -> bool:
    """All plain ndarrays of one supported (native-order) float dtype."""
    if type(first) is not np.ndarray:
        return False
    dt = first.dtype
    if dt not in _FLOATS:
        return False
    for a in rest:
        if type(a) is not np.ndarray or a.dtype != dt:
            return False
    return True


def _inplace_ok(*arrays) -> bool:
    for a in arrays:
        flags = a.flags
        if not (flags.c_contiguous and flags.writeable):
            return False
    return True


#: Rows per partial sum of a big ``bias_grad``, a fixed grouping whatever the thread count.
BIAS_BLOCK_ROWS = 8192
#: Rows a convolution's element-wise kernels take as one run (BIAS_BLOCK_ROWS is a multiple).
ROWS_PER_RUN = 64


def _argmax_dtype(size) -> type:
    """Positions inside a pooling window: one byte each for windows of up to 127 values (a
    fraction of the memory traffic of the reference's int64), else int64."""
    return np.int8 if size[0] * size[1] <= 127 else np.int64


def _vector_aligned(shape, dtype):
    """An uninitialised C-contiguous array whose data starts on a 64-byte boundary (NumPy's
    own start 16 bytes past one), so the direct convolutions' vector loads and stores of its
    rows never straddle two cache lines (4 % of the MNIST CNN's step at batch 64)."""
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


class NumbaEngine(NumpyEngine):
    name = "numba"
    fused_kernels = True

    _reason: str | None = None

    def __init__(self):
        super().__init__()
        from . import numba_conv_kernels, numba_kernels, numba_simd

        self.kernels = numba_kernels
        self.conv_kernels = numba_conv_kernels
        #: Convolutions whose filters fill whole vectors, over windows whose rows are long
        #: enough to stream (kw*C >= SHORT_RUN) or of a width the sliding-window kernels take,
        #: run as direct convolutions (``direct_conv_*`` in numba_conv_kernels: 1.3-2.4x the
        #: tiled GEMMs on the MNIST CNN's layers); the rest, and every convolution while this
        #: is False, as tiled GEMMs. False where the kernels are compiled for a CPU without
        #: AVX-512, whose registers cannot hold their blocks (they would still be right).
        self.direct_convolution = numba_simd.wide_vectors()

    # ------------------------------------------------------------ discovery
    @classmethod
    def unavailable_reason(cls) -> str:
        """"" when Numba imports and is new enough, otherwise why not."""
        if cls._reason is None:
            cls._reason = _probe_numba()
        return cls._reason

    def describe(self) -> dict:
        info = super().describe()
        import numba

        info["numba_version"] = numba.__version__
        return info

    def warmup(self, dtypes=("float32",)) -> None:
        """Compile (or load from the cache) every kernel for ``dtypes``, by
        calling each primitive once on tiny arrays, so that the first timed
        call pays no compilation."""
        for name in dtypes:
            dt = np.dtype(name)
            z = np.linspace(-2, 2, 6, dtype=dt).reshape(2, 3)
            b = np.ones(3, dtype=dt)
            for kind in ACTIVATION_CODES:
                out = self.bias_act(z, b, kind)
                self.act_backward(z, out, kind)
            self.bias_grad(z)
            self.kernels.bias_grad_blocks(z, 1, 0, 2, np.empty((2, 3)))  # a big bias_grad's
            for kind in ("relu", "leaky_relu"):
                self.act_backward_bias_grad(z, self.bias_act(z, b, kind), kind)
            self.sum_squares(z)
            self.softmax_xent(z, np.array([0, 2], dtype=np.int64))
            out, x_hat, inv_std, _, _ = self.batch_norm_forward(z, b, b, 1e-5)
            self.batch_norm_backward(out, x_hat, inv_std, b)
            x = np.linspace(-1, 1, 32, dtype=dt).reshape(1, 2, 4, 4)
            for padding in ((0, 0, 0, 0), (1, 1, 1, 1)):
                cols = self.im2col(x, (3, 3), (1, 1), padding)
                self.col2im(cols, x.shape, (3, 3), (1, 1), padding)
            self.im2col(x.transpose(0, 1, 3, 2), (3, 3), (1, 1), (1, 1, 1, 1))
            channels_last = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
            w = np.linspace(-1, 1, 18 * 3, dtype=dt).reshape(18, 3)
            for image in (x, channels_last):  # a model's input, and a convolution's output
                rows = self.im2col_matmul(image, w, (3, 3), (1, 1), (1, 1, 1, 1))
                self.im2col_t_matmul(image, rows, (3, 3), (1, 1), (1, 1, 1, 1))
                self.matmul_col2im(rows, w.T, image.shape, (3, 3), (1, 1), (1, 1, 1, 1))
            # the direct convolutions: filters in whole vectors, window rows of 16+ values
            image = np.linspace(-1, 1, 16 * 9, dtype=dt).reshape(1, 16, 3, 3)
            for image in (image, np.ascontiguousarray(image.transpose(0, 2, 3, 1)).transpose(
                    0, 3, 1, 2)):
                w = np.linspace(-1, 1, 16 * 9 * 16, dtype=dt).reshape(16 * 9, 16)
                rows = self.im2col_matmul(image, w, (3, 3), (1, 1), (1, 1, 1, 1))
                self.im2col_t_matmul(image, rows, (3, 3), (1, 1), (1, 1, 1, 1))
                self.matmul_col2im(rows, w.T, image.shape, (3, 3), (1, 1), (1, 1, 1, 1))
                for kind in ("relu", "leaky_relu"):  # a first layer's backward
                    self.act_backward_weight_grad(image, rows, rows, kind, 0.01, (3, 3),
                                                  (1, 1), (1, 1, 1, 1))
            out, argmax = self.max_pool_forward(channels_last, (2, 2), (2, 2))
            self.max_pool_backward(out, argmax, x.shape, (2, 2), (2, 2))  # windows tiling x
            x[0, 0, 0, 0] = np.nan  # the NaN-aware max-pool too
            channels_last[0, 0, 0, 0] = np.nan
            for image in (x, x.transpose(0, 1, 3, 2), channels_last):  # contiguous, and views
                for size in ((2, 2), (3, 3)):
                    out, argmax = self.max_pool_forward(image, size, (1, 1))
                    for grad in (out, np.ascontiguousarray(out)):  # as it comes, and NCHW
                        self.max_pool_backward(grad, argmax, image.shape, size, (1, 1))
                self.avg_pool_backward(self.avg_pool_forward(image, (2, 2), (2, 2)), image.shape,
                                       (2, 2), (2, 2))
            p, g = z.copy(), z * 0.5
            s1, s2 = np.zeros_like(z), np.zeros_like(z)
            for wd in (0.0, 0.1):
                self.sgd_update(p, g, 0.1, weight_decay=wd)
                for nesterov in (False, True):
                    self.momentum_update(p, g, s1, 0.1, 0.9, weight_decay=wd, nesterov=nesterov)
                self.adam_update(p, g, s1, s2, 0.1, 0.9, 0.999, 1e-8, 1, weight_decay=wd)
            from .numba_training import warmup

            warmup(self, name)

    # ---------------------------------------------------- compiled training
    def compiled_epoch(self, model, loss, optimizer, l2: float, batch_size: int):
        from .numba_training import compiled_epoch

        return compiled_epoch(model, loss, optimizer, l2, batch_size)

    def threads_for(self, model):
        """For a model with convolution or pooling layers: BLAS on one thread. Their kernels
        split each batch over this engine's own threads, which then share the cores with
        OpenBLAS's: those keep spinning for a while after every multithreaded product (a
        dense layer's, here), and a step of the MNIST CNN at batch 128 took 64 ms with
        them against 42 ms without. Models of dense layers keep BLAS's threads."""
        from ..nn.conv import Conv2D, _Pool2D

        if (self.conv_kernels.kernel_threads() == 1
                or not any(isinstance(layer, (Conv2D, _Pool2D)) for layer in model.layers)):
            return super().threads_for(model)
        from threadpoolctl import threadpool_limits

        return threadpool_limits(1, user_api="blas")

    # ---------------------------------------------------------- activations
    def bias_act(self, z, b, kind: str, alpha: float = 0.01):
        code = activation_code(kind)
        if code == _IDENTITY or not _floats(z, b) or z.ndim != 2 or b.ndim != 1:
            # identity is just ``z + b``: NumPy's add beats a kernel call.
            return super().bias_act(z, b, kind, alpha)
        self.check_bias_shapes(z, b)
        z = np.ascontiguousarray(z)
        b = np.ascontiguousarray(b)
        k = self.kernels
        out = np.empty_like(z)
        if code == _RELU or code == _LEAKY:
            k.bias_act_direct(z, b, code, float(alpha), out)
        elif code == _SIGMOID:
            k.bias_neg_abs(z, b, out)
            np.exp(out, out=out)
            k.sigmoid_finish(z, b, out)
        elif code == _TANH:
            np.add(z, b, out=out)
            np.tanh(out, out=out)
        else:  # lecun_tanh: A * tanh(S * (z + b)), the reference's order
            k.bias_scale(z, b, LECUN_S, out)
            np.tanh(out, out=out)
            np.multiply(out, LECUN_A, out=out)  # a weak Python scalar, as in the reference
        return out

    def act_backward(self, grad, out, kind: str, alpha: float = 0.01):
        code = activation_code(kind)
        if code == _IDENTITY or not _floats(grad, out) or grad.shape != out.shape:
            # identity: the reference returns ``grad`` itself; nothing to fuse.
            return super().act_backward(grad, out, kind, alpha)
        grad = np.ascontiguousarray(grad)
        out = np.ascontiguousarray(out)
        res = np.empty_like(grad)
        self.kernels.act_backward(grad.ravel(), out.ravel(), code, float(alpha), res.ravel())
        return res

    def bias_grad(self, grad):
        if not _floats(grad) or grad.ndim != 2:
            return super().bias_grad(grad)
        res = np.empty(grad.shape[1], dtype=grad.dtype)
        grad, conv = np.ascontiguousarray(grad), self.conv_kernels
        blocks = -(-grad.shape[0] // BIAS_BLOCK_ROWS)
        if blocks == 1 or grad.size < conv.PARALLEL_MIN_ELEMENTS:
            self.kernels.bias_grad(grad, res)
            return res
        # A convolution's rows (100,352 at batch 128 in the MNIST CNN): fixed blocks, summed
        # in order, shared between threads.
        partial = np.empty((blocks, grad.shape[1]))
        conv.over_batch(self.kernels.bias_grad_blocks, conv.batch_chunks(blocks, grad.size),
                        lambda b0, b1: (grad, BIAS_BLOCK_ROWS, b0, b1, partial))
        res[:] = partial.sum(axis=0)
        return res

    def act_backward_bias_grad(self, grad, out, kind: str, alpha: float = 0.01):
        code = activation_code(kind)
        if (code not in (_RELU, _LEAKY) or not _floats(grad, out) or grad.ndim != 2
                or grad.shape != out.shape):
            return super().act_backward_bias_grad(grad, out, kind, alpha)
        # relu and leaky_relu: dz (the same bits as act_backward) and its column sums in one
        # pass, in fixed blocks of rows shared between threads (the sums' order is fixed:
        # ROWS_PER_RUN interleaved partial sums a column, then the blocks in order).
        grad, out, conv = np.ascontiguousarray(grad), np.ascontiguousarray(out), self.conv_kernels
        dz, db = _vector_aligned(grad.shape, grad.dtype), np.empty(grad.shape[1], dtype=grad.dtype)
        blocks = max(1, -(-grad.shape[0] // BIAS_BLOCK_ROWS))
        partial = np.empty((blocks, grad.shape[1]))
        conv.share_units(conv.act_backward_bias_grad_blocks, blocks, grad.size, (
            grad, out, code, float(alpha), BIAS_BLOCK_ROWS, ROWS_PER_RUN, dz, partial))
        db[:] = partial[0] if blocks == 1 else partial.sum(axis=0)
        return dz, db

    def sum_squares(self, w) -> float:
        if not _floats(w):
            return super().sum_squares(w)
        return float(self.kernels.sum_squares(np.ascontiguousarray(w).ravel()))

    # ------------------------------------------------ batch normalization
    def batch_norm_forward(self, x, gamma, beta, eps: float):
        if (not _floats(x, gamma, beta) or x.ndim != 2 or x.shape[0] == 0
                or gamma.shape != (x.shape[1],) or beta.shape != gamma.shape):
            return super().batch_norm_forward(x, gamma, beta, eps)
        x = np.ascontiguousarray(x)
        out, x_hat = np.empty_like(x), np.empty_like(x)
        inv_std, mean, var = (np.empty(x.shape[1], dtype=x.dtype) for _ in range(3))
        self.kernels.batch_norm_forward(x, np.ascontiguousarray(gamma), np.ascontiguousarray(beta),
                                   float(eps), out, x_hat, inv_std, mean, var)
        return out, x_hat, inv_std, mean, var

    def batch_norm_backward(self, grad, x_hat, inv_std, gamma):
        if (not _floats(grad, x_hat, inv_std, gamma) or grad.ndim != 2 or grad.shape[0] == 0
                or x_hat.shape != grad.shape or inv_std.shape != (grad.shape[1],)
                or gamma.shape != inv_std.shape):
            return super().batch_norm_backward(grad, x_hat, inv_std, gamma)
        grad = np.ascontiguousarray(grad)
        dx = np.empty_like(grad)
        dgamma, dbeta = np.empty_like(inv_std), np.empty_like(inv_std)
        self.kernels.batch_norm_backward(grad, np.ascontiguousarray(x_hat),
                                    np.ascontiguousarray(inv_std), np.ascontiguousarray(gamma),
                                    dx, dgamma, dbeta)
        return dx, dgamma, dbeta

    # ---------------------------------------------------------- convolution
    def im2col(self, x, kernel, stride, padding, out=None):
        if not _floats(x) or x.ndim != 4:
            return super().im2col(x, kernel, stride, padding)
        n, c, _, _ = _check_images(x, "im2col")
        oh, ow = window_output_size(x.shape, kernel, stride, padding, "im2col")
        shape = (n * oh * ow, c * kernel[0] * kernel[1])
        # Reusing the caller's buffer saves the page faults of a fresh one (40 MB at batch 128
        # in the MNIST CNN: beyond malloc's mmap threshold, so every allocation is new memory).
        conv = self.conv_kernels
        cols = out if conv.reusable(out, shape, x.dtype) else np.empty(shape, dtype=x.dtype)
        rows = oh * ow
        conv.over_batch(conv.im2col, conv.batch_chunks(n, cols.size), lambda b0, b1: (
            x[b0:b1], kernel[0], kernel[1], stride[0], stride[1], padding[0], padding[2], oh, ow,
            cols[b0 * rows:b1 * rows]))
        return cols

    def col2im(self, cols, x_shape, kernel, stride, padding):
        if not _floats(cols) or cols.ndim != 2 or len(x_shape) != 4:
            return super().col2im(cols, x_shape, kernel, stride, padding)
        n, c = int(x_shape[0]), int(x_shape[1])
        oh, ow = window_output_size(x_shape, kernel, stride, padding, "col2im")
        if cols.shape != (n * oh * ow, c * kernel[0] * kernel[1]):
            return super().col2im(cols, x_shape, kernel, stride, padding)  # it names the shapes
        dx = np.empty(tuple(int(d) for d in x_shape), dtype=cols.dtype)
        cols, rows, conv = np.ascontiguousarray(cols), oh * ow, self.conv_kernels
        conv.over_batch(conv.col2im, conv.batch_chunks(n, cols.size), lambda b0, b1: (
            cols[b0 * rows:b1 * rows], kernel[0], kernel[1], stride[0], stride[1], padding[0],
            padding[2], oh, ow, dx[b0:b1]))
        return dx

    # The convolution's products over windows (numba_conv_kernels), as direct convolutions or
    # a tile of images at a time: the window matrix is never built whole. Kernel columns are in
    # (i, j, c) order, so the weights are permuted to it here and the weight gradient back.
    def _direct(self, filters: int, dtype, run: int, slides: bool = False) -> bool:
        """Filters in whole vectors, and window rows long enough to stream or of a width
        the sliding-window kernel takes (``slides``)."""
        width = self.conv_kernels.VECTOR_BYTES // np.dtype(dtype).itemsize
        return (self.direct_convolution and filters % width == 0
                and (run >= self.conv_kernels.SHORT_RUN or slides))

    def _slides(self, kernel, stride) -> bool:
        return stride[1] == 1 and kernel[1] in self.conv_kernels.SLIDE_TAPS

    def _window_plan(self, x_shape, kernel, stride, padding, what):
        from .numba_training import register_blas

        register_blas()  # before the first kernel that calls gemm compiles
        n, c = int(x_shape[0]), int(x_shape[1])
        oh, ow = window_output_size(x_shape, kernel, stride, padding, what)
        kh, kw = kernel
        per_tile = self.conv_kernels.images_per_tile(oh * ow, c * kh * kw)
        args = (kh, kw, stride[0], stride[1], padding[0], padding[2], oh, ow, per_tile)
        return n, c, oh * ow, args

    def im2col_matmul(self, x, w, kernel, stride, padding, bias=None, activation="identity",
                      alpha: float = 0.01):
        code = activation_code(activation)
        if (not _floats(x, w) or x.ndim != 4 or w.ndim != 2
                or (bias is not None and not (_floats(bias, x) and bias.shape == w.shape[1:]))):
            return super().im2col_matmul(x, w, kernel, stride, padding, bias, activation, alpha)
        n, c, rows, args = self._window_plan(x.shape, kernel, stride, padding, "im2col_matmul")
        kh, kw = kernel
        if w.shape[0] != c * kh * kw:  # the reference names the shapes
            return super().im2col_matmul(x, w, kernel, stride, padding, bias, activation, alpha)
        f = w.shape[1]
        # identity, relu and leaky_relu are applied to each tile's rows in the kernel; the
        # others (exp, tanh) after it, by bias_act, as the reference computes them.
        in_kernel = code in (_IDENTITY, _RELU, _LEAKY)
        has_bias = bias is not None and in_kernel
        bias_rows = np.tile(bias if has_bias else np.zeros(f, x.dtype), ROWS_PER_RUN)
        epilogue = (bias_rows, has_bias, code if in_kernel else _IDENTITY, float(alpha))
        w_ijc = np.ascontiguousarray(w.reshape(c, kh, kw, f).transpose(1, 2, 0, 3)).reshape(-1, f)
        z = _vector_aligned((n * rows, f), x.dtype)
        conv, per_tile, work = self.conv_kernels, args[-1], n * rows * c * kh * kw
        if self._direct(f, x.dtype, kw * c, self._slides(kernel, stride)):
            conv.share_units(conv.direct_conv_forward, n, work, (x, w_ijc, *args[:-1], *epilogue, z))
        else:
            conv.share_units(conv.im2col_matmul, -(-n // per_tile), work,
                             (x, w_ijc, *args, *epilogue, z))
        if in_kernel:
            return z
        if bias is not None:
            return self.bias_act(z, bias, activation, alpha)
        return self.activation(z, activation, alpha)

    def im2col_t_matmul(self, x, g, kernel, stride, padding):
        if not _floats(x, g) or x.ndim != 4 or g.ndim != 2:
            return super().im2col_t_matmul(x, g, kernel, stride, padding)
        n, c, rows, args = self._window_plan(x.shape, kernel, stride, padding, "im2col_t_matmul")
        if g.shape[0] != n * rows:
            return super().im2col_t_matmul(x, g, kernel, stride, padding)  # it names the shapes
        (kh, kw), f, conv = kernel, g.shape[1], self.conv_kernels
        per_group = max(conv.IMAGES_PER_GROUP, args[-1])
        groups = -(-n // per_group)
        partial = np.empty((groups, kh * kw * c, f), dtype=x.dtype)
        g = np.ascontiguousarray(g)
        if self._direct(f, x.dtype, kw * c, self._slides(kernel, stride)):
            conv.share_units(conv.direct_conv_weight_grad, groups, g.size * c * kh * kw,
                             (x, g, *args[:-1], per_group, partial))
        else:
            conv.share_units(conv.im2col_t_matmul, groups, g.size * c * kh * kw,
                             (x, g, *args, per_group, partial))
        return _weight_grad_rows(partial, kernel, c)

    def act_backward_weight_grad(self, x, grad, out, kind: str, alpha, kernel, stride,
                                 padding):
        code = activation_code(kind)
        if (code not in (_RELU, _LEAKY) or not _floats(x, grad, out) or x.ndim != 4
                or grad.ndim != 2 or grad.shape != out.shape):
            return super().act_backward_weight_grad(x, grad, out, kind, alpha, kernel, stride,
                                                    padding)
        n, c, rows, args = self._window_plan(x.shape, kernel, stride, padding,
                                             "act_backward_weight_grad")
        (kh, kw), f, conv = kernel, grad.shape[1], self.conv_kernels
        if grad.shape[0] != n * rows or not self._direct(f, x.dtype, kw * c,
                                                         self._slides(kernel, stride)):
            return super().act_backward_weight_grad(x, grad, out, kind, alpha, kernel, stride,
                                                    padding)
        groups = -(-n // conv.IMAGES_PER_GROUP)
        partial = np.empty((groups, kh * kw * c, f), dtype=x.dtype)
        bias_partial = np.empty((groups, f))
        grad, out = np.ascontiguousarray(grad), np.ascontiguousarray(out)
        conv.share_units(conv.direct_conv_act_weight_grad, groups, grad.size * c * kh * kw,
                         (x, grad, out, code, float(alpha), *args[:-1], conv.IMAGES_PER_GROUP,
                          partial, bias_partial))
        db = (bias_partial[0] if groups == 1 else bias_partial.sum(axis=0)).astype(grad.dtype)
        return _weight_grad_rows(partial, kernel, c), db

    def matmul_col2im(self, g, w, x_shape, kernel, stride, padding):
        if not _floats(g, w) or g.ndim != 2 or w.ndim != 2 or len(x_shape) != 4:
            return super().matmul_col2im(g, w, x_shape, kernel, stride, padding)
        n, c, rows, args = self._window_plan(x_shape, kernel, stride, padding, "matmul_col2im")
        (kh, kw), f = kernel, g.shape[1]
        if g.shape[0] != n * rows or w.shape != (f, c * kh * kw):
            return super().matmul_col2im(g, w, x_shape, kernel, stride, padding)
        h, width = int(x_shape[2]), int(x_shape[3])
        dx_t = _vector_aligned((n, h, width, c), g.dtype)  # channels-last, as a conv's output
        g, conv = np.ascontiguousarray(g), self.conv_kernels
        top, bottom, left, right = padding
        if (self._direct(c, g.dtype, 0, self._slides(kernel, stride)) and stride[0] == 1
                and max(top, bottom) < kh and max(left, right) < kw):
            # the gradient's convolution with the flipped kernel, rows in (i, j, f) order
            w_flipped = np.ascontiguousarray(
                w.reshape(f, c, kh, kw)[:, :, ::-1, ::-1].transpose(2, 3, 0, 1)).reshape(-1, c)
            conv.share_units(conv.direct_conv_input_grad, n, g.size * c * kh * kw,
                             (g, w_flipped, kh, kw, top, left, *args[-3:-1], dx_t))
            return dx_t.transpose(0, 3, 1, 2)
        w_ijc = np.ascontiguousarray(w.reshape(f, c, kh, kw).transpose(0, 2, 3, 1)).reshape(f, -1)
        conv.share_units(conv.matmul_col2im, -(-n // args[-1]), g.size * c * kh * kw,
                         (g, w_ijc, *args, dx_t))
        return dx_t.transpose(0, 3, 1, 2)

    # Pooling kernels read images of any layout: a convolution's output is a view. Channels-last
    # memory (that view) is pooled by the _nhwc kernels, and out, argmax and dx keep it.
    def max_pool_forward(self, x, size, stride):
        if not _floats(x) or x.ndim != 4:
            return super().max_pool_forward(x, size, stride)
        n, c = x.shape[:2]
        oh, ow = window_output_size(x.shape, size, stride, what="max_pool_forward")
        (ph, pw), (sh, sw), conv = size, stride, self.conv_kernels
        chunks = conv.batch_chunks(n, x.size)
        if conv.channels_last(x):
            out_t = np.empty((n, oh, ow, c), dtype=x.dtype)
            argmax_t = np.empty(out_t.shape, dtype=_argmax_dtype(size))
            out, argmax = out_t.transpose(0, 3, 1, 2), argmax_t.transpose(0, 3, 1, 2)
            if size == (2, 2):
                x_t = x.transpose(0, 2, 3, 1)
                per_unit = conv.images_per_unit(n)
                nan = conv.share_units(conv.max_pool_forward_2x2_nhwc, -(-n // per_unit),
                                       x.size, (x_t, sh, sw, per_unit, out_t, argmax_t))
        else:
            out = np.empty((n, c, oh, ow), dtype=x.dtype)
            argmax = np.empty(out.shape, dtype=_argmax_dtype(size))
            if size == (2, 2):
                nan = conv.over_batch(conv.max_pool_forward_2x2, chunks, lambda b0, b1: (
                    x[b0:b1], sh, sw, out[b0:b1], argmax[b0:b1]))
        if size != (2, 2):
            nan = conv.over_batch(conv.max_pool_forward, chunks, lambda b0, b1: (
                x[b0:b1], ph, pw, sh, sw, out[b0:b1], argmax[b0:b1]))
        if any(nan):
            conv.over_batch(conv.max_pool_forward_nan, chunks, lambda b0, b1: (
                x[b0:b1], ph, pw, sh, sw, out[b0:b1], argmax[b0:b1]))
        return out, argmax

    def max_pool_backward(self, grad, argmax, x_shape, size, stride):
        if (not _floats(grad) or type(argmax) is not np.ndarray or argmax.dtype.kind not in "iu"
                or argmax.shape != grad.shape or len(x_shape) != 4):
            return super().max_pool_backward(grad, argmax, x_shape, size, stride)
        self._check_pool_grad(grad, x_shape, size, stride, "max_pool_backward")
        n, c, h, w = (int(d) for d in x_shape)
        (ph, pw), (sh, sw), conv = size, stride, self.conv_kernels
        chunks = conv.batch_chunks(n, n * c * h * w)
        if argmax.dtype not in (np.int8, np.int64):
            argmax = argmax.astype(np.int64)  # keeps the layout; two kernel variants, not more
        if conv.channels_last(argmax):
            dx_t = np.empty((n, h, w, c), dtype=grad.dtype)
            # The gradient in the arg-max's channels-last layout (after Flatten it comes back
            # NCHW; a kernel reading it across channels would stride through memory).
            grad_t = np.ascontiguousarray(grad.transpose(0, 2, 3, 1))
            argmax_t = argmax.transpose(0, 2, 3, 1)
            if (sh, sw) == (ph, pw) and (h, w) == (grad.shape[2] * ph, grad.shape[3] * pw):
                per_unit = conv.images_per_unit(n)
                conv.share_units(conv.max_pool_backward_tiled_nhwc, -(-n // per_unit),
                                 dx_t.size, (grad_t, argmax_t, ph, pw, per_unit, dx_t))
                return dx_t.transpose(0, 3, 1, 2)
            offsets = np.arange(ph * pw)
            row_of, col_of = offsets // pw, offsets % pw
            conv.over_batch(conv.max_pool_backward_nhwc, chunks, lambda b0, b1: (
                grad_t[b0:b1], argmax_t[b0:b1], row_of, col_of, sh, sw, dx_t[b0:b1]))
            return dx_t.transpose(0, 3, 1, 2)
        dx = np.empty((n, c, h, w), dtype=grad.dtype)
        argmax = np.ascontiguousarray(argmax)
        conv.over_batch(conv.max_pool_backward, chunks, lambda b0, b1: (
            grad[b0:b1], argmax[b0:b1], ph, pw, sh, sw, dx[b0:b1]))
        return dx

    def avg_pool_forward(self, x, size, stride):
        if not _floats(x) or x.ndim != 4:
            return super().avg_pool_forward(x, size, stride)
        oh, ow = window_output_size(x.shape, size, stride, what="avg_pool_forward")
        out = np.empty((x.shape[0], x.shape[1], oh, ow), dtype=x.dtype)
        conv = self.conv_kernels
        chunks = conv.batch_chunks(x.shape[0], x.size)
        conv.over_batch(conv.avg_pool_forward, chunks, lambda b0, b1: (
            x[b0:b1], size[0], size[1], stride[0], stride[1], out[b0:b1]))
        return out

    def avg_pool_backward(self, grad, x_shape, size, stride):
        if not _floats(grad) or len(x_shape) != 4:
            return super().avg_pool_backward(grad, x_shape, size, stride)
        self._check_pool_grad(grad, x_shape, size, stride, "avg_pool_backward")
        dx = np.empty(tuple(int(d) for d in x_shape), dtype=grad.dtype)
        conv = self.conv_kernels
        chunks = conv.batch_chunks(dx.shape[0], dx.size)
        conv.over_batch(conv.avg_pool_backward, chunks, lambda b0, b1: (
            grad[b0:b1], size[0], size[1], stride[0], stride[1], dx[b0:b1]))
        return dx

    # --------------------------------------------------------------- losses
    def softmax_xent(self, logits, labels):
        if (
            not _floats(logits)
            or logits.ndim != 2
            or logits.shape[0] == 0
            or logits.shape[1] == 0
            or not isinstance(labels, np.ndarray)
            or labels.dtype.kind not in "iu"
            or labels.shape != (logits.shape[0],)
        ):
            return super().softmax_xent(logits, labels)
        n, k = logits.shape
        logits = np.ascontiguousarray(logits)
        # One label dtype means one compiled specialisation; the copy is tiny.
        labels = np.ascontiguousarray(labels, dtype=np.int64)
        grad = np.empty_like(logits)
        picked = np.empty(n, dtype=np.float64)
        bad = self.kernels.xent_shift(logits, labels, grad, picked)
        if bad >= 0:
            raise ConfigError(
                f"label {int(labels[bad])} at batch row {bad} is outside 0..{k - 1}: "
                f"the model has {k} outputs; check that the dataset's number of classes "
                f"matches the last layer's units"
            )
        np.exp(grad, out=grad)  # NumPy's SIMD exp; arguments are <= 0, so no overflow
        loss = self.kernels.xent_finish(grad, labels, picked)
        return float(loss), grad

    # ----------------------------------------------------------- optimizers
    def sgd_update(self, param, grad, lr: float, weight_decay: float = 0.0) -> None:
        if not _floats(param, grad) or param.shape != grad.shape or not _inplace_ok(param):
            return super().sgd_update(param, grad, lr, weight_decay)
        self.kernels.sgd_update(param.ravel(), np.ascontiguousarray(grad).ravel(), float(lr),
                           float(weight_decay), bool(weight_decay))

    def momentum_update(self, param, grad, velocity, lr: float, momentum: float,
                        weight_decay: float = 0.0, nesterov: bool = False) -> None:
        if (
            not _floats(param, grad, velocity)
            or not param.shape == grad.shape == velocity.shape
            or not _inplace_ok(param, velocity)
        ):
            return super().momentum_update(param, grad, velocity, lr, momentum,
                                           weight_decay, nesterov)
        self.kernels.momentum_update(
            param.ravel(), np.ascontiguousarray(grad).ravel(), velocity.ravel(), float(lr),
            float(momentum), float(weight_decay), bool(weight_decay), bool(nesterov),
        )

    def adam_update(self, param, grad, m, v, lr: float, beta1: float, beta2: float,
                    eps: float, step: int, weight_decay: float = 0.0) -> None:
        if (
            step < 1
            or not _floats(param, grad, m, v)
            or not param.shape == grad.shape == m.shape == v.shape
            or not _inplace_ok(param, m, v)
        ):
            # step < 1 too: the reference raises the ConfigError.
            return super().adam_update(param, grad, m, v, lr, beta1, beta2, eps, step,
                                       weight_decay)
        # Scalars in float64 (Python floats); the kernel casts them, as the
        # reference's array arithmetic does.
        beta1, beta2 = float(beta1), float(beta2)
        bc1 = 1.0 - beta1**step
        bc2 = 1.0 - beta2**step
        self.kernels.adam_update(
            param.ravel(), np.ascontiguousarray(grad).ravel(), m.ravel(), v.ravel(),
            beta1, 1.0 - beta1, beta2, 1.0 - beta2, float(eps),
            float(lr) / bc1, math.sqrt(bc2), float(weight_decay), bool(weight_decay),
        )


def _probe_numba() -> str:
    try:
        numba = importlib.import_module("numba")
    except Exception as exc:  # ImportError, or numba refusing this NumPy
        return f"numba cannot be imported ({type(exc).__name__}: {exc}); pip install 'numba>=0.58'"
    try:
        version = tuple(int(p) for p in numba.__version__.split(".")[:2])
    except ValueError:
        return ""
    if version < MIN_NUMBA:
        need = ".".join(map(str, MIN_NUMBA))
        return f"numba {numba.__version__} is too old; this engine needs numba>={need}"
    return ""
