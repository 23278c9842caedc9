"""The training loop: mini-batches, evaluation, early stopping, checkpoints, resume.

Whole datasets move to the engine once; each batch is a gather on the
engine. One seeded host permutation per epoch decides the batch order, so
every engine sees the same batches. After every epoch the trainer writes a
checkpoint atomically (model, optimizer state, RNG state, history, best
weights); ``resume`` continues from it exactly.

Two paths run an epoch. The layer-by-layer loop below (each layer's forward
and backward, one engine call per primitive) is the reference. When the
engine offers a compiled epoch for the configuration
(``train.compile.compiled_epoch``), chunks of mini-batches of a fraction of a second
each run in one call instead, with the same batches, masks, learning rates,
per-batch losses and accuracy counts; ``compile=False`` keeps the layer path.
"""

from __future__ import annotations

import math
import numbers
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import CheckpointError, ConfigError, NumericalError
from ..io import load_arrays, save_arrays
from ..nn.losses import check_inputs, check_targets, get_loss
from ..nn.model import Sequential
from ..optim.optimizers import Optimizer
from ..progress import progress_bar
from .compile import compiled_epoch
from .run_folder import CHECKPOINT as CHECKPOINT_NAME

#: Training samples (the first ones) on which per-layer gradient norms are taken
#: after each epoch, unless ``Trainer(gradient_probe=...)`` says otherwise.
GRADIENT_PROBE_SIZE = 1024
HISTORY_KEYS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds",
                "grad_norms")


@dataclass
class History:
    rows: list[dict] = field(default_factory=list)

    def append(self, row: dict) -> None:
        self.rows.append(row)

    def column(self, key: str) -> list:
        return [row.get(key) for row in self.rows]

    def __len__(self):
        return len(self.rows)


class EpochReporter:
    """Progress bars on a terminal; one plain line per epoch elsewhere."""

    def __init__(self, epochs: int, batches: int, enabled: bool = True, stream=None):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.epochs, self.batches = epochs, batches
        self.batch_bar = None
        self.epoch_bar = progress_bar(epochs, "epochs", "epoch", enabled=enabled,
                                      stream=self.stream, position=0, mininterval=0.1)
        self.interactive = self.epoch_bar is not None

    def start_epoch(self, epoch: int) -> None:
        if self.interactive:
            self.batch_bar = progress_bar(self.batches, f"epoch {epoch}", "batch",
                                          stream=self.stream, position=1, leave=False)

    def batch(self, read_metrics) -> None:
        """``read_metrics() -> (loss, acc)`` is called only when the bar shows them,
        since reading a GPU scalar waits for the device."""
        if self.batch_bar is not None:
            self.batch_bar.update(1)
            if self.batch_bar.n % 20 == 0 or self.batch_bar.n == self.batches:
                loss, acc = read_metrics()
                self.batch_bar.set_postfix(loss=f"{loss:.4f}", acc=f"{acc:.2%}", refresh=False)

    def advance(self, count: int, read_metrics) -> None:
        """``count`` batches done at once (a compiled chunk)."""
        if self.batch_bar is not None:
            loss, acc = read_metrics()
            self.batch_bar.set_postfix(loss=f"{loss:.4f}", acc=f"{acc:.2%}", refresh=False)
            self.batch_bar.update(count)

    def end_epoch(self, row: dict) -> None:
        if not self.enabled:
            return
        line = format_epoch(row, self.epochs)
        if self.interactive:
            self.batch_bar.close()
            self.epoch_bar.update(1)
            self.epoch_bar.set_postfix(val_acc=_pct(row.get("val_acc")), refresh=True)
            self.epoch_bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        for bar in (self.batch_bar, self.epoch_bar):
            if bar is not None:
                bar.close()


def _pct(value):
    return "-" if value is None else f"{value:.2%}"


def format_epoch(row: dict, epochs: int) -> str:
    val = (f"  val_loss {row['val_loss']:.4f}  val_acc {_pct(row['val_acc'])}"
           if row.get("val_loss") is not None else "")
    return (f"epoch {row['epoch']:>3}/{epochs}  train_loss {row['train_loss']:.4f}  "
            f"train_acc {_pct(row['train_acc'])}{val}  lr {row['lr']:.3g}  {row['seconds']:.1f}s")


