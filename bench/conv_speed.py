"""Training-step throughput of the MNIST CNN on handprop's engines and in PyTorch eager.

The issue's model: conv 16@5x5 same, relu, maxpool 2, conv 32@5x5 same, relu, maxpool 2,
dense 10, softmax cross-entropy, plain SGD, float32. One step is forward, loss, backward and
the update (what ``Trainer.train_step`` does), on batches already in memory. Contestants are
interleaved round by round and the median of the rounds is reported, since the machine may be
shared. ``--profile`` prints where a numba step spends its time instead.

On a busy machine wall-clock rates mostly measure the neighbours. ``--clock cpu``
counts the process's CPU time instead, on one thread everywhere (start it with
``OPENBLAS_NUM_THREADS=1``; the script refuses to run otherwise, and sets
``NUMBA_NUM_THREADS=1`` for the numba engine's conv/pool kernels itself): the work
each contestant does, nearly independent of the load.

    python bench/conv_speed.py [--batch 64 128] [--rounds 7] [--steps 20] [--profile]
    OPENBLAS_NUM_THREADS=1 python bench/conv_speed.py --clock cpu
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import statistics
import time

import numpy as np

from handprop.engines import get_engine
from handprop.nn import Conv2D, Dense, Flatten, MaxPool2D, Sequential
from handprop.nn.losses import get_loss
from handprop.optim import SGD


def handprop_step(engine_name: str, batch: int, seed: int = 0):
    engine = get_engine(engine_name)
    model = Sequential([Conv2D(16, 5, padding="same", activation="relu"), MaxPool2D(2),
                        Conv2D(32, 5, padding="same", activation="relu"), MaxPool2D(2),
                        Flatten(), Dense(10)], input_shape=(1, 28, 28), engine=engine, seed=seed)
    rng = np.random.default_rng(seed)
    x = engine.asarray(rng.random((batch, 1, 28, 28), dtype=np.float32))
    y = engine.asarray(rng.integers(0, 10, batch))
    loss, optimizer = get_loss("softmax_cross_entropy"), SGD(lr=0.01)

    def step():
        out = model.forward(x, training=True)
        _, grad = loss(engine, out, y)
        model.backward(grad)
        optimizer.step(model)

    step.model, step.engine = model, engine
    return step, engine


def torch_step(batch: int, threads: int, seed: int = 0, channels_last: bool = False):
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    nn = torch.nn
    model = nn.Sequential(nn.Conv2d(1, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(16, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(32 * 7 * 7, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.rand(batch, 1, 28, 28), torch.randint(0, 10, (batch,))
    if channels_last:  # PyTorch's CPU performance guide, for CNNs
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)

    def step():
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    return step


CLOCK = time.perf_counter


def timed(step, steps: int) -> float:
    """Seconds for ``steps`` steps; a handprop step runs inside its engine's
    ``threads_for(model)``, as ``Trainer.fit`` runs it."""
    threads = (step.engine.threads_for(step.model) if hasattr(step, "engine")
               else contextlib.nullcontext())
    with threads:
        start = CLOCK()
        for _ in range(steps):
            step()
        return CLOCK() - start


def profile(engine_name: str, batch: int, steps: int) -> None:
    """Per step: each layer's forward and backward, split into the engine primitives it
    calls and the rest (its GEMMs, reshapes and layout copies), plus the minor page faults."""
    import resource

    step, engine = handprop_step(engine_name, batch)
    model = step.model
    spent: dict[tuple[str, str], float] = {}
    stack = ["step"]

    def timed_method(owner, name: str, label: str):
        original = getattr(owner, name)

        @functools.wraps(original)
        def wrapper(*args, **kwargs):
            started = CLOCK()
            stack.append(label)
            try:
                return original(*args, **kwargs)
            finally:
                stack.pop()
                key = (stack[-1], label)
                spent[key] = spent.get(key, 0.0) + CLOCK() - started

        setattr(owner, name, wrapper)

    for name in ("im2col_matmul", "im2col_t_matmul", "matmul_col2im", "act_backward_bias_grad",
                 "act_backward_weight_grad", "im2col", "col2im",
                 "max_pool_forward", "max_pool_backward", "bias_act",
                 "activation", "act_backward", "bias_grad", "softmax_xent", "sgd_update"):
        timed_method(engine, name, name)
    for i, layer in enumerate(model.layers):
        for phase in ("forward", "backward"):
            timed_method(layer, phase, f"{i} {type(layer).__name__} {phase}")
    timed(step, 3)
    spent.clear()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    total = timed(step, steps)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / steps
    print(f"{engine_name} at batch {batch}: {total / steps * 1e3:.2f} ms per step, "
          f"{faults:.0f} minor page faults per step")
    layers = {label: s for (parent, label), s in spent.items() if parent == "step"
              and label[0].isdigit()}
    for label, seconds in layers.items():
        inner = {name: s for (parent, name), s in spent.items() if parent == label}
        parts = [f"{name} {_ms(s, steps)}" for name, s in inner.items()]
        parts.append(f"GEMMs+rest {_ms(seconds - sum(inner.values()), steps)}")
        print(f"  {label:22s} {_ms(seconds, steps):>7s} ms = " + ", ".join(parts))
    print(f"  {'loss, update, Python':22s} {_ms(total - sum(layers.values()), steps):>7s} ms")


def _ms(seconds: float, steps: int) -> str:
    return f"{seconds / steps * 1e3:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=20, help="steps per timed round")
    parser.add_argument("--engines", nargs="+", default=["numba", "cpu"])
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="PyTorch intra-op threads (default: its own choice)")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="cpu: this process's CPU time, one thread everywhere")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    if args.clock == "cpu":
        import threadpoolctl

        global CLOCK
        CLOCK = time.process_time
        threads = {p["internal_api"]: p["num_threads"] for p in threadpoolctl.threadpool_info()}
        if any(n != 1 for n in threads.values()):
            raise SystemExit(f"--clock cpu needs one BLAS thread (found {threads}); start the "
                             f"script with OPENBLAS_NUM_THREADS=1")
        args.torch_threads = 1
        os.environ["NUMBA_NUM_THREADS"] = "1"  # read by the conv/pool kernels at each call
    if args.profile:
        for batch in args.batch:
            profile("numba", batch, args.steps)
        return
    threads = args.torch_threads or len(os.sched_getaffinity(0))
    for batch in args.batch:
        contestants = {name: handprop_step(name, batch)[0] for name in args.engines}
        if not args.no_torch:  # the ratios are to the first: channels-last, the faster
            contestants[f"torch eager channels-last ({threads} thr)"] = torch_step(
                batch, threads, channels_last=True)
            contestants[f"torch eager NCHW ({threads} thr)"] = torch_step(batch, threads)
        for step in contestants.values():  # warm up: compile kernels, fill caches
            timed(step, 3)
        rates: dict[str, list[float]] = {name: [] for name in contestants}
        for _ in range(args.rounds):
            for name, step in contestants.items():
                rates[name].append(batch * args.steps / timed(step, args.steps))
        clock = "CPU time, one thread" if args.clock == "cpu" else "wall clock"
        print(f"batch {batch}: median samples/s ({clock}) over {args.rounds} interleaved rounds "
              f"of {args.steps} steps (min-max)")
        medians = {name: statistics.median(r) for name, r in rates.items()}
        torch_rate = next((v for k, v in medians.items() if k.startswith("torch")), None)
        for name, r in rates.items():
            ratio = f"  {medians[name] / torch_rate:.2f}x torch" if torch_rate else ""
            print(f"  {name:34s} {medians[name]:8.0f}  ({min(r):.0f}-{max(r):.0f}){ratio}")


if __name__ == "__main__":
    main()
