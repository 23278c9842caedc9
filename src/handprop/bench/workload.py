"""What is trained: the benchmark models, their batches and data, and which
engines and comparators can run here."""

from __future__ import annotations

import importlib.util
import math

import numpy as np

from ..errors import ConfigError

#: name -> (hidden widths, hidden activation)
MODELS = {
    "784-100-10 sigmoid": ([100], "sigmoid"),
    "784-256-256-10 relu": ([256, 256], "relu"),
    "784-300-10 sigmoid": ([300], "sigmoid"),
}
BATCHES = (64, 128, 1024)
#: The optimizers the benchmark times (``optim.OPTIMIZERS`` has them all).
BENCH_OPTIMIZERS = ("sgd", "adam")
LEARNING_RATES = {"sgd": 0.1, "adam": 0.001}
INPUT_DIM, CLASSES = 784, 10
#: samples per timed epoch (full run); the number of steps is this / batch.
SAMPLES_PER_TIMING = {"784-100-10 sigmoid": 16384, "784-256-256-10 relu": 8192,
                      "784-300-10 sigmoid": 2048}
#: The standard configurations: (model, batches, optimizers).
PLAN = (("784-100-10 sigmoid", (64, 128, 1024), ("sgd", "adam")),
        ("784-256-256-10 relu", (128,), ("sgd", "adam")),
        ("784-300-10 sigmoid", (1,), ("sgd",)))


def plan_configs(models=None, batches=None, optimizers=None) -> list[tuple[str, int, str]]:
    """``(model, batch, optimizer)`` to measure: ``PLAN``, where each of ``models``,
    ``batches`` and ``optimizers`` that is given replaces the plan's choice."""
    plan = {model: (b, o) for model, b, o in PLAN}
    configs = []
    for model in models or list(plan):
        plan_batches, plan_optimizers = plan.get(model, (BATCHES, BENCH_OPTIMIZERS))
        for batch in batches or plan_batches:
            for optimizer in optimizers or plan_optimizers:
                configs.append((model, int(batch), optimizer))
    return configs


def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def jax_available() -> bool:
    return importlib.util.find_spec("jax") is not None


def bench_engines(requested=None) -> list[str]:
    """Engines to measure: ``requested`` (checked) or every usable one."""
    from ..engines import ENGINE_NAMES, engine_status, get_engine

    names = list(requested) if requested else [n for n in ENGINE_NAMES
                                                if engine_status(n).available]
    for name in names:
        get_engine(name)  # raises EngineUnavailableError with the reason
    return names


_MNIST: dict = {}


def mnist_slice(n: int, dtype: str = "float32") -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` packaged MNIST training samples, scaled to [0, 1].

    More than 60,000 samples repeat the set (for the largest batch sizes).
    """
    if dtype not in _MNIST:
        from ..data import load_dataset, prepare

        data = prepare(load_dataset("mnist"), val_size=0, normalize="scale", dtype=dtype)
        _MNIST[dtype] = (np.ascontiguousarray(data.x_train), np.ascontiguousarray(data.y_train))
    x, y = _MNIST[dtype]
    if n <= len(x):
        return x[:n], y[:n]
    reps = math.ceil(n / len(x))
    return np.concatenate([x] * reps)[:n], np.concatenate([y] * reps)[:n]


def model_dims(model: str) -> list[int]:
    if model in MODELS:
        hidden, _ = MODELS[model]
        return [INPUT_DIM, *hidden, CLASSES]
    raise ConfigError(f"unknown benchmark model {model!r}; choose one of: {', '.join(MODELS)}")


def mlp_name(hidden, activation) -> str:
    return "-".join(map(str, [INPUT_DIM, *hidden, CLASSES])) + f" {activation}"


def resolve_model(model):
    """``model`` is a name from MODELS or a ``(hidden, activation)`` pair;
    returns ``(name, (hidden, activation))``."""
    if isinstance(model, str):
        if model not in MODELS:
            model_dims(model)
        return model, MODELS[model]
    hidden, activation = model
    return mlp_name(hidden, activation), (list(hidden), activation)


def step_flops(dims: list[int], batch: int) -> int:
    """FLOPs of one training step's GEMMs (first layer without its input gradient)."""
    total = 0
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        gemms = 2 if i == 0 else 3
        total += gemms * 2 * batch * d_in * d_out
    return total


def default_steps(model_name: str, batch: int, scale: float = 1.0) -> int:
    samples = SAMPLES_PER_TIMING.get(model_name, 16384) * scale
    return max(4, int(round(samples / batch)))


def handprop_model(hidden, activation, engine="cpu", seed: int = 0):
    """The benchmark's handprop MLP (float32, seeded): the initial weights every
    comparator copies."""
    from ..nn.model import mlp

    return mlp(INPUT_DIM, list(hidden), CLASSES, activation=activation, engine=engine,
               dtype="float32", seed=seed)


def epoch_orders(seed: int, n: int):
    """The trainer's batch order: one host permutation of ``n`` per epoch, from
    ``numpy.random.default_rng(seed)`` (as ``Trainer`` draws it)."""
    rng = np.random.default_rng(seed)
    while True:
        yield rng.permutation(n)