class ChunkClock:
    """Sizes compiled chunks so that each takes about ``target`` seconds: the progress
    bar moves and Ctrl-C is answered between chunks. The sizes never change results."""

    def __init__(self, batch_size: int, target: float = 0.25):
        self.target = target
        self.size = max(1, 2048 // batch_size)

    def record(self, batches: int, seconds: float) -> None:
        if batches and seconds > 0:
            wanted = int(batches / seconds * self.target)
            self.size = max(1, min(wanted, 4 * self.size))


class Trainer:
    """Mini-batch training of a ``Sequential`` model.

    ``train_loss``/``train_acc`` in the history are means over the epoch's
    mini-batches (the data loss, without the L2 term); validation metrics are
    computed on the whole validation set after the epoch.

    ``compile=True`` (the default) runs the engine's compiled epoch where it has
    one; ``compiled`` is it (or None) and ``compile_reason`` says why not. With an
    ``on_batch_end`` callback the compiled path runs chunks of one batch, so the
    callback still comes after each batch, in order.

    ``gradient_probe`` is how many training samples (the first ones) the
    per-epoch gradient-norm probe runs on: after each epoch one forward and
    backward pass over them gives every weight matrix's gradient norm (the
    row's ``grad_norms``; ``gradients.png``). It leaves weights, optimizer and
    random state alone, so it never changes the training trajectory, but its
    time is inside the row's ``seconds``. ``0`` turns it off: rows then carry
    ``grad_norms = None``.
    """

    def __init__(self, model: Sequential, loss, optimizer: Optimizer, *, batch_size: int = 64,
                 epochs: int = 10, l2: float = 0.0, patience: int | None = None, seed: int = 0,
                 checkpoint_dir=None, eval_batch_size: int = 2048, progress: bool = True,
                 on_epoch_end=None, on_batch_end=None, compile: bool = True,
                 gradient_probe: int = GRADIENT_PROBE_SIZE):
        if batch_size < 1 or epochs < 1:
            raise ConfigError("batch_size and epochs must be at least 1")
        if l2 < 0:
            raise ConfigError(f"l2 must be >= 0, got {l2}")
        if (isinstance(gradient_probe, bool) or not isinstance(gradient_probe, numbers.Integral)
                or gradient_probe < 0):
            raise ConfigError(f"gradient_probe must be a whole number of training samples >= 0 "
                              f"(0 turns the per-epoch gradient-norm probe off; default "
                              f"{GRADIENT_PROBE_SIZE}); got {gradient_probe!r}")
        self.gradient_probe = int(gradient_probe)
        self.model, self.loss, self.optimizer = model, get_loss(loss), optimizer
        self.engine = model.engine
        self.batch_size, self.epochs, self.l2 = int(batch_size), int(epochs), float(l2)
        self.patience = patience
        self.eval_batch_size = int(eval_batch_size)
        self.rng = np.random.default_rng(seed)
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.progress = progress
        self.on_epoch_end, self.on_batch_end = on_epoch_end, on_batch_end
        self.history = History()
        # Every mini-batch's loss, epoch after epoch (for the per-batch curve).
        self.batch_losses: list[float] = []
        self.epoch = 0  # epochs completed
        self.best = {"val_loss": math.inf, "epoch": 0, "weights": None, "bad_epochs": 0}
        self.stopped_early = False
        self.train_seconds = 0.0
        self.compile = bool(compile)
        self._path_key = None
        self.choose_path()

    def choose_path(self) -> None:
        """Ask the engine for a compiled epoch (again, if what it depends on changed)."""
        key = (self.compile, self.l2, self.batch_size, id(self.optimizer), id(self.loss))
        if key == self._path_key:
            return
        if self.compile:
            self.compiled, self.compile_reason = compiled_epoch(
                self.engine, self.model, self.loss, self.optimizer, self.l2, self.batch_size)
        else:
            self.compiled, self.compile_reason = None, "compiling was turned off (--no-compile)"
        self._path_key = key

    @property
    def training_path(self) -> str:
        """``"compiled"`` or ``"layer by layer"``, for the run header."""
        return "compiled" if self.compiled is not None else "layer by layer"

    # ---------------------------------------------------------------- helpers
    def to_engine(self, x, y):
        """Check host inputs and targets against the model, then move them to the engine."""
        check_inputs(x, input_shape=self.model.input_shape)
        check_targets(y, len(x), self.model.output_dim, self.loss)
        return self.engine.asarray(x, self.model.dtype), self.engine.asarray(y)

    def train_step(self, xb, yb):
        """One update on an engine-resident batch: forward, loss, backward, L2, optimizer.

        Returns ``(loss, outputs)`` still on the engine; nothing is read back.
        """
        outputs = self.model.forward(xb, training=True)
        value, grad = self.loss(self.engine, outputs, yb)
        self.model.backward(grad)
        self.model.add_l2_gradient(self.l2)
        self.optimizer.step(self.model)
        return value, outputs

    def count_correct(self, outputs, y):
        """Correct predictions in one batch, as an engine scalar (no device sync).
        A profiler may subclass the trainer and time this."""
        return count_correct(self.engine, self.loss, outputs, y)

    def evaluate_on_engine(self, xs, ys) -> tuple[float, float]:
        """Mean loss and accuracy over engine-resident arrays."""
        with self.engine.threads_for(self.model):
            return evaluate_arrays(self.model, self.loss, xs, ys, self.eval_batch_size)

    def gradient_norms(self, xs, ys) -> dict[str, float]:
        """Euclidean norm of the data-loss gradient of every weight matrix on ``xs, ys``.

        Parameters and optimizer state are left alone, so measuring changes
        nothing about training; it shows vanishing or exploding gradients
        layer by layer.
        """
        # Dropout draws and BatchNorm's running statistics are put back afterwards.
        with self.model.state_preserved():
            outputs = self.model.forward(xs, training=True)
            _, grad = self.loss(self.engine, outputs, ys)
            self.model.backward(grad)
        return {name: math.sqrt(self.engine.sum_squares(layer.grads[key]))
                for name, layer, key in self.model.named_parameters() if key == "W"}

    def evaluate(self, x, y) -> tuple[float, float]:
        """Mean loss (without L2) and accuracy on host arrays ``x``, ``y``."""
        xs, ys = self.to_engine(np.asarray(x), np.asarray(y))
        return self.evaluate_on_engine(xs, ys)

    # ------------------------------------------------------------------- fit
    def fit(self, x_train, y_train, x_val=None, y_val=None, *,
            more_epochs: int | None = None) -> History:
        """Train until ``epochs`` epochs are done (resuming where a checkpoint left off), or,
        with ``more_epochs=N``, for N epochs beyond those already done."""
        if more_epochs is not None:
            if int(more_epochs) < 1:
                raise ConfigError(f"more_epochs must be at least 1, got {more_epochs!r}")
            self.epochs = self.epoch + int(more_epochs)
        xs, ys = self.to_engine(np.asarray(x_train), np.asarray(y_train))
        has_val = x_val is not None and len(x_val) > 0
        if has_val:
            xv, yv = self.to_engine(np.asarray(x_val), np.asarray(y_val))
        elif self.patience:
            raise ConfigError("early stopping needs a validation set")
        n = xs.shape[0]
        # A fixed batch on which gradient norms are measured after each epoch (None: off).
        probe = ((xs[:self.gradient_probe], ys[:self.gradient_probe])
                 if self.gradient_probe else None)
        batches = math.ceil(n / self.batch_size)
        if self.epoch and not self.batch_losses:
            # Resumed from a checkpoint that predates per-batch losses: keep the
            # list aligned with the epochs, the earlier ones unknown.
            self.batch_losses = [math.nan] * (self.epoch * batches)
        reporter = EpochReporter(self.epochs, batches, enabled=self.progress)
        engine = self.engine
        to_float = engine.to_float
        self.choose_path()
        if self.compiled is not None:
            self.compiled.bind(xs, ys)
        clock = ChunkClock(self.batch_size)
        # (numba: BLAS on one thread for a conv model, whose kernels bring their own threads)
        with engine.threads_for(self.model):
            try:
                while self.epoch < self.epochs and not self.stopped_early:
                    epoch = self.epoch + 1
                    reporter.start_epoch(epoch)
                    started = time.perf_counter()
                    lr_at_start = self.optimizer.lr
                    if self.compiled is not None:
                        order = self.rng.permutation(n)
                        loss_sum, correct, batch_loss = self._compiled_epoch(
                            order, epoch, batches, reporter, clock)
                    else:
                        order = engine.asarray(self.rng.permutation(n))
                        loss_sum, correct, batch_loss = self._layer_epoch(
                            xs, ys, order, epoch, batches, reporter)
                    self.batch_losses.extend(batch_loss)
                    row = {"epoch": epoch, "train_loss": to_float(loss_sum) / n,
                           "train_acc": to_float(correct) / n,
                           "val_loss": None, "val_acc": None, "lr": lr_at_start}
                    if has_val:
                        row["val_loss"], row["val_acc"] = self.evaluate_on_engine(xv, yv)
                    row["grad_norms"] = self.gradient_norms(*probe) if probe else None
                    seconds = time.perf_counter() - started
                    row["seconds"] = seconds
                    self.train_seconds += seconds
                    self.history.append(row)
                    self.epoch = epoch
                    self._track_best(row)
                    if self.checkpoint_dir:
                        self.save_checkpoint(self.checkpoint_dir / CHECKPOINT_NAME)
                    reporter.end_epoch(row)
                    if self.on_epoch_end:
                        self.on_epoch_end(self, row)
            finally:
                reporter.close()
        if self.patience and self.best["weights"] is not None:
            self.model.set_weights(self.best["weights"])
        return self.history

    def _layer_epoch(self, xs, ys, order, epoch, batches, reporter):
        """One epoch layer by layer; returns (loss sum, correct count, per-batch losses)."""
        xp, engine = self.engine.xp, self.engine
        to_float, n = engine.to_float, xs.shape[0]
        # Reading the loss waits for a GPU, so there it is checked for NaN now
        # and then; on the host every batch costs nothing extra.
        nan_check_every = 50 if engine.is_gpu else 1
        loss_sum = correct = 0.0
        # Filled on the engine and read once per epoch: no per-batch host read.
        batch_loss = xp.zeros((batches,), dtype=xp.float64)
        for b in range(batches):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            xb, yb = xp.take(xs, idx, axis=0), xp.take(ys, idx, axis=0)
            value, outputs = self.train_step(xb, yb)
            if (b + 1) % nan_check_every == 0 or b + 1 == batches:
                if not math.isfinite(to_float(value)):
                    raise NumericalError(self._nan_message(to_float(value), epoch, b + 1))
            loss_sum = loss_sum + value * xb.shape[0]
            batch_loss[b] = value
            correct = correct + self.count_correct(outputs, yb)
            seen = min(n, (b + 1) * self.batch_size)
            reporter.batch(lambda: (to_float(value), to_float(correct) / seen))
            if self.on_batch_end:
                self.on_batch_end(epoch, b + 1)
        engine.synchronize()
        return loss_sum, correct, engine.to_numpy(batch_loss).tolist()

    def _compiled_epoch(self, order, epoch, batches, reporter, clock):
        """One epoch in compiled chunks; returns what ``_layer_epoch`` returns."""
        runner, n, size = self.compiled, len(order), self.batch_size
        batch_loss, correct = np.zeros(batches), np.zeros(batches)
        most = runner.max_chunk()
        b = 0
        while b < batches:
            count = 1 if self.on_batch_end else min(clock.size, most, batches - b)
            started = time.perf_counter()
            done = runner.run(order, b, count, batch_loss[b:], correct[b:])
            clock.record(done, time.perf_counter() - started)
            b += done
            if not math.isfinite(batch_loss[b - 1]):
                raise NumericalError(self._nan_message(float(batch_loss[b - 1]), epoch, b))
            seen = min(n, b * size)
            reporter.advance(done, lambda: (batch_loss[b - 1], correct[:b].sum() / seen))
            if self.on_batch_end:
                self.on_batch_end(epoch, b)
        loss_sum = 0.0
        for i, value in enumerate(batch_loss.tolist()):
            loss_sum += value * (min(n, (i + 1) * size) - i * size)
        return loss_sum, float(correct.sum()), batch_loss.tolist()

    def _nan_message(self, value, epoch, batch) -> str:
        where = (f"the last good checkpoint (after epoch {self.epoch}) is kept in "
                 f"{self.checkpoint_dir}" if self.checkpoint_dir and self.epoch else
                 "no epoch had completed, so there is no checkpoint")
        return (f"the loss became {value} at epoch {epoch}, batch {batch}; training stopped and "
                f"{where}. Try a smaller learning rate, normalized inputs, or gradient-friendly "
                f"initialization.")

    def _track_best(self, row) -> None:
        if not self.patience or row["val_loss"] is None:
            return
        if row["val_loss"] < self.best["val_loss"]:
            self.best.update(val_loss=row["val_loss"], epoch=row["epoch"],
                             weights=self.model.get_weights(), bad_epochs=0)
        else:
            self.best["bad_epochs"] += 1
            if self.best["bad_epochs"] >= self.patience:
                self.stopped_early = True

    # ------------------------------------------------------------ checkpoints
    def save_checkpoint(self, path) -> None:
        arrays = {f"model/{k}": v for k, v in self.model.get_weights().items()}
        arrays.update({f"optim/{k}": v for k, v in self.optimizer.state_arrays(self.engine).items()})
        if self.best["weights"] is not None:
            arrays.update({f"best/{k}": v for k, v in self.best["weights"].items()})
        arrays["log/batch_loss"] = np.asarray(self.batch_losses, dtype=np.float64)
        meta = {
            "format": "handprop.checkpoint", "version": 1,
            "epoch": self.epoch, "optimizer_t": self.optimizer.t,
            "optimizer": self.optimizer.config(),
            "rng_state": self.rng.bit_generator.state,
            "layer_rng_states": self.model.rng_states(),
            "history": self.history.rows,
            "best": {k: v for k, v in self.best.items() if k != "weights"},
            "stopped_early": self.stopped_early, "train_seconds": self.train_seconds,
            "model": self.model.config(),
        }
        save_arrays(path, arrays, meta)

    def load_checkpoint(self, path) -> None:
        arrays, meta = load_arrays(path)
        if meta.get("format") != "handprop.checkpoint":
            raise CheckpointError(f"{path} is not a handprop training checkpoint")
        def part(prefix):
            return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
        self.model.set_weights(part("model/"))
        self.optimizer.load_state_arrays(self.engine, part("optim/"), meta["optimizer_t"],
                                         self.model.dtype)
        self.rng.bit_generator.state = meta["rng_state"]
        self.model.set_rng_states(meta.get("layer_rng_states", {}))
        self.history = History(list(meta["history"]))
        self.batch_losses = part("log/").get("batch_loss", np.zeros(0)).tolist()
        self.epoch = int(meta["epoch"])
        best_weights = part("best/") or None
        self.best = {**meta["best"], "weights": best_weights}
        self.stopped_early = bool(meta["stopped_early"])
        self.train_seconds = float(meta.get("train_seconds", 0.0))


def count_correct(engine, loss, outputs, y):
    """Number of correct predictions, as an engine scalar (no device sync)."""
    xp = engine.xp
    pred = loss.predict(engine, outputs)
    if len(y.shape) == 2:  # target arrays: compare with their argmax (or threshold)
        truth = xp.astype(y[:, 0] > 0.5, xp.int64) if y.shape[1] == 1 else xp.argmax(y, axis=1)
    else:
        truth = y
    return xp.sum(xp.astype(pred == truth, xp.float64))


def evaluate_arrays(model: Sequential, loss, xs, ys, batch_size: int = 2048) -> tuple[float, float]:
    """Mean loss (without L2) and accuracy of ``model`` over engine-resident arrays."""
    engine, loss = model.engine, get_loss(loss)
    n = xs.shape[0]
    total_loss = total_correct = 0.0
    for start in range(0, n, batch_size):
        xb, yb = xs[start:start + batch_size], ys[start:start + batch_size]
        outputs = model.forward(xb, training=False)
        value, _ = loss(engine, outputs, yb)
        total_loss = total_loss + value * xb.shape[0]
        total_correct = total_correct + count_correct(engine, loss, outputs, yb)
    return engine.to_float(total_loss) / n, engine.to_float(total_correct) / n
