"""The learning-rate range test (L. N. Smith, 2015; popularised by fast.ai).

Train the configured model for a few hundred mini-batches while the learning
rate grows geometrically from ``lr_min`` to ``lr_max``, one step per batch.
The loss first barely moves, then falls, then blows up. The suggestion is
the usual rule of thumb, a tenth of the rate where the smoothed loss is
lowest: there the loss still falls briskly, well clear of the blow-up. (On
MNIST it gives 0.5 for a sigmoid MLP with SGD and 0.001 for a ReLU MLP with
Adam, the rates the classic recipes use.) Where the loss falls fastest is
reported too. The curve is smoothed with a bias-corrected exponential moving
average, and the test stops once the smoothed loss passes
``diverge_factor`` times its minimum.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError
from ..progress import progress_bar


@dataclass(frozen=True)
class ExponentialRamp:
    """``lr_min * (lr_max / lr_min) ** (t / (steps - 1))``, held at ``lr_max`` after."""

    lr_min: float
    lr_max: float
    steps: int

    def __post_init__(self):
        if not (math.isfinite(self.lr_min) and math.isfinite(self.lr_max)
                and 0 < self.lr_min < self.lr_max):
            raise ConfigError(f"the range test needs 0 < lr-min < lr-max, got {self.lr_min} and "
                              f"{self.lr_max}; try --lr-min 1e-6 --lr-max 10")
        if int(self.steps) < 10:
            raise ConfigError(f"the range test needs at least 10 steps, got {self.steps}")

    def __call__(self, t: int) -> float:
        fraction = min(t, self.steps - 1) / (self.steps - 1)
        return self.lr_min * (self.lr_max / self.lr_min) ** fraction


#: Averaging weight of the smoothed curve: an effective window of 10 steps,
#: short enough that the curve does not lag the learning rate by much.
SMOOTHING = 0.9


def smooth(losses, beta: float = SMOOTHING) -> np.ndarray:
    """Exponential moving average with bias correction (no pull toward 0 at the start)."""
    out, average = [], 0.0
    for i, value in enumerate(losses, start=1):
        average = beta * average + (1 - beta) * value
        out.append(average / (1 - beta**i))
    return np.array(out)


@dataclass
class RangeTest:
    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)
    stopped: str = ""  # why the test ended before its last step, or ""
    steepest: float | None = None  # lr where the smoothed loss falls fastest
    minimum: float | None = None  # lr of the lowest smoothed loss
    path: str = ""  # which training path ran (the run header's line)

    @property
    def suggestion(self) -> float | None:
        """A tenth of the learning rate of the lowest smoothed loss."""
        return None if self.minimum is None else self.minimum / 10

    def to_dict(self) -> dict:
        return {"lrs": self.lrs, "losses": self.losses, "smoothed": self.smoothed,
                "stopped": self.stopped, "steepest": self.steepest, "minimum": self.minimum,
                "suggestion": self.suggestion, "path": self.path}


def find_suggestions(lrs, smoothed) -> tuple[float | None, float | None]:
    """(steepest, minimum) learning rates of a smoothed range-test curve.

    The slope against log(lr) is a centred difference over a window of about
    a twentieth of the steps, so step-to-step noise cannot pick the answer; the
    first such window (where the average is still settling) and everything
    past the minimum (the blow-up) are never chosen.
    """
    lrs, smoothed = np.asarray(lrs, dtype=np.float64), np.asarray(smoothed, dtype=np.float64)
    if len(lrs) < 10:
        return None, None
    lowest = int(np.argmin(smoothed))
    minimum = float(lrs[lowest])
    half = max(2, len(lrs) // 40)
    centres = np.arange(2 * half, lowest - half + 1)
    if not len(centres):
        return None, minimum
    log_lr = np.log(lrs)
    slope = ((smoothed[centres + half] - smoothed[centres - half])
             / (log_lr[centres + half] - log_lr[centres - half]))
    if slope.min() >= 0:
        return None, minimum
    return float(lrs[centres[np.argmin(slope)]]), minimum


def lr_range_test(config: dict, lr_min: float = 1e-6, lr_max: float = 10.0, steps: int = 200,
                  diverge_factor: float = 4.0, progress: bool = True) -> RangeTest:
    """Run the range test for a training configuration (see ``make_config``)."""
    from ..engines import get_engine
    from .run import build_model, build_optimizer, describe_path, prepare_data
    from .trainer import Trainer

    ramp = ExponentialRamp(float(lr_min), float(lr_max), int(steps))
    if not diverge_factor > 1:
        raise ConfigError(f"diverge_factor must be > 1, got {diverge_factor}")
    engine = get_engine(config["backend"])
    data = prepare_data(config)
    model = build_model(config, data.model_input_shape, data.classes, engine)
    optimizer = build_optimizer(config, 1, schedule=ramp)
    xs_host, ys_host = data.x_train, data.y_train
    n = len(xs_host)
    batch_size = min(config["batch_size"], n)
    trainer = Trainer(model, config["output_loss"], optimizer, batch_size=batch_size,
                      epochs=1, l2=config["l2"], seed=config["seed"], progress=False,
                      compile=config["compile"])
    xs, ys = trainer.to_engine(xs_host, ys_host)
    bar = progress_bar(ramp.steps, "lr range test", "step", enabled=progress)
    result, best, average = RangeTest(path=describe_path(trainer)), math.inf, 0.0
    try:
        for lr, loss in _step_losses(trainer, xs, ys, ramp.steps, config["seed"]):
            if bar is not None:
                bar.update(1)
                bar.set_postfix(lr=f"{lr:.2g}", loss=f"{loss:.3g}", refresh=False)
            if not math.isfinite(loss):
                result.stopped = f"the loss became {loss} at lr {lr:.3g}"
                break
            result.lrs.append(lr)
            result.losses.append(loss)
            # The same running average as smooth(), kept incrementally.
            average = SMOOTHING * average + (1 - SMOOTHING) * loss
            current = average / (1 - SMOOTHING ** len(result.losses))
            best = min(best, current)
            if current > diverge_factor * best:
                result.stopped = (f"the smoothed loss passed {diverge_factor:g}x its minimum at "
                                  f"lr {lr:.3g}")
                break
    finally:
        if bar is not None:
            bar.close()
    result.smoothed = smooth(result.losses).tolist()
    result.steepest, result.minimum = find_suggestions(result.lrs, result.smoothed)
    return result


def _batch_order(n: int, batch_size: int, steps: int, seed: int) -> np.ndarray:
    """Sample indices of ``steps`` full batches, batch after batch: a fresh shuffle
    whenever the next batch would run past the end of the data."""
    rng = np.random.default_rng(seed)
    order, cursor, picked = rng.permutation(n), 0, []
    for _ in range(steps):
        if cursor + batch_size > n:  # a new pass over the data, freshly shuffled
            order, cursor = rng.permutation(n), 0
        picked.append(order[cursor:cursor + batch_size])
        cursor += batch_size
    return np.concatenate(picked)


def _step_losses(trainer, xs, ys, steps: int, seed: int):
    """``(lr, loss)`` of each training step, on the trainer's compiled path (chunks of
    steps, read once per chunk) or layer by layer (one read per step)."""
    from .trainer import ChunkClock

    batch_size, optimizer, engine = trainer.batch_size, trainer.optimizer, trainer.engine
    order = _batch_order(xs.shape[0], batch_size, steps, seed)
    if trainer.compiled is not None:
        runner, clock = trainer.compiled, ChunkClock(batch_size)
        runner.bind(xs, ys)
        losses, correct = np.zeros(steps), np.zeros(steps)
        step = 0
        while step < steps:
            count = min(clock.size, steps - step)
            lrs = [optimizer.schedule(optimizer.t + i) for i in range(count)]
            started = time.perf_counter()
            done = runner.run(order, step, count, losses[step:], correct[step:])
            clock.record(done, time.perf_counter() - started)
            yield from zip(lrs[:done], losses[step:step + done].tolist())
            step += done
            if done < count:
                return
        return
    for step in range(steps):
        idx = engine.asarray(order[step * batch_size:(step + 1) * batch_size])
        lr = optimizer.lr
        xb, yb = engine.xp.take(xs, idx, axis=0), engine.xp.take(ys, idx, axis=0)
        value, _ = trainer.train_step(xb, yb)
        yield lr, engine.to_float(value)  # one read per step is fine for a short diagnostic


def plot_range_test(result: RangeTest, path, title: str = ""):
    """Loss against learning rate on a log axis, with the two suggestions marked."""
    from ..plotting import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    ax.plot(result.lrs, result.losses, "-", color="0.6", lw=0.7, alpha=0.6, label="loss per step")
    ax.plot(result.lrs, result.smoothed, "-", color="C0", lw=1.8, label="smoothed")
    if result.suggestion is not None:
        ax.axvline(result.suggestion, color="C2", ls="-", lw=1.5,
                   label=f"suggested: {result.suggestion:.2g} (a tenth of the minimum's)")
        ax.axvline(result.minimum, color="C3", ls=":", label=f"minimum: {result.minimum:.2g}")
    if result.steepest is not None:
        ax.axvline(result.steepest, color="C1", ls="--",
                   label=f"steepest descent: {result.steepest:.2g}")
    ax.set_xscale("log")
    if result.smoothed:
        # Keep the blow-up at the end from squashing the interesting part.
        low = min(result.losses)
        high = max(result.smoothed[0], result.smoothed[min(5, len(result.smoothed) - 1)]) * 1.3
        if high > low:
            ax.set_ylim(low - 0.05 * (high - low), high)
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or "learning-rate range test")
    return save_figure(fig, path)
