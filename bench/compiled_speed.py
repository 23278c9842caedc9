"""numba's compiled training path against its layer-by-layer path and the GEMM-only ceiling.

    python bench/compiled_speed.py                 # every model, wall clock
    python bench/compiled_speed.py s64 b1 --cpu    # CPU time of the process instead

Each row times epochs of ``Trainer.fit`` (the wall time between the ends of a lead-in
and a timed epoch of one call, the benchmark's clock, or with ``--cpu`` the process's CPU
time, which a machine shared with other jobs
disturbs less; run it with ``OPENBLAS_NUM_THREADS=1`` then) for both paths and
``CeilingRunner`` (only the step's matrix products, preallocated, on one
gathered batch), round-robin, and prints medians in samples/s with the ratios.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

from handprop.bench import CeilingRunner, HandpropRunner

#: name: (hidden widths, activation, batch, optimizer, learning rate)
MODELS = {
    "s64": ([100], "sigmoid", 64, "sgd", 0.1),
    "s128": ([100], "sigmoid", 128, "sgd", 0.1),
    "s1024": ([100], "sigmoid", 1024, "sgd", 0.1),
    "r128sgd": ([256, 256], "relu", 128, "sgd", 0.1),
    "r128adam": ([256, 256], "relu", 128, "adam", 0.001),
    "b1": ([300], "sigmoid", 1, "sgd", 0.1),
}


def fit_runner(hidden, activation, batch, optimizer, lr, samples, compile):
    """The benchmark's handprop runner on one path: each ``run()`` a lead-in epoch and a timed
    one of one ``Trainer.fit`` call, timed between their ends (the benchmark's one clock)."""
    runner = HandpropRunner("numba", (hidden, activation), batch, optimizer,
                            math.ceil(samples / batch), lr=lr, compile=compile)
    if (runner.trainer.compiled is not None) != compile:
        raise RuntimeError(runner.trainer.compile_reason)
    return runner


def measure(name: str, rounds: int, cpu: bool, samples: int | None = None) -> dict:
    hidden, activation, batch, optimizer, lr = MODELS[name]
    samples = samples or (16384 if batch == 1 else 55000 if batch >= 1024 else 30000)
    runners = {"compiled": fit_runner(hidden, activation, batch, optimizer, lr, samples, True),
               "layers": fit_runner(hidden, activation, batch, optimizer, lr, samples, False),
               "ceiling": CeilingRunner((hidden, activation), batch, math.ceil(samples / batch))}
    for runner in runners.values():
        runner.warmup()  # compile, warm the caches
    seconds = {key: [] for key in runners}
    for _ in range(rounds):
        for key, runner in runners.items():
            started, wall = time.process_time(), runner.run()
            seconds[key].append(time.process_time() - started if cpu else wall)
    rate = {key: samples / statistics.median(values) for key, values in seconds.items()}
    return {"model": name, **{key: round(value) for key, value in rate.items()},
            "compiled/layers": round(rate["compiled"] / rate["layers"], 2),
            "compiled/ceiling": round(rate["compiled"] / rate["ceiling"], 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", metavar="MODEL",
                        help=f"any of {', '.join(MODELS)} (default: all)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--samples", type=int, default=None)
    parser.add_argument("--cpu", action="store_true", help="CPU time instead of the wall clock")
    args = parser.parse_args()
    unknown = sorted(set(args.models) - set(MODELS))
    if unknown:
        parser.error(f"unknown models {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    for name in args.models or MODELS:
        print(json.dumps(measure(name, args.rounds, args.cpu, args.samples)), flush=True)


if __name__ == "__main__":
    main()
