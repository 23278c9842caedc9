"""The compiled epoch of a dense stack on handprop's own products (``dense_kernels``), its
threads sharing every step.

Each thread runs ``dense_steps`` with its own ``tid``. A batch is cut into units of
``UNIT_ROWS`` rows, each thread taking a fixed range of them: the gather, the forward pass,
the loss and the whole backward pass of the data are row by row, so a thread does them for
its rows with no waiting. The threads then meet (``threads.barrier``), and each computes the
weight gradient of a fixed range of every layer's weight rows over the whole batch, updates
those rows (plain SGD adds ``-lr * x.T @ dz`` onto them directly) and writes their
transposed copy, which the next step's input gradients read; the biases go to the threads
layer by layer. A second meeting ends the step. Losses and accuracy counts are summed per
unit, then over the units in order, and no sum crosses a unit or a thread, so the bits do
not depend on the number of threads.
"""

from __future__ import annotations

import math

from numba import njit

from .dense_kernels import matmul_rows, matmul_t_rows, transpose_rows
from .epoch_kernels import (A_AT, B_AT, CODE, D_AT, FAN_IN, G_AT, HAS_BIAS, IN_AT, MASK_AT,
                            SGD, UNITS, W_AT, activate, dropout, update)
from .kernels import IDENTITY, act_backward, bias_grad
from .loss_kernels import MSE, XENT, bce, count_correct, mse, softmax_xent
from .threads import barrier

_jit = njit(cache=True, nogil=True, error_model="numpy")

#: Rows of a batch a thread takes as one part of the loss's sums.
UNIT_ROWS = 16


@_jit
def share(count, threads, tid):
    """``(start, stop)`` of thread ``tid``'s fixed part of ``count`` items."""
    return count * tid // threads, count * (tid + 1) // threads


@_jit
def forward_rows(xs, order, start, r0, r1, layout, alphas, rates, scales, masks, mask_at,
                 work, flat_p, m):
    """Rows ``r0 .. r1`` of the batch gathered, then through every layer."""
    width = xs.shape[1]
    xb = work[layout[0, IN_AT]:layout[0, IN_AT] + m * width].reshape(m, width)
    for i in range(r0, r1):
        source, target = xs[order[start + i]], xb[i]
        for j in range(width):
            target[j] = source[j]
    for l in range(layout.shape[0]):
        fan_in, units = layout[l, FAN_IN], layout[l, UNITS]
        matmul_rows(work, layout[l, IN_AT], fan_in, flat_p, layout[l, W_AT], units, work,
                    layout[l, A_AT], r0, r1)
        a = work[layout[l, A_AT]:layout[l, A_AT] + m * units].reshape(m, units)
        b = flat_p[layout[l, B_AT]:layout[l, B_AT] + units]
        activate(a[r0:], b, layout[l, HAS_BIAS] != 0, layout[l, CODE], alphas[l], r1 - r0)
        if rates[l] > 0.0:
            d = work[layout[l, D_AT]:layout[l, D_AT] + m * units].reshape(m, units)
            dropout(a[r0:], masks, mask_at[l] + r0 * units, rates[l], scales[l], d[r0:],
                    r1 - r0)


@_jit
def loss_units(u0, u1, m, layout, alphas, work, labels, targets, use_labels, order, start,
               loss_kind, threshold, picked, batch_labels, unit_loss, unit_correct):
    """The loss, its gradient before the output activation's and the correct count of units
    ``u0 .. u1`` of the batch."""
    last = layout.shape[0] - 1
    k = layout[last, UNITS]
    out = work[layout[last, A_AT]:layout[last, A_AT] + m * k].reshape(m, k)
    grad = work[layout[last, G_AT]:layout[last, G_AT] + m * k].reshape(m, k)
    for u in range(u0, u1):
        r0, r1 = u * UNIT_ROWS, min((u + 1) * UNIT_ROWS, m)
        rows, unit_out, unit_grad = r1 - r0, out[r0:r1], grad[r0:r1]
        if loss_kind == XENT:
            loss = softmax_xent(unit_out, labels, order, start + r0, rows, m, unit_grad,
                                picked[r0:], batch_labels[r0:])
        elif loss_kind == MSE:
            loss = mse(unit_out, labels, targets, use_labels, order, start + r0, rows, m,
                       unit_grad)
        else:
            loss = bce(unit_out, labels, targets, use_labels, order, start + r0, rows, m,
                       unit_grad)
        unit_loss[u] = loss
        unit_correct[u] = count_correct(unit_out, labels, targets, use_labels, order,
                                        start + r0, rows, threshold)
        if layout[last, CODE] != IDENTITY:  # the output's derivative; logits need none
            g = grad[r0:r1].reshape((r1 - r0) * k)
            act_backward(g, out[r0:r1].reshape((r1 - r0) * k), layout[last, CODE],
                         alphas[last], g)


