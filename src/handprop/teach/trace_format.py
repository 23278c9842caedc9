"""The text of ``handprop trace``: a trace's numbers as tables (dense layers) and grids (maps).

``format_trace`` prints a dense ``Trace``, ``format_conv_trace`` a ``ConvTrace``; both
read only the records' fields, so this module imports nothing from the trace itself.
"""

from __future__ import annotations

import textwrap

import numpy as np


# ---------------------------------------------------------------- cells
def _num(value: float) -> str:
    value = float(value)
    if value == 0.0:
        value = 0.0  # no "-0"
    return f"{value:.6g}"


def _table(header: list[str], rows: list[list], indent: str = "    ") -> list[str]:
    """Left-aligned first column; number columns aligned on the decimal point."""
    columns = [[str(r[0]) for r in rows]] + [[_num(r[c]) for r in rows] for c in range(1, len(header))]
    cells = [columns[0]]
    widths = [max([len(header[0])] + [len(s) for s in columns[0]])]
    for c, col in enumerate(columns[1:], start=1):
        heads = [s.split(".")[0] if "." in s else s.split("e")[0] for s in col]
        tails = [s[len(h):] for s, h in zip(col, heads)]
        left, right = max(map(len, heads)), max(map(len, tails))
        aligned = [h.rjust(left) + t.ljust(right) for h, t in zip(heads, tails)]
        width = max(len(header[c]), left + right)
        cells.append([s.rjust(width) for s in aligned])
        widths.append(width)
    lines = [indent + "  ".join([header[0].ljust(widths[0])] +
                                [h.rjust(w) for h, w in zip(header[1:], widths[1:])])]
    for i in range(len(rows)):
        lines.append(indent + "  ".join([cells[0][i].ljust(widths[0])] +
                                        [cells[c][i] for c in range(1, len(header))]))
    return [line.rstrip() for line in lines]


def _grid(matrix: np.ndarray, indent: str = "      ", marks=None) -> list[str]:
    """A 2-D array as right-aligned columns; ``marks`` (bools) are starred."""
    cells = [[_num(v) + ("*" if marks is not None and marks[r, c] else "")
              for c, v in enumerate(row)] for r, row in enumerate(matrix)]
    width = max(len(cell) for row in cells for cell in row)
    return [indent + "  ".join(cell.rjust(width) for cell in row) for row in cells]


def _maps(label: str, maps: np.ndarray, indent: str = "    ", marks=None) -> list[str]:
    """Each channel of a (C, H, W) array as a grid, titled ``label[c]``."""
    out = []
    for c in range(maps.shape[0]):
        out.append(f"{indent}{label}[{c}]")
        out += _grid(maps[c], indent + "  ", None if marks is None else marks[c])
    return out


# ---------------------------------------------------------------- shared sections
def _title(t, network: str) -> list[str]:
    """The source, the engine, the description and the ``network`` line."""
    net = t.net
    out = [f"trace of {net.source} on engine {t.engine}, float64"]
    if net.description:
        out.append(textwrap.fill(net.description, width=100))
    out.append(network)
    return out


def _loss_lines(t, a: np.ndarray, grad_a: np.ndarray) -> list[str]:
    """The loss of outputs ``a`` and its gradient ``grad_a``, unit by unit."""
    out = [""]
    if t.net.loss == "mse":
        out.append("LOSS   mse: L = 1/2 * sum_k (a_k - t_k)^2,   dL/da = a - t")
        out += _table(["unit", "a", "t", "dL/da"],
                      [[k, a[k], t.target_vector[k], grad_a[k]] for k in range(len(a))],
                      indent="  ")
    else:
        out.append("LOSS   softmax_cross_entropy: p = softmax(a), L = -log p[target],   "
                   "dL/da = p - onehot")
        out += _table(["unit", "a (logit)", "p", "onehot", "dL/da"],
                      [[k, a[k], t.probabilities[k], t.target_vector[k], grad_a[k]]
                       for k in range(len(a))], indent="  ")
    out.append(f"  L = {_num(t.loss)}")
    return out


