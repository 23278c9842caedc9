"""Numba kernels of the compiled training path (``epoch.py`` drives them).

``train_steps`` runs many optimizer steps of an epoch in one call: gather,
forward GEMMs, bias + activation, dropout, loss and its gradient, accuracy,
backward GEMMs, L2, the optimizer update. The activation backward pass, the bias
gradient and the softmax cross-entropy's two passes are the layer path's own
kernels (``kernels.py``); the rest does what the layer path's primitives do, in the
same order and precision, so the two paths differ only by the order of sums (inside
BLAS, and in the first layer of small batches, which skips zero inputs) and by exp/tanh
(``math_kernels``) against NumPy's. Losses and accuracy counts are in ``loss_kernels``;
the products call BLAS from compiled code (``blas``).

Numba's cache of ``train_steps`` does not notice edits to the functions it
calls in the other modules: after changing one, delete ``__pycache__`` here.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..base import LECUN_A, LECUN_S
from .blas import N, T, gemm
from .kernels import LEAKY_RELU, LECUN_TANH, RELU, SIGMOID, TANH, act_backward, bias_grad
from .loss_kernels import MSE, XENT, bce, count_correct, mse, softmax_xent
from .math_kernels import exp_nonpositive, tanh

_jit = njit(cache=True, nogil=True, error_model="numpy")

SGD, MOMENTUM, NESTEROV, ADAM = 0, 1, 2, 3


# ------------------------------------------------------------ element-wise
@_jit
def activate(z, b, has_bias, code, alpha, m):
    """``z[:m] = f(z + b)`` in place: ``NumbaEngine.bias_act`` (or ``activation``
    without a bias), operation by operation; one loop per activation, so each
    vectorizes."""
    k = z.shape[1]
    dt = z.dtype.type
    zero, one, alpha = dt(0), dt(1), dt(alpha)
    lecun_a, lecun_s = dt(LECUN_A), dt(LECUN_S)
    for i in range(m):
        row = z[i]
        if has_bias:
            for j in range(k):
                row[j] = row[j] + b[j]
        if code == RELU:
            for j in range(k):
                row[j] = row[j] if row[j] > zero else zero
        elif code == LEAKY_RELU:
            for j in range(k):
                row[j] = row[j] if row[j] > zero else row[j] * alpha
        elif code == SIGMOID:
            for j in range(k):
                x = row[j]
                e = exp_nonpositive(-abs(x))
                d = one + e
                row[j] = one / d if x >= zero else e / d
        elif code == TANH:
            for j in range(k):
                row[j] = tanh(row[j])
        elif code == LECUN_TANH:
            for j in range(k):
                row[j] = tanh(lecun_s * row[j]) * lecun_a


@_jit
def dropout(a, u, offset, rate, scale, out, m):
    """``out[:m] = a * mask`` with ``mask = scale`` where the host-drawn uniform
    ``u[offset + i*k + j] >= rate``, else 0 (``Dropout.forward``); ``out`` may be
    ``a`` itself for the backward pass."""
    k = a.shape[1]
    dt = a.dtype.type
    zero, scale = dt(0), dt(scale)
    for i in range(m):
        base = offset + i * k
        for j in range(k):
            out[i, j] = a[i, j] * (scale if u[base + j] >= rate else zero)


# ------------------------------------------------------------- optimizers
@_jit
def update(kind, p, g, s1, s2, lr, sqrt_bc2, momentum, beta1, beta2, eps, weight_decay, l2):
    """One optimizer step on the 1-D ``p`` (``numba_kernels.sgd_update``,
    ``momentum_update``, ``adam_update``); ``l2 > 0`` adds ``l2 * p`` to the gradient
    first, as ``Sequential.add_l2_gradient`` does for weight matrices. One loop per
    optimizer, so that each vectorizes (loops run from 0: a loop from an offset
    that reads and writes the same array did not vectorize).

    Optimizer state that decays below the smallest normal number becomes 0: the
    state of a weight whose input is always 0 (MNIST's border pixels) otherwise
    turns subnormal after some hundred steps and makes every update of it many
    times slower. A step by such a value is far below the weight's last digit.
    """
    dt = p.dtype.type
    lr, wd, l2c, mu = dt(lr), dt(weight_decay), dt(l2), dt(momentum)
    b1, omb1, b2, omb2 = dt(beta1), dt(1.0 - beta1), dt(beta2), dt(1.0 - beta2)
    eps, sqrt_bc2 = dt(eps), dt(sqrt_bc2)
    tiny, zero = dt(np.finfo(p.dtype).tiny), dt(0)
    decay, penalty = weight_decay != 0.0, l2 != 0.0
    if kind == SGD:
        for i in range(p.shape[0]):
            gi = g[i] + l2c * p[i] if penalty else g[i]
            gi = gi + wd * p[i] if decay else gi
            p[i] -= lr * gi
    elif kind == ADAM:
        for i in range(p.shape[0]):
            gi = g[i] + l2c * p[i] if penalty else g[i]
            gi = gi + wd * p[i] if decay else gi
            mi = s1[i] * b1 + omb1 * gi
            vi = s2[i] * b2 + omb2 * (gi * gi)
            mi = mi if abs(mi) >= tiny else zero
            vi = vi if vi >= tiny else zero
            s1[i] = mi
            s2[i] = vi
            p[i] -= lr * (mi / (math.sqrt(vi) / sqrt_bc2 + eps))
    elif kind == NESTEROV:
        for i in range(p.shape[0]):
            gi = g[i] + l2c * p[i] if penalty else g[i]
            gi = gi + wd * p[i] if decay else gi
            v = s1[i] * mu + gi
            v = v if abs(v) >= tiny else zero
            s1[i] = v
            p[i] -= lr * (gi + mu * v)
    else:
        for i in range(p.shape[0]):
            gi = g[i] + l2c * p[i] if penalty else g[i]
            gi = gi + wd * p[i] if decay else gi
            v = s1[i] * mu + gi
            v = v if abs(v) >= tiny else zero
            s1[i] = v
            p[i] -= lr * v


# ------------------------------------------------------ sparse first layer
#: Up to this many rows, the first layer works on the inputs' non-zero columns
#: only (most of an MNIST image is 0), where BLAS would spend its time on zeros
#: and on call overhead.
SMALL_BATCH = 4


@_jit
def nonzero_columns(xb, m, nz):
    """The columns of ``xb[:m]`` holding any non-zero entry, into ``nz``; their count."""
    count = 0
    for j in range(xb.shape[1]):
        for i in range(m):
            if xb[i, j] != 0:
                nz[count] = j
                count += 1
                break
    return count


@_jit
def sparse_forward(xb, m, nz, count, W, a):
    """``a[:m] = xb @ W``, summing over the non-zero inputs only: the zero ones
    add exact zeros."""
    units = W.shape[1]
    for i in range(m):
        for k in range(units):
            a[i, k] = 0
        for t in range(count):
            j = nz[t]
            v = xb[i, j]
            if v != 0:
                for k in range(units):
                    a[i, k] += v * W[j, k]


@_jit
def sparse_sgd(xb, m, nz, count, g, lr, W, row):
    """``W -= lr * xb^T g`` on the rows of non-zero inputs (every other row's
    gradient is exactly 0). One sample: ``W[j] -= lr * (x_j * g)``, the layer
    path's arithmetic to the bit."""
    dt = W.dtype.type
    lr = dt(lr)
    units = W.shape[1]
    for t in range(count):
        j = nz[t]
        if m == 1:
            v = xb[0, j]
            for k in range(units):
                W[j, k] -= lr * (v * g[0, k])
        else:
            for k in range(units):
                row[k] = 0
            for i in range(m):
                v = xb[i, j]
                for k in range(units):
                    row[k] += v * g[i, k]
            for k in range(units):
                W[j, k] -= lr * row[k]


# -------------------------------------------------------------- the steps
# Columns of ``layout`` (one row per Dense layer; offsets into flat buffers).
FAN_IN, UNITS, W_AT, B_AT, HAS_BIAS, CODE, IN_AT, A_AT, D_AT, G_AT, MASK_AT = range(11)
LAYOUT_COLUMNS = 11


# One function for speed: its loops over the batch's layers run with no call between steps.
@_jit
def train_steps(xs, labels, targets, use_labels, order, first, count, batch_size,
                layout, alphas, rates, scales, masks, work, picked, batch_labels, nz, row,
                flat_p, flat_g, s1, s2, loss_kind, threshold, kind, hyper,
                momentum, beta1, beta2, eps, weight_decay, l2, batch_loss, correct):
    """Run optimizer steps for batches ``first .. first + count - 1`` of ``order``.

    ``layout[l]`` places layer ``l`` (columns above): its weights and bias in
    ``flat_p`` (gradients at the same offsets of ``flat_g``), and in ``work`` its
    input, activation output ``A``, output after dropout ``D`` (``A`` itself
    without dropout) and pre-activation gradient ``G``, each ``(batch, width)``;
    layer 0's input is the gathered batch. ``masks[layout[l, MASK_AT]:]`` holds the
    uniforms of layer ``l``'s dropout masks for the chunk, batch after batch.
    ``hyper[s]`` is step ``s``'s learning rate (Adam: ``lr / (1 - beta1**t)``) and
    Adam's ``sqrt(1 - beta2**t)``. ``picked``, ``batch_labels`` (batch), ``nz`` (input
    width) and ``row`` (widest layer) are scratch. Writes ``batch_loss[s]``/``correct[s]``; stops after the first
    step whose loss is not finite. Returns the steps done.
    """
    n = order.shape[0]
    layers = layout.shape[0]
    mask_at = layout[:, MASK_AT].copy()
    # Plain SGD folds its update into the weight-gradient GEMM: W -= lr * x^T dz.
    fold = kind == SGD and weight_decay == 0.0 and l2 == 0.0
    width = xs.shape[1]
    for s in range(count):
        start = (first + s) * batch_size
        m = min(batch_size, n - start)
        xb = work[layout[0, IN_AT]:layout[0, IN_AT] + m * width].reshape(m, width)
        for i in range(m):
            sample = order[start + i]
            for j in range(width):
                xb[i, j] = xs[sample, j]
        nonzero = nonzero_columns(xb, m, nz) if m <= SMALL_BATCH else width
        sparse = 2 * nonzero <= width
        for l in range(layers):
            fan_in, units = layout[l, FAN_IN], layout[l, UNITS]
            inp = work[layout[l, IN_AT]:layout[l, IN_AT] + m * fan_in].reshape(m, fan_in)
            W = flat_p[layout[l, W_AT]:layout[l, W_AT] + fan_in * units].reshape(fan_in, units)
            a = work[layout[l, A_AT]:layout[l, A_AT] + m * units].reshape(m, units)
            if l == 0 and sparse:
                sparse_forward(xb, m, nz, nonzero, W, a)
            else:
                gemm(N, N, m, units, fan_in, 1.0, inp, fan_in, W, units, 0.0, a, units)
            b = flat_p[layout[l, B_AT]:layout[l, B_AT] + units]
            activate(a, b, layout[l, HAS_BIAS] != 0, layout[l, CODE], alphas[l], m)
            if rates[l] > 0.0:
                d = work[layout[l, D_AT]:layout[l, D_AT] + m * units].reshape(m, units)
                dropout(a, masks, mask_at[l], rates[l], scales[l], d, m)
        last = layers - 1
        k = layout[last, UNITS]
        out = work[layout[last, A_AT]:layout[last, A_AT] + m * k].reshape(m, k)
        grad = work[layout[last, G_AT]:layout[last, G_AT] + m * k].reshape(m, k)
        if loss_kind == XENT:
            loss = softmax_xent(out, labels, order, start, m, m, grad, picked, batch_labels)
        elif loss_kind == MSE:
            loss = mse(out, labels, targets, use_labels, order, start, m, m, grad)
        else:
            loss = bce(out, labels, targets, use_labels, order, start, m, m, grad)
        batch_loss[s] = loss
        correct[s] = count_correct(out, labels, targets, use_labels, order, start, m,
                                   threshold)
        g_last = work[layout[last, G_AT]:layout[last, G_AT] + m * k]
        act_backward(g_last, work[layout[last, A_AT]:layout[last, A_AT] + m * k],
                     layout[last, CODE], alphas[last], g_last)
        lr = hyper[s, 0]
        for l in range(last, -1, -1):
            fan_in, units = layout[l, FAN_IN], layout[l, UNITS]
            inp = work[layout[l, IN_AT]:layout[l, IN_AT] + m * fan_in].reshape(m, fan_in)
            W = flat_p[layout[l, W_AT]:layout[l, W_AT] + fan_in * units].reshape(fan_in, units)
            g = work[layout[l, G_AT]:layout[l, G_AT] + m * units].reshape(m, units)
            if l > 0:  # the input gradient, with W before its update
                p = l - 1
                g_in = work[layout[p, G_AT]:layout[p, G_AT] + m * fan_in].reshape(m, fan_in)
                gemm(N, T, m, fan_in, units, 1.0, g, units, W, units, 0.0, g_in, fan_in)
                if rates[p] > 0.0:
                    dropout(g_in, masks, mask_at[p], rates[p], scales[p], g_in, m)
                g_flat = work[layout[p, G_AT]:layout[p, G_AT] + m * fan_in]
                act_backward(g_flat, work[layout[p, A_AT]:layout[p, A_AT] + m * fan_in],
                             layout[p, CODE], alphas[p], g_flat)
            lo_b = layout[l, B_AT]
            hi_b = lo_b + (units if layout[l, HAS_BIAS] != 0 else 0)
            if hi_b > lo_b:
                bias_grad(g, flat_g[lo_b:hi_b])
            lo_w, hi_w = layout[l, W_AT], layout[l, W_AT] + fan_in * units
            if fold and l == 0 and sparse:
                sparse_sgd(xb, m, nz, nonzero, g, lr, W, row)
            elif fold:
                gemm(T, N, fan_in, units, m, -lr, inp, fan_in, g, units, 1.0, W, units)
            else:
                dW = flat_g[lo_w:hi_w].reshape(fan_in, units)
                gemm(T, N, fan_in, units, m, 1.0, inp, fan_in, g, units, 0.0, dW, units)
            if fold:
                update(kind, flat_p[lo_b:hi_b], flat_g[lo_b:hi_b], s1, s2, lr, hyper[s, 1],
                       momentum, beta1, beta2, eps, weight_decay, 0.0)
        if not fold:  # one sweep over the parameters, in memory order
            for l in range(layers):
                lo = layout[l, W_AT]
                hi = lo + layout[l, FAN_IN] * layout[l, UNITS]
                update(kind, flat_p[lo:hi], flat_g[lo:hi], s1[lo:hi], s2[lo:hi], lr,
                       hyper[s, 1], momentum, beta1, beta2, eps, weight_decay, l2)
                lo = layout[l, B_AT]
                hi = lo + (layout[l, UNITS] if layout[l, HAS_BIAS] != 0 else 0)
                update(kind, flat_p[lo:hi], flat_g[lo:hi], s1[lo:hi], s2[lo:hi], lr,
                       hyper[s, 1], momentum, beta1, beta2, eps, weight_decay, 0.0)
        for l in range(layers):
            if rates[l] > 0.0:
                mask_at[l] += m * layout[l, UNITS]
        if not math.isfinite(loss):
            return s + 1
    return count
