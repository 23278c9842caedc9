"""Numba kernels behind the ``numba`` engine's dense and element-wise primitives (``engine.py``).

Each kernel follows the conventions of ``base.py`` and computes what the
reference computes, in the same order, so results agree to float tolerance
(often bit for bit). Rules kept here:

* Arrays arrive C-contiguous with matching float32/float64 dtypes; the
  wrapper in ``engine.py`` checks that. Numba specialises each kernel on
  the dtype. Scalars arrive as Python floats (computed in float64; typing a
  Python float costs Numba's dispatcher a third of an ``np.float32``) and are
  cast to the array dtype first thing, as NumPy casts its weak Python
  scalars, so float32 math stays float32 like the reference.
* ``cache=True``: compiled code is kept in ``__pycache__`` or in
  ``NUMBA_CACHE_DIR`` when that is set.
* No ``fastmath``: it would let LLVM assume no NaN/Inf (``isnan`` becomes
  False) and reorder sums. Serial only: ``parallel=True`` made whole training
  steps much slower at these sizes on small machines, fighting BLAS threads.
* ``exp``/``tanh`` are not here. Without SVML Numba calls scalar libm, far slower than
  NumPy's SIMD ``tanh``, so the wrapper applies
  NumPy's ufunc in place on the kernel's output between two fused passes.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..base import LECUN_A, LECUN_S
from .threads import unit

# Codes from base.ACTIVATION_CODES (duplicated as literals so the kernels do
# not import the engine package; a test checks they agree).
IDENTITY, SIGMOID, TANH, RELU, LEAKY_RELU, LECUN_TANH = 0, 1, 2, 3, 4, 5

# error_model="numpy": x/0 gives inf/nan like the reference instead of a
# Python ZeroDivisionError check, whose branch also blocks vectorisation.
_jit = njit(cache=True, nogil=True, error_model="numpy")


# ----------------------------------------------------------------- forward
@_jit
def bias_act_direct(z, b, code, alpha, out):
    """``out = f(z + b)`` for the activations needing no transcendental:
    identity, relu, leaky_relu (``alpha`` has the dtype of ``z``)."""
    n, k = z.shape
    zero = z.dtype.type(0)
    alpha = z.dtype.type(alpha)
    if code == RELU:
        for i in range(n):
            for j in range(k):
                x = z[i, j] + b[j]
                out[i, j] = x if x > zero else zero
    elif code == LEAKY_RELU:
        for i in range(n):
            for j in range(k):
                x = z[i, j] + b[j]
                out[i, j] = x if x > zero else x * alpha
    else:
        for i in range(n):
            for j in range(k):
                out[i, j] = z[i, j] + b[j]


@_jit
def bias_scale(z, b, scale, out):
    """``out = scale * (z + b)``: the first pass of tanh/lecun_tanh."""
    n, k = z.shape
    scale = z.dtype.type(scale)
    for i in range(n):
        for j in range(k):
            out[i, j] = scale * (z[i, j] + b[j])


@_jit
def bias_neg_abs(z, b, out):
    """``out = -|z + b|``: the first pass of the stable sigmoid (its exp
    never overflows)."""
    n, k = z.shape
    for i in range(n):
        for j in range(k):
            out[i, j] = -abs(z[i, j] + b[j])


@_jit
def sigmoid_finish(z, b, e):
    """Given ``e = exp(-|z + b|)``, overwrite it with ``sigmoid(z + b)``:
    ``1/(1+e)`` where ``z + b >= 0`` and ``e/(1+e)`` elsewhere."""
    n, k = z.shape
    one = z.dtype.type(1)
    for i in range(n):
        for j in range(k):
            x = z[i, j] + b[j]
            ej = e[i, j]
            d = one + ej
            e[i, j] = one / d if x >= 0 else ej / d


# ---------------------------------------------------------------- backward
@_jit
def act_backward(grad, out, code, alpha, res):
    """``res = grad * f'(z)`` written in terms of ``out = f(z)``; 1-D arrays,
    in the reference's operation order."""
    dt = grad.dtype.type
    one = dt(1)
    zero = dt(0)
    alpha = dt(alpha)
    lecun_a = dt(LECUN_A)
    lecun_as = dt(LECUN_A * LECUN_S)  # the product in float64, then cast
    n = grad.shape[0]
    if code == SIGMOID:
        for i in range(n):
            o = out[i]
            res[i] = grad[i] * o * (one - o)
    elif code == TANH:
        for i in range(n):
            o = out[i]
            res[i] = grad[i] * (one - o * o)
    elif code == RELU:
        for i in range(n):
            res[i] = grad[i] if out[i] > zero else zero
    elif code == LEAKY_RELU:
        for i in range(n):
            g = grad[i]
            res[i] = g if out[i] > zero else g * alpha
    elif code == LECUN_TANH:
        for i in range(n):
            t = out[i] / lecun_a
            res[i] = grad[i] * lecun_as * (one - t * t)
    else:
        for i in range(n):
            res[i] = grad[i]


