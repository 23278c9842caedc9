"""Losses: each returns the batch-mean loss and its gradient w.r.t. the outputs.

Conventions (per sample, then averaged over the batch):

* ``softmax_cross_entropy``: ``-log softmax(z)[y]`` on logits ``z``.
* ``mse``: ``1/2 * sum_k (a_k - t_k)^2`` over the outputs, the pen-and-paper
  convention whose gradient is simply ``a - t``.
* ``binary_cross_entropy``: ``sum_k [max(z,0) - z t + log(1 + exp(-|z|))]``
  on logits, stable for any finite ``z``.

Targets are class indices (``(batch,)`` integers) or, for ``mse`` and
``binary_cross_entropy``, also target arrays shaped like the outputs.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError, DataError, ShapeError


class Loss:
    name = "loss"

    def __call__(self, engine, outputs, targets):
        """Return ``(loss, grad_outputs)``; ``loss`` is an engine scalar (``engine.to_float``)."""
        raise NotImplementedError

    def predict(self, engine, outputs):
        """Predicted class indices from the model outputs."""
        xp = engine.xp
        if outputs.shape[1] == 1:
            return xp.astype(outputs[:, 0] > self.single_output_threshold, xp.int64)
        return xp.argmax(outputs, axis=1)

    single_output_threshold = 0.5

    def targets_as_array(self, engine, outputs, targets):
        """Class indices become one-hot (or a column for one output); arrays pass through."""
        xp = engine.xp
        if len(targets.shape) == 1:
            if outputs.shape[1] == 1:
                return xp.reshape(xp.astype(targets, outputs.dtype), (-1, 1))
            return engine.one_hot(targets, outputs.shape[1], outputs.dtype)
        return targets


class SoftmaxCrossEntropy(Loss):
    name = "softmax_cross_entropy"

    def __call__(self, engine, outputs, targets):
        return engine.softmax_xent(outputs, targets)


class MeanSquaredError(Loss):
    name = "mse"

    def __call__(self, engine, outputs, targets):
        xp = engine.xp
        diff = outputs - self.targets_as_array(engine, outputs, targets)
        n = outputs.shape[0]
        loss = 0.5 * xp.sum(diff * diff) / n
        return loss, diff / n


class BinaryCrossEntropy(Loss):
    name = "binary_cross_entropy"
    single_output_threshold = 0.0  # on logits

    def __call__(self, engine, outputs, targets):
        xp = engine.xp
        t = self.targets_as_array(engine, outputs, targets)
        n = outputs.shape[0]
        z = outputs
        per_element = xp.where(z > 0, z, xp.zeros_like(z)) - z * t + xp.log1p(xp.exp(-xp.abs(z)))
        loss = xp.sum(per_element) / n
        return loss, (engine.activation(z, "sigmoid") - t) / n


LOSSES = {cls.name: cls for cls in (SoftmaxCrossEntropy, MeanSquaredError, BinaryCrossEntropy)}
LOSS_ALIASES = {"xent": "softmax_cross_entropy", "cross_entropy": "softmax_cross_entropy",
                "bce": "binary_cross_entropy"}


def get_loss(name: str | Loss) -> Loss:
    if isinstance(name, Loss):
        return name
    key = LOSS_ALIASES.get(name, name)
    if key not in LOSSES:
        raise ConfigError(f"unknown loss {name!r}; choose one of: {', '.join(LOSSES)}")
    return LOSSES[key]()


def check_inputs(x: np.ndarray, input_dim: int | None = None, what: str = "inputs",
                 input_shape=None) -> None:
    """Refuse wrongly shaped or non-finite inputs with a clear message.

    ``input_dim`` (a width ``n``) or ``input_shape`` (one sample's shape) say what
    the model takes: ``n`` or ``(n,)`` wants (samples, n); ``(C, H, W)`` wants
    images (samples, C, H, W).
    """
    x = np.asarray(x)
    shape = input_shape if input_shape is not None else input_dim
    shape = (shape,) if isinstance(shape, (int, np.integer)) else shape
    if shape is None or len(shape) == 1:
        if x.ndim != 2:
            raise ShapeError(f"{what} must be 2-D (samples, features); got shape {x.shape}. "
                             f"Flatten images first.")
        if shape is not None and x.shape[1] != shape[0]:
            raise ShapeError(f"{what} have {x.shape[1]} features but the model expects {shape[0]}")
    elif x.shape[1:] != tuple(shape):
        want = ", ".join(map(str, shape))
        hint = (f"; reshape them to (samples, {want})"
                if x.ndim >= 2 and int(np.prod(x.shape[1:])) == int(np.prod(shape)) else "")
        raise ShapeError(f"{what} have shape {x.shape} but the model expects images of shape "
                         f"(samples, {want}){hint}")
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        bad = int(np.size(x) - np.isfinite(x).sum())
        raise DataError(f"{what} contain {bad} NaN or Inf values; clean or impute them first")


def check_targets(targets: np.ndarray, n: int, outputs: int, loss: Loss) -> None:
    """Refuse targets that do not match ``n`` samples and ``outputs`` model outputs."""
    t = np.asarray(targets)
    if t.shape[0] != n:
        raise ShapeError(f"got {n} samples but {t.shape[0]} targets")
    if t.ndim == 1:
        if not np.issubdtype(t.dtype, np.integer):
            raise DataError(f"class labels must be integers, got dtype {t.dtype}")
        classes = max(outputs, 2)
        if t.size and (t.min() < 0 or t.max() >= classes):
            raise DataError(
                f"labels must lie in 0..{classes - 1} for a model with {outputs} outputs; "
                f"found values from {t.min()} to {t.max()}"
            )
        if isinstance(loss, SoftmaxCrossEntropy) and outputs < 2:
            raise ShapeError("softmax cross-entropy needs at least 2 outputs; "
                             "use binary_cross_entropy or mse for a single output")
    elif t.ndim == 2:
        if isinstance(loss, SoftmaxCrossEntropy):
            raise DataError("softmax cross-entropy takes class indices, not target arrays")
        if t.shape[1] != outputs:
            raise ShapeError(f"targets have {t.shape[1]} columns but the model has {outputs} outputs")
        if not np.isfinite(t).all():
            raise DataError("targets contain NaN or Inf values")
    else:
        raise ShapeError(f"targets must be class indices (n,) or an array (n, outputs); got {t.shape}")
