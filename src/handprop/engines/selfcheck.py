"""Self-check of an engine: every fused primitive against the ``cpu`` reference.

Every primitive runs on the engine under test and on the reference with the
same seeded inputs, in float32 and float64, on a few shapes: one element, a
small odd shape, one larger than a 256-thread block, and extreme values
(|x| = 1e4, zeros, tiny numbers). ``run_checks`` gives one ``Check`` per
primitive and dtype; ``handprop doctor`` prints them.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field

SHAPES = ((1, 1), (3, 7), (300, 129))
# Convolution and pooling: (images, window, stride, padding); one pixel, an odd shape with
# uneven padding, and a batch of 16-channel maps larger than a 256-thread block.
CONV_GEOMETRIES = (((1, 1, 1, 1), (1, 1), (1, 1), (0, 0, 0, 0)),
                   ((2, 3, 7, 6), (3, 2), (2, 1), (1, 0, 2, 1)),
                   ((4, 1, 12, 12), (5, 5), (1, 1), (2, 2, 2, 2)),
                   ((8, 16, 14, 14), (5, 5), (1, 1), (2, 2, 2, 2)))


def _filters(x_shape) -> int:
    """Filters of the checked convolutions: whole vectors (16, 32) on the two images the
    size of the MNIST CNN's layers, so an engine's direct convolutions run there too."""
    if x_shape[1] == 16:
        return 32
    return 16 if x_shape[2] >= 12 else 3
# Element-wise tolerance |a - r| <= atol + rtol |r|: float32 allows a few ulp
# (GPU fused multiply-add, tanhf); float64 is near-exact.
TOLERANCES = {"float32": (1e-5, 1e-6), "float64": (1e-11, 1e-13)}


@dataclass
class Check:
    primitive: str
    dtype: str
    cases: int = 0
    worst: float = 0.0  # max |a - r| / (atol + rtol |r|); <= 1 passes
    max_abs: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and self.worst <= 1.0


def compare(check: Check, label: str, actual, expected) -> None:
    import numpy as np

    rtol, atol = TOLERANCES[check.dtype]
    a = np.asarray(actual, dtype=np.float64)
    r = np.asarray(expected, dtype=np.float64)
    check.cases += 1
    if a.shape != r.shape:
        check.errors.append(f"{label}: shape {a.shape} != {r.shape}")
        return
    both_nan = np.isnan(a) & np.isnan(r)
    same_inf = np.isinf(a) & (a == r)
    diff = np.where(both_nan | same_inf, 0.0, np.abs(a - r))
    diff = np.where(np.isnan(diff), np.inf, diff)  # NaN on one side only
    if diff.size:
        check.max_abs = max(check.max_abs, float(diff.max()))
        worst = float((diff / (atol + rtol * np.abs(np.nan_to_num(r)))).max())
        if worst > check.worst:
            check.worst = worst
            if worst > 1.0:
                check.errors.append(f"{label}: max |diff| {float(diff.max()):.3g}")


def _inputs(rng, shape, dtype, extreme: bool):
    x = rng.standard_normal(shape)
    if extreme:
        # Saturating, zero and tiny values side by side.
        x = x * 1e4
        flat = x.reshape(-1)
        flat[::3] = 0.0
        flat[1::5] = 1e-30
    return x.astype(dtype)


def run_checks(engine, reference, dtypes=("float32", "float64"), seed: int = 0) -> list[Check]:
    """Compare every fused primitive of ``engine`` with ``reference``; one Check per row."""
    import numpy as np

    from ..engines.base import ACTIVATIONS

    checks: list[Check] = []

    def on(eng, host):
        return eng.asarray(np.array(host))  # a fresh copy: updates below write in place

    def back(eng, arr):
        return eng.to_numpy(arr)

    for dtype in dtypes:
        cases = [(shape, extreme) for shape in SHAPES for extreme in (False, True)]

        def run_case(name, fn, cases=cases):
            check = Check(name, dtype)
            checks.append(check)
            rng = np.random.default_rng(seed)
            for shape, extreme in cases:
                images = isinstance(shape[0], tuple)  # a conv geometry: label it by its images
                label = f"{shape[0] if images else shape}{' extreme' if extreme else ''}"
                try:
                    fn(check, label, rng, shape, extreme)
                except Exception as exc:  # a kernel that fails to build or launch is a failed check
                    check.errors.append(f"{label}: {type(exc).__name__}: {exc}")

        for kind in ACTIVATIONS:
            def fwd(check, label, rng, shape, extreme, kind=kind):
                z = _inputs(rng, shape, dtype, extreme)
                b = _inputs(rng, shape[1:], dtype, False)
                out = engine.bias_act(on(engine, z), on(engine, b), kind, 0.05)
                ref = reference.bias_act(on(reference, z), on(reference, b), kind, 0.05)
                compare(check, label, back(engine, out), back(reference, ref))

            def bwd(check, label, rng, shape, extreme, kind=kind):
                z = _inputs(rng, shape, dtype, extreme)
                g = _inputs(rng, shape, dtype, False)
                out = back(reference, reference.activation(on(reference, z), kind, 0.05))
                mine = engine.act_backward(on(engine, g), on(engine, out), kind, 0.05)
                ref = reference.act_backward(on(reference, g), on(reference, out), kind, 0.05)
                compare(check, label, back(engine, mine), back(reference, ref))

            run_case(f"bias_act[{kind}]", fwd)
            run_case(f"act_backward[{kind}]", bwd)

        def xent(check, label, rng, shape, extreme):
            rows, cols = shape[0], max(shape[1], 2)
            logits = _inputs(rng, (rows, cols), dtype, extreme)
            labels = rng.integers(0, cols, rows)
            loss, grad = engine.softmax_xent(on(engine, logits), on(engine, labels))
            ref_loss, ref_grad = reference.softmax_xent(on(reference, logits), on(reference, labels))
            compare(check, label + " loss", np.array([loss]), np.array([ref_loss]))
            compare(check, label + " grad", back(engine, grad), back(reference, ref_grad))

        def bias_grad(check, label, rng, shape, extreme):
            g = _inputs(rng, shape, dtype, extreme)
            compare(check, label, back(engine, engine.bias_grad(on(engine, g))),
                     back(reference, reference.bias_grad(on(reference, g))))

        def act_backward_bias_grad(kind):
            def fn(check, label, rng, shape, extreme):
                g = _inputs(rng, shape, dtype, extreme)
                out = reference.activation(on(reference, _inputs(rng, shape, dtype, False)), kind)
                out = back(reference, out)
                (dz, db) = engine.act_backward_bias_grad(on(engine, g), on(engine, out), kind)
                ref_dz, ref_db = reference.act_backward_bias_grad(on(reference, g),
                                                                  on(reference, out), kind)
                ref_dz = back(reference, ref_dz)
                compare(check, f"{label} dz", back(engine, dz), ref_dz)
                # The column sums may be added in any order (the reference's own float32 sum
                # is off by more than the tolerance): compared relative to the sum of |terms|.
                scale = np.abs(ref_dz.astype(np.float64)).sum(axis=0)
                scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
                compare(check, f"{label} db", back(engine, db) / scale,
                        back(reference, ref_db) / scale)
            return fn

        def sum_squares(check, label, rng, shape, extreme):
            w = _inputs(rng, shape, dtype, extreme)
            compare(check, label, np.array([engine.sum_squares(on(engine, w))]),
                     np.array([reference.sum_squares(on(reference, w))]))

        def bn_forward(check, label, rng, shape, extreme):
            x = _inputs(rng, shape, dtype, extreme)
            gamma, beta = (_inputs(rng, shape[1:], dtype, False) for _ in range(2))
            mine = engine.batch_norm_forward(on(engine, x), on(engine, gamma), on(engine, beta), 1e-5)
            ref = reference.batch_norm_forward(on(reference, x), on(reference, gamma),
                                               on(reference, beta), 1e-5)
            for name, a, r in zip(("out", "x_hat", "inv_std", "mean", "var"), mine, ref):
                compare(check, f"{label} {name}", back(engine, a), back(reference, r))

        def bn_backward(check, label, rng, shape, extreme):
            x = _inputs(rng, shape, dtype, extreme)
            g = _inputs(rng, shape, dtype, False)
            gamma = _inputs(rng, shape[1:], dtype, False)
            _, x_hat, inv_std, _, _ = reference.batch_norm_forward(
                on(reference, x), on(reference, gamma), on(reference, gamma), 1e-5)
            x_hat, inv_std = back(reference, x_hat), back(reference, inv_std)
            mine = engine.batch_norm_backward(on(engine, g), on(engine, x_hat),
                                              on(engine, inv_std), on(engine, gamma))
            ref = reference.batch_norm_backward(on(reference, g), on(reference, x_hat),
                                                on(reference, inv_std), on(reference, gamma))
            for name, a, r in zip(("dx", "dgamma", "dbeta"), mine, ref):
                compare(check, f"{label} {name}", back(engine, a), back(reference, r))

        def optimizer(update):
            def fn(check, label, rng, shape, extreme):
                p = _inputs(rng, shape, dtype, extreme)
                grads = [_inputs(rng, shape, dtype, False) for _ in range(3)]
                state = [np.zeros(shape, dtype) for _ in range(2)]
                results = []
                for eng in (engine, reference):
                    param = on(eng, p)
                    slots = [on(eng, s) for s in state]
                    for step, g in enumerate(grads, start=1):
                        update(eng, param, on(eng, g), slots, step)
                    results.append([back(eng, a) for a in [param, *slots]])
                for mine, ref in zip(*results):
                    compare(check, label, mine, ref)
            return fn

        def conv(direction):
            def fn(check, label, rng, geometry, extreme):
                x_shape, window, stride, padding = geometry
                x = _inputs(rng, x_shape, dtype, extreme)
                if direction == "im2col":
                    mine = engine.im2col(on(engine, x), window, stride, padding)
                    ref = reference.im2col(on(reference, x), window, stride, padding)
                else:
                    cols = back(reference, reference.im2col(on(reference, x), window, stride, padding))
                    g = _inputs(rng, cols.shape, dtype, False)
                    mine = engine.col2im(on(engine, g), x_shape, window, stride, padding)
                    ref = reference.col2im(on(reference, g), x_shape, window, stride, padding)
                compare(check, label, back(engine, mine), back(reference, ref))
            return fn

        def window_product(direction):
            # The three products of a convolution, checked as im2col/col2im around a GEMM.
            def fn(check, label, rng, geometry, extreme):
                x_shape, window, stride, padding = geometry
                x = _inputs(rng, x_shape, dtype, extreme)
                rows = back(reference, reference.im2col(on(reference, x), window, stride, padding))
                filters = _filters(x_shape)
                w = _inputs(rng, (rows.shape[1], filters), dtype, False)
                g = _inputs(rng, (rows.shape[0], filters), dtype, False)
                b = _inputs(rng, (filters,), dtype, False)
                # Sums of hundreds of products, added in another order than the reference's
                # one big GEMM: compared relative to the sum of |terms| of each output.
                magnitude = np.abs(rows.astype(np.float64))
                if direction == "forward":  # with a bias and relu, applied tile by tile
                    mine = engine.im2col_matmul(on(engine, x), on(engine, w), window, stride,
                                                padding, on(engine, b), "relu")
                    ref = reference.im2col_matmul(on(reference, x), on(reference, w), window,
                                                  stride, padding, on(reference, b), "relu")
                    scale = magnitude @ np.abs(w.astype(np.float64)) + np.abs(b)
                elif direction == "weights":
                    mine = engine.im2col_t_matmul(on(engine, x), on(engine, g), window, stride,
                                                  padding)
                    ref = reference.im2col_t_matmul(on(reference, x), on(reference, g), window,
                                                    stride, padding)
                    scale = magnitude.T @ np.abs(g.astype(np.float64))
                else:
                    wt = np.ascontiguousarray(w.T)
                    mine = engine.matmul_col2im(on(engine, g), on(engine, wt), x_shape, window,
                                                stride, padding)
                    ref = reference.matmul_col2im(on(reference, g), on(reference, wt), x_shape,
                                                  window, stride, padding)
                    terms = np.abs(g.astype(np.float64)) @ np.abs(wt.astype(np.float64))
                    scale = back(reference, reference.col2im(on(reference, terms), x_shape,
                                                             window, stride, padding))
                scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
                compare(check, label, back(engine, mine) / scale, back(reference, ref) / scale)
            return fn

        def act_backward_weight_grad(check, label, rng, geometry, extreme):
            # A first layer's fused backward, against act_backward, bias_grad and
            # im2col_t_matmul; the weights relative to the sum of |terms|, as above.
            x_shape, window, stride, padding = geometry
            x = _inputs(rng, x_shape, dtype, extreme)
            rows = back(reference, reference.im2col(on(reference, x), window, stride, padding))
            shape = (rows.shape[0], _filters(x_shape))
            g = _inputs(rng, shape, dtype, False)
            out = back(reference, reference.activation(
                on(reference, _inputs(rng, shape, dtype, False)), "relu"))
            mine_w, mine_b = engine.act_backward_weight_grad(
                on(engine, x), on(engine, g), on(engine, out), "relu", 0.01, window, stride,
                padding)
            ref_w, ref_b = reference.act_backward_weight_grad(
                on(reference, x), on(reference, g), on(reference, out), "relu", 0.01, window,
                stride, padding)
            scale = np.abs(rows.astype(np.float64)).T @ np.abs(g.astype(np.float64))
            scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
            compare(check, label + " dW", back(engine, mine_w) / scale,
                    back(reference, ref_w) / scale)
            column = np.abs(g.astype(np.float64)).sum(axis=0)
            column = np.where(np.isfinite(column) & (column > 0), column, 1.0)
            compare(check, label + " db", back(engine, mine_b) / column,
                    back(reference, ref_b) / column)

        def pool(kind, direction):
            def fn(check, label, rng, geometry, extreme):
                x_shape, window, stride, _ = geometry
                x = _inputs(rng, x_shape, dtype, extreme)
                if kind == "max":
                    out, arg = reference.max_pool_forward(on(reference, x), window, stride)
                    if direction == "forward":
                        mine, mine_arg = engine.max_pool_forward(on(engine, x), window, stride)
                        compare(check, label + " argmax", back(engine, mine_arg), back(reference, arg))
                        compare(check, label, back(engine, mine), back(reference, out))
                        return
                    g, arg = _inputs(rng, tuple(out.shape), dtype, False), back(reference, arg)
                    mine = engine.max_pool_backward(on(engine, g), on(engine, arg), x_shape,
                                                    window, stride)
                    ref = reference.max_pool_backward(on(reference, g), on(reference, arg),
                                                      x_shape, window, stride)
                elif direction == "forward":
                    mine = engine.avg_pool_forward(on(engine, x), window, stride)
                    ref = reference.avg_pool_forward(on(reference, x), window, stride)
                else:
                    out = reference.avg_pool_forward(on(reference, x), window, stride)
                    g = _inputs(rng, tuple(out.shape), dtype, False)
                    mine = engine.avg_pool_backward(on(engine, g), x_shape, window, stride)
                    ref = reference.avg_pool_backward(on(reference, g), x_shape, window, stride)
                compare(check, label, back(engine, mine), back(reference, ref))
            return fn

        conv_cases = [(geometry, extreme) for geometry in CONV_GEOMETRIES
                      for extreme in (False, True)]
        run_case("softmax_xent", xent)
        run_case("bias_grad", bias_grad)
        run_case("sum_squares", sum_squares)
        run_case("batch_norm_forward", bn_forward)
        run_case("batch_norm_backward", bn_backward)
        run_case("im2col", conv("im2col"), conv_cases)
        run_case("col2im", conv("col2im"), conv_cases)
        run_case("im2col_matmul", window_product("forward"), conv_cases)
        run_case("im2col_t_matmul", window_product("weights"), conv_cases)
        run_case("matmul_col2im", window_product("inputs"), conv_cases)
        for kind in ("relu", "leaky_relu", "sigmoid"):
            run_case(f"act_backward_bias_grad[{kind}]", act_backward_bias_grad(kind))
        run_case("act_backward_weight_grad[relu]", act_backward_weight_grad, conv_cases)
        for kind in ("max", "avg"):
            for direction in ("forward", "backward"):
                run_case(f"{kind}_pool_{direction}", pool(kind, direction), conv_cases)
        run_case("sgd_update", optimizer(
            lambda e, p, g, s, t: e.sgd_update(p, g, 0.1, weight_decay=0.01)))
        run_case("momentum_update", optimizer(
            lambda e, p, g, s, t: e.momentum_update(p, g, s[0], 0.1, 0.9, weight_decay=0.01)))
        run_case("momentum_update[nesterov]", optimizer(
            lambda e, p, g, s, t: e.momentum_update(p, g, s[0], 0.1, 0.9, nesterov=True)))
        run_case("adam_update", optimizer(
            lambda e, p, g, s, t: e.adam_update(p, g, s[0], s[1], 1e-3, 0.9, 0.999, 1e-8, t,
                                                weight_decay=0.01)))
    return checks


def device_name(engine) -> str:
    info = engine.describe()
    if info.get("device"):
        return str(info["device"])
    return f"host CPU ({platform.processor() or platform.machine() or 'unknown'})"