@_jit
def backward_rows(r0, r1, m, layout, alphas, rates, scales, masks, mask_at, work, wt, wt_at,
                  scale, tmp, widest):
    """Rows ``r0 .. r1`` of every layer's input gradient (the transposed weights ``wt``), into
    ``tmp`` and from there, masked and through the activation's derivative, to the layer
    below (never in place: the kernels vectorise only between distinct arrays); then each
    layer's gradient times ``scale`` (-lr for plain SGD, else 1)."""
    for l in range(layout.shape[0] - 1, -1, -1):
        units = layout[l, UNITS]
        if l > 0:
            p, fan_in = l - 1, layout[l, FAN_IN]
            # this thread's rows of tmp start at r0 * widest whatever the layer's width, so
            # threads on different layers never write each other's rows
            own = r0 * widest
            matmul_rows(work, layout[l, G_AT], units, wt, wt_at[l], fan_in, tmp,
                        own - r0 * fan_in, r0, r1)
            lo, hi = r0 * fan_in, r1 * fan_in
            g_in = work[layout[p, G_AT] + lo:layout[p, G_AT] + hi]
            a_in = work[layout[p, A_AT] + lo:layout[p, A_AT] + hi]
            part = tmp[own:own + hi - lo]
            if rates[p] > 0.0:
                dropout(part.reshape(r1 - r0, fan_in), masks, mask_at[p] + lo, rates[p],
                        scales[p], g_in.reshape(r1 - r0, fan_in), r1 - r0)
                act_backward(g_in, a_in, layout[p, CODE], alphas[p], g_in)
            else:
                act_backward(part, a_in, layout[p, CODE], alphas[p], g_in)
        if scale != 1.0:
            g = work[layout[l, G_AT]:layout[l, G_AT] + m * units]
            dt = g.dtype.type
            for t in range(r0 * units, r1 * units):
                g[t] = g[t] * dt(scale)


#: Weight rows a thread finishes at a time: their gradient, optimizer step and transposed
#: copy while they are in cache.
ROW_CHUNK = 32


@_jit
def weight_rows(tid, threads, m, layout, work, flat_p, flat_g, s1, s2, wt, wt_at, fold, kind,
                lr, sqrt_bc2, momentum, beta1, beta2, eps, weight_decay, l2):
    """This thread's weight rows of every layer, a chunk at a time: the gradient over the
    whole batch onto the weights (``fold``: the layers' gradients already times -lr) or into
    ``flat_g`` and an optimizer step; then their transposed copy. Biases: layer ``l`` by
    thread ``l % threads``."""
    for l in range(layout.shape[0]):
        fan_in, units = layout[l, FAN_IN], layout[l, UNITS]
        first, last = share(fan_in, threads, tid)
        w_at = layout[l, W_AT]
        for k0 in range(first, last, ROW_CHUNK):
            k1 = min(k0 + ROW_CHUNK, last)
            if fold:
                matmul_t_rows(work, layout[l, IN_AT], fan_in, m, work, layout[l, G_AT], units,
                              flat_p, w_at, True, k0, k1)
            else:
                matmul_t_rows(work, layout[l, IN_AT], fan_in, m, work, layout[l, G_AT], units,
                              flat_g, w_at, False, k0, k1)
                lo, hi = w_at + k0 * units, w_at + k1 * units
                update(kind, flat_p[lo:hi], flat_g[lo:hi], s1[lo:hi], s2[lo:hi], lr, sqrt_bc2,
                       momentum, beta1, beta2, eps, weight_decay, l2)
            if l > 0:
                transpose_rows(flat_p, w_at, fan_in, units, wt[wt_at[l]:], k0, k1)
        if layout[l, HAS_BIAS] != 0 and l % threads == tid:
            lo, hi = layout[l, B_AT], layout[l, B_AT] + units
            g = work[layout[l, G_AT]:layout[l, G_AT] + m * units].reshape(m, units)
            bias_grad(g, flat_g[lo:hi])
            if fold:
                for j in range(lo, hi):
                    flat_p[j] += flat_g[j]
            else:
                update(kind, flat_p[lo:hi], flat_g[lo:hi], s1[lo:hi], s2[lo:hi], lr, sqrt_bc2,
                       momentum, beta1, beta2, eps, weight_decay, 0.0)