# ------------------------------------------------------------- reductions
@_jit
def bias_grad(grad, res):
    """Column sums of a 2-D ``grad`` into ``res`` (accumulated in float64;
    the row-by-row order vectorises across columns)."""
    n, k = grad.shape
    acc = np.zeros(k)
    for i in range(n):
        for j in range(k):
            acc[j] += grad[i, j]
    for j in range(k):
        res[j] = acc[j]


@_jit
def bias_grad_blocks(grad, block_rows, partial, counter):
    """``partial[blk]`` (float64) = column sums of rows ``blk*block_rows ..`` of ``grad``, for
    the blocks taken from ``counter``: ``bias_grad`` in fixed blocks, so threads can share
    them and the caller's in-order sum of the blocks does not depend on how many threads
    ran."""
    n, k = grad.shape
    while True:
        b0, stop = unit(counter, 1, partial.shape[0])
        if b0 >= partial.shape[0]:
            break
        for blk in range(b0, stop):
            acc = partial[blk]
            for j in range(k):
                acc[j] = 0.0
            for i in range(blk * block_rows, min((blk + 1) * block_rows, n)):
                row = grad[i]
                for j in range(k):
                    acc[j] += row[j]


@_jit
def sum_squares(w):
    """``sum(w**2)`` of a 1-D array, accumulated in float64 with four
    independent partial sums (no fastmath: the order is fixed)."""
    n = w.shape[0]
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    i = 0
    while i + 4 <= n:
        a = float(w[i])
        b = float(w[i + 1])
        c = float(w[i + 2])
        d = float(w[i + 3])
        s0 += a * a
        s1 += b * b
        s2 += c * c
        s3 += d * d
        i += 4
    while i < n:
        a = float(w[i])
        s0 += a * a
        i += 1
    return (s0 + s1) + (s2 + s3)


# ------------------------------------------------------------------ losses
@_jit
def xent_shift(logits, labels, shifted, picked):
    """First pass of softmax cross-entropy, per row: ``shifted = x - max(x)``
    and ``picked[i] = shifted[i, labels[i]]``. Returns the first row whose
    label is outside ``[0, k)``, or -1. NaN in a row makes its max NaN, so
    the loss comes out NaN as in the reference."""
    n, k = logits.shape
    for i in range(n):
        lab = labels[i]
        if lab < 0 or lab >= k:
            return i
        m = logits[i, 0]
        for j in range(1, k):
            x = logits[i, j]
            # ``x != x`` keeps a NaN as the max once met.
            if x > m or x != x:
                m = x
        for j in range(k):
            shifted[i, j] = logits[i, j] - m
        picked[i] = shifted[i, lab]
    return -1


@_jit
def xent_finish(e, labels, picked, batch):
    """Second pass, given ``e = exp(shifted)`` in place: overwrite ``e`` with
    ``(softmax - onehot) / batch`` and return the rows' loss summed over ``batch`` (float64;
    the batch mean where ``e`` holds the whole batch)."""
    n, k = e.shape
    loss = 0.0
    inv_n = 1.0 / batch
    for i in range(n):
        s0 = 0.0
        s1 = 0.0
        j = 0
        while j + 2 <= k:
            s0 += e[i, j]
            s1 += e[i, j + 1]
            j += 2
        if j < k:
            s0 += e[i, j]
        s = s0 + s1  # >= 1: the max entry contributes exp(0)
        loss += math.log(s) - picked[i]
        inv_s = 1.0 / s
        lab = labels[i]
        e_lab = e[i, lab]
        for j in range(k):
            e[i, j] = e[i, j] * inv_s * inv_n
        e[i, lab] = (e_lab * inv_s - 1.0) * inv_n
    return loss * inv_n


