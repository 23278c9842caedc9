"""`handprop bench`: training throughput per engine, next to PyTorch and the GEMM ceiling.

Runs a short version of the ``bench/`` suite (same code: ``handprop.bench``),
prints a table, optionally saves the rows as JSON, compares them with a saved
file (flagging regressions beyond a threshold, exit status 1), and draws a
bar chart.
"""

from __future__ import annotations

import argparse
import json

SUPPRESS = argparse.SUPPRESS


def register(subparsers):
    p = subparsers.add_parser(
        "bench",
        help="training throughput per engine vs PyTorch and the GEMM-only ceiling",
        description="Time whole training steps through the library's own loop on each "
        "engine (784-100-10 sigmoid and 784-256-256-10 relu on MNIST, float32), side by "
        "side with PyTorch CPU eager (when installed) and the GEMM-only ceiling (only the "
        "step's matrix products, preallocated). Reports samples/s (median over repeats, "
        "with min-max), ratios to cpu and to PyTorch, and the share of the ceiling. "
        "Threads: BLAS as set by its environment, Numba and PyTorch matched to it.",
    )
    p.add_argument("--quick", action="store_true",
                   help="SGD only, 3 repeats, a quarter of the samples per timing")
    p.add_argument("--engines", default=None,
                   help="comma-separated engines (default: every available one)")
    p.add_argument("--models", default=None,
                   help="comma-separated indices or names of: " + "; ".join(
                       ["784-100-10 sigmoid", "784-256-256-10 relu"]) + " (default: both)")
    p.add_argument("--batches", default=None, help="comma-separated batch sizes "
                   "(default: 64,128,1024)")
    p.add_argument("--optimizers", default=None, help="comma-separated: sgd,adam")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
    p.add_argument("--json", metavar="FILE", default=None, help="save the rows as JSON")
    p.add_argument("--compare", metavar="FILE", default=None,
                   help="compare with rows saved by --json; exit 1 on a regression")
    p.add_argument("--threshold", type=float, default=0.10,
                   help="slowdown that counts as a regression (default 0.10 = 10%%)")
    p.add_argument("--plot", metavar="PNG", default=None, help="write a bar chart")
    # For tests and quick experiments.
    p.add_argument("--steps", type=int, default=None, help=SUPPRESS)
    p.add_argument("--repeats", type=int, default=None, help=SUPPRESS)
    p.add_argument("--no-ceiling", action="store_true", help=SUPPRESS)
    p.set_defaults(func=run)


def _split(value):
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _models(value):
    from ..bench import MODELS
    from ..errors import ConfigError

    names = list(MODELS)
    if not value:
        return names
    chosen = []
    for item in _split(value):
        if item.isdigit() and 0 <= int(item) < len(names):
            chosen.append(names[int(item)])
        elif item in MODELS:
            chosen.append(item)
        else:
            raise ConfigError(f"unknown --models entry {item!r}; use 0, 1 or one of: "
                              f"{', '.join(names)}")
    return chosen


def run(args) -> int:
    from .. import bench
    from ..errors import ConfigError

    engines = bench.bench_engines(_split(args.engines))
    try:
        batches = [int(b) for b in _split(args.batches)] if args.batches else list(bench.BATCHES)
    except ValueError:
        raise ConfigError(f"--batches must be whole numbers, got {args.batches!r}") from None
    if any(b < 1 for b in batches):
        raise ConfigError("--batches must be at least 1")
    optimizers = _split(args.optimizers) or (["sgd"] if args.quick else list(bench.BENCH_OPTIMIZERS))
    for o in optimizers:
        if o not in bench.BENCH_OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {o!r}; choose from: sgd, adam")
    repeats = args.repeats or (3 if args.quick else 5)
    if repeats < 1 or (args.steps is not None and args.steps < 1):
        raise ConfigError("--repeats and --steps must be at least 1")
    with_torch = bench.torch_available() and not args.no_torch
    saved = bench.load_rows(args.compare) if args.compare else None  # fail early

    kinds = list(engines) + (["torch"] if with_torch else [])
    env = bench.environment(kinds)
    print(f"machine: {env['machine']}, {env['usable_cpus']} usable cpus; "
          f"BLAS: {env['blas_kernel']}; numba threads: {env.get('numba_threads', '-')}; "
          f"torch threads: {env.get('torch_threads', '-') if with_torch else 'not measured'}")
    if env["env"]:
        print("environment: " + ", ".join(f"{k}={v}" for k, v in env["env"].items()))
    if not with_torch:
        print("PyTorch not measured" + ("" if args.no_torch else
              " (not installed: pip install 'handprop[compare]')"))
    sgemm = None
    if not args.no_ceiling:
        sgemm = bench.sgemm_gflops(n=1024 if args.steps else 2048, repeats=3 if args.quick else 5,
                                   calls=1 if args.steps else None)
        print(f"sgemm {1024 if args.steps else 2048}^2: {sgemm.median:.1f} GFLOP/s "
              f"[{sgemm.min:.1f}-{sgemm.max:.1f}]")
    rows = bench.measure_training(
        _models(args.models), batches, optimizers, engines, repeats=repeats, steps=args.steps,
        scale=0.25 if args.quick else 1.0, with_torch=with_torch,
        with_ceiling=not args.no_ceiling, sgemm=sgemm, log=print)
    for row in rows:
        row["blas_kernel"] = env["blas_kernel"]
        row["threads"] = {"blas": env["blas_threads"], "numba": env.get("numba_threads"),
                          "torch": env.get("torch_threads")}
        row["machine"] = env["machine"]
        row["date"] = env["date"]
    print()
    print(bench.format_training_table(rows))
    print("\nsamples/s: median over repeats [min-max]; x cpu, x torch: ratios of medians "
          "measured side by side in this run; % ceiling: share of the GEMM-only ceiling; "
          "% sgemm: achieved GEMM GFLOP/s over large-sgemm GFLOP/s.")
    if args.json:
        from ..io import atomic_write_text

        atomic_write_text(args.json, json.dumps(rows, indent=2) + "\n")
        print(f"saved {len(rows)} rows to {args.json}")
    if args.plot:
        bench.plot_rows(rows, args.plot)
        print(f"wrote {args.plot}")
    status = 0
    if saved is not None:
        diffs = bench.compare_rows(rows, saved, args.threshold)
        print()
        if not diffs:
            print(f"nothing to compare: no row of {args.compare} matches "
                  f"(engine, model, batch, optimizer) of this run")
        else:
            print(f"compared with {args.compare}:")
            print(bench.format_comparison(diffs, args.threshold))
            bad = [d for d in diffs if d["regression"]]
            if bad:
                print(f"{len(bad)} regression(s) beyond {args.threshold:.0%}")
                status = 1
            else:
                print(f"no regression beyond {args.threshold:.0%}")
    return status
