"""The one table of primitive cases: what ``handprop doctor`` checks against the reference,
what an engine's ``warmup`` compiles, and what the parity suite runs.

A ``Case`` names one primitive (with its options), makes seeded host inputs for a shape,
and calls the primitive on any engine; ``scale`` (where given) divides both sides of a
comparison, for outputs that are sums of many terms added in another order than the
reference adds them. Row cases take 2-D shapes; image cases take a window geometry
``(x shape, window, stride, padding)`` and an input memory layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .base import ACTIVATIONS

ROWS = ((1, 1), (3, 7), (300, 129))
# One pixel, an odd shape with uneven padding, a one-channel first layer, and a batch of
# 16-channel maps larger than a 256-thread block (filters in whole vectors: the direct
# convolutions run there).
IMAGES = (((1, 1, 1, 1), (1, 1), (1, 1), (0, 0, 0, 0)),
          ((2, 3, 7, 6), (3, 2), (2, 1), (1, 0, 2, 1)),
          ((4, 1, 12, 12), (5, 5), (1, 1), (2, 2, 2, 2)),
          ((8, 16, 14, 14), (5, 5), (1, 1), (2, 2, 2, 2)))
#: Pooling takes the same geometries, and the common 2x2 window at stride 2 besides, which
#: has kernels of its own.
POOLS = IMAGES + (((4, 16, 8, 8), (2, 2), (2, 2), (0, 0, 0, 0)),)
#: Memory layouts an image input comes in: as given, a convolution's output (channels-last
#: memory seen as NCHW), and a transposed view.
LAYOUTS = ("contiguous", "channels-last", "transposed")


@dataclass(frozen=True)
class Case:
    """``inputs(rng, shape, dtype, extreme, layout, nan)`` -> dict of host values;
    ``call(engine, put, inputs)`` -> ``[(label, engine array), ...]``, ``put`` moving a host
    array to the engine (a fresh copy: updates write in place); ``scale(inputs)`` -> one
    host array per output, or None."""

    name: str
    inputs: Callable
    call: Callable
    images: bool = False
    scale: Callable | None = None
    #: the max-pool kernels have a NaN-aware variant that only a NaN input reaches
    nan_variant: bool = False
    #: the geometries of an image case (default ``IMAGES``)
    geometries: tuple | None = None

    @property
    def shapes(self) -> tuple:
        return (self.geometries or IMAGES) if self.images else ROWS


def values(rng, shape, dtype, extreme: bool):
    """Seeded normals; ``extreme``: times 1e4, with zeros and tiny numbers among them."""
    x = rng.standard_normal(shape)
    if extreme:
        x = x * 1e4
        flat = x.reshape(-1)
        flat[::3] = 0.0
        flat[1::5] = 1e-30
    return x.astype(dtype)


def image(rng, shape, dtype, extreme, layout="contiguous", nan=False):
    """``values`` of an NCHW ``shape`` in memory ``layout``; ``nan``: one NaN in it."""
    x = values(rng, shape, dtype, extreme)
    if nan:
        x.reshape(-1)[0] = np.nan
    if layout == "channels-last":
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    if layout == "transposed":
        return np.ascontiguousarray(x.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
    return x


def filters_for(x_shape) -> int:
    """Filters of the checked convolutions: whole vectors (16, 32) on the two images the
    size of a CNN's layers, so an engine's direct convolutions run there too."""
    if x_shape[1] == 16:
        return 32
    return 16 if x_shape[2] >= 12 else 3


def _rows(fn):
    """Inputs of a row case: ``fn(rng, shape, dtype, extreme)``; layout and NaN do not apply."""
    return lambda rng, shape, dtype, extreme, layout="contiguous", nan=False: fn(
        rng, shape, dtype, extreme)


def _positive_sum(terms):
    """The sum of |terms| a tolerance is taken relative to, 1 where it is 0 or not finite."""
    return np.where(np.isfinite(terms) & (terms > 0), terms, 1.0)


def activation_cases() -> list[Case]:
    cases = []
    for kind in ACTIVATIONS:
        cases.append(Case(f"bias_act[{kind}]", _rows(lambda rng, s, dt, ex: {
            "z": values(rng, s, dt, ex), "b": values(rng, s[1:], dt, False)}),
            lambda e, put, i, kind=kind: [("", e.bias_act(put(i["z"]), put(i["b"]), kind,
                                                          0.05))]))
        cases.append(Case(f"activation[{kind}]", _rows(lambda rng, s, dt, ex: {
            "z": values(rng, s, dt, ex)}),
            lambda e, put, i, kind=kind: [("", e.activation(put(i["z"]), kind, 0.05))]))
        cases.append(Case(f"act_backward[{kind}]", _rows(lambda rng, s, dt, ex, kind=kind: {
            "out": _activated(rng, s, dt, ex, kind), "g": values(rng, s, dt, False)}),
            lambda e, put, i, kind=kind: [("", e.act_backward(put(i["g"]), put(i["out"]),
                                                              kind, 0.05))]))
    return cases


def reference():
    """The ``cpu`` engine, which some cases' inputs are computed with."""
    from .registry import get_engine

    return get_engine("cpu")


def _activated(rng, shape, dtype, extreme, kind):
    return np.asarray(reference().activation(values(rng, shape, dtype, extreme), kind, 0.05))


def _act_backward_bias_grad(kind):
    def inputs(rng, s, dt, ex):
        g = values(rng, s, dt, ex)
        return {"g": g, "out": _activated(rng, s, dt, False, kind)}

    def scale(i):
        dz = np.asarray(reference().act_backward(i["g"], i["out"], kind), dtype=np.float64)
        # The column sums may be added in any order: relative to the sum of |terms|.
        return [None, _positive_sum(np.abs(dz).sum(axis=0))]

    return Case(f"act_backward_bias_grad[{kind}]", _rows(inputs),
                lambda e, put, i: list(zip(("dz", "db"), e.act_backward_bias_grad(
                    put(i["g"]), put(i["out"]), kind))), scale=scale)


