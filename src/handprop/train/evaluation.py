"""A trained model on one split: loss, accuracy, predictions, confusion matrix, mistakes.

``evaluate_split`` runs the model once over host arrays, in batches, and keeps
on the host what `handprop evaluate` prints and draws. Its loss and accuracy
are the trainer's (``trainer.evaluate``, the same batches), so the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
