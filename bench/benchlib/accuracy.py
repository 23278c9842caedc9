"""Training seconds to a test accuracy, with the README's best recipe."""

from __future__ import annotations

import math

#: handprop's per-epoch gradient-norm probe in the timed run: off, as the PyTorch
#: loop it is compared with computes no gradient norms (its time is in the epoch clock).
TTA_GRADIENT_PROBE = 0

BEST_RECIPE = {"hidden": [512, 256], "activation": "relu", "optimizer": "adam", "lr": 0.001,
               "batch_size": 128, "schedule": "exponential", "decay_rate": 0.85,
               "decay_epochs": 1.0}


def time_to_accuracy(engine: str, targets=(0.97, 0.98), max_epochs: int = 20,
                     recipe: dict | None = None, log=None) -> dict:
    """Training seconds (the trainer's own epoch clock; test evaluation excluded)
    until test accuracy first reaches each target, with the README's best recipe.
    ``engine="torch"`` trains the same model, weights, batches and schedule in PyTorch.
    handprop's trainer runs with its per-epoch gradient-norm probe off (PyTorch's loop
    computes no gradient norms); the result's ``gradient_probe`` says so (None for torch)."""
    from handprop.train.config import make_config
    from handprop.train.run import prepare_data

    config = make_config({**BEST_RECIPE, **(recipe or {}), "epochs": max_epochs,
                          "backend": "cpu" if engine == "torch" else engine})
    data = prepare_data(config)
    steps_per_epoch = math.ceil(len(data.x_train) / config["batch_size"])
    progress = _Progress(engine, targets, log)
    if engine == "torch":
        _torch_epochs(config, data, steps_per_epoch, max_epochs, progress)
    else:
        _handprop_epochs(engine, config, data, steps_per_epoch, max_epochs, progress)
    return {"engine": engine, "reached": {str(k): v for k, v in progress.reached.items()},
            "curve": progress.curve,
            "gradient_probe": None if engine == "torch" else TTA_GRADIENT_PROBE}


class _Progress:
    """Test accuracy after each epoch, and when each target was first reached."""

    def __init__(self, engine, targets, log):
        self.engine, self.log = engine, log
        self.reached = {t: None for t in targets}
        self.curve: list[dict] = []

    def epoch_done(self, epoch: int, seconds: float, acc: float) -> bool:
        """Record one epoch; True once every target is reached."""
        self.curve.append({"epoch": epoch, "seconds": seconds, "test_acc": acc})
        if self.log:
            self.log(f"  {self.engine} epoch {epoch}: test {acc:.2%} at {seconds:.1f}s")
        for t in self.reached:
            if self.reached[t] is None and acc >= t:
                self.reached[t] = {"epoch": epoch, "seconds": seconds}
        return all(v is not None for v in self.reached.values())


def _handprop_epochs(engine, config, data, steps_per_epoch, max_epochs, progress):
    from handprop.engines import get_engine
    from handprop.train.run import build_model, build_optimizer
    from handprop.train.trainer import Trainer

    eng = get_engine(engine)
    eng.warmup()
    model = build_model(config, data.input_dim, data.classes, eng)
    optimizer = build_optimizer(config, steps_per_epoch)

    def on_epoch_end(trainer, row):
        _, acc = trainer.evaluate(data.x_test, data.y_test)
        if progress.epoch_done(row["epoch"], trainer.train_seconds, acc):
            trainer.stopped_early = True

    trainer = Trainer(model, config["output_loss"], optimizer, batch_size=config["batch_size"],
                      epochs=max_epochs, seed=config["seed"], checkpoint_dir=None,
                      progress=False, on_epoch_end=on_epoch_end,
                      gradient_probe=TTA_GRADIENT_PROBE)
    trainer.fit(data.x_train, data.y_train)


def _torch_epochs(config, data, steps_per_epoch, max_epochs, progress):
    import torch

    from handprop.bench import TorchLoop, torch_mlp, torch_optimizer
    from handprop.host import blas_threads
    from handprop.engines import get_engine
    from handprop.train.run import build_model

    torch.set_num_threads(blas_threads())
    init = build_model(config, data.input_dim, data.classes, get_engine("cpu"))
    net = torch_mlp(config["hidden"], config["activation"], init_from=init)
    opt = torch_optimizer("adam", net.parameters(), config["lr"], beta1=config["beta1"],
                          beta2=config["beta2"], eps=config["eps"])
    decay_steps = config["decay_epochs"] * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: config["decay_rate"] ** (t / decay_steps))
    # The trainer's seed, so the same batch order as handprop's run.
    loop = TorchLoop(net, opt, data.x_train, data.y_train, config["batch_size"],
                     config["seed"], scheduler=sched)
    total = 0.0
    for epoch in range(1, max_epochs + 1):
        seconds, _ = loop.epoch()
        total += seconds
        if progress.epoch_done(epoch, total, loop.accuracy(data.x_test, data.y_test)):
            break
