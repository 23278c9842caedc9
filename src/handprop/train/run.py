"""One training run from a configuration dict, with its output folder.

``run_training(config, out_dir)`` is a plain function of its configuration,
so a sweep can send it to another process or a Dask worker. Into ``out_dir``
it writes:

* ``config.json``: the full configuration plus the preprocessing statistics
  (everything needed to rerun, evaluate or predict);
* ``metrics.jsonl``: one JSON object per epoch;
* ``batch_loss.csv``: the training loss of every mini-batch;
* ``gradients.png``: the gradient norm of each weight matrix after each epoch;
* ``decision.png``: for two inputs, the predicted class over the plane, with the data;
* ``checkpoint.npz``: after every epoch (atomic), for ``--resume``;
* ``model.npz``: the final (or best, with early stopping) model;
* ``curves.png``: loss and accuracy, train vs validation, and the per-batch loss;
* ``summary.json``: test loss and accuracy, engine, epochs, time, parameters.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from ..engines import get_engine
from ..errors import CheckpointError, ConfigError
from ..io import atomic_write_json, atomic_write_text
from ..nn.arch import arch_model
from ..nn.layers import as_shape
from ..nn.model import mlp
from ..optim.optimizers import make_optimizer
from ..optim.schedules import make_schedule
from .config import make_config, validate
from .run_folder import (BATCH_LOSS, CONFIG, CURVES, DECISION, GRADIENTS, METRICS, MODEL,
                         SUMMARY)
from .trainer import CHECKPOINT_NAME, Trainer

#: What `--resume` may change: the engine and training path it runs on, and how many
#: epochs in all; nothing that changes what an epoch computes.
RESUME_OPTIONS = ("backend", "epochs", "compile")
OUTPUT_ACTIVATION = {"softmax_cross_entropy": "identity", "binary_cross_entropy": "identity",
                     "mse": "sigmoid"}


def build_schedule(config: dict, steps_per_epoch: int):
    """Schedules count updates; the config speaks in epochs where people think in them."""
    lr, name = config["lr"], config["schedule"]
    if name == "constant":
        return make_schedule("constant", lr)
    if name == "step":
        every = max(1, round(config["decay_epochs"] * steps_per_epoch))
        return make_schedule("step", lr, drop=config["decay_rate"], every=every)
    if name == "exponential":
        return make_schedule("exponential", lr, rate=config["decay_rate"],
                             decay_steps=config["decay_epochs"] * steps_per_epoch)
    if name == "inverse_time":
        return make_schedule("inverse_time", lr, k=config["decay_k"])
    step_size = max(1, round(config["cycle_epochs"] * steps_per_epoch))
    options = {"step_size": step_size, "cycles": config["cycles"]}
    if config["eta_min"] is not None:
        options["eta_min"] = config["eta_min"]
    return make_schedule("cyclic", lr, **options)


def build_optimizer(config: dict, steps_per_epoch: int, schedule=None):
    """The configured optimizer; ``schedule`` replaces the configured learning-rate schedule."""
    schedule = schedule or build_schedule(config, steps_per_epoch)
    name = config["optimizer"]
    options = {"weight_decay": config["weight_decay"]}
    if name in ("momentum", "nesterov"):
        options["momentum"] = config["momentum"]
    elif name == "adam":
        options.update(beta1=config["beta1"], beta2=config["beta2"], eps=config["eps"])
    return make_optimizer(name, lr=schedule, **options)


def prepare_data(config: dict):
    """The configured dataset, split and normalized: images as (N, C, H, W) for an ``arch``
    with image layers (conv, pooling, flatten), else flat rows."""
    from ..data import load_dataset, prepare
    from ..nn.arch import uses_images

    dataset = load_dataset(config["dataset"], data_dir=config["data_dir"],
                           download=config["download"], seed=config["seed"])
    images = config["arch"] is not None and uses_images(config["arch"])
    data = prepare(dataset, val_size=config["val_size"], normalize=config["normalize"],
                   channels_first=images, dtype=config["dtype"], seed=config["seed"])
    if config["train_subset"] and config["train_subset"] < len(data.x_train):
        keep = np.random.default_rng(config["seed"]).permutation(len(data.x_train))
        keep = np.sort(keep[:config["train_subset"]])
        data.x_train, data.y_train = data.x_train[keep], data.y_train[keep]
    return data


def build_model(config: dict, input_shape, classes: int, engine):
    """The configured model for samples of ``input_shape`` (a width, or a shape such as
    ``Prepared.model_input_shape``), with its output layer for ``classes`` and the loss."""
    outputs = 1 if (classes == 2 and config["output_loss"] == "binary_cross_entropy") else classes
    if config["arch"] is not None:
        return arch_model(config["arch"], as_shape(input_shape), outputs,
                          output_activation=OUTPUT_ACTIVATION[config["output_loss"]],
                          init=config["init"], engine=engine, dtype=config["dtype"],
                          seed=config["seed"])
    input_dim = int(np.prod(as_shape(input_shape)))
    return mlp(input_dim, config["hidden"], outputs, activation=config["activation"],
               output_activation=OUTPUT_ACTIVATION[config["output_loss"]], init=config["init"],
               engine=engine, dtype=config["dtype"], seed=config["seed"],
               dropout=config["dropout"], batch_norm=config["batch_norm"])


def model_text(config: dict, data, model) -> str:
    """The model in the run header: ``784-256-10 with dropout 0.2``, or for ``arch`` its input
    shape, its tokens and the output layer (``1x28x28 conv:16:5,relu,...,dense:128 -> 10``)."""
    if config["arch"] is not None:
        shape = "x".join(map(str, data.model_input_shape))
        return f"{shape} {config['arch'] or '(no hidden layers)'} -> {model.output_dim}"
    extras = [f"dropout {config['dropout']:g}"] if config["dropout"] else []
    extras += ["batch norm"] if config["batch_norm"] else []
    hidden = "".join(f"{h}-" for h in config["hidden"])
    return (f"{data.input_dim}-{hidden}{model.output_dim}"
            + (f" with {' and '.join(extras)}" if extras else ""))


def short_model_text(config: dict) -> str:
    """The model in plot titles: the ``arch`` tokens, or ``256-256 relu``."""
    if config["arch"] is not None:
        return config["arch"] or "no hidden layers"
    return f"{'-'.join(map(str, config['hidden']))} {config['activation']}"


def _write_metrics(out: Path, rows: list[dict]) -> None:
    atomic_write_text(out / METRICS, "".join(json.dumps(r) + "\n" for r in rows))


def _class_names(data) -> list[str]:
    return list(getattr(data, "class_names", None) or [str(i) for i in range(data.classes)])


def _write_batch_losses(out: Path, losses: list[float], epochs: int) -> None:
    """``batch_loss.csv``: epoch, batch (both from 1) and the training loss of that batch."""
    if not any(math.isfinite(value) for value in losses):
        return  # none known (a run resumed from a checkpoint that predates them)
    per_epoch = len(losses) // epochs if epochs and len(losses) % epochs == 0 else None
    lines = ["epoch,batch,loss"]
    for i, value in enumerate(losses):
        epoch, batch = (i // per_epoch + 1, i % per_epoch + 1) if per_epoch else ("", i + 1)
        lines.append(f"{epoch},{batch},{value:.9g}")
    atomic_write_text(out / BATCH_LOSS, "\n".join(lines) + "\n")


def run_training(config: dict, out_dir=None, resume: bool = False, progress: bool = True,
                 plot: bool = True, log=print) -> dict:
    """Train as ``config`` says; return the summary dict (also written to ``summary.json``)."""
    out = Path(out_dir) if out_dir else None
    saved = None
    if resume:
        if out is None or not (out / CONFIG).exists():
            raise CheckpointError(f"nothing to resume in {out}: no {CONFIG} there")
        saved = json.loads((out / CONFIG).read_text())
        config = validate({**saved["config"], **{k: v for k, v in (config or {}).items()
                                                  if k in RESUME_OPTIONS}})
    else:
        # Unused options were refused where they came in (the CLI, a sweep's plan).
        config = make_config(config, refuse_unused=False)
    engine = get_engine(config["backend"])
    data = prepare_data(config)
    model = build_model(config, data.model_input_shape, data.classes, engine)
    steps_per_epoch = math.ceil(len(data.x_train) / config["batch_size"])
    optimizer = build_optimizer(config, steps_per_epoch)

    def on_epoch_end(trainer, row):
        if out is not None:
            _write_metrics(out, trainer.history.rows)

    trainer = Trainer(model, config["output_loss"], optimizer, batch_size=config["batch_size"],
                      epochs=config["epochs"], l2=config["l2"], patience=config["patience"],
                      seed=config["seed"], checkpoint_dir=out, progress=progress,
                      eval_batch_size=config["eval_batch_size"], on_epoch_end=on_epoch_end,
                      compile=config["compile"])
    if out is not None:
        _open_run_folder(out, trainer, config, data, saved, log)
    log(f"engine {engine.name}, model {model_text(config, data, model)} "
        f"({model.num_parameters():,} parameters), {len(data.x_train):,} training samples")
    if config["arch"] is not None:
        log(model.summary())
    log(describe_path(trainer))

    trainer.fit(data.x_train, data.y_train, data.x_val, data.y_val)
    summary = _summary(trainer, config, data)
    if out is not None:
        _write_run(out, trainer, config, data, summary, plot)
    return summary


def _open_run_folder(out: Path, trainer, config: dict, data, saved: dict | None, log) -> None:
    """A new run's config in ``out``, or a resumed run's checkpoint loaded from it."""
    out.mkdir(parents=True, exist_ok=True)
    if saved is not None:
        checkpoint = out / CHECKPOINT_NAME
        if not checkpoint.exists():
            raise CheckpointError(f"{out} has a config but no {CHECKPOINT_NAME}: "
                                  f"the run ended before its first epoch; start it again")
        trainer.load_checkpoint(checkpoint)
        if config["epochs"] < trainer.epoch:
            raise ConfigError(f"{out} has already trained {trainer.epoch} epochs; "
                              f"--epochs must be at least {trainer.epoch}")
        if config["epochs"] != saved["config"]["epochs"]:  # trained for longer
            atomic_write_json(out / CONFIG, {**saved, "config": {
                **saved["config"], "epochs": config["epochs"]}})
        log(f"resuming {out} after epoch {trainer.epoch} of {config['epochs']}")
        return
    if (out / CHECKPOINT_NAME).exists():
        raise ConfigError(f"{out} already holds a run; use --resume to continue it "
                          f"or choose another --out folder")
    atomic_write_json(out / CONFIG, {
        "config": config, "preprocessing": data.preprocessing,
        "input_dim": data.input_dim, "model_input_shape": list(data.model_input_shape),
        "classes": data.classes,
        "class_names": getattr(data, "class_names", None)})


def _summary(trainer, config: dict, data) -> dict:
    """What a finished run reports: test and final-weights training metrics, and the run."""
    model = trainer.model
    test_loss, test_acc = trainer.evaluate(data.x_test, data.y_test)
    # The history's train metrics are running means during each epoch; these
    # are of the final weights on the whole training split.
    train_loss, train_acc = trainer.evaluate(data.x_train, data.y_train)
    last = trainer.history.rows[-1]
    return {
        "test_loss": test_loss, "test_accuracy": test_acc, "engine": trainer.engine.name,
        "epochs": trainer.epoch, "train_seconds": trainer.train_seconds,
        "parameters": model.num_parameters(), "stopped_early": trainer.stopped_early,
        "training_path": trainer.training_path,
        "best_epoch": trainer.best.get("epoch") if config["patience"] else trainer.epoch,
        "train_loss": train_loss, "train_accuracy": train_acc,
        "final_train_loss": last["train_loss"], "final_train_accuracy": last["train_acc"],
        "final_val_loss": last["val_loss"], "final_val_accuracy": last["val_acc"],
        "dataset": config["dataset"], "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _write_run(out: Path, trainer, config: dict, data, summary: dict, plot: bool) -> None:
    """The finished run's model, metrics, pictures, per-batch losses and summary."""
    model = trainer.model
    model.save(out / MODEL, extra={"preprocessing": data.preprocessing,
                                   "loss": config["output_loss"]})
    _write_metrics(out, trainer.history.rows)
    if plot:
        _plot_run(out, trainer, config, data)
    _write_batch_losses(out, trainer.batch_losses, len(trainer.history))
    atomic_write_json(out / SUMMARY, summary)


