"""The same models in PyTorch: eager, or with ``torch.compile``.

``TorchLoop`` is the one PyTorch training loop (the throughput runner and the
time-to-accuracy comparison both use it). Per step it does the work
``Trainer.fit`` does: gather the batch, forward, loss, backward (autograd),
``optimizer.step()``, and read the loss and the number of correct predictions
back as Python numbers. Batches follow the trainer's order (one host
permutation per epoch from the same seed) and weights are copied from a
handprop model, so the per-batch losses match handprop's.
"""

from __future__ import annotations

import math
import time

import numpy as np

from .runners import Runner, epoch_seconds
from .workload import (CLASSES, INPUT_DIM, LEARNING_RATES, bench_data, epoch_orders,
                       handprop_cnn, handprop_model, is_cnn, model_name, resolve_model)


def torch_mlp(hidden, activation, seed: int = 0, init_from=None):
    """``nn.Sequential`` of Linear + activation; weights copied from a handprop model."""
    import torch

    acts = {"sigmoid": torch.nn.Sigmoid, "relu": torch.nn.ReLU, "tanh": torch.nn.Tanh}
    dims = [INPUT_DIM, *hidden, CLASSES]
    layers = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(torch.nn.Linear(d_in, d_out))
        if i < len(hidden):
            layers.append(acts[activation]())
    net = torch.nn.Sequential(*layers)
    if init_from is None:
        init_from = handprop_model(hidden, activation, seed=seed)
    weights = init_from.get_weights()
    linears = [m for m in net if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for i, lin in enumerate(linears):
            lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(weights[f"layer{i}.W"].T)))
            lin.bias.copy_(torch.from_numpy(weights[f"layer{i}.b"]))
    return net


def torch_cnn(seed: int = 0, init_from=None):
    """The benchmark's MNIST CNN as a PyTorch user writes it (``nn.Conv2d`` with
    ``padding=2``, ``nn.MaxPool2d``, ``nn.Flatten``, ``nn.Linear``); weights copied from a
    handprop CNN (Conv2D's W is already (out, in, kh, kw), as ``nn.Conv2d`` keeps it)."""
    import torch

    nn = torch.nn
    net = nn.Sequential(nn.Conv2d(1, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(16, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Linear(32 * 7 * 7, CLASSES))
    weights = (init_from or handprop_cnn(seed=seed)).get_weights()
    convs = [m for m in net if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        for layer, conv in zip((0, 2), convs):
            conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(weights[f"layer{layer}.W"])))
            conv.bias.copy_(torch.from_numpy(weights[f"layer{layer}.b"]))
        net[-1].weight.copy_(torch.from_numpy(np.ascontiguousarray(weights["layer5.W"].T)))
        net[-1].bias.copy_(torch.from_numpy(weights["layer5.b"]))
    return net


class TorchLoop:
    """Epochs of mini-batch training of ``net`` on host arrays ``x``, ``y``.

    ``compile=True`` trains through ``torch.compile`` (mode default) of the
    model (forward and, through AOTAutograd, backward) and of the optimizer
    step, as PyTorch's recipes do; the first steps compile (the warm-up).
    ``scheduler`` (a ``torch.optim.lr_scheduler``) steps after every batch.
    ``channels_last=True`` (for a convolutional ``net``) keeps the model and every batch
    in ``torch.channels_last`` memory format, as PyTorch's CPU performance guide advises
    for CNNs: oneDNN's convolutions run faster in it (``bench/conv_speed.py`` times both).
    """

    def __init__(self, net, optimizer, x, y, batch: int, seed: int = 0, *, scheduler=None,
                 compile: bool = False, channels_last: bool = False):
        import torch

        self.memory_format = torch.channels_last if channels_last else None
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
        self.torch, self.net, self.opt, self.scheduler = torch, net, optimizer, scheduler
        self.x, self.y = torch.from_numpy(x), torch.from_numpy(y)
        self.batch = int(batch)
        self.orders = epoch_orders(seed, len(x))
        self.loss = torch.nn.CrossEntropyLoss()
        self.forward, self.optimizer_step = net, optimizer.step
        if compile:
            import logging

            # Dynamo notes, once per compiled optimizer, that it skips a profiler hook.
            torch._logging.set_logs(dynamo=logging.ERROR)
            self.forward, self.optimizer_step = torch.compile(net), torch.compile(optimizer.step)
        self.losses: list[float] = []

    def epoch(self) -> tuple[float, float]:
        """One epoch; returns (seconds, correct predictions). Losses go to ``losses``."""
        torch, bs = self.torch, self.batch
        started = time.perf_counter()
        order = torch.from_numpy(next(self.orders))
        correct = 0
        for start in range(0, len(order), bs):
            idx = order[start:start + bs]
            xb, yb = self.x.index_select(0, idx), self.y.index_select(0, idx)
            if self.memory_format is not None:
                xb = xb.contiguous(memory_format=self.memory_format)
            out = self.forward(xb)
            loss = self.loss(out, yb)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer_step()
            if self.scheduler is not None:
                self.scheduler.step()
            self.losses.append(loss.item())
            correct += int((out.argmax(1) == yb).sum().item())
        return time.perf_counter() - started, correct

    def accuracy(self, x, y) -> float:
        torch = self.torch
        with torch.no_grad():
            return float((self.net(torch.from_numpy(x)).argmax(1) ==
                          torch.from_numpy(y)).float().mean())


def torch_optimizer(name: str, params, lr: float, **options):
    """``torch.optim`` SGD or Adam with handprop's names for the options."""
    import torch

    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(options.get("beta1", 0.9),
                                                      options.get("beta2", 0.999)),
                                eps=options.get("eps", 1e-8))
    raise ValueError(f"no PyTorch comparator for optimizer {name!r}")


class TorchRunner(Runner):
    """The same model, batches and initial weights in PyTorch CPU eager
    (``compile=True``: through ``torch.compile``)."""

    def __init__(self, model, batch: int, optimizer: str, steps: int, seed: int = 0,
                 lr: float | None = None, threads: int | None = None, init_from=None,
                 compile: bool = False):
        import torch

        from ..host import blas_threads

        self.label = "torch.compile" if compile else "torch"
        torch.set_num_threads(int(threads or blas_threads()))
        self.model_name = model_name(model)
        self.batch, self.steps = int(batch), int(steps)
        x, y = bench_data(model, self.steps * self.batch)
        if is_cnn(model):
            net = torch_cnn(seed=seed, init_from=init_from)
        else:
            hidden, activation = resolve_model(model)[1]
            net = torch_mlp(hidden, activation, seed=seed, init_from=init_from)
        opt = torch_optimizer(optimizer, net.parameters(), lr or LEARNING_RATES[optimizer])
        # The CNN in channels-last memory, as its best PyTorch user would run it on a CPU.
        self.loop = TorchLoop(net, opt, x, y, self.batch, seed, compile=compile,
                              channels_last=is_cnn(model))

    def epochs(self, count: int) -> list[float]:
        """``count`` consecutive epochs of the training loop, with its loss reads."""
        ends = [time.perf_counter()]
        for _ in range(count):
            self.loop.epoch()
            ends.append(time.perf_counter())
            if not math.isfinite(sum(self.loop.losses[-self.steps:])):
                raise RuntimeError(f"{self.label}: training diverged")
        return epoch_seconds(ends)

    def batch_losses(self) -> list[float]:
        return list(self.loop.losses)
