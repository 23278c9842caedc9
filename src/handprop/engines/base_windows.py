"""The reference window primitives of ``Engine``: im2col and col2im, a convolution's three
products as written (the window matrix built whole, then one matrix product), and pooling.
Array-API code only, like the rest of the reference (``base.py``).
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError, ShapeError


def _pair_of_positive(value, what: str) -> tuple[int, int]:
    if (not isinstance(value, tuple) or len(value) != 2
            or not all(isinstance(v, (int, np.integer)) and v >= 1 for v in value)):
        raise ConfigError(f"{what} must be a pair (h, w) of positive whole numbers, got {value!r}")
    return int(value[0]), int(value[1])


def window_output_size(in_shape, window, stride, padding=(0, 0, 0, 0),
                       what: str = "window") -> tuple[int, int]:
    """``(OH, OW)`` of sliding a ``window`` (h, w) over images of shape ``in_shape`` (..., H, W)
    with ``stride`` (h, w) after ``padding`` (top, bottom, left, right); a ``ShapeError``
    naming ``what`` and the shapes when the window does not fit."""
    kh, kw = _pair_of_positive(window, f"{what}: the window")
    sh, sw = _pair_of_positive(stride, f"{what}: the stride")
    if (not isinstance(padding, tuple) or len(padding) != 4
            or not all(isinstance(p, (int, np.integer)) and p >= 0 for p in padding)):
        raise ConfigError(f"{what}: padding must be (top, bottom, left, right) of whole numbers "
                          f">= 0, got {padding!r}")
    h, w = in_shape[-2] + padding[0] + padding[1], in_shape[-1] + padding[2] + padding[3]
    if kh > h or kw > w:
        padded = f" ({h}x{w} after padding)" if any(padding) else ""
        raise ShapeError(f"{what}: a {kh}x{kw} window does not fit inputs of shape "
                         f"{tuple(in_shape)}{padded}; use a smaller window, more padding or "
                         f"fewer downsampling layers before it")
    return (h - kh) // sh + 1, (w - kw) // sw + 1


def _check_images(x, what: str) -> tuple[int, int, int, int]:
    if len(x.shape) != 4:
        raise ShapeError(f"{what} needs images of shape (batch, channels, height, width); "
                         f"got {tuple(x.shape)}")
    return tuple(int(d) for d in x.shape)


def _window_slices(i: int, j: int, out_hw, stride):
    """The slice of a (padded) image that window offset ``(i, j)`` reads at every output."""
    (oh, ow), (sh, sw) = out_hw, stride
    return (slice(None), slice(None), slice(i, i + sh * (oh - 1) + 1, sh),
            slice(j, j + sw * (ow - 1) + 1, sw))


class ReferenceWindows:
    """The window and pooling primitives every engine starts from (a mixin of ``Engine``)."""

    def im2col(self, x, kernel, stride, padding, out=None):
        """Unfold every ``kernel``-sized window of ``x`` into one row.

        x (N, C, H, W) -> cols (N*OH*OW, C*kh*kw): rows in (n, oh, ow) order, columns
        in (c, i, j) order, zeros where a window reaches into the padding. So
        ``cols @ W.reshape(F, -1).T`` is the convolution in (N*OH*OW, F) layout.

        ``out`` (optional) is an earlier result whose memory may be reused: engines that
        write in place (numba, cuda) put the result there when its shape and dtype fit,
        saving a large allocation every step; the reference always allocates. Use the
        returned array, never ``out`` itself.
        """
        xp = self.xp
        n, c, h, w = _check_images(x, "im2col")
        oh, ow = window_output_size(x.shape, kernel, stride, padding, "im2col")
        top, bottom, left, right = padding
        padded = x
        if any(padding):
            padded = xp.zeros((n, c, h + top + bottom, w + left + right), dtype=x.dtype)
            padded[:, :, top:top + h, left:left + w] = x
        patches = [padded[_window_slices(i, j, (oh, ow), stride)]
                   for i in range(kernel[0]) for j in range(kernel[1])]
        cols = xp.permute_dims(xp.stack(patches, axis=2), (0, 3, 4, 1, 2))  # (N, OH, OW, C, kh*kw)
        return xp.reshape(cols, (n * oh * ow, c * kernel[0] * kernel[1]))

    def col2im(self, cols, x_shape, kernel, stride, padding):
        """The adjoint of ``im2col``: cols (N*OH*OW, C*kh*kw) -> dx (N, C, H, W), every
        window's row added back where it was read (overlaps summed, padding dropped)."""
        xp = self.xp
        if len(x_shape) != 4:
            raise ShapeError(f"col2im needs x_shape (batch, channels, height, width); got "
                             f"{tuple(x_shape)}")
        n, c, h, w = (int(d) for d in x_shape)
        oh, ow = window_output_size(x_shape, kernel, stride, padding, "col2im")
        kh, kw = kernel
        if tuple(cols.shape) != (n * oh * ow, c * kh * kw):
            raise ShapeError(f"col2im needs cols of shape {(n * oh * ow, c * kh * kw)} for images "
                             f"{tuple(x_shape)}; got {tuple(cols.shape)}")
        top, bottom, left, right = padding
        parts = xp.permute_dims(xp.reshape(cols, (n, oh, ow, c, kh, kw)), (0, 3, 4, 5, 1, 2))
        dx = xp.zeros((n, c, h + top + bottom, w + left + right), dtype=cols.dtype)
        for i in range(kh):
            for j in range(kw):
                dx[_window_slices(i, j, (oh, ow), stride)] += parts[:, :, i, j, :, :]
        return dx[:, :, top:top + h, left:left + w] if any(padding) else dx

    # A convolution's three products over windows. Here they are what they say, im2col or
    # col2im around one GEMM; an engine may compute them a tile at a time instead, never
    # holding the whole window matrix (numba does).
    def im2col_matmul(self, x, w, kernel, stride, padding, bias=None, activation="identity",
                      alpha: float = 0.01):
        """``activation(im2col(x) @ w + bias)``: x (N, C, H, W), w (C*kh*kw, F), bias (F,)
        or None -> (N*OH*OW, F)."""
        z = self.im2col(x, kernel, stride, padding) @ w
        if bias is not None:
            return self.bias_act(z, bias, activation, alpha)
        return self.activation(z, activation, alpha)

    def im2col_t_matmul(self, x, g, kernel, stride, padding):
        """``im2col(x).T @ g``: x (N, C, H, W), g (N*OH*OW, F) -> (C*kh*kw, F)."""
        cols = self.im2col(x, kernel, stride, padding)
        if tuple(g.shape[:1]) != tuple(cols.shape[:1]):
            raise ShapeError(f"im2col_t_matmul needs g with {cols.shape[0]} rows (one per "
                             f"window of images {tuple(x.shape)}); got {tuple(g.shape)}")
        return cols.T @ g

    def act_backward_weight_grad(self, x, grad, out, kind: str, alpha, kernel, stride,
                                 padding):
        """``(dW, db)`` of a convolution whose input gradient is not needed (a first layer):
        ``dz = act_backward(grad, out)``, ``dW = im2col_t_matmul(x, dz, ...)`` and
        ``db = bias_grad(dz)``; an engine may do it image by image, never holding ``dz``."""
        dz, db = self.act_backward_bias_grad(grad, out, kind, alpha)
        return self.im2col_t_matmul(x, dz, kernel, stride, padding), db

    def matmul_col2im(self, g, w, x_shape, kernel, stride, padding):
        """``col2im(g @ w, x_shape, ...)``: g (N*OH*OW, F), w (F, C*kh*kw) -> (N, C, H, W)."""
        return self.col2im(g @ w, x_shape, kernel, stride, padding)

    def _pool_windows(self, x, size, stride, what):
        """The (OH, OW) output size and each window offset's (N, C, OH, OW) slice of ``x``."""
        _check_images(x, what)
        out_hw = window_output_size(x.shape, size, stride, what=what)
        return out_hw, [x[_window_slices(i, j, out_hw, stride)]
                        for i in range(size[0]) for j in range(size[1])]

    def max_pool_forward(self, x, size, stride):
        """Max over each window: x (N, C, H, W) -> ``(out, argmax)``, both (N, C, OH, OW);
        ``argmax`` (integers) is the position inside the window (0 .. ph*pw - 1, row-major),
        the first one on ties."""
        xp = self.xp
        _, windows = self._pool_windows(x, size, stride, "max_pool_forward")
        stacked = xp.stack(windows, axis=-1)
        return xp.max(stacked, axis=-1), xp.argmax(stacked, axis=-1)

    def max_pool_backward(self, grad, argmax, x_shape, size, stride):
        """grad (N, C, OH, OW) -> dx (N, C, H, W): each gradient goes to its window's
        arg-max (overlapping windows sum)."""
        xp = self.xp
        out_hw = self._check_pool_grad(grad, x_shape, size, stride, "max_pool_backward")
        if tuple(argmax.shape) != tuple(grad.shape):
            raise ShapeError(f"max_pool_backward needs argmax of the gradient's shape "
                             f"{tuple(grad.shape)}; got {tuple(argmax.shape)}")
        dx = xp.zeros(tuple(int(d) for d in x_shape), dtype=grad.dtype)
        zero = xp.zeros_like(grad)
        for k in range(size[0] * size[1]):
            dx[_window_slices(k // size[1], k % size[1], out_hw, stride)] += xp.where(
                argmax == k, grad, zero)
        return dx

    def avg_pool_forward(self, x, size, stride):
        """Mean over each window: x (N, C, H, W) -> out (N, C, OH, OW)."""
        _, windows = self._pool_windows(x, size, stride, "avg_pool_forward")
        total = windows[0]
        for window in windows[1:]:
            total = total + window
        return total / (size[0] * size[1])

    def avg_pool_backward(self, grad, x_shape, size, stride):
        """grad (N, C, OH, OW) -> dx (N, C, H, W): each gradient spread evenly over its
        window (overlapping windows sum)."""
        xp = self.xp
        out_hw = self._check_pool_grad(grad, x_shape, size, stride, "avg_pool_backward")
        share = grad / (size[0] * size[1])
        dx = xp.zeros(tuple(int(d) for d in x_shape), dtype=grad.dtype)
        for i in range(size[0]):
            for j in range(size[1]):
                dx[_window_slices(i, j, out_hw, stride)] += share
        return dx

    @staticmethod
    def _check_pool_grad(grad, x_shape, size, stride, what):
        if len(x_shape) != 4:
            raise ShapeError(f"{what} needs x_shape (batch, channels, height, width); got "
                             f"{tuple(x_shape)}")
        oh, ow = window_output_size(x_shape, size, stride, what=what)
        want = (int(x_shape[0]), int(x_shape[1]), oh, ow)
        if tuple(grad.shape) != want:
            raise ShapeError(f"{what} needs a gradient of shape {want} for inputs "
                             f"{tuple(x_shape)}; got {tuple(grad.shape)}")
        return oh, ow