# One function for speed: each step's phases run with no call back to Python between them.
@_jit
def dense_steps(xs, labels, targets, use_labels, order, first, count, batch_size, layout,
                alphas, rates, scales, masks, work, picked, batch_labels, flat_p, flat_g, s1, s2,
                loss_kind, threshold, kind, hyper, momentum, beta1, beta2, eps, weight_decay, l2,
                batch_loss, correct, wt, wt_at, unit_loss, unit_correct, tmp, sync, threads, tid):
    """``epoch_kernels.train_steps`` for thread ``tid`` of ``threads``, all meeting at
    ``sync``: the same steps, layouts and results, on the dense kernels. ``wt`` holds every
    layer's transposed weights from offset ``wt_at[l]``; ``unit_loss``/``unit_correct`` the
    units' partial sums (see the module's docstring); ``tmp`` (batch x widest input) takes the
    input gradients. Returns the steps done."""
    n, layers = order.shape[0], layout.shape[0]
    mask_at = layout[:, MASK_AT].copy()
    fold = kind == SGD and weight_decay == 0.0 and l2 == 0.0
    widest = tmp.shape[0] // batch_size
    passed = 0
    for l in range(1, layers):
        k0, k1 = share(layout[l, FAN_IN], threads, tid)
        transpose_rows(flat_p, layout[l, W_AT], layout[l, FAN_IN], layout[l, UNITS],
                       wt[wt_at[l]:], k0, k1)
    passed = barrier(sync, threads, passed)
    for s in range(count):
        start = (first + s) * batch_size
        m = min(batch_size, n - start)
        units = -(-m // UNIT_ROWS)
        u0, u1 = share(units, threads, tid)
        r0, r1 = u0 * UNIT_ROWS, min(u1 * UNIT_ROWS, m)
        lr = hyper[s, 0]
        if r1 > r0:
            forward_rows(xs, order, start, r0, r1, layout, alphas, rates, scales, masks,
                         mask_at, work, flat_p, m)
            loss_units(u0, u1, m, layout, alphas, work, labels, targets, use_labels, order,
                       start, loss_kind, threshold, picked, batch_labels, unit_loss,
                       unit_correct)
            backward_rows(r0, r1, m, layout, alphas, rates, scales, masks, mask_at, work, wt,
                          wt_at, -lr if fold else 1.0, tmp, widest)
        passed = barrier(sync, threads, passed)
        weight_rows(tid, threads, m, layout, work, flat_p, flat_g, s1, s2, wt, wt_at, fold,
                    kind, lr, hyper[s, 1], momentum, beta1, beta2, eps, weight_decay, l2)
        loss, right = 0.0, 0.0
        for u in range(units):
            loss += unit_loss[u]
            right += unit_correct[u]
        if tid == 0:
            batch_loss[s], correct[s] = loss, right
        for l in range(layers):
            if rates[l] > 0.0:
                mask_at[l] += m * layout[l, UNITS]
        passed = barrier(sync, threads, passed)
        if not math.isfinite(loss):
            return s + 1
    return count