def _dense_step_table(weights, grad_weights, new_weights, bias, grad_bias, new_bias) -> list[str]:
    """Every weight and bias of a dense layer: old, gradient and new value."""
    rows = [[f"W[{r},{c}]", weights[r, c], grad_weights[r, c], new_weights[r, c]]
            for r in range(weights.shape[0]) for c in range(weights.shape[1])]
    rows += [[f"b[{c}]", bias[c], grad_bias[c], new_bias[c]] for c in range(len(bias))]
    return _table(["param", "old", "grad", "new"], rows)


# ---------------------------------------------------------------- dense
def format_trace(t) -> str:
    """The tables of a dense ``Trace``: forward, loss, backward, gradients and the step."""
    net = t.net
    sizes = " -> ".join(f"Dense {lt.weights.shape[1]} ({lt.activation})" for lt in t.layers)
    out = _title(t, f"network: {len(net.input)} inputs -> {sizes}; loss {net.loss}; "
                    f"learning rate {_num(net.learning_rate)}")

    out += ["", "FORWARD   z = a_prev @ W + b,   a = f(z)"]
    out += _table(["input", "x"], [[i, v] for i, v in enumerate(net.input)], indent="  ")
    for i, lt in enumerate(t.layers):
        fan_in, fan_out = lt.weights.shape
        out += ["", f"  layer {i}: Dense {fan_in} -> {fan_out}, {lt.activation}"]
        out += _table(["unit", "z", "a"], [[j, lt.z[j], lt.a[j]] for j in range(fan_out)])

    out += _loss_lines(t, t.layers[-1].a, t.layers[-1].grad_a)

    out += ["", "BACKWARD   delta = dL/dz = dL/da * f'(z),   dL/da_prev = W @ delta"]
    for i in range(len(t.layers) - 1, -1, -1):
        lt = t.layers[i]
        out += ["", f"  layer {i}: {lt.activation}"]
        out += _table(["unit", "dL/da", "f'(z)", "delta"],
                      [[j, lt.grad_a[j], lt.act_deriv[j], lt.delta[j]] for j in range(len(lt.delta))])

    out += ["", f"GRADIENTS AND SGD STEP   dL/dW = outer(a_prev, delta),   dL/db = delta,   "
                f"new = old - {_num(net.learning_rate)} * grad",
            "  W[i,j] connects input i to unit j"]
    for i, lt in enumerate(t.layers):
        out += ["", f"  layer {i}"]
        out += _dense_step_table(lt.weights, lt.grad_weights, lt.new_weights,
                                 lt.bias, lt.grad_bias, lt.new_bias)
    return "\n".join(out)


# ---------------------------------------------------------------- conv
def format_conv_trace(t) -> str:
    """The maps and tables of a ``ConvTrace``: forward, loss, backward, gradients and the step."""
    net = t.net
    shapes = " -> ".join(f"{r['name']} {'x'.join(map(str, r['out_shape']))}" for r in t.layers)
    out = _title(t, f"network: input {'x'.join(map(str, net.input.shape))} -> {shapes}; "
                    f"loss {net.loss}; learning rate {_num(net.learning_rate)}")
    out += _conv_forward(t)
    out += _loss_lines(t, t.layers[-1]["a"], t.layers[-1]["grad_a"])
    out += _conv_backward(t)
    out += _conv_step(t)
    return "\n".join(out)


