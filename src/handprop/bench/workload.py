"""What is trained: the benchmark models, their batches and data, and which
engines and comparators can run here."""

from __future__ import annotations

import functools
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
#: The fewest samples a timed epoch has, in every plan (``--quick`` included).
MIN_EPOCH_SAMPLES, MIN_CNN_EPOCH_SAMPLES = 16384, 4096
#: The shortest a timed epoch may last: a shorter one is lengthened (``measure_config``),
#: as a fixed per-call cost (JAX's, for one) would otherwise weigh on its rate.
MIN_EPOCH_SECONDS = 0.25
#: samples per timed epoch by model; the number of steps is this / batch.
SAMPLES_PER_TIMING = {"784-100-10 sigmoid": MIN_EPOCH_SAMPLES,
                      "784-256-256-10 relu": MIN_EPOCH_SAMPLES,
                      "784-300-10 sigmoid": MIN_EPOCH_SAMPLES}
#: (model, batch) -> samples per timed epoch where the fastest contender needs more to
#: last ``MIN_EPOCH_SECONDS`` (so that the plan rarely has to rebuild its runners).
EPOCH_SAMPLES: dict[tuple[str, int], int] = {
    **{("784-100-10 sigmoid", batch): 131072 for batch in (64, 128, 1024)},
    ("784-256-256-10 relu", 128): 49152, ("784-300-10 sigmoid", 1): 24576}
#: The standard configurations: (model, batches, optimizers).
PLAN = (("784-100-10 sigmoid", (64, 128, 1024), ("sgd", "adam")),
        ("784-256-256-10 relu", (128,), ("sgd", "adam")),
        ("784-300-10 sigmoid", (1,), ("sgd",)))
#: The MNIST CNN of the convolution issue: conv 16@5x5 same, relu, maxpool 2, conv 32@5x5
#: same, relu, maxpool 2, flatten, dense 10 (``handprop bench --cnn``).
CNN_MODEL = "cnn 16c5-32c5-10 relu"
CNN_PLAN = ((CNN_MODEL, (64, 128), ("sgd", "adam")),)
SAMPLES_PER_TIMING[CNN_MODEL] = MIN_CNN_EPOCH_SAMPLES
IMAGE_SHAPE = (1, 28, 28)


def is_cnn(model) -> bool:
    return model == CNN_MODEL


def plan_configs(models=None, batches=None, optimizers=None) -> list[tuple[str, int, str]]:
    """``(model, batch, optimizer)`` to measure: ``PLAN`` (and ``CNN_PLAN`` for the CNN
    when ``models`` names it), where each of ``models``, ``batches`` and ``optimizers``
    that is given replaces the plan's choice."""
    plan = {model: (b, o) for model, b, o in PLAN + CNN_PLAN}
    configs = []
    for model in models or [m for m, _, _ in PLAN]:
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
    return _repeated(n, dtype)


@functools.lru_cache(maxsize=1)
def _repeated(n: int, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """The set repeated to ``n`` samples, once for all the runners of one configuration
    (long epochs of the largest batches hold hundreds of MB)."""
    x, y = _MNIST[dtype]
    reps = math.ceil(n / len(x))
    return np.concatenate([x] * reps)[:n], np.concatenate([y] * reps)[:n]


def bench_data(model, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``mnist_slice(n)``, as images (N, 1, 28, 28) for the CNN."""
    x, y = mnist_slice(n)
    return (x.reshape(-1, *IMAGE_SHAPE) if is_cnn(model) else x), y


def handprop_cnn(engine="cpu", seed: int = 0):
    """The benchmark's MNIST CNN (float32, seeded): the initial weights every comparator
    copies."""
    from ..nn import Conv2D, Dense, Flatten, MaxPool2D, Sequential

    return Sequential([Conv2D(16, 5, padding="same", activation="relu"), MaxPool2D(2),
                       Conv2D(32, 5, padding="same", activation="relu"), MaxPool2D(2),
                       Flatten(), Dense(CLASSES)], input_shape=IMAGE_SHAPE, engine=engine,
                      dtype="float32", seed=seed)


#: The CNN's matrix products per layer: (rows per sample, inner size, outputs, input gradient).
#: conv1: 28x28 positions x (1*5*5) -> 16; conv2: 14x14 x (16*5*5) -> 32; dense 1568 -> 10.
CNN_GEMMS = ((28 * 28, 25, 16, False), (14 * 14, 400, 32, True), (1, 1568, CLASSES, True))


def bench_model(model, engine="cpu", seed: int = 0):
    """The handprop model a benchmark row trains (MLP or CNN), built on ``engine``."""
    if is_cnn(model):
        return handprop_cnn(engine, seed)
    _, (hidden, activation) = resolve_model(model)
    return handprop_model(hidden, activation, engine=engine, seed=seed)


def model_name(model) -> str:
    """The row name of a model given by name or as ``(hidden, activation)``."""
    return model if is_cnn(model) else resolve_model(model)[0]


def model_step_flops(model, batch: int) -> int:
    """FLOPs of one training step's GEMMs for an MLP or the CNN (first layer without its
    input gradient)."""
    if is_cnn(model):
        return sum((3 if grad_in else 2) * 2 * batch * rows * inner * out
                   for rows, inner, out, grad_in in CNN_GEMMS)
    _, (hidden, _) = resolve_model(model)
    return step_flops([INPUT_DIM, *hidden, CLASSES], batch)


def model_dims(model: str) -> list[int]:
    if model in MODELS:
        hidden, _ = MODELS[model]
        return [INPUT_DIM, *hidden, CLASSES]
    raise ConfigError(f"unknown benchmark model {model!r}; choose one of: "
                      f"{', '.join([*MODELS, CNN_MODEL])}")


def mlp_name(hidden, activation) -> str:
    return "-".join(map(str, [INPUT_DIM, *hidden, CLASSES])) + f" {activation}"


def resolve_model(model):
    """``model`` is a name from MODELS or a ``(hidden, activation)`` pair;
    returns ``(name, (hidden, activation))``."""
    if isinstance(model, str):
        if is_cnn(model):
            raise ConfigError(f"{model} is the CNN, not an MLP (see bench_model)")
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
    """Steps of a timed epoch: the plan's samples (times ``scale``, never below the
    minimum) over ``batch``."""
    least = MIN_CNN_EPOCH_SAMPLES if is_cnn(model_name) else MIN_EPOCH_SAMPLES
    planned = EPOCH_SAMPLES.get((model_name, batch), SAMPLES_PER_TIMING.get(model_name, least))
    samples = max(least, planned * scale)
    return max(4, math.ceil(samples / batch))


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
