"""Compiled epochs run back to back, as ``handprop train`` runs them (no pause between).

The side-by-side benchmark pauses 0.2 s before every timed run so that one runner's
BLAS threads go idle before the next starts; training does not pause between epochs.
This script times consecutive ``Trainer.fit`` epochs of 784-100-10 sigmoid with SGD
on the first 16,384 MNIST images and prints the median and every epoch's samples/s:

    python bench/back_to_back.py [--batch 64] [--epochs 7]

It is how the cost of a second OpenBLAS thread pool in the process was found and
checked (the compiled path now calls NumPy's own OpenBLAS; see bench/RESULTS.md).
"""

from __future__ import annotations

import argparse
import statistics
import time

from handprop.bench import mnist_slice
from handprop.nn import mlp
from handprop.optim import make_optimizer
from handprop.train import Trainer


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=7)
    args = parser.parse_args(argv)
    x, y = mnist_slice(16384)
    model = mlp(784, [100], 10, activation="sigmoid", engine="numba", dtype="float32", seed=0)
    trainer = Trainer(model, "softmax_cross_entropy", make_optimizer("sgd", lr=0.1),
                      batch_size=args.batch, epochs=1, progress=False)
    trainer.fit(x, y)  # compiles (or loads the cached kernels)
    rates = []
    for _ in range(args.epochs):
        started = time.perf_counter()
        trainer.fit(x, y, more_epochs=1)
        rates.append(len(x) / (time.perf_counter() - started))
    print(f"batch {args.batch}, {trainer.training_path} path: median "
          f"{statistics.median(rates):,.0f} samples/s; epochs: "
          + ", ".join(f"{r:,.0f}" for r in rates))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
