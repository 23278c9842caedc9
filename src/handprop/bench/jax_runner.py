"""The same models in JAX, written the way a JAX user would at best.

``jax.value_and_grad`` of a softmax cross-entropy on the same MLP or CNN (weights
copied from a handprop model; the CNN in NCHW through ``lax.conv_general_dilated``), optax SGD or Adam, everything jitted, on the
same batches (the trainer's host permutation per epoch, gathered inside the
jitted code):

* ``scan=True``: the whole epoch is one jitted call, ``jax.lax.scan`` over the
  epoch's batches;
* ``scan=False``: a jitted step called from a Python loop.

Parameters and optimizer state are donated to the jitted call, the loss and
the correct count stay on the device, and the epoch's losses are read back
once, at its end (``Trainer.fit`` too reads them once per epoch).
"""

from __future__ import annotations

import math
import time

import numpy as np

from .runners import Runner, epoch_seconds
from .workload import (LEARNING_RATES, bench_data, bench_model, epoch_orders, is_cnn,
                       model_name, resolve_model)


def jax_params(model):
    """``[(W, b), ...]`` of a handprop model as JAX arrays (W is (in, out), as handprop's)."""
    import jax.numpy as jnp

    weights = model.get_weights()
    count = len([k for k in weights if k.endswith(".W")])
    return [(jnp.asarray(weights[f"layer{i}.W"]), jnp.asarray(weights[f"layer{i}.b"]))
            for i in range(count)]


def jax_cnn_params(model):
    """``{"conv": [(W, b), (W, b)], "dense": (W, b)}`` of a handprop CNN: conv kernels OIHW
    (handprop's (filters, channels, kh, kw)), the dense W as (in, out)."""
    import jax.numpy as jnp

    w = {k: jnp.asarray(v) for k, v in model.get_weights().items()}
    return {"conv": [(w["layer0.W"], w["layer0.b"]), (w["layer2.W"], w["layer2.b"])],
            "dense": (w["layer5.W"], w["layer5.b"])}


def cnn_logits(params, xb):
    """The MNIST CNN in NCHW as a JAX user writes it: ``lax.conv_general_dilated`` with
    "same" padding, ReLU, 2x2 max-pooling by ``lax.reduce_window``, flatten, dense."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    h = xb
    for w, b in params["conv"]:
        h = lax.conv_general_dilated(h, w, window_strides=(1, 1), padding=((2, 2), (2, 2)),
                                     dimension_numbers=("NCHW", "OIHW", "NCHW"))
        h = jax.nn.relu(h + b[None, :, None, None])
        h = lax.reduce_window(h, -jnp.inf, lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")
    w, b = params["dense"]
    return h.reshape(h.shape[0], -1) @ w + b


def jax_optimizer(name: str, lr: float):
    import optax

    if name == "sgd":
        return optax.sgd(lr)
    if name == "adam":
        return optax.adam(lr, b1=0.9, b2=0.999, eps=1e-8)
    raise ValueError(f"no JAX comparator for optimizer {name!r}")


def make_train_fns(activation: str, optimizer, logits_fn=None):
    """``(step, epoch)``: one jitted step at row ``b`` of an epoch's batch order,
    and one jitted epoch (``lax.scan`` over every row). ``logits_fn(params, xb)`` is the
    model (default: the MLP with ``activation``)."""
    import jax
    import jax.numpy as jnp
    import optax

    act = {"sigmoid": jax.nn.sigmoid, "relu": jax.nn.relu, "tanh": jnp.tanh}[activation]

    def mlp_logits(params, xb):
        h = xb
        for w, b in params[:-1]:
            h = act(h @ w + b)
        w, b = params[-1]
        return h @ w + b

    logits_fn = logits_fn or mlp_logits

    def loss_fn(params, xb, yb):
        logits = logits_fn(params, xb)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean(), logits

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def update(params, opt_state, x, y, idx):
        xb, yb = jnp.take(x, idx, axis=0), jnp.take(y, idx, axis=0)
        (loss, logits), grads = grad_fn(params, xb, yb)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        correct = jnp.sum(jnp.argmax(logits, axis=1) == yb)
        return params, opt_state, loss, correct

    def step(params, opt_state, x, y, order, b):
        return update(params, opt_state, x, y, order[b])

    def epoch(params, opt_state, x, y, order):
        def body(carry, idx):
            params, opt_state, loss, correct = update(*carry, x, y, idx)
            return (params, opt_state), (loss, correct)

        (params, opt_state), (losses, correct) = jax.lax.scan(body, (params, opt_state), order)
        return params, opt_state, losses, jnp.sum(correct)

    return (jax.jit(step, donate_argnums=(0, 1)), jax.jit(epoch, donate_argnums=(0, 1)))


class JaxRunner(Runner):
    """Epochs of ``steps`` mini-batches in JAX (see the module docstring)."""

    def __init__(self, model, batch: int, optimizer: str, steps: int, seed: int = 0,
                 lr: float | None = None, init_from=None, scan: bool = True):
        import jax.numpy as jnp

        self.label = "jax scan" if scan else "jax step"
        self.scan = bool(scan)
        self.model_name = model_name(model)
        self.batch, self.steps = int(batch), int(steps)
        x, y = bench_data(model, self.steps * self.batch)
        self.x, self.y = jnp.asarray(x), jnp.asarray(y.astype(np.int32))
        init_from = init_from or bench_model(model, seed=seed)
        tx = jax_optimizer(optimizer, lr or LEARNING_RATES[optimizer])
        if is_cnn(model):
            self.params = jax_cnn_params(init_from)
            self.step_fn, self.epoch_fn = make_train_fns("relu", tx, cnn_logits)
        else:
            self.params = jax_params(init_from)
            self.step_fn, self.epoch_fn = make_train_fns(resolve_model(model)[1][1], tx)
        self.opt_state = tx.init(self.params)
        self.orders = epoch_orders(seed, self.steps * self.batch)
        self.losses: list[float] = []
        self.correct: list[int] = []

    def epochs(self, count: int) -> list[float]:
        """``count`` consecutive epoch calls, each read back (its losses and correct count)
        before the clock is read at its end."""
        ends = [time.perf_counter()]
        for _ in range(count):
            self._epoch()
            ends.append(time.perf_counter())
        return epoch_seconds(ends)

    def _epoch(self) -> None:
        import jax
        import jax.numpy as jnp

        order = jnp.asarray(next(self.orders).astype(np.int32).reshape(self.steps, self.batch))
        if self.scan:
            self.params, self.opt_state, losses, correct = self.epoch_fn(
                self.params, self.opt_state, self.x, self.y, order)
        else:
            losses, correct = [], []
            for b in range(self.steps):
                self.params, self.opt_state, loss, right = self.step_fn(
                    self.params, self.opt_state, self.x, self.y, order, b)
                losses.append(loss)
                correct.append(right)
        losses, correct = jax.device_get((losses, correct))
        losses = np.asarray(losses, dtype=np.float64).ravel().tolist()
        self.losses.extend(losses)
        self.correct.append(int(np.sum(correct)))
        if not math.isfinite(sum(losses)):
            raise RuntimeError(f"{self.label}: training diverged")

    def batch_losses(self) -> list[float]:
        return list(self.losses)
