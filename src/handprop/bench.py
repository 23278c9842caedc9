"""Throughput measurement shared by ``handprop bench`` and the ``bench/`` suites.

What is measured (float32, MNIST-shaped data taken from the packaged MNIST):

* whole training steps through the library's own loop (``Trainer.fit``,
  ``progress=False``, no validation, no checkpoints): one timed epoch is
  exactly ``steps`` mini-batches; a warm-up epoch runs first (JIT, first
  allocations), and the engine is synchronised before the clock is read
  (``Trainer.fit`` does it at the end of every epoch);
* the same model and batches in PyTorch CPU eager (autograd, ``torch.optim``,
  ``torch.set_num_threads`` = BLAS threads), starting from the same weights;
* the GEMM-only ceiling: only each step's matrix products, exactly those the
  library's ``Dense`` does (forward ``x @ W``, backward ``x.T @ dz`` and
  ``dz @ W.T``, the input gradient of the first layer skipped), into
  preallocated outputs;
* sgemm GFLOP/s at a large square size.

Engines, PyTorch and the ceiling are timed side by side: every repeat runs
each of them once, in a rotating order, so slow drifts of a shared machine
hit all of them alike. Each figure keeps min/median/max over the repeats;
ratios are ratios of medians.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ConfigError

#: name -> (hidden widths, hidden activation)
MODELS = {
    "784-100-10 sigmoid": ([100], "sigmoid"),
    "784-256-256-10 relu": ([256, 256], "relu"),
}
BATCHES = (64, 128, 1024)
OPTIMIZERS = ("sgd", "adam")
LEARNING_RATES = {"sgd": 0.1, "adam": 0.001}
INPUT_DIM, CLASSES = 784, 10
#: samples per timed epoch (full run); the number of steps is this / batch.
SAMPLES_PER_TIMING = {"784-100-10 sigmoid": 16384, "784-256-256-10 relu": 8192}
#: key fields that identify a row (for --compare)
ROW_KEY = ("engine", "model", "batch", "optimizer")


# ----------------------------------------------------------------- statistics
@dataclass
class Stat:
    """Repeated measurements of one quantity (e.g. samples/s)."""

    values: list[float] = field(default_factory=list)

    @property
    def min(self) -> float:
        return min(self.values)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def max(self) -> float:
        return max(self.values)

    def as_dict(self, prefix: str) -> dict:
        return {f"{prefix}": self.median, f"{prefix}_min": self.min, f"{prefix}_max": self.max}


# ---------------------------------------------------------------- environment
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def blas_info() -> list[dict]:
    """The BLAS/OpenMP thread pools NumPy (and torch, once imported) loaded."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    keep = ("user_api", "internal_api", "num_threads", "version", "threading_layer",
            "architecture", "prefix")
    return [{k: p.get(k) for k in keep if p.get(k) is not None} for p in threadpool_info()]


def blas_kernel() -> str:
    """One line: which BLAS kernel NumPy's matmul runs, with its thread count."""
    for pool in blas_info():
        if pool.get("user_api") == "blas":
            return (f"{pool.get('internal_api')} {pool.get('version', '?')} "
                    f"{pool.get('architecture', '?')} kernel, {pool.get('num_threads')} threads")
    return "unknown (threadpoolctl found no BLAS)"


def blas_threads() -> int:
    for pool in blas_info():
        if pool.get("user_api") == "blas":
            return int(pool["num_threads"])
    return os.cpu_count() or 1


def environment(engines=()) -> dict:
    """Machine, date, versions, BLAS kernel and every thread count used."""
    from importlib.metadata import PackageNotFoundError, version

    from . import __version__

    def ver(dist):
        try:
            return version(dist)
        except PackageNotFoundError:
            return None

    env = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "versions": {"python": platform.python_version(), "handprop": __version__,
                     "numpy": np.__version__, "numba": ver("numba"), "torch": ver("torch"),
                     "threadpoolctl": ver("threadpoolctl")},
        "blas_kernel": blas_kernel(),
        "thread_pools": blas_info(),
        "blas_threads": blas_threads(),
        "env": {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
                                           "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                           "NUMBA_NUM_THREADS") if k in os.environ},
    }
    if "numba" in engines:
        import numba

        # numba.config, not numba.get_num_threads(): the latter launches Numba's
        # threading layer (an OpenMP runtime here), whose threads then fight
        # PyTorch's libgomp and made torch.optim.Adam 3-4x slower in the same
        # process. The engine's kernels are serial; this is the pool size only.
        env["numba_threads"] = int(numba.config.NUMBA_NUM_THREADS)
        env["numba_kernels"] = "serial (no parallel=True)"
    if "torch" in engines:
        import torch

        env["torch_threads"] = int(torch.get_num_threads())
    try:
        env["load_average"] = list(os.getloadavg())
    except OSError:
        pass
    return env