def _argmax_marks(record) -> np.ndarray:
    """Which inputs of a max-pool were picked by some window."""
    c, h, w = record["in_shape"]
    picked = np.zeros((c, h, w), dtype=bool)
    layer = record["layer"]
    (_, pw), (sh, sw) = layer.size, layer.stride
    for ch, p, q in np.ndindex(*record["argmax"].shape):
        k = int(record["argmax"][ch, p, q])
        picked[ch, p * sh + k // pw, q * sw + k % pw] = True
    return picked


def _conv_forward(t) -> list[str]:
    out = ["", "FORWARD   conv: z[f] = sum_c W[f, c] (*) x[c] + b[f] (cross-correlation), "
               "a = f(z);   pool: a = max or mean of each window"]
    out += _maps("x", t.net.input, indent="  ")
    for i, r in enumerate(t.layers):
        out += ["", f"  layer {i}: {r['name']}"]
        kind = r["type"]
        if kind == "conv":
            for f in range(r["weights"].shape[0]):
                for c in range(r["weights"].shape[1]):
                    out.append(f"    W[{f}, {c}]")
                    out += _grid(r["weights"][f, c])
                out.append(f"    b[{f}] = {_num(r['bias'][f])}")
            out += _maps("z", r["z"]) + _maps("a", r["a"])
        elif kind in ("maxpool", "avgpool"):
            if kind == "maxpool":
                out.append("    * marks the inputs some window picked (gradients flow only there)")
                out += _maps("input", r["input"], marks=_argmax_marks(r))
            out += _maps("a", r["a"])
        elif kind == "flatten":
            out += _table(["index", "a"], [[j, v] for j, v in enumerate(r["a"])])
        else:
            out += _table(["unit", "z", "a"], [[j, r["z"][j], r["a"][j]] for j in range(len(r["a"]))])
    return out


def _conv_backward(t) -> list[str]:
    out = ["", "BACKWARD   delta = dL/dz = dL/da * f'(z);   max-pool: each dL/da goes to its "
               "window's arg-max;   avg-pool: spread evenly;   overlaps add up"]
    for i in range(len(t.layers) - 1, -1, -1):
        r = t.layers[i]
        out += ["", f"  layer {i}: {r['name']}"]
        if r["type"] == "dense":
            out += _table(["unit", "dL/da", "f'(z)", "delta"],
                          [[j, r["grad_a"][j], r["act_deriv"][j], r["delta"][j]]
                           for j in range(len(r["delta"]))])
        elif r["type"] == "conv":
            out += _maps("dL/da", r["grad_a"]) + _maps("f'(z)", r["act_deriv"])
            out += _maps("delta", r["delta"])
        elif r["type"] == "flatten":
            out.append("    dL/da reshaped to the input's maps:")
            out += _maps("dL/dx", r["grad_input"])
        else:
            out += _maps("dL/da", r["grad_a"]) + _maps("dL/dx", r["grad_input"])
        if r["type"] == "conv" and i > 0:
            out.append("    dL/dx[c] = sum_f (full convolution of delta[f] with W[f, c]):")
            out += _maps("dL/dx", r["grad_input"])
    return out


def _conv_step(t) -> list[str]:
    out = ["", f"GRADIENTS AND SGD STEP   conv: dL/dW[f, c] = delta[f] (*) x[c], "
               f"dL/db[f] = sum delta[f];   dense: dL/dW = outer(a_prev, delta);   "
               f"new = old - {_num(t.net.learning_rate)} * grad"]
    for i, r in enumerate(t.layers):
        if "grad_weights" not in r:
            continue
        out += ["", f"  layer {i}: {r['name']}"]
        if r["type"] != "conv":
            out += _dense_step_table(r["weights"], r["grad_weights"], r["new_weights"],
                                     r["bias"], r["grad_bias"], r["new_bias"])
            continue
        for f in range(r["weights"].shape[0]):
            for c in range(r["weights"].shape[1]):
                for label, key in (("old", "weights"), ("grad", "grad_weights"),
                                   ("new", "new_weights")):
                    out.append(f"    W[{f}, {c}] {label}")
                    out += _grid(r[key][f, c])
        out += _table(["param", "old", "grad", "new"],
                      [[f"b[{f}]", r["bias"][f], r["grad_bias"][f], r["new_bias"][f]]
                       for f in range(len(r["bias"]))])
    return out


__all__ = ["format_conv_trace", "format_trace"]
