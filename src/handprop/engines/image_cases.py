"""The image cases of the primitive table (``cases.py``): window products, pooling and a first
layer's fused backward pass, on window geometries ``(x shape, window, stride, padding)``."""

from __future__ import annotations

import numpy as np

from .cases import POOLS, Case, _positive_sum, filters_for, image, reference, values


def _window_inputs(rng, geometry, dtype, extreme, layout="contiguous", nan=False):
    x_shape, window, stride, padding = geometry
    x = image(rng, x_shape, dtype, extreme, layout, nan)
    rows = np.asarray(reference().im2col(np.ascontiguousarray(x), window, stride, padding))
    filters = filters_for(x_shape)
    return {"x": x, "rows": rows, "window": (window, stride, padding),
            "w": values(rng, (rows.shape[1], filters), dtype, False),
            "g": values(rng, (rows.shape[0], filters), dtype, False),
            "b": values(rng, (filters,), dtype, False),
            "cols_grad": values(rng, rows.shape, dtype, False)}


def _magnitude(i):
    return np.abs(i["rows"].astype(np.float64))


def _col2im_terms(i):
    """Each input-gradient element's sum of |terms|, as col2im of the products' |terms|."""
    terms = np.abs(i["g"].astype(np.float64)) @ np.abs(i["w"].T.astype(np.float64))
    return np.asarray(reference().col2im(terms, i["x"].shape, *i["window"]))


def window_cases() -> list[Case]:
    """im2col and col2im, then a convolution's three products (with a bias and relu for
    the forward one, applied tile by tile), compared relative to each output's |terms|."""
    return [
        Case("im2col", _window_inputs, lambda e, put, i: [
            ("", e.im2col(put(i["x"]), *i["window"]))], images=True),
        Case("col2im", _window_inputs, lambda e, put, i: [
            ("", e.col2im(put(i["cols_grad"]), i["x"].shape, *i["window"]))], images=True),
        Case("im2col_matmul", _window_inputs, lambda e, put, i: [
            ("", e.im2col_matmul(put(i["x"]), put(i["w"]), *i["window"], put(i["b"]), "relu"))],
            images=True, scale=lambda i: [_positive_sum(
                _magnitude(i) @ np.abs(i["w"].astype(np.float64)) + np.abs(i["b"]))]),
        Case("im2col_t_matmul", _window_inputs, lambda e, put, i: [
            ("", e.im2col_t_matmul(put(i["x"]), put(i["g"]), *i["window"]))], images=True,
            scale=lambda i: [_positive_sum(_magnitude(i).T @ np.abs(i["g"].astype(np.float64)))]),
        Case("matmul_col2im", _window_inputs, lambda e, put, i: [
            ("", e.matmul_col2im(put(i["g"]), put(np.ascontiguousarray(i["w"].T)),
                                 i["x"].shape, *i["window"]))], images=True,
            scale=lambda i: [_positive_sum(_col2im_terms(i))]),
    ]


def first_layer_case() -> Case:
    """A first layer's fused backward, against act_backward, bias_grad and im2col_t_matmul;
    the weights relative to the sum of |terms|, the bias to its column's."""

    def inputs(rng, geometry, dtype, extreme, layout="contiguous", nan=False):
        i = _window_inputs(rng, geometry, dtype, extreme, layout, nan)
        i["out"] = np.asarray(reference().activation(values(rng, i["g"].shape, dtype, False),
                                                     "relu"))
        return i

    def scale(i):
        weights = _magnitude(i).T @ np.abs(i["g"].astype(np.float64))
        return [_positive_sum(weights), _positive_sum(np.abs(i["g"].astype(np.float64)).sum(
            axis=0))]

    return Case("act_backward_weight_grad[relu]", inputs, lambda e, put, i: list(zip(
        (" dW", " db"), e.act_backward_weight_grad(put(i["x"]), put(i["g"]), put(i["out"]),
                                                   "relu", 0.01, *i["window"]))),
        images=True, scale=scale)


def _pool_inputs(rng, geometry, dtype, extreme, layout="contiguous", nan=False):
    x_shape, window, stride, _ = geometry
    x = image(rng, x_shape, dtype, extreme, layout, nan)
    out, _ = reference().max_pool_forward(np.ascontiguousarray(x), window, stride)
    return {"x": x, "size": (window, stride), "g": values(rng, tuple(out.shape), dtype, False)}


def pool_cases() -> list[Case]:
    def max_forward(e, put, i):
        out, argmax = e.max_pool_forward(put(i["x"]), *i["size"])
        return [(" argmax", argmax), ("", out)]

    def max_backward(e, put, i):
        # the engine's own arg-max, in the layout its forward pass gives it
        _, argmax = e.max_pool_forward(put(i["x"]), *i["size"])
        return [("", e.max_pool_backward(put(i["g"]), argmax, i["x"].shape, *i["size"]))]

    return [
        Case("max_pool_forward", _pool_inputs, max_forward, images=True, nan_variant=True,
             geometries=POOLS),
        Case("max_pool_backward", _pool_inputs, max_backward, images=True, nan_variant=True,
             geometries=POOLS),
        Case("avg_pool_forward", _pool_inputs, lambda e, put, i: [
            ("", e.avg_pool_forward(put(i["x"]), *i["size"]))], images=True, geometries=POOLS),
        Case("avg_pool_backward", _pool_inputs, lambda e, put, i: [
            ("", e.avg_pool_backward(put(i["g"]), i["x"].shape, *i["size"]))], images=True,
            geometries=POOLS),
    ]


def image_cases() -> tuple[list[Case], list[Case], list[Case]]:
    return window_cases(), pool_cases(), [first_layer_case()]
