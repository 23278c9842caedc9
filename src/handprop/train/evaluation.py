"""A trained model on one split: loss, accuracy, predictions, confusion matrix, mistakes,
and what its first layer and its convolutions make of the inputs.

``evaluate_split`` runs the model once over host arrays, in batches, and keeps
on the host what `handprop evaluate` prints and draws. Its loss and accuracy
are the trainer's (``trainer.evaluate``, the same batches), so the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..nn.image import Conv2D
from ..nn.losses import check_inputs, check_targets, get_loss
from .trainer import count_correct

EVAL_BATCH_SIZE = 2048


@dataclass
class SplitEvaluation:
    loss: float            # mean loss over the split (without L2)
    accuracy: float
    outputs: np.ndarray    # (n, outputs) the model's raw outputs
    predicted: np.ndarray  # (n,) class indices
    truth: np.ndarray      # (n,) class indices
    confusion: np.ndarray  # (classes, classes): [true, predicted] counts

    @property
    def per_class_accuracy(self) -> list[float | None]:
        """Share of each true class predicted right (None for a class absent here)."""
        totals = self.confusion.sum(axis=1)
        return [float(self.confusion[i, i] / totals[i]) if totals[i] else None
                for i in range(len(totals))]


def evaluate_split(model, loss, x, y, classes: int,
                   batch_size: int = EVAL_BATCH_SIZE) -> SplitEvaluation:
    """Evaluate ``model`` on host arrays ``x``, ``y`` (class indices, or targets whose
    argmax/threshold gives them) for a problem of ``classes`` classes."""
    loss = get_loss(loss)
    check_inputs(x, input_shape=model.input_shape)
    check_targets(y, len(x), model.output_dim, loss)
    engine = model.engine
    n = len(x)
    total_loss = total_correct = 0.0
    outputs, predicted = [], []
    with engine.threads_for(model):
        for start in range(0, n, batch_size):
            xb = engine.asarray(np.asarray(x[start:start + batch_size]), model.dtype)
            yb = engine.asarray(np.asarray(y[start:start + batch_size]))
            out = model.forward(xb, training=False)
            value, _ = loss(engine, out, yb)
            total_loss = total_loss + value * xb.shape[0]
            total_correct = total_correct + count_correct(engine, loss, out, yb)
            outputs.append(engine.to_numpy(out))
            predicted.append(engine.to_numpy(loss.predict(engine, out)))
    outputs, pred = np.concatenate(outputs), np.concatenate(predicted).astype(np.int64)
    truth = class_indices(np.asarray(y))
    return SplitEvaluation(engine.to_float(total_loss) / n, engine.to_float(total_correct) / n,
                           outputs, pred, truth, confusion_matrix(truth, pred, classes))


def class_indices(y: np.ndarray) -> np.ndarray:
    """Class indices from labels, one-hot targets or single 0/1 targets."""
    if y.ndim == 2:
        return (y[:, 0] > 0.5).astype(np.int64) if y.shape[1] == 1 else y.argmax(axis=1)
    return y.astype(np.int64)


def confusion_matrix(truth: np.ndarray, pred: np.ndarray, classes: int) -> np.ndarray:
    """``m[i, j]``: samples of true class i predicted as j."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (truth, pred), 1)
    return matrix


def most_confident_mistakes(outputs, truth, pred, count: int, threshold: float = 0.5):
    """Indices of up to ``count`` wrong predictions, the most confident first.

    Confidence is the predicted class's output minus the true class's (for a
    single output, its distance from the decision ``threshold``), so it works
    for logits, probabilities and regression outputs alike.
    """
    outputs = np.asarray(outputs, dtype=np.float64)
    truth, pred = np.asarray(truth).astype(np.int64), np.asarray(pred).astype(np.int64)
    if outputs.shape[1] == 1:
        margin = np.abs(outputs[:, 0] - threshold)
    else:
        rows = np.arange(len(truth))
        margin = outputs[rows, pred] - outputs[rows, truth]
    wrong = np.flatnonzero(pred != truth)
    # A stable sort keeps equally confident mistakes in dataset order.
    return wrong[np.argsort(-margin[wrong], kind="stable")][:count]


def first_weights(model) -> tuple[str | None, np.ndarray | None]:
    """The weights of ``model``'s first layer that has any, on the host, for drawing:
    ``("filters", W)`` for a convolution (W (filters, C, kh, kw)), ``("weights", W)`` for a
    dense layer (W (inputs, units), its rows in the dataset's (H, W, C) order when the model
    takes (C, H, W) images), ``(None, None)`` for a model without weights."""
    first = next((layer for layer in model.layers if "W" in getattr(layer, "params", {})), None)
    if first is None:
        return None, None
    weights = model.engine.to_numpy(first.params["W"])
    if isinstance(first, Conv2D):
        return "filters", weights
    if len(model.input_shape) == 3:  # flattened (C, H, W) rows: back to (H, W, C) order
        c, h, w = model.input_shape
        weights = weights.reshape(c, h, w, -1).transpose(1, 2, 0, 3).reshape(c * h * w, -1)
    return "weights", weights


def feature_maps(model, sample) -> list[tuple[str, np.ndarray]]:
    """What each convolution of ``model`` makes of one ``sample`` (as the model takes it, e.g.
    (C, H, W)): ``("layer i", maps)`` per Conv2D, ``maps`` its (filters, OH, OW) output on the
    host, the sample run through the layers up to the last convolution."""
    engine = model.engine
    last = max((i for i, layer in enumerate(model.layers) if isinstance(layer, Conv2D)),
               default=-1)
    h, maps = engine.asarray(np.asarray(sample)[None], model.dtype), []
    for i, layer in enumerate(model.layers[:last + 1]):
        h = layer.forward(h, training=False)
        if isinstance(layer, Conv2D):
            maps.append((f"layer {i}", engine.to_numpy(h)[0]))
    return maps