def torch_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def available_engines(requested=None) -> list[str]:
    """Engines to measure: ``requested`` (checked) or every usable one."""
    from .engines import ENGINE_NAMES, engine_status, get_engine

    names = list(requested) if requested else [n for n in ENGINE_NAMES
                                                if engine_status(n).available]
    for name in names:
        get_engine(name)  # raises EngineUnavailableError with the reason
    return names


# ----------------------------------------------------------------------- data
_MNIST: dict = {}


def mnist_slice(n: int, dtype: str = "float32") -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` packaged MNIST training samples, scaled to [0, 1].

    More than 60,000 samples repeat the set (for the largest batch sizes).
    """
    if dtype not in _MNIST:
        from .data import load_dataset, prepare

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


def _resolve_model(model):
    """``model`` is a name from MODELS or a ``(hidden, activation)`` pair."""
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


# -------------------------------------------------------------------- runners
class HandpropRunner:
    """Times epochs of ``steps`` mini-batches through ``Trainer.fit``."""

    def __init__(self, engine: str, model, batch: int, optimizer: str, steps: int,
                 seed: int = 0, lr: float | None = None):
        from .engines import get_engine
        from .nn.model import mlp
        from .optim.optimizers import make_optimizer
        from .train.trainer import Trainer

        self.label = engine
        self.engine = get_engine(engine)
        self.model_name, (hidden, activation) = _resolve_model(model)
        self.batch, self.steps = int(batch), int(steps)
        self.x, self.y = mnist_slice(self.steps * self.batch)
        self.model = mlp(INPUT_DIM, hidden, CLASSES, activation=activation, engine=self.engine,
                         dtype="float32", seed=seed)
        opt = make_optimizer(optimizer, lr=lr or LEARNING_RATES[optimizer])
        self.trainer = Trainer(self.model, "softmax_cross_entropy", opt, batch_size=self.batch,
                               epochs=1, seed=seed, checkpoint_dir=None, progress=False)

    def warmup(self, epochs: int = 1) -> None:
        self.engine.warmup()
        for _ in range(epochs):
            self.run()

    def run(self) -> float:
        """Train one more epoch; return its seconds as the trainer measured them."""
        self.trainer.fit(self.x, self.y, more_epochs=1)
        row = self.trainer.history.rows[-1]
        if not math.isfinite(row["train_loss"]):
            raise RuntimeError(f"{self.label}: training diverged")
        return float(row["seconds"])


class TorchRunner:
    """The same model, batches and initial weights in PyTorch CPU eager.

    Per step it does the work the library's loop does: gather the batch,
    forward, loss, backward (autograd), ``optimizer.step()``, and read the
    loss and the number of correct predictions back as Python numbers.
    """

    label = "torch"

    def __init__(self, model, batch: int, optimizer: str, steps: int, seed: int = 0,
                 lr: float | None = None, threads: int | None = None, init_from=None):
        import torch

        self.torch = torch
        torch.set_num_threads(int(threads or blas_threads()))
        self.model_name, (hidden, activation) = _resolve_model(model)
        self.batch, self.steps = int(batch), int(steps)
        x, y = mnist_slice(self.steps * self.batch)
        self.x, self.y = torch.from_numpy(x), torch.from_numpy(y)
        self.net = torch_mlp(hidden, activation, seed=seed, init_from=init_from)
        params = self.net.parameters()
        lr = lr or LEARNING_RATES[optimizer]
        self.opt = (torch.optim.SGD(params, lr=lr) if optimizer == "sgd"
                    else torch.optim.Adam(params, lr=lr))
        self.loss = torch.nn.CrossEntropyLoss()
        self.rng = np.random.default_rng(seed)

    def warmup(self, epochs: int = 1) -> None:
        for _ in range(epochs):
            self.run()

    def run(self) -> float:
        torch, n, bs = self.torch, self.steps * self.batch, self.batch
        started = time.perf_counter()
        order = torch.from_numpy(self.rng.permutation(n))
        loss_sum = correct = 0.0
        for b in range(self.steps):
            idx = order[b * bs:(b + 1) * bs]
            xb, yb = self.x.index_select(0, idx), self.y.index_select(0, idx)
            out = self.net(xb)
            loss = self.loss(out, yb)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            loss_sum += loss.item() * bs
            correct += (out.argmax(1) == yb).sum().item()
        seconds = time.perf_counter() - started
        if not math.isfinite(loss_sum):
            raise RuntimeError("torch: training diverged")
        return seconds


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
        from .nn.model import mlp

        init_from = mlp(INPUT_DIM, list(hidden), CLASSES, activation=activation, engine="cpu",
                        dtype="float32", seed=seed)
    weights = init_from.get_weights()
    linears = [m for m in net if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for i, lin in enumerate(linears):
            lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(weights[f"layer{i}.W"].T)))
            lin.bias.copy_(torch.from_numpy(weights[f"layer{i}.b"]))
    return net


class CeilingRunner:
    """Only each step's GEMMs, as the library's Dense does them, preallocated.

    Forward ``z = x @ W``; backward ``dW = x.T @ dz`` for every layer and
    ``dx = dz @ W.T`` for all but the first. ``np.matmul(..., out=...)``
    into arrays allocated once, on a batch gathered once.
    """

    label = "ceiling"

    def __init__(self, model, batch: int, steps: int, seed: int = 0, allocate: bool = False):
        #: allocate=True: fresh outputs every GEMM (``a @ b``), as the layers do;
        #: only for the profile, to price the allocations.
        self.allocate = bool(allocate)
        self.model_name, (hidden, _) = _resolve_model(model)
        self.batch, self.steps = int(batch), int(steps)
        dims = [INPUT_DIM, *hidden, CLASSES]
        self.dims = dims
        rng = np.random.default_rng(seed)
        x, _ = mnist_slice(self.batch)
        f32 = np.float32
        self.x = np.ascontiguousarray(x)
        self.W = [rng.standard_normal((a, b)).astype(f32) * f32(0.05)
                  for a, b in zip(dims[:-1], dims[1:])]
        self.z = [np.empty((self.batch, b), f32) for b in dims[1:]]
        self.dz = [rng.standard_normal((self.batch, b)).astype(f32) for b in dims[1:]]
        self.dW = [np.empty_like(w) for w in self.W]
        self.dx = [np.empty((self.batch, a), f32) for a in dims[:-1]]
        self.flops_per_step = step_flops(dims, self.batch)

    def warmup(self, epochs: int = 1) -> None:
        for _ in range(epochs):
            self.run()

    def step(self) -> None:
        if self.allocate:
            return self._step_allocating()
        mm, W, z, dz, dW, dx = np.matmul, self.W, self.z, self.dz, self.dW, self.dx
        a = self.x
        for i in range(len(W)):
            mm(a, W[i], out=z[i])
            a = z[i]
        for i in range(len(W) - 1, -1, -1):
            inp = self.x if i == 0 else z[i - 1]
            mm(inp.T, dz[i], out=dW[i])
            if i > 0:
                mm(dz[i], W[i].T, out=dx[i])

    def _step_allocating(self) -> None:
        W, dz = self.W, self.dz
        acts = [self.x]
        for w in W:
            acts.append(acts[-1] @ w)
        for i in range(len(W) - 1, -1, -1):
            acts[i].T @ dz[i]
            if i > 0:
                dz[i] @ W[i].T

    def run(self) -> float:
        started = time.perf_counter()
        for _ in range(self.steps):
            self.step()
        return time.perf_counter() - started


def sgemm_gflops(n: int = 2048, repeats: int = 5, calls: int | None = None) -> Stat:
    """float32 GEMM GFLOP/s at ``n`` x ``n`` (preallocated output), per repeat."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), np.float32)
    np.matmul(a, b, out=c)  # warm-up: first touch, thread start
    flops = 2.0 * n ** 3
    calls = calls or max(1, int(4e10 // flops))  # about 40 GFLOP per repeat
    stat = Stat()
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(calls):
            np.matmul(a, b, out=c)
        stat.values.append(flops * calls / (time.perf_counter() - started) / 1e9)
    return stat


# --------------------------------------------------------------- measurement
def default_steps(model_name: str, batch: int, scale: float = 1.0) -> int:
    samples = SAMPLES_PER_TIMING.get(model_name, 16384) * scale
    return max(4, int(round(samples / batch)))


def measure_config(model, batch: int, optimizer: str, engines, *, steps: int,
                   repeats: int = 5, with_torch: bool = True, with_ceiling: bool = True,
                   warmup: int = 1, seed: int = 0, settle: float = 0.2) -> dict[str, Stat]:
    """Seconds per timed epoch for every runner of one (model, batch, optimizer),
    side by side: each repeat runs every runner once, in a rotating order.

    ``settle`` seconds pass (untimed) before each run, so the thread pool the
    previous runner used goes idle first: OpenBLAS workers busy-wait about
    0.1 s after their last GEMM, which on a 2-core machine halves PyTorch's
    speed for that long when its run follows NumPy's."""
    runners = [HandpropRunner(e, model, batch, optimizer, steps, seed=seed) for e in engines]
    if with_torch:
        runners.append(TorchRunner(model, batch, optimizer, steps, seed=seed))
    if with_ceiling:
        runners.append(CeilingRunner(model, batch, steps, seed=seed))
    for runner in runners:
        runner.warmup(warmup)
    seconds = {r.label: Stat() for r in runners}
    for rep in range(repeats):
        k = rep % len(runners)
        for runner in runners[k:] + runners[:k]:
            if settle:
                time.sleep(settle)
            seconds[runner.label].values.append(runner.run())
    return seconds


def _throughput(stat: Stat, samples: int) -> Stat:
    return Stat([samples / s for s in stat.values])


def measure_training(models=tuple(MODELS), batches=BATCHES, optimizers=OPTIMIZERS, engines=None,
                     *, repeats: int = 5, steps: int | None = None, scale: float = 1.0,
                     with_torch: bool | None = None, with_ceiling: bool = True,
                     sgemm: Stat | None = None, log=None, before_config=None) -> list[dict]:
    """One row per (engine, model, batch, optimizer) with samples/s (median, min, max),
    the torch figure and the GEMM-only ceiling measured in the same run, and ratios."""
    engines = available_engines(engines)
    if with_torch is None:
        with_torch = torch_available()
    if sgemm is None and with_ceiling:
        sgemm = sgemm_gflops(repeats=max(3, repeats))
    rows = []
    for model in models:
        name, (hidden, _) = _resolve_model(model)
        dims = [INPUT_DIM, *hidden, CLASSES]
        for batch in batches:
            n_steps = steps or default_steps(name, batch, scale)
            samples = n_steps * batch
            for optimizer in optimizers:
                if before_config:
                    before_config()
                if log:
                    log(f"  {name}, batch {batch}, {optimizer}: {n_steps} steps x {repeats}")
                secs = measure_config(model, batch, optimizer, engines, steps=n_steps,
                                      repeats=repeats, with_torch=with_torch,
                                      with_ceiling=with_ceiling)
                tput = {k: _throughput(v, samples) for k, v in secs.items()}
                for engine in engines:
                    t = tput[engine]
                    row = {"engine": engine, "model": name, "batch": batch,
                           "optimizer": optimizer, "steps": n_steps, "repeats": repeats,
                           **t.as_dict("samples_per_s")}
                    cpu = tput.get("cpu")
                    row["ratio_to_cpu"] = t.median / cpu.median if cpu else None
                    # "best": ratios of the fastest repeats, the least disturbed by other
                    # jobs on a shared machine (reported next to the median ratios).
                    row["ratio_to_cpu_best"] = t.max / cpu.max if cpu else None
                    if with_torch:
                        row.update(tput["torch"].as_dict("torch_samples_per_s"))
                        row["ratio_to_torch"] = t.median / tput["torch"].median
                        row["ratio_to_torch_best"] = t.max / tput["torch"].max
                    if with_ceiling:
                        row.update(tput["ceiling"].as_dict("ceiling_samples_per_s"))
                        row["ceiling_share"] = t.median / tput["ceiling"].median
                        row["ceiling_share_best"] = t.max / tput["ceiling"].max
                        flops = step_flops(dims, batch) / batch  # per sample
                        row["gflops"] = t.median * flops / 1e9
                        row["ceiling_gflops"] = tput["ceiling"].median * flops / 1e9
                        row["sgemm_gflops"] = sgemm.median
                        row["sgemm_share"] = row["gflops"] / sgemm.median
                    rows.append(row)
    return rows


# ------------------------------------------------------------------ primitives
def primitive_cases(model, batch: int, engine_name: str, seed: int = 0) -> dict:
    """``name -> zero-argument callable`` for each fused primitive of ``model``
    at ``batch``, on engine ``engine_name`` (inputs built once, outside timing)."""
    from .engines import get_engine

    engine = get_engine(engine_name)
    engine.warmup()
    name, (hidden, activation) = _resolve_model(model)
    dims = [INPUT_DIM, *hidden, CLASSES]
    rng = np.random.default_rng(seed)
    f32 = np.float32

    def arr(*shape, scale=1.0):
        return engine.asarray(rng.standard_normal(shape).astype(f32) * f32(scale), "float32")

    cases = {}
    for units in sorted(set(hidden)):
        z, b = arr(batch, units), arr(units)
        out = engine.bias_act(z, b, activation)
        g = arr(batch, units)
        cases[f"bias_act {activation} ({batch},{units})"] = (
            lambda z=z, b=b: engine.bias_act(z, b, activation))
        cases[f"act_backward {activation} ({batch},{units})"] = (
            lambda g=g, out=out: engine.act_backward(g, out, activation))
        cases[f"bias_grad ({batch},{units})"] = lambda g=g: engine.bias_grad(g)
    logits = arr(batch, CLASSES, scale=3.0)
    labels = engine.asarray(rng.integers(0, CLASSES, batch))
    b_out = arr(CLASSES)
    cases[f"bias_act identity ({batch},{CLASSES})"] = (
        lambda: engine.bias_act(logits, b_out, "identity"))
    cases[f"softmax_xent ({batch},{CLASSES})"] = lambda: engine.softmax_xent(logits, labels)
    shapes = [s for a, b in zip(dims[:-1], dims[1:]) for s in ((a, b), (b,))]
    params = [arr(*s, scale=0.05) for s in shapes]
    grads = [arr(*s, scale=0.01) for s in shapes]
    ms = [engine.xp.zeros_like(p) for p in params]
    vs = [engine.xp.zeros_like(p) for p in params]
    pcount = sum(int(np.prod(s)) for s in shapes)

    def sgd():
        for p, g in zip(params, grads):
            engine.sgd_update(p, g, 1e-6)

    step = [0]

    def adam():
        step[0] += 1
        for p, g, m, v in zip(params, grads, ms, vs):
            engine.adam_update(p, g, m, v, 1e-6, 0.9, 0.999, 1e-8, step[0])

    cases[f"sgd_update all params ({pcount:,})"] = sgd
    cases[f"adam_update all params ({pcount:,})"] = adam
    return cases


def time_call(fn, min_seconds: float = 0.05, repeats: int = 5, synchronize=None) -> Stat:
    """Seconds per call of ``fn``: ``repeats`` timings of enough calls to last
    ``min_seconds`` each (after one warm-up call)."""
    fn()
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < min_seconds / 5 or calls < 3:
        fn()
        calls += 1
    per_call = (time.perf_counter() - started) / calls
    loops = max(3, int(min_seconds / max(per_call, 1e-9)))
    stat = Stat()
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(loops):
            fn()
        if synchronize:
            synchronize()
        stat.values.append((time.perf_counter() - started) / loops)
    return stat


def measure_primitives(models=tuple(MODELS), batches=BATCHES, engines=None, repeats: int = 5,
                       min_seconds: float = 0.05) -> list[dict]:
    """Microseconds per call of each fused primitive, engines side by side."""
    from .engines import get_engine

    engines = available_engines(engines)
    rows = []
    for model in models:
        name, _ = _resolve_model(model)
        for batch in batches:
            cases = {e: primitive_cases(model, batch, e) for e in engines}
            for case in cases[engines[0]]:
                stats = {}
                for rep in range(repeats):  # interleave engines
                    for e in engines:
                        s = time_call(cases[e][case], min_seconds, repeats=1,
                                      synchronize=get_engine(e).synchronize)
                        stats.setdefault(e, Stat()).values.extend(s.values)
                for e in engines:
                    st = stats[e]
                    rows.append({"engine": e, "model": name, "batch": batch, "primitive": case,
                                 "us": st.median * 1e6, "us_min": st.min * 1e6,
                                 "us_max": st.max * 1e6,
                                 "speedup_vs_cpu": (stats["cpu"].median / st.median
                                                    if "cpu" in stats else None)})
    return rows


# -------------------------------------------------------------------- scaling
SCALING_BATCHES = (1, 4, 16, 64, 256, 1024, 4096)
SCALING_WIDTHS = (32, 128, 512, 2048)


def measure_scaling(engines=None, batches=SCALING_BATCHES, widths=SCALING_WIDTHS,
                    repeats: int = 3, samples: int = 8192, with_torch: bool | None = None,
                    log=None) -> list[dict]:
    """Samples/s against batch size (784-100-10 sigmoid, SGD) and against hidden
    width (784-W-10 relu, SGD, batch 128), engines side by side."""
    engines = available_engines(engines)
    if with_torch is None:
        with_torch = torch_available()
    rows = []
    plan = [("batch", b, ([100], "sigmoid"), b) for b in batches]
    plan += [("width", w, ([w], "relu"), 128) for w in widths]
    for axis, value, model, batch in plan:
        # Fewer samples per timing for tiny batches (Python-bound) and wide layers.
        width = model[0][0]
        n = samples if batch >= 16 else samples // 8
        n = max(batch * 3, int(n * min(1.0, 256 / width)))
        steps = max(3, n // batch)
        if log:
            log(f"  scaling {axis}={value}: {steps} steps x {repeats}")
        secs = measure_config(model, batch, "sgd", engines, steps=steps, repeats=repeats,
                              with_torch=with_torch, with_ceiling=True)
        for label, st in secs.items():
            t = _throughput(st, steps * batch)
            rows.append({"axis": axis, "value": value, "engine": label,
                         "model": mlp_name(*model), "batch": batch,
                         **t.as_dict("samples_per_s")})
    return rows


def plot_scaling(rows: list[dict], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, axis, xlabel in ((axes[0], "batch", "batch size (784-100-10 sigmoid, SGD)"),
                             (axes[1], "width", "hidden width (784-W-10 relu, SGD, batch 128)")):
        sel = [r for r in rows if r["axis"] == axis]
        for label in dict.fromkeys(r["engine"] for r in sel):
            pts = [(r["value"], r["samples_per_s"]) for r in sel if r["engine"] == label]
            ax.plot(*zip(*pts), marker="o", label=label,
                    linestyle="--" if label == "ceiling" else "-")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("samples / s (median)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------- time to accuracy
BEST_RECIPE = {"hidden": [512, 256], "activation": "relu", "optimizer": "adam", "lr": 0.001,
               "batch_size": 128, "schedule": "exponential", "decay_rate": 0.85,
               "decay_epochs": 1.0}


def time_to_accuracy(engine: str, targets=(0.97, 0.98), max_epochs: int = 20,
                     recipe: dict | None = None, log=None) -> dict:
    """Training seconds (the trainer's own epoch clock; test evaluation excluded)
    until test accuracy first reaches each target, with the README's best recipe.
    ``engine="torch"`` trains the same model, weights, batches and schedule in PyTorch."""
    from .train.config import make_config
    from .train.run import build_model, build_optimizer, prepare_data

    config = make_config({**BEST_RECIPE, **(recipe or {}), "epochs": max_epochs,
                          "backend": "cpu" if engine == "torch" else engine})
    data = prepare_data(config)
    steps_per_epoch = math.ceil(len(data.x_train) / config["batch_size"])
    reached = {t: None for t in targets}
    curve = []
    if engine == "torch":
        return _torch_time_to_accuracy(config, data, steps_per_epoch, targets, max_epochs, log)
    from .engines import get_engine
    from .train.trainer import Trainer

    eng = get_engine(engine)
    eng.warmup()
    model = build_model(config, data.input_dim, data.classes, eng)
    optimizer = build_optimizer(config, steps_per_epoch)

    def on_epoch_end(trainer, row):
        _, acc = trainer.evaluate(data.x_test, data.y_test)
        curve.append({"epoch": row["epoch"], "seconds": trainer.train_seconds, "test_acc": acc})
        if log:
            log(f"  {engine} epoch {row['epoch']}: test {acc:.2%} at {trainer.train_seconds:.1f}s")
        for t in targets:
            if reached[t] is None and acc >= t:
                reached[t] = {"epoch": row["epoch"], "seconds": trainer.train_seconds}
        if all(v is not None for v in reached.values()):
            trainer.stopped_early = True

    trainer = Trainer(model, config["output_loss"], optimizer, batch_size=config["batch_size"],
                      epochs=max_epochs, seed=config["seed"], checkpoint_dir=None,
                      progress=False, on_epoch_end=on_epoch_end)
    trainer.fit(data.x_train, data.y_train)
    return {"engine": engine, "reached": {str(k): v for k, v in reached.items()}, "curve": curve}


def _torch_time_to_accuracy(config, data, steps_per_epoch, targets, max_epochs, log):
    import torch

    torch.set_num_threads(blas_threads())
    from .engines import get_engine
    from .train.run import build_model

    init = build_model(config, data.input_dim, data.classes, get_engine("cpu"))
    net = torch_mlp(config["hidden"], config["activation"], init_from=init)
    opt = torch.optim.Adam(net.parameters(), lr=config["lr"], betas=(config["beta1"],
                           config["beta2"]), eps=config["eps"])
    decay_steps = config["decay_epochs"] * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: config["decay_rate"] ** (t / decay_steps))
    lossf = torch.nn.CrossEntropyLoss()
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    xt, yt = torch.from_numpy(data.x_test), torch.from_numpy(data.y_test)
    rng = np.random.default_rng(config["seed"])  # same batch order as the Trainer
    n, bs = len(x), config["batch_size"]
    reached, curve, total = {t: None for t in targets}, [], 0.0
    for epoch in range(1, max_epochs + 1):
        started = time.perf_counter()
        order = torch.from_numpy(rng.permutation(n))
        for b in range(steps_per_epoch):
            idx = order[b * bs:(b + 1) * bs]
            xb, yb = x.index_select(0, idx), y.index_select(0, idx)
            out = net(xb)
            loss = lossf(out, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss.item()
            (out.argmax(1) == yb).sum().item()
        total += time.perf_counter() - started
        with torch.no_grad():
            acc = float((net(xt).argmax(1) == yt).float().mean())
        curve.append({"epoch": epoch, "seconds": total, "test_acc": acc})
        if log:
            log(f"  torch epoch {epoch}: test {acc:.2%} at {total:.1f}s")
        for t in targets:
            if reached[t] is None and acc >= t:
                reached[t] = {"epoch": epoch, "seconds": total}
        if all(v is not None for v in reached.values()):
            break
    return {"engine": "torch", "reached": {str(k): v for k, v in reached.items()}, "curve": curve}


# ------------------------------------------------------------ tables, compare
def _fmt(value, spec=",.0f", none="-"):
    return none if value is None else format(value, spec)


def format_training_table(rows: list[dict], markdown: bool = False) -> str:
    """engine, model, batch, optimizer, samples/s (median [min-max]), ratios, shares."""
    has_torch = any(r.get("torch_samples_per_s") is not None for r in rows)
    has_ceiling = any(r.get("ceiling_samples_per_s") is not None for r in rows)
    best = any(r.get("ratio_to_cpu_best") is not None for r in rows)
    head = ["engine", "model", "batch", "opt", "samples/s median [min-max]",
            "x cpu" + (" (best)" if best else "")]
    if has_torch:
        head += ["torch samples/s median [min-max]", "x torch" + (" (best)" if best else "")]
    if has_ceiling:
        head += ["GEMM ceiling samples/s median [min-max]",
                 "% ceiling" + (" (best)" if best else ""), "GFLOP/s", "% sgemm"]
    body = []
    for r in rows:
        def rng(key):
            return (f"{_fmt(r.get(key))} [{_fmt(r.get(key + '_min'))}-"
                    f"{_fmt(r.get(key + '_max'))}]") if r.get(key) is not None else "-"

        def ratio(key, scale=1.0, spec=".2f"):
            v, b = r.get(key), r.get(key + "_best")
            text = _fmt(None if v is None else v * scale, spec)
            return text + (f" ({b * scale:{spec}})" if b is not None else "")

        cells = [r["engine"], r["model"], str(r["batch"]), r.get("optimizer", "-"),
                 rng("samples_per_s"), ratio("ratio_to_cpu")]
        if has_torch:
            cells += [rng("torch_samples_per_s"), ratio("ratio_to_torch")]
        if has_ceiling:
            cells += [rng("ceiling_samples_per_s"), ratio("ceiling_share", 100, ".0f"),
                      _fmt(r.get("gflops"), ".1f"),
                      _fmt(None if r.get("sgemm_share") is None else 100 * r["sgemm_share"],
                           ".0f")]
        body.append(cells)
    return _table(head, body, markdown)


def _table(head, body, markdown=False) -> str:
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines)
    widths = [max(len(str(c)) for c in col) for col in zip(head, *body)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(head, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in body]
    return "\n".join(lines)


def format_primitive_table(rows: list[dict], markdown: bool = False) -> str:
    head = ["model", "batch", "primitive", "engine", "us/call median [min-max]", "x cpu"]
    body = [[r["model"], str(r["batch"]), r["primitive"], r["engine"],
             f"{r['us']:.1f} [{r['us_min']:.1f}-{r['us_max']:.1f}]",
             _fmt(r.get("speedup_vs_cpu"), ".2f")] for r in rows]
    return _table(head, body, markdown)


def row_key(row: dict) -> tuple:
    return tuple(row.get(k) for k in ROW_KEY)


def compare_rows(rows: list[dict], saved: list[dict], threshold: float = 0.10) -> list[dict]:
    """Each row present in both, with the change in samples/s; ``regression`` is
    True where the new median is more than ``threshold`` below the saved one."""
    if not 0 <= threshold < 1:
        raise ConfigError(f"--threshold must be in [0, 1), got {threshold}")
    old = {row_key(r): r for r in saved if "samples_per_s" in r}
    out = []
    for r in rows:
        before = old.get(row_key(r))
        if before is None or not before.get("samples_per_s"):
            continue
        change = r["samples_per_s"] / before["samples_per_s"] - 1.0
        out.append({**{k: r.get(k) for k in ROW_KEY}, "saved_samples_per_s":
                    before["samples_per_s"], "samples_per_s": r["samples_per_s"],
                    "change": change, "regression": change < -threshold})
    return out


def format_comparison(diffs: list[dict], threshold: float) -> str:
    head = ["engine", "model", "batch", "opt", "saved samples/s", "now samples/s", "change", ""]
    body = [[d["engine"], d["model"], str(d["batch"]), str(d.get("optimizer") or "-"),
             _fmt(d["saved_samples_per_s"]), _fmt(d["samples_per_s"]),
             f"{100 * d['change']:+.1f}%",
             f"REGRESSION (> {100 * threshold:.0f}% slower)" if d["regression"] else ""]
            for d in diffs]
    return _table(head, body)


def load_rows(path) -> list[dict]:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no saved benchmark file at {path}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not a JSON benchmark file: {exc}") from None
    if isinstance(data, dict):  # tolerate {"rows": [...]} too
        data = data.get("rows", [])
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise ConfigError(f"{path} does not hold a list of benchmark rows")
    return data


def plot_rows(rows: list[dict], path) -> None:
    """Bar chart of median samples/s per (model, batch, optimizer), one bar per
    engine, plus PyTorch and the GEMM-only ceiling when measured."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(dict.fromkeys((r["model"], r["batch"], r.get("optimizer")) for r in rows))
    series: dict[str, list] = {}
    for g in groups:
        sel = [r for r in rows if (r["model"], r["batch"], r.get("optimizer")) == g]
        for r in sel:
            series.setdefault(r["engine"], [None] * len(groups))[groups.index(g)] = \
                r["samples_per_s"]
        for key, label in (("torch_samples_per_s", "torch"),
                           ("ceiling_samples_per_s", "GEMM ceiling")):
            if sel and sel[0].get(key) is not None:
                series.setdefault(label, [None] * len(groups))[groups.index(g)] = sel[0][key]
    width = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(max(7, 1.3 * len(groups)), 4.5))
    for i, (label, values) in enumerate(series.items()):
        xs = [j + i * width for j, v in enumerate(values) if v is not None]
        ax.bar(xs, [v for v in values if v is not None], width, label=label)
    ax.set_xticks([j + width * (len(series) - 1) / 2 for j in range(len(groups))])
    ax.set_xticklabels([f"{m}\nbatch {b} {o or ''}" for m, b, o in groups], fontsize=7)
    ax.set_ylabel("samples / s (median)")
    ax.set_title("handprop training throughput")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -------------------------------------------------------------------- profile
PRIMITIVES = ("bias_act", "act_backward", "bias_grad", "softmax_xent", "sgd_update",
              "adam_update")


def profile_steps(engine: str, model, batch: int, optimizer: str = "sgd",
                  steps: int | None = None, repeats: int = 7) -> dict:
    """Per-step breakdown of one engine's training step, in microseconds:

    * ``total``: the trainer's epoch clock / steps;
    * one entry per fused primitive (instance methods wrapped with a clock);
    * ``correct``: the trainer's per-batch accuracy count (``Trainer.count_correct``);
    * ``gemm_ceiling``: the same GEMMs preallocated (CeilingRunner, measured
      right after, same shapes);
    * ``gemm_alloc_extra``: what the same GEMMs cost more when each allocates
      its output (``a @ b``, as the layers do) instead of writing a buffer;
    * ``gather``: the two ``take`` calls that build a batch (timed apart);
    * ``other``: the rest (Python in layers, model, optimizer and trainer loop,
      temporaries of the element-wise work).
    """
    name, _ = _resolve_model(model)
    steps = steps or default_steps(name, batch)
    runner = HandpropRunner(engine, model, batch, optimizer, steps)
    runner.warmup()
    eng, trainer = runner.engine, runner.trainer
    spent: dict[str, float] = {}

    def wrap(label, fn):
        def timed(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[label] = spent.get(label, 0.0) + time.perf_counter() - t0
        return timed

    totals, per_rep = [], []
    for p in PRIMITIVES:
        setattr(eng, p, wrap(p, getattr(eng, p)))
    trainer.count_correct = wrap("correct", trainer.count_correct)
    try:
        for _ in range(repeats):
            spent.clear()
            totals.append(runner.run())
            per_rep.append(dict(spent))
    finally:
        for p in PRIMITIVES:
            eng.__dict__.pop(p, None)
        del trainer.count_correct
    ceiling = CeilingRunner(model, batch, steps)
    allocating = CeilingRunner(model, batch, steps, allocate=True)
    ceiling.warmup()
    allocating.warmup()
    gemm, gemm_alloc = [], []
    for _ in range(repeats):
        gemm.append(ceiling.run())
        gemm_alloc.append(allocating.run())
    gemm, gemm_alloc = statistics.median(gemm), statistics.median(gemm_alloc)
    x, y = runner.x, runner.y
    xp = eng.xp
    idx = eng.asarray(np.random.default_rng(0).permutation(len(x))[:batch])
    xs, ys = eng.asarray(x), eng.asarray(y)
    gathers = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            xp.take(xs, idx, axis=0), xp.take(ys, idx, axis=0)
        gathers.append(time.perf_counter() - t0)
    gather = statistics.median(gathers)
    us = 1e6 / steps
    out = {"engine": engine, "model": name, "batch": batch, "optimizer": optimizer,
           "steps": steps, "repeats": repeats, "total": statistics.median(totals) * us,
           "gemm_ceiling": gemm * us,
           "gemm_alloc_extra": max(0.0, gemm_alloc - gemm) * us, "gather": gather * us}
    # Each phase: its median over the repeats.
    for label in per_rep[0]:
        out[label] = statistics.median(r.get(label, 0.0) for r in per_rep) * us
    known = (out["gemm_ceiling"] + out["gemm_alloc_extra"] + out["gather"]
             + sum(out[label] for label in per_rep[0]))
    out["other"] = out["total"] - known
    return out


def format_profile_table(rows: list[dict], markdown: bool = False) -> str:
    cols = ["total", "gemm_ceiling", "gemm_alloc_extra", "gather", *PRIMITIVES, "correct",
            "other"]
    cols = [c for c in cols if any(c in r for r in rows)]
    head = ["engine", "model", "batch", "opt", *[f"{c} us" for c in cols]]
    body = [[r["engine"], r["model"], str(r["batch"]), r["optimizer"],
             *[_fmt(r.get(c), ".0f") for c in cols]] for r in rows]
    return _table(head, body, markdown)
