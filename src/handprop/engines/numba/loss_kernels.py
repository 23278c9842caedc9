"""Losses and accuracy counts of the compiled training path (``train_steps`` in
``epoch_kernels.py`` calls them).

Each returns the loss of the first ``m`` rows of the outputs over the batch's size (so the
rows of a batch shared between threads add up to its mean) and writes the gradient with
respect to them, as the layer path's loss does
(``NumbaEngine.softmax_xent``, ``nn/losses.py``), operation by operation.
Targets are read through ``order[start + i]``, the sample of row ``i``: class
labels, or a target array when ``use_labels`` is false.
"""

from __future__ import annotations

import math

from numba import njit

from .kernels import xent_finish, xent_shift
from .math_kernels import exp_nonpositive

_jit = njit(cache=True, nogil=True, error_model="numpy")

XENT, MSE, BCE = 0, 1, 2


@_jit
def target(labels, targets, use_labels, row, j, k, dt):
    """Target of output ``j`` for sample ``row``: one-hot (or the label itself for a
    single output) from class labels, else the target array."""
    if use_labels:
        lab = labels[row]
        if k == 1:
            return dt(lab)
        return dt(1) if j == lab else dt(0)
    return targets[row, j]


@_jit
def softmax_xent(out, labels, order, start, m, batch, grad, picked, batch_labels):
    """Softmax cross-entropy of ``out`` (``m`` rows of a batch of ``batch``) over ``batch``;
    ``grad = (softmax - onehot) / batch``: the layer path's ``xent_shift`` and
    ``xent_finish``, with the exponential between them in place (``exp_nonpositive``, where
    the layer path calls NumPy's)."""
    for i in range(m):
        batch_labels[i] = labels[order[start + i]]
    xent_shift(out, batch_labels, grad, picked)
    k = out.shape[1]
    for i in range(m):
        for j in range(k):
            grad[i, j] = exp_nonpositive(grad[i, j])
    return xent_finish(grad, batch_labels, picked, batch)


@_jit
def mse(out, labels, targets, use_labels, order, start, m, batch, grad):
    """``1/2 * sum((a - t)**2) / batch`` over ``m`` rows and ``grad = (a - t) / batch``
    (``MeanSquaredError``)."""
    k = out.shape[1]
    dt = out.dtype.type
    n = dt(batch)
    acc = 0.0
    for i in range(m):
        row = order[start + i]
        for j in range(k):
            diff = out[i, j] - target(labels, targets, use_labels, row, j, k, dt)
            acc += diff * diff
            grad[i, j] = diff / n
    return float(dt(0.5) * dt(acc) / n)


@_jit
def bce(out, labels, targets, use_labels, order, start, m, batch, grad):
    """Binary cross-entropy on logits of ``m`` rows over ``batch`` and ``grad = (sigmoid(z) -
    t) / batch`` (``BinaryCrossEntropy``)."""
    k = out.shape[1]
    dt = out.dtype.type
    zero, one, n = dt(0), dt(1), dt(batch)
    acc = 0.0
    for i in range(m):
        row = order[start + i]
        for j in range(k):
            z = out[i, j]
            t = target(labels, targets, use_labels, row, j, k, dt)
            e = exp_nonpositive(-abs(z))
            acc += (z if z > zero else zero) - z * t + math.log1p(e)
            d = one + e
            sig = one / d if z >= zero else e / d
            grad[i, j] = (sig - t) / n
    return float(dt(acc) / n)


@_jit
def argmax_row(a, i):
    """``np.argmax`` of row ``i``: the first maximum, or the first NaN."""
    best = 0
    top = a[i, 0]
    if top != top:
        return 0
    for j in range(1, a.shape[1]):
        x = a[i, j]
        if x != x:
            return j
        if x > top:
            top = x
            best = j
    return best


@_jit
def count_correct(out, labels, targets, use_labels, order, start, m, threshold):
    """Correct predictions among the first ``m`` rows (``trainer.count_correct``)."""
    k = out.shape[1]
    correct = 0
    for i in range(m):
        row = order[start + i]
        pred = (1 if out[i, 0] > threshold else 0) if k == 1 else argmax_row(out, i)
        if use_labels:
            truth = labels[row]
        elif targets.shape[1] == 1:
            truth = 1 if targets[row, 0] > 0.5 else 0
        else:
            truth = argmax_row(targets, row)
        correct += pred == truth
    return correct
