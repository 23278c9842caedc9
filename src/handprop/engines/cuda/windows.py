"""The Python side of ``kernels/conv.cu``: checks, arguments and launches of the convolution
gathers and pooling kernels, mixed into ``CudaKernelEngine`` (see ``engine.py``).

Like the other wrappers, each one refuses arrays of another library, raises the
reference's ``ShapeError`` for shapes that do not fit, and hands anything but
float32/float64 to the reference. Inputs are made C-contiguous (a
convolution's output is a transposed view). Sizes go to the kernels as
``int``; the kernels index in 64 bits.
"""

from __future__ import annotations

import numpy as np

from ..base import _check_images, window_output_size


def _ints(*values) -> tuple:
    return tuple(np.int32(v) for v in values)


class CudaConvKernels:
    """Convolution and pooling primitives on the ``conv.cu`` kernels (a mixin: it uses the
    host engine's ``_check_native``, ``_suffix``, ``_contiguous``, ``_raw`` and ``_run``)."""

    def im2col(self, x, kernel, stride, padding, out=None):
        self._check_native("im2col", x)
        n, c, h, w = _check_images(x, "im2col")
        oh, ow = window_output_size(x.shape, kernel, stride, padding, "im2col")
        suffix = self._dtype_suffix(x)
        if suffix is None:
            return super().im2col(x, kernel, stride, padding)
        shape = (n * oh * ow, c * kernel[0] * kernel[1])
        reuse = (type(out) is type(x) and tuple(out.shape) == shape and out.dtype == x.dtype
                 and out.flags.c_contiguous)
        cols = out if reuse else self._raw.empty(shape, dtype=x.dtype)
        if cols.size:
            self._run(f"im2col_{suffix}", cols.size,
                      (self._contiguous(x), cols, *_ints(n, c, h, w, *kernel, *stride,
                                                         padding[0], padding[2], oh, ow)))
        return cols

    def col2im(self, cols, x_shape, kernel, stride, padding):
        self._check_native("col2im", cols)
        suffix = self._dtype_suffix(cols)
        if suffix is None or len(x_shape) != 4:
            return super().col2im(cols, x_shape, kernel, stride, padding)
        n, c, h, w = (int(d) for d in x_shape)
        oh, ow = window_output_size(x_shape, kernel, stride, padding, "col2im")
        if tuple(cols.shape) != (n * oh * ow, c * kernel[0] * kernel[1]):
            return super().col2im(cols, x_shape, kernel, stride, padding)  # it names the shapes
        dx = self._raw.empty((n, c, h, w), dtype=cols.dtype)
        if dx.size:
            self._run(f"col2im_{suffix}", dx.size,
                      (self._contiguous(cols), dx, *_ints(n, c, h, w, *kernel, *stride,
                                                          padding[0], padding[2], oh, ow)))
        return dx

    def max_pool_forward(self, x, size, stride):
        self._check_native("max_pool_forward", x)
        n, c, h, w = _check_images(x, "max_pool_forward")
        oh, ow = window_output_size(x.shape, size, stride, what="max_pool_forward")
        suffix = self._dtype_suffix(x)
        if suffix is None:
            return super().max_pool_forward(x, size, stride)
        out = self._raw.empty((n, c, oh, ow), dtype=x.dtype)
        argmax = self._raw.empty((n, c, oh, ow), dtype=np.int64)
        if out.size:
            self._run(f"max_pool_forward_{suffix}", out.size,
                      (self._contiguous(x), out, argmax,
                       *_ints(n, c, h, w, *size, *stride, oh, ow)))
        return out, argmax

    def max_pool_backward(self, grad, argmax, x_shape, size, stride):
        self._check_native("max_pool_backward", grad, argmax)
        suffix = self._dtype_suffix(grad)
        if suffix is None or argmax.dtype.kind not in "iu":
            return super().max_pool_backward(grad, argmax, x_shape, size, stride)
        oh, ow = self._check_pool_grad(grad, x_shape, size, stride, "max_pool_backward")
        if tuple(argmax.shape) != tuple(grad.shape):
            return super().max_pool_backward(grad, argmax, x_shape, size, stride)
        n, c, h, w = (int(d) for d in x_shape)
        dx = self._raw.empty((n, c, h, w), dtype=grad.dtype)
        if dx.size:
            self._run(f"max_pool_backward_{suffix}", dx.size,
                      (self._contiguous(grad), self._contiguous(argmax.astype(np.int64, copy=False)),
                       dx, *_ints(n, c, h, w, *size, *stride, oh, ow)))
        return dx

    def avg_pool_forward(self, x, size, stride):
        self._check_native("avg_pool_forward", x)
        n, c, h, w = _check_images(x, "avg_pool_forward")
        oh, ow = window_output_size(x.shape, size, stride, what="avg_pool_forward")
        suffix = self._dtype_suffix(x)
        if suffix is None:
            return super().avg_pool_forward(x, size, stride)
        out = self._raw.empty((n, c, oh, ow), dtype=x.dtype)
        if out.size:
            self._run(f"avg_pool_forward_{suffix}", out.size,
                      (self._contiguous(x), out, *_ints(n, c, h, w, *size, *stride, oh, ow)))
        return out

    def avg_pool_backward(self, grad, x_shape, size, stride):
        self._check_native("avg_pool_backward", grad)
        suffix = self._dtype_suffix(grad)
        if suffix is None:
            return super().avg_pool_backward(grad, x_shape, size, stride)
        oh, ow = self._check_pool_grad(grad, x_shape, size, stride, "avg_pool_backward")
        n, c, h, w = (int(d) for d in x_shape)
        dx = self._raw.empty((n, c, h, w), dtype=grad.dtype)
        if dx.size:
            self._run(f"avg_pool_backward_{suffix}", dx.size,
                      (self._contiguous(grad), dx, *_ints(n, c, h, w, *size, *stride, oh, ow)))
        return dx
