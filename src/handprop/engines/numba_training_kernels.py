"""Numba kernels of the compiled training path (``numba_training.py`` drives them).

``train_steps`` runs many optimizer steps of an epoch in one call: gather,
forward GEMMs, bias + activation, dropout, loss and its gradient, accuracy,
backward GEMMs, L2, the optimizer update. Each element-wise operation is the
one the layer path's primitive does (``numba_kernels.py``, ``base.py``,
``nn/losses.py``), in the same order and precision, so the two paths differ
only by the order of sums (inside BLAS, and in the first layer of small
batches, which skips zero inputs) and by exp/tanh (``numba_training_math``)
against NumPy's. Losses and accuracy counts are in ``numba_training_losses``.

Numba's cache of ``train_steps`` does not notice edits to the functions it
calls in the other modules: after changing one, delete ``__pycache__`` here.

The matrix products call BLAS ``?gemm`` from compiled code (``gemm`` below):
``numba_training.py`` registers NumPy's own OpenBLAS ``gemm`` (64-bit integers)
or else SciPy's ``cython_blas`` ones under the symbol names in ``BLAS_SYMBOLS``,
which the cached machine code refers to by name, so ``cache=True`` keeps
working across processes.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .base import LECUN_A, LECUN_S
from .numba_kernels import LEAKY_RELU, LECUN_TANH, RELU, SIGMOID, TANH
from .numba_training_losses import MSE, XENT, bce, count_correct, mse, softmax_xent
from .numba_training_math import exp_nonpositive, tanh

_jit = njit(cache=True, nogil=True, error_model="numpy")

#: The symbols the kernels call, by integer width of the BLAS behind them: NumPy's own
#: OpenBLAS (64-bit integers, as NumPy's wheels ship it) or SciPy's (32-bit). Two names, so a
#: kernel cached for one never calls the other with the wrong integer size.
BLAS_SYMBOLS = {64: {"float32": "handprop_sgemm_ilp64", "float64": "handprop_dgemm_ilp64"},
                32: {"float32": "handprop_sgemm", "float64": "handprop_dgemm"}}
#: Which of them ``register_blas`` found (set before the first kernel compiles).
BLAS_INT_BITS = [32]
SGD, MOMENTUM, NESTEROV, ADAM = 0, 1, 2, 3
N, T = ord("N"), ord("T")


@intrinsic
def gemm(typingctx, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """Row-major ``c[:m, :n] = alpha * op(a) @ op(b) + beta * c`` (``op`` transposes
    where ``trans`` is ``T``). Arrays go by their data pointer with explicit leading
    dimensions, so a product may use only the first rows of a buffer."""
    if not (isinstance(c, types.Array) and c.dtype in (types.float32, types.float64)
            and isinstance(a, types.Array) and isinstance(b, types.Array)
            and a.dtype == c.dtype and b.dtype == c.dtype):
        return None
    sig = types.void(transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)

    def codegen(context, builder, signature, args):
        kinds = signature.args
        flt = context.get_value_type(c.dtype)
        bits = BLAS_INT_BITS[0]
        i8, i32 = ir.IntType(8), ir.IntType(bits)

        def on_stack(i, to_type, llty):
            slot = cgutils.alloca_once(builder, llty)
            builder.store(context.cast(builder, args[i], kinds[i], to_type), slot)
            return slot

        def data(i):
            return context.make_array(kinds[i])(context, builder, args[i]).data

        def char(i):
            return on_stack(i, types.int8, i8)

        def int_(i):
            return on_stack(i, types.int64 if bits == 64 else types.int32, i32)

        def real(i):
            return on_stack(i, c.dtype, flt)

        fp, ip, cp = flt.as_pointer(), i32.as_pointer(), i8.as_pointer()
        fnty = ir.FunctionType(ir.VoidType(), [cp, cp, ip, ip, ip, fp, fp, ip, fp, ip, fp, fp, ip])
        fn = cgutils.get_or_insert_function(builder.module, fnty,
                                            BLAS_SYMBOLS[bits][str(c.dtype)])
        # Column-major BLAS sees a row-major matrix transposed: c^T = op(b)^T op(a)^T.
        builder.call(fn, [char(1), char(0), int_(3), int_(2), int_(4), real(5), data(8), int_(9),
                          data(6), int_(7), real(10), data(11), int_(12)])
        return context.get_dummy_value()

    return sig, codegen


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
def act_backward(g, out, code, alpha, m):
    """``g[:m] *= f'`` in place, written in terms of ``out = f(z)``
    (``numba_kernels.act_backward``)."""
    k = g.shape[1]
    dt = g.dtype.type
    zero, one, alpha = dt(0), dt(1), dt(alpha)
    lecun_a, lecun_as = dt(LECUN_A), dt(LECUN_A * LECUN_S)
    for i in range(m):
        gr, o = g[i], out[i]
        if code == SIGMOID:
            for j in range(k):
                gr[j] = gr[j] * o[j] * (one - o[j])
        elif code == TANH:
            for j in range(k):
                gr[j] = gr[j] * (one - o[j] * o[j])
        elif code == RELU:
            for j in range(k):
                gr[j] = gr[j] if o[j] > zero else zero
        elif code == LEAKY_RELU:
            for j in range(k):
                gr[j] = gr[j] if o[j] > zero else gr[j] * alpha
        elif code == LECUN_TANH:
            for j in range(k):
                t = o[j] / lecun_a
                gr[j] = gr[j] * lecun_as * (one - t * t)


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
def bias_grad(g, m, out, acc):
    """Column sums of ``g[:m]`` accumulated in float64 (``numba_kernels.bias_grad``)."""
    k = g.shape[1]
    for j in range(k):
        acc[j] = 0.0
    for i in range(m):
        for j in range(k):
            acc[j] += g[i, j]
    for j in range(k):
        out[j] = acc[j]


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


@_jit
def train_steps(xs, labels, targets, use_labels, order, first, count, batch_size,
                layout, alphas, rates, scales, masks, work, picked, acc, nz, row,
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
    Adam's ``sqrt(1 - beta2**t)``. ``nz`` (input width) and ``row`` (widest layer)
    are scratch. Writes ``batch_loss[s]``/``correct[s]``; stops after the first
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
            loss = softmax_xent(out, labels, order, start, m, grad, picked)
        elif loss_kind == MSE:
            loss = mse(out, labels, targets, use_labels, order, start, m, grad)
        else:
            loss = bce(out, labels, targets, use_labels, order, start, m, grad)
        batch_loss[s] = loss
        correct[s] = count_correct(out, labels, targets, use_labels, order, start, m,
                                   threshold)
        act_backward(grad, out, layout[last, CODE], alphas[last], m)
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
                a_in = work[layout[p, A_AT]:layout[p, A_AT] + m * fan_in].reshape(m, fan_in)
                act_backward(g_in, a_in, layout[p, CODE], alphas[p], m)
            lo_b = layout[l, B_AT]
            hi_b = lo_b + (units if layout[l, HAS_BIAS] != 0 else 0)
            if hi_b > lo_b:
                bias_grad(g, m, flat_g[lo_b:hi_b], acc)
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