# -------------------------------------------------------------- optimizers
@_jit
def sgd_update(param, grad, lr, weight_decay, decay):
    """``param -= lr * (grad + weight_decay * param)``; 1-D, in place."""
    lr = param.dtype.type(lr)
    weight_decay = param.dtype.type(weight_decay)
    for i in range(param.shape[0]):
        g = grad[i]
        if decay:
            g = g + weight_decay * param[i]
        param[i] -= lr * g


@_jit
def momentum_update(param, grad, velocity, lr, momentum, weight_decay, decay, nesterov):
    """``torch.optim.SGD`` momentum (classic or Nesterov); 1-D, in place."""
    dt = param.dtype.type
    lr = dt(lr)
    momentum = dt(momentum)
    weight_decay = dt(weight_decay)
    for i in range(param.shape[0]):
        g = grad[i]
        if decay:
            g = g + weight_decay * param[i]
        v = velocity[i] * momentum + g
        velocity[i] = v
        if nesterov:
            param[i] -= lr * (g + momentum * v)
        else:
            param[i] -= lr * v


@_jit
def adam_update(param, grad, m, v, beta1, one_m_beta1, beta2, one_m_beta2, eps,
                step_size, sqrt_bc2, weight_decay, decay):
    """Bias-corrected Adam (torch form); 1-D, in place. The bias corrections
    come precomputed in float64 and are cast, as the reference's scalars are."""
    dt = param.dtype.type
    beta1, one_m_beta1, beta2, one_m_beta2 = dt(beta1), dt(one_m_beta1), dt(beta2), dt(one_m_beta2)
    eps, step_size, sqrt_bc2, weight_decay = dt(eps), dt(step_size), dt(sqrt_bc2), dt(weight_decay)
    for i in range(param.shape[0]):
        g = grad[i]
        if decay:
            g = g + weight_decay * param[i]
        mi = m[i] * beta1 + one_m_beta1 * g
        vi = v[i] * beta2 + one_m_beta2 * (g * g)
        m[i] = mi
        v[i] = vi
        param[i] -= step_size * (mi / (math.sqrt(vi) / sqrt_bc2 + eps))


@_jit
def batch_norm_forward(x, gamma, beta, eps, out, x_hat, inv_std, mean, var):
    """Column statistics of ``x`` (float64 sums, two passes as the reference),
    then ``x_hat`` and ``out = gamma * x_hat + beta`` in one pass."""
    n, k = x.shape
    one = x.dtype.type(1.0)
    eps = x.dtype.type(eps)
    acc = np.zeros(k)
    for i in range(n):
        for j in range(k):
            acc[j] += x[i, j]
    for j in range(k):
        mean[j] = acc[j] / n
        acc[j] = 0.0
    for i in range(n):
        for j in range(k):
            d = x[i, j] - mean[j]
            acc[j] += d * d
    for j in range(k):
        var[j] = acc[j] / n
        inv_std[j] = one / math.sqrt(var[j] + eps)
    for i in range(n):
        for j in range(k):
            h = (x[i, j] - mean[j]) * inv_std[j]
            x_hat[i, j] = h
            out[i, j] = gamma[j] * h + beta[j]


@_jit
def batch_norm_backward(grad, x_hat, inv_std, gamma, dx, dgamma, dbeta):
    """Column sums of ``grad`` and ``grad * x_hat`` (float64), then
    ``dx = gamma * inv_std / n * (n * grad - dbeta - x_hat * dgamma)``."""
    n, k = grad.shape
    sum_g = np.zeros(k)
    sum_gx = np.zeros(k)
    for i in range(n):
        for j in range(k):
            g = grad[i, j]
            sum_g[j] += g
            sum_gx[j] += g * x_hat[i, j]
    for j in range(k):
        dbeta[j] = sum_g[j]
        dgamma[j] = sum_gx[j]
    nn = grad.dtype.type(n)
    for i in range(n):
        for j in range(k):
            scale = gamma[j] * inv_std[j] / nn
            dx[i, j] = scale * (nn * grad[i, j] - dbeta[j] - x_hat[i, j] * dgamma[j])
