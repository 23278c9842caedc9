"""`handprop bench`: training throughput per engine, next to PyTorch, JAX and the GEMM ceiling.

Runs a short version of the ``bench/`` suite (same code: ``handprop.bench``),
prints a table, optionally saves the rows as JSON, compares them with a saved
file (flagging regressions beyond a threshold, exit status 1), and draws a
bar chart.
"""

from __future__ import annotations

import argparse
import json

SUPPRESS = argparse.SUPPRESS


#: For the help text, written out so that ``handprop --help`` imports no NumPy
#: (tests/cli/test_bench_cli.py holds them to ``handprop.bench``).
MODEL_NAMES = ("784-100-10 sigmoid", "784-256-256-10 relu", "784-300-10 sigmoid")
COMPARATOR_NAMES = ("torch", "torch.compile", "jax scan", "jax step")
PLAN_TEXT = ("784-100-10 sigmoid at batch 64/128/1024 with sgd+adam; 784-256-256-10 relu at "
             "batch 128 with sgd+adam; 784-300-10 sigmoid at batch 1 with sgd")


def register(subparsers):
    p = subparsers.add_parser(
        "bench",
        help="training throughput per engine vs PyTorch, JAX and the GEMM-only ceiling",
        description="Time whole training steps through the library's own loop on each "
        f"engine (MNIST, float32; by default: {PLAN_TEXT}), side by side with the same model, "
        "weights and batches in PyTorch (eager and torch.compile) and JAX (the epoch under "
        "lax.scan, and a jitted step in a Python loop) where installed, and the GEMM-only "
        "ceiling (only the step's matrix products, preallocated). Reports samples/s (median "
        "over repeats, with min-max), ratios of medians, and the share of the ceiling. "
        "Threads: BLAS as set by its environment, Numba and PyTorch matched to it.",
    )
    p.add_argument("--quick", action="store_true",
                   help="SGD only, 3 repeats, a quarter of the samples per timing, and no "
                   "torch.compile unless --comparators names it (it compiles for tens of "
                   "seconds per configuration)")
    p.add_argument("--engines", default=None,
                   help="comma-separated engines (default: every available one)")
    p.add_argument("--models", default=None,
                   help="comma-separated indices or names of: " + "; ".join(
                       f"{i} = {m}" for i, m in enumerate(MODEL_NAMES)) + " (default: the plan)")
    p.add_argument("--batches", default=None, help="comma-separated batch sizes "
                   "(default: the plan's for each model)")
    p.add_argument("--optimizers", default=None, help="comma-separated: sgd,adam")
    p.add_argument("--comparators", default=None,
                   help="comma-separated, of: " + ", ".join(COMPARATOR_NAMES) +
                   " (jax-scan, jax-step also accepted; 'none' for none); default: every "
                   "installed one")
    p.add_argument("--no-torch", action="store_true",
                   help="skip the PyTorch references (eager and torch.compile)")
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
        return None
    chosen = []
    for item in _split(value):
        if item.isdigit() and 0 <= int(item) < len(names):
            chosen.append(names[int(item)])
        elif item in MODELS:
            chosen.append(item)
        else:
            raise ConfigError(f"unknown --models entry {item!r}; use an index 0-"
                              f"{len(names) - 1} or one of: {', '.join(names)}")
    return chosen


def _comparators(args) -> tuple[list[str], list[str]]:
    """(comparators to run, lines saying which are left out and why)."""
    from ..bench.comparators import COMPARATORS, comparator_unavailable
    from ..errors import ConfigError

    skipped = []
    if args.comparators is None:
        chosen = []
        for name in COMPARATORS:
            why = comparator_unavailable(name)
            if not why and args.no_torch and name.startswith("torch"):
                why = "--no-torch"
            if not why and args.quick and name == "torch.compile":
                why = "--quick (name it in --comparators to include it)"
            if why:
                skipped.append(f"{name} not measured: {why}")
            else:
                chosen.append(name)
        return chosen, skipped
    if args.comparators.strip().lower() == "none":
        return [], ["no comparator measured (--comparators none)"]
    chosen = []
    for item in _split(args.comparators):
        name = item.lower().replace("-", " ").replace("_", " ")
        name = "torch.compile" if name in ("torch.compile", "torch compile") else name
        if name not in COMPARATORS:
            raise ConfigError(f"unknown --comparators entry {item!r}; choose from: "
                              f"{', '.join(COMPARATORS)} (or none)")
        if args.no_torch and name.startswith("torch"):
            raise ConfigError(f"--no-torch contradicts --comparators {item}; drop one of them")
        why = comparator_unavailable(name)
        if why:
            raise ConfigError(f"--comparators {item}: {why}")
        if name not in chosen:
            chosen.append(name)
    return chosen, skipped


def run(args) -> int:
    from .. import bench
    from ..errors import ConfigError

    engines = bench.bench_engines(_split(args.engines))
    models = _models(args.models)
    try:
        batches = [int(b) for b in _split(args.batches)] if args.batches else None
    except ValueError:
        raise ConfigError(f"--batches must be whole numbers, got {args.batches!r}") from None
    if batches is not None and any(b < 1 for b in batches):
        raise ConfigError("--batches must be at least 1")
    optimizers = _split(args.optimizers) or (["sgd"] if args.quick else None)
    for o in optimizers or ():
        if o not in bench.BENCH_OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {o!r}; choose from: "
                              f"{', '.join(bench.BENCH_OPTIMIZERS)}")
    repeats = args.repeats or (3 if args.quick else 5)
    if repeats < 1 or (args.steps is not None and args.steps < 1):
        raise ConfigError("--repeats and --steps must be at least 1")
    comparators, skipped = _comparators(args)
    saved = bench.load_rows(args.compare) if args.compare else None  # fail early
    if args.plot:
        from ..plotting import check_figure_path

        check_figure_path(args.plot)

    with_torch = any(c.startswith("torch") for c in comparators)
    env = bench.environment(list(engines) + (["torch"] if with_torch else []))
    print(f"machine: {env['machine']}, {env['usable_cpus']} usable cpus; "
          f"BLAS: {env['blas_kernel']}; numba threads: {env.get('numba_threads', '-')}; "
          f"torch threads: {env.get('torch_threads', '-') if with_torch else 'not measured'}")
    if env["env"]:
        print("environment: " + ", ".join(f"{k}={v}" for k, v in env["env"].items()))
    for line in skipped:
        print(line)
    sgemm = None
    if not args.no_ceiling:
        sgemm = bench.sgemm_gflops(n=1024 if args.steps else 2048, repeats=3 if args.quick else 5,
                                   calls=1 if args.steps else None)
        print(f"sgemm {1024 if args.steps else 2048}^2: {sgemm.median:.1f} GFLOP/s "
              f"[{sgemm.min:.1f}-{sgemm.max:.1f}]")
    rows = bench.measure_training(
        models, batches, optimizers, engines, repeats=repeats, steps=args.steps,
        scale=0.25 if args.quick else 1.0, comparators=comparators,
        with_ceiling=not args.no_ceiling, sgemm=sgemm, log=print)
    for row in rows:
        row["blas_kernel"] = env["blas_kernel"]
        row["threads"] = {"blas": env["blas_threads"], "numba": env.get("numba_threads"),
                          "torch": env.get("torch_threads")}
        row["machine"] = env["machine"]
        row["date"] = env["date"]
    print()
    print(bench.format_side_by_side(rows))
    print()
    print(bench.format_training_table(rows))
    print("\nsamples/s: median over repeats [min-max]; x NAME: ratio of medians measured "
          "side by side in this run; % ceiling: share of the GEMM-only ceiling; "
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