def dense_cases() -> list[Case]:
    def xent_inputs(rng, s, dt, ex):
        cols = max(s[1], 2)
        return {"logits": values(rng, (s[0], cols), dt, ex),
                "labels": rng.integers(0, cols, s[0])}

    def xent(e, put, i):
        loss, grad = e.softmax_xent(put(i["logits"]), put(i["labels"]))
        return [("loss", np.array([loss])), ("grad", grad)]

    def bn_inputs(rng, s, dt, ex):
        return {"x": values(rng, s, dt, ex), "gamma": values(rng, s[1:], dt, False),
                "beta": values(rng, s[1:], dt, False), "g": values(rng, s, dt, False)}

    def bn_forward(e, put, i):
        out = e.batch_norm_forward(put(i["x"]), put(i["gamma"]), put(i["beta"]), 1e-5)
        return list(zip(("out", "x_hat", "inv_std", "mean", "var"), out))

    def bn_backward(e, put, i):
        _, x_hat, inv_std, _, _ = reference().batch_norm_forward(i["x"], i["gamma"], i["gamma"],
                                                                 1e-5)
        out = e.batch_norm_backward(put(i["g"]), put(np.asarray(x_hat)),
                                    put(np.asarray(inv_std)), put(i["gamma"]))
        return list(zip(("dx", "dgamma", "dbeta"), out))

    return [
        Case("softmax_xent", _rows(xent_inputs), xent),
        Case("bias_grad", _rows(lambda rng, s, dt, ex: {"g": values(rng, s, dt, ex)}),
             lambda e, put, i: [("", e.bias_grad(put(i["g"])))]),
        Case("sum_squares", _rows(lambda rng, s, dt, ex: {"w": values(rng, s, dt, ex)}),
             lambda e, put, i: [("", np.array([e.sum_squares(put(i["w"]))]))]),
        Case("batch_norm_forward", _rows(bn_inputs), bn_forward),
        Case("batch_norm_backward", _rows(bn_inputs), bn_backward),
    ]


def _optimizer(name, update):
    def inputs(rng, s, dt, ex):
        return {"p": values(rng, s, dt, ex), "grads": [values(rng, s, dt, False)
                                                       for _ in range(3)],
                "state": [np.zeros(s, dt) for _ in range(2)]}

    def call(e, put, i):
        param, slots = put(i["p"]), [put(s) for s in i["state"]]
        for step, g in enumerate(i["grads"], start=1):
            update(e, param, put(g), slots, step)
        return [("", a) for a in (param, *slots)]

    return Case(name, _rows(inputs), call)


def optimizer_cases() -> list[Case]:
    return [
        _optimizer("sgd_update", lambda e, p, g, s, t: e.sgd_update(p, g, 0.1,
                                                                    weight_decay=0.01)),
        _optimizer("momentum_update", lambda e, p, g, s, t: e.momentum_update(
            p, g, s[0], 0.1, 0.9, weight_decay=0.01)),
        _optimizer("momentum_update[nesterov]", lambda e, p, g, s, t: e.momentum_update(
            p, g, s[0], 0.1, 0.9, nesterov=True)),
        _optimizer("adam_update", lambda e, p, g, s, t: e.adam_update(
            p, g, s[0], s[1], 1e-3, 0.9, 0.999, 1e-8, t, weight_decay=0.01)),
    ]


CASES: tuple[Case, ...] = ()  # filled below, once the image cases are defined


def _all_cases() -> tuple[Case, ...]:
    from .image_cases import image_cases

    activations = activation_cases()
    dense = dense_cases()
    fused = [_act_backward_bias_grad(kind) for kind in ("relu", "leaky_relu", "sigmoid")]
    windows, pools, first_layer = image_cases()
    return tuple(activations + dense + windows + fused + first_layer + pools
                 + optimizer_cases())


def all_cases() -> tuple[Case, ...]:
    """Every case, in the order ``handprop doctor`` prints them."""
    global CASES
    if not CASES:
        CASES = _all_cases()
    return CASES


def trials(case: Case, dtype: str, seed: int = 0, layouts=("contiguous",), nan=False):
    """``(label, inputs)`` of every shape (geometry) of ``case``, random and extreme values,
    in each of ``layouts`` (image cases), from one seeded generator per case."""
    rng = np.random.default_rng(seed)
    for shape in case.shapes:
        for layout in (layouts if case.images else ("contiguous",)):
            for extreme in (False, True):
                label = f"{shape[0] if case.images else shape}{' extreme' if extreme else ''}"
                if layout != "contiguous":
                    label += f" {layout}"
                yield label, case.inputs(rng, shape, dtype, extreme, layout, nan)


def warm_trials(case: Case, dtype: str):
    """The inputs that reach every kernel variant behind ``case``: each image geometry in
    every layout (and with a NaN where a kernel has a NaN-aware variant), small rows."""
    rng = np.random.default_rng(0)
    if not case.images:
        for shape in ROWS[:2]:
            yield case.inputs(rng, shape, dtype, False)
        return
    for geometry in case.shapes:
        for layout in LAYOUTS:
            yield case.inputs(rng, geometry, dtype, False, layout)
            if case.nan_variant:
                yield case.inputs(rng, geometry, dtype, False, layout, True)


def warm_up(engine, dtype: str) -> None:
    """Run every case of the table on ``engine`` once per variant (compiling its kernels)."""
    for case in all_cases():
        for inputs in warm_trials(case, dtype):
            case.call(engine, lambda a: engine.asarray(np.array(a)), inputs)
