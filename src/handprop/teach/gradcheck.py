"""Check hand-written gradients against numerical ones.

For every parameter tensor (and the input) the analytic gradient from
``backward`` is compared with centred finite differences of the total loss
(data loss plus the L2 term) computed in float64. The fourth-order centred
stencil ``(-f(x+2h) + 8f(x+h) - 8f(x-h) + f(x-2h)) / 12h`` keeps truncation
error far below float64 round-off, so well-implemented layers reach relative
errors around 1e-10.

The relative error of a tensor is ``|ga - gn| / max(eps, |ga| + |gn|)`` with
``|.|`` the Euclidean norm over the tensor, so entries whose true gradient is
nearly zero cannot dominate through round-off.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError
from ..nn.image import AvgPool2D, Conv2D, Flatten, MaxPool2D
from ..nn.layers import Activation, BatchNorm, Dense, Dropout
from ..nn.losses import check_targets, get_loss
from ..nn.model import Sequential

REL_ERROR_FLOOR = 1e-12


def rel_error(analytic: np.ndarray, numeric: np.ndarray, eps: float = REL_ERROR_FLOOR) -> float:
    analytic, numeric = np.asarray(analytic, np.float64), np.asarray(numeric, np.float64)
    diff = np.linalg.norm(analytic - numeric)
    return float(diff / max(eps, np.linalg.norm(analytic) + np.linalg.norm(numeric)))


@dataclass
class TensorCheck:
    name: str
    shape: tuple
    rel_error: float
    max_abs_diff: float
    checked: int  # entries compared


@dataclass
class GradcheckReport:
    loss: str
    l2: float
    checks: list[TensorCheck] = field(default_factory=list)

    @property
    def max_rel_error(self) -> float:
        return max((c.rel_error for c in self.checks), default=0.0)

    def passed(self, tolerance: float = 1e-7) -> bool:
        return self.max_rel_error < tolerance

    def table(self) -> str:
        rows = [("tensor", "shape", "entries", "rel error", "max |diff|")]
        for c in self.checks:
            rows.append((c.name, "x".join(map(str, c.shape)), str(c.checked),
                         f"{c.rel_error:.2e}", f"{c.max_abs_diff:.2e}"))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"loss": self.loss, "l2": self.l2, "max_rel_error": self.max_rel_error,
                "tensors": [{"name": c.name, "shape": list(c.shape), "rel_error": c.rel_error,
                             "max_abs_diff": c.max_abs_diff, "entries": c.checked}
                            for c in self.checks]}


def total_loss(model: Sequential, loss, x, targets, l2: float, rng_states=None) -> float:
    """The loss of a training-mode forward pass; with ``rng_states``, layers that draw random
    numbers (dropout) are reset first, so every evaluation uses the same masks."""
    if rng_states is not None:
        model.set_rng_states(rng_states)
    value, _ = loss(model.engine, model.forward(x, training=True), targets)
    return model.engine.to_float(value) + model.l2_penalty(l2)


def gradcheck(model: Sequential, loss, x, targets, l2: float = 0.0, step: float = 1e-4,
              max_entries: int | None = None, seed: int = 0) -> GradcheckReport:
    """Compare analytic and numerical gradients of every parameter and the input.

    ``model`` must be float64. ``x`` and ``targets`` are host arrays.
    ``max_entries`` limits the entries checked per tensor (a seeded random
    subset) for large models.
    """
    if model.dtype != "float64":
        raise ConfigError("gradcheck needs a float64 model: float32 round-off swamps the differences")
    loss = get_loss(loss)
    engine = model.engine
    x_host = np.asarray(x, dtype=np.float64)
    check_targets(np.asarray(targets), x_host.shape[0], model.output_dim, loss)
    xs, ts = engine.asarray(x_host, "float64"), engine.asarray(targets)
    rng = np.random.default_rng(seed)

    with model.state_preserved():  # running statistics are left as they were
        return _gradcheck(model, loss, engine, x_host, xs, ts, l2, step, max_entries, rng)


def _gradcheck(model, loss, engine, x_host, xs, ts, l2, step, max_entries, rng) -> GradcheckReport:
    # Dropout masks are drawn once here and redrawn identically for every
    # numerical evaluation below, so the check covers dropout's backward too.
    rng_states = model.rng_states()
    outputs = model.forward(xs, training=True)
    _, grad_out = loss(engine, outputs, ts)
    grad_input = engine.to_numpy(model.backward(grad_out, need_input_grad=True))
    model.add_l2_gradient(l2)
    analytic = {name: engine.to_numpy(layer.grads[key]) for name, layer, key in model.named_parameters()}

    report = GradcheckReport(loss=loss.name, l2=l2)

    def numeric_gradient(read, write, shape):
        numeric = np.zeros(shape)
        indices = list(np.ndindex(*shape))
        if max_entries is not None and len(indices) > max_entries:
            chosen = rng.choice(len(indices), size=max_entries, replace=False)
            indices = [indices[i] for i in sorted(chosen)]
        mask = np.zeros(shape, dtype=bool)
        for idx in indices:
            original = read(idx)
            values = []
            for offset in (2 * step, step, -step, -2 * step):
                write(idx, original + offset)
                values.append(total_loss(model, loss, current_x[0], ts, l2, rng_states))
            write(idx, original)
            numeric[idx] = (-values[0] + 8 * values[1] - 8 * values[2] + values[3]) / (12 * step)
            mask[idx] = True
        return numeric, mask

    current_x = [xs]
    for name, layer, key in model.named_parameters():
        param = layer.params[key]

        def read(idx, param=param):
            return float(param[idx])

        def write(idx, value, param=param):
            param[idx] = value

        numeric, mask = numeric_gradient(read, write, tuple(param.shape))
        report.checks.append(_compare(name, analytic[name], numeric, mask))

    x_work = x_host.copy()

    def read_x(idx):
        return float(x_work[idx])

    def write_x(idx, value):
        x_work[idx] = value
        current_x[0] = engine.asarray(x_work, "float64")

    numeric, mask = numeric_gradient(read_x, write_x, x_host.shape)
    current_x[0] = xs
    report.checks.append(_compare("input", grad_input, numeric, mask))
    return report


def _compare(name, analytic, numeric, mask) -> TensorCheck:
    a, n = analytic[mask], numeric[mask]
    return TensorCheck(name, tuple(analytic.shape), rel_error(a, n),
                       float(np.max(np.abs(a - n))) if a.size else 0.0, int(mask.sum()))


# A small network that touches every activation, for `handprop gradcheck`.
DEFAULT_ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu", "lecun_tanh", "identity")


def default_network(loss_name: str, engine=None, seed: int = 0, inputs: int = 4,
                    width: int = 5, outputs: int = 3) -> Sequential:
    """An MLP with one Dense layer per activation, plus separate activation layers, dropout
    and batch normalization."""
    layers = [Dense(width, act, init="xavier_normal") for act in DEFAULT_ACTIVATIONS]
    layers += [Activation("tanh"), Dropout(0.4), Dense(width, "identity", use_bias=False),
               BatchNorm(), Activation("sigmoid"),
               Activation("leaky_relu", alpha=0.1), Activation("lecun_tanh")]
    layers.append(Dense(outputs, "sigmoid" if loss_name == "mse" else "identity"))
    return Sequential(layers, input_dim=inputs, engine=engine, dtype="float64", seed=seed)


#: One sample of the convolutional check: two channels, odd and unequal sides.
CONV_INPUT_SHAPE = (2, 11, 9)


def default_conv_network(loss_name: str, engine=None, seed: int = 0, outputs: int = 3) -> Sequential:
    """A small CNN with a convolution at stride 1 ("same" padding), one at stride 2 (padding 1)
    followed by batch norm per channel and dropout, one without padding, both poolings (the
    max-pool drops a ragged edge, the average pool overlaps) and Flatten."""
    layers = [Conv2D(3, 3, padding="same", activation="tanh", init="xavier_normal"),
              MaxPool2D(2),  # 3x11x9 -> 3x5x4
              Conv2D(4, 3, stride=2, padding=1, use_bias=False, init="xavier_normal"),  # 4x3x2
              BatchNorm(), Activation("sigmoid"), Dropout(0.3),
              Conv2D(2, (2, 1), activation="lecun_tanh", init="xavier_normal"),  # 2x2x2
              AvgPool2D((2, 1), stride=1),  # 2x1x2
              Flatten(),
              Dense(outputs, "sigmoid" if loss_name == "mse" else "identity")]
    return Sequential(layers, input_shape=CONV_INPUT_SHAPE, engine=engine, dtype="float64", seed=seed)


def default_problem(loss_name: str, samples: int = 6, inputs=4, outputs: int = 3, seed: int = 0):
    """Random inputs of ``samples`` x ``inputs`` (a width, or a sample shape such as
    ``CONV_INPUT_SHAPE``) and targets that suit the loss."""
    rng = np.random.default_rng(seed + 1)
    x = rng.normal(size=(samples, *((inputs,) if isinstance(inputs, int) else inputs)))
    if loss_name == "binary_cross_entropy":
        targets = rng.integers(0, 2, size=(samples, outputs)).astype(np.float64)
    else:
        targets = rng.integers(0, outputs, size=samples)
    return x, targets


# --------------------------------------------------------------------- sanity
@dataclass
class SanityResult:
    passed: bool
    final_loss: float
    steps: int
    losses: list[float]
    threshold: float

    def message(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        return (f"overfit check {verdict}: loss {self.losses[0]:.4f} -> {self.final_loss:.4g} "
                f"in {self.steps} steps (threshold {self.threshold})")


def overfit_check(model: Sequential, loss, optimizer, x, targets, steps: int = 500,
                  threshold: float = 0.05) -> SanityResult:
    """Train on a tiny subset and report whether the loss falls below ``threshold``.

    A model that cannot memorise a handful of samples has a bug (or a
    learning rate far off); this is the classic first sanity check.
    """
    loss = get_loss(loss)
    engine = model.engine
    check_targets(np.asarray(targets), len(x), model.output_dim, loss)
    xs = engine.asarray(np.asarray(x), model.dtype)
    ts = engine.asarray(np.asarray(targets))
    losses = []
    for step in range(1, steps + 1):
        value, grad = loss(engine, model.forward(xs, training=True), ts)
        value = engine.to_float(value)
        losses.append(value)
        if value < threshold:
            return SanityResult(True, value, step, losses, threshold)
        model.backward(grad)
        optimizer.step(model)
    return SanityResult(False, losses[-1], steps, losses, threshold)


__all__ = ["CONV_INPUT_SHAPE", "DEFAULT_ACTIVATIONS", "REL_ERROR_FLOOR", "GradcheckReport",
           "SanityResult", "TensorCheck", "default_conv_network", "default_network",
           "default_problem", "gradcheck", "overfit_check", "rel_error", "total_loss"]