def _plot_run(out: Path, trainer, config: dict, data) -> None:
    from .plots import plot_curves, plot_gradient_norms

    model = trainer.model
    plot_curves(trainer.history.rows, out / CURVES,
                title=f"{config['dataset']} {short_model_text(config)} "
                      f"{config['optimizer']} lr={config['lr']}",
                batch_losses=trainer.batch_losses)
    shapes = {name: tuple(layer.params[key].shape)
              for name, layer, key in model.named_parameters()}
    if any(row.get("grad_norms") for row in trainer.history.rows):
        plot_gradient_norms(trainer.history.rows, out / GRADIENTS, shapes=shapes,
                            title=f"gradient norm per layer "
                                  f"({min(trainer.gradient_probe, len(data.x_train))} "
                                  f"training samples, after each epoch)")
    if tuple(data.input_shape) == (2,):
        from .plots import plot_decision_regions

        plot_decision_regions(model, config["output_loss"], data.x_train, data.y_train,
                              _class_names(data), out / DECISION, what="training data")


def describe_path(trainer) -> str:
    """The run header's line on which training path runs and, if not compiled, why; then,
    for each convolution, which implementation runs each of its products."""
    if trainer.compiled is not None:
        lines = [f"path: {trainer.compiled.describe()}"]
    else:
        lines = [f"path: layer by layer ({trainer.compile_reason})"]
    model, engine = trainer.model, trainer.engine
    for i, layer in enumerate(model.layers):
        geometry = layer.window_geometry()
        if geometry is None:
            continue
        chosen = engine.window_implementations(*geometry, dtype=model.dtype)
        backward = (f"weights and bias {chosen['act_backward_weight_grad']}"
                    if i == 0 and layer.fuses_first_backward() else
                    f"weights {chosen['im2col_t_matmul']}, inputs {chosen['matmul_col2im']}")
        lines.append(f"  layer {i} {layer.describe()}: forward {chosen['im2col_matmul']}, "
                     f"backward {backward}")
    return "\n".join(lines)
