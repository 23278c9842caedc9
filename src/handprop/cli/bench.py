"""`handprop bench`: training throughput per engine, next to PyTorch, JAX and the GEMM ceiling.

Runs a short version of the ``bench/`` suite (same code: ``handprop.bench``),
prints a table, optionally saves the rows as JSON, compares them with a saved
file (flagging regressions beyond a threshold, exit status 1), and draws a
bar chart.
"""

from __future__ import annotations

import argparse
import json
import sys

SUPPRESS = argparse.SUPPRESS


#: For the help text, written out so that ``handprop --help`` imports no NumPy
#: (tests/cli/test_bench_cli.py holds them to ``handprop.bench``).
MODEL_NAMES = ("784-100-10 sigmoid", "784-256-256-10 relu", "784-300-10 sigmoid")
COMPARATOR_NAMES = ("torch", "torch.compile", "jax scan", "jax step")
PLAN_TEXT = ("784-100-10 sigmoid at batch 64/128/1024 with sgd+adam; 784-256-256-10 relu at "
             "batch 128 with sgd+adam; 784-300-10 sigmoid at batch 1 with sgd")
CNN_NAME = "cnn 16c5-32c5-10 relu"
PROFILE_NAMES = ("as-is", "avx512", "avx2")
#: The plan's row that --quick leaves out: batch 1, whose epochs take seconds on some contenders.
QUICK_SKIPS = "784-300-10 sigmoid"
CNN_TEXT = (f"{CNN_NAME} (conv 16@5x5 same, relu, maxpool 2, conv 32@5x5 same, relu, maxpool "
            "2, flatten, dense 10) at batch 64/128 with sgd+adam")


def register(subparsers):
    p = subparsers.add_parser(
        "bench",
        help="training throughput per engine vs PyTorch, JAX and the GEMM-only ceiling",
        description="Time whole training steps through the library's own loop on each "
        f"engine (MNIST, float32; by default: {PLAN_TEXT}; with --cnn also {CNN_TEXT}), "
        "side by side with the same model, "
        "weights and batches in PyTorch (eager and torch.compile) and JAX (the epoch under "
        "lax.scan, and a jitted step in a Python loop) where installed, and the GEMM-only "
        "ceiling (only the step's matrix products, preallocated). One clock for every "
        "contender: each round runs every contender's lead-in epoch and timed epoch in turn "
        "(wall time between consecutive epoch ends; epochs of at least 16,384 samples, 4,096 "
        "for the CNN, and 0.25 s). Reports samples/s (median over rounds, with min-max and "
        "spread), the median [min-max] of the per-round ratios, the share of the ceiling, "
        "and which kernels ran. Threads: BLAS as set by its environment, Numba and PyTorch "
        "matched to it.",
    )
    p.add_argument("--quick", action="store_true",
                   help="fewer rows (SGD only, no batch-1 row unless --models names it), 3 "
                   "rounds, and no torch.compile unless --comparators names it (it compiles "
                   "for tens of seconds per configuration); epochs are as long as in the "
                   "full plan")
    p.add_argument("--profile", default="as-is", choices=[*PROFILE_NAMES, "all"],
                   help="CPU profile, applied to a child process that measures: as-is (the "
                   "environment unchanged; the default), avx512 (OPENBLAS_CORETYPE and "
                   "OPENBLAS_L2_SIZE unset, and any AVX2 cap), avx2 (what an AVX2-only CPU "
                   "runs, for every contender: OPENBLAS_CORETYPE=Haswell "
                   "NUMBA_CPU_NAME=haswell XLA_FLAGS=--xla_cpu_max_isa=AVX2 "
                   "ATEN_CPU_CAPABILITY=avx2), or all three in turn")
    p.add_argument("--engines", default=None,
                   help="comma-separated engines (default: every available one)")
    p.add_argument("--models", default=None,
                   help="comma-separated indices or names of: " + "; ".join(
                       f"{i} = {m}" for i, m in enumerate(MODEL_NAMES + (CNN_NAME,))) +
                   " ('cnn' also names the CNN; default: the plan)")
    p.add_argument("--cnn", action="store_true",
                   help=f"also measure the MNIST CNN: {CNN_TEXT} (with --quick: sgd, a "
                   "quarter of the samples); --models cnn measures it alone")
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

    names = [*MODELS, CNN_NAME]
    if not value:
        return None
    chosen = []
    for item in _split(value):
        if item.isdigit() and 0 <= int(item) < len(names):
            chosen.append(names[int(item)])
        elif item in names:
            chosen.append(item)
        elif item.lower() == "cnn":
            chosen.append(CNN_NAME)
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


def _plan(args) -> dict:
    """The checked measurement plan of ``args`` (every bad value refused before anything
    runs)."""
    from .. import bench
    from ..errors import ConfigError

    engines = bench.bench_engines(_split(args.engines))
    models = _models(args.models)
    if args.quick and models is None:  # fewer rows: the batch-1 row waits on the slowest
        models = [m for m, _, _ in bench.PLAN if m != QUICK_SKIPS]
    if args.cnn and (models is None or bench.CNN_MODEL not in models):
        models = (models or [m for m, _, _ in bench.PLAN]) + [bench.CNN_MODEL]
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
    return {"engines": engines, "models": models, "batches": batches,
            "optimizers": optimizers, "repeats": repeats, "comparators": comparators,
            "skipped": skipped}


def _measure_here(args, plan: dict, profile: str) -> list[dict]:
    """Measure the plan in this process (the environment as it stands), printing tables."""
    from .. import bench
    from ..bench.profiles import describe_kernels, kernels_in_use

    comparators = plan["comparators"]
    with_torch = any(c.startswith("torch") for c in comparators)
    env = bench.environment(list(plan["engines"]) + (["torch"] if with_torch else []))
    kernels = kernels_in_use()
    print(f"machine: {env['machine']}, {env['usable_cpus']} usable cpus; "
          f"numba threads: {env.get('numba_threads', '-')}; "
          f"torch threads: {env.get('torch_threads', '-') if with_torch else 'not measured'}")
    print(f"kernels: {describe_kernels(kernels)}")
    if env["env"]:
        print("environment: " + ", ".join(f"{k}={v}" for k, v in env["env"].items()))
    for line in plan["skipped"]:
        print(line)
    sgemm = None
    if not args.no_ceiling:
        n = 1024 if args.steps else 2048
        sgemm = bench.sgemm_gflops(n=n, repeats=3 if args.quick else 5,
                                   calls=1 if args.steps else None)
        print(f"sgemm {n}^2: {sgemm.median:.1f} GFLOP/s [{sgemm.min:.1f}-{sgemm.max:.1f}]")
    peak = _fma_peak(args)
    rows = bench.measure_training(
        plan["models"], plan["batches"], plan["optimizers"], plan["engines"],
        repeats=plan["repeats"], steps=args.steps, comparators=comparators,
        with_ceiling=not args.no_ceiling, sgemm=sgemm, log=print, fma_peak=peak)
    for row in rows:
        row.update(profile=profile, kernels=kernels, blas_kernel=env["blas_kernel"],
                   machine=env["machine"], date=env["date"],
                   threads={"blas": env["blas_threads"], "numba": env.get("numba_threads"),
                            "torch": env.get("torch_threads")})
    print()
    print(bench.format_side_by_side(rows))
    print()
    print(bench.format_training_table(rows))
    print("\nsamples/s: median over rounds [min-max]; spread: (max - min) / median of the "
          "row's own rounds ('noisy' over 25 %); x NAME: median [min-max] of the per-round "
          "ratios, each round timing every contender's epoch (wall clock between epoch ends, "
          "after a lead-in epoch) in turn; % GEMM ceiling: share of the GEMM-only ceiling; "
          "% sgemm: achieved GEMM GFLOP/s over large-sgemm GFLOP/s; % FMA peak: over an "
          "FMA-only loop on every core.")
    return rows


def _fma_peak(args) -> float | None:
    """The FMA peak on every core (printed), where Numba runs and the ceiling is measured."""
    from ..engines import engine_status

    if args.no_ceiling or not engine_status("numba").available:
        return None
    from ..bench.peak import fma_peak_gflops

    peak = fma_peak_gflops(seconds=0.05 if args.steps else 0.3)
    print(f"FMA peak (an FMA-only loop on every core): {peak:.1f} GFLOP/s")
    return peak


def _child_argv(args) -> list[str]:
    """The command line that measures the same plan in a child process, as it stands."""
    argv = [sys.executable, "-m", "handprop", "bench", "--profile", "as-is"]
    for flag in ("engines", "models", "batches", "optimizers", "comparators", "steps",
                 "repeats"):
        value = getattr(args, flag)
        if value is not None:
            argv += [f"--{flag}", str(value)]
    for flag in ("quick", "cnn", "no_torch", "no_ceiling"):
        if getattr(args, flag):
            argv.append("--" + flag.replace("_", "-"))
    return argv


def _measure_in_child(args, profile: str) -> list[dict]:
    """Measure the plan in a child process under ``profile`` (its output shown as it
    runs); the child's rows, marked with the profile."""
    import subprocess
    import tempfile
    from pathlib import Path

    from ..bench.profiles import profile_environment
    from ..errors import HandpropError

    with tempfile.TemporaryDirectory(prefix="handprop-bench-") as folder:
        path = Path(folder) / "rows.json"
        sys.stdout.flush()
        status = subprocess.call(_child_argv(args) + ["--json", str(path)],
                                 env=profile_environment(profile))
        if status != 0 or not path.exists():
            raise HandpropError(f"the benchmark under CPU profile {profile} failed "
                                f"(exit status {status}); its output is above")
        rows = json.loads(path.read_text())
    for row in rows:
        row["profile"] = profile
    return rows


def format_profiles_summary(rows: list[dict]) -> str:
    """One line per row of every profile: samples/s and the ratios to each comparator."""
    from ..bench.report import EXTRA_COMPARATORS, ratio_cell, table

    keys = [("torch", "torch")] + [(k, n) for k, n in EXTRA_COMPARATORS]
    keys = [(k, n) for k, n in keys if any(r.get(f"ratio_to_{k}") is not None for r in rows)]
    head = ["profile", "engine", "model", "batch", "opt", "samples/s",
            *[f"x {n}" for _, n in keys], "% ceiling", "kernels"]
    body = [[r.get("profile", "as-is"), r["engine"], r["model"], str(r["batch"]),
             r.get("optimizer", "-"), f"{r['samples_per_s']:,.0f}"
             + (" noisy" if r.get("noisy") else ""),
             *[ratio_cell(r, f"ratio_to_{k}") for k, _ in keys],
             ratio_cell(r, "ceiling_share", 100, ".0f"), _kernels_short(r.get("kernels"))]
            for r in rows]
    return table(head, body)


def _kernels_short(kernels) -> str:
    if not kernels:
        return "-"
    blas = str(kernels.get("blas", "")).split(" kernel")[0].split(" ")[-1]
    direct = "direct" if kernels.get("direct_convolutions") else "tiled"
    return f"{blas}/{kernels.get('numba_cpu')}/{direct}"


def run(args) -> int:
    from .. import bench
    from ..bench.profiles import PROFILE_NAMES, profile_changes

    plan = _plan(args)
    saved = bench.load_rows(args.compare) if args.compare else None  # fail early
    if args.plot:
        from ..plotting import check_figure_path

        check_figure_path(args.plot)
    profiles = list(PROFILE_NAMES) if args.profile == "all" else [args.profile]
    rows = []
    for profile in profiles:
        if len(profiles) > 1 or profile != "as-is":
            print(f"\n== CPU profile {profile}: {profile_changes(profile)}", flush=True)
        rows += (_measure_here(args, plan, profile) if profile == "as-is"
                 else _measure_in_child(args, profile))
    if len(profiles) > 1:
        print("\n== every profile")
        print(format_profiles_summary(rows))
    if args.json:
        from ..io import atomic_write_text

        atomic_write_text(args.json, json.dumps(rows, indent=2) + "\n")
        print(f"saved {len(rows)} rows to {args.json}")
    if args.plot:
        bench.plot_rows(rows, args.plot)
        print(f"wrote {args.plot}")
    return _compare(rows, saved, args) if saved is not None else 0


def _compare(rows, saved, args) -> int:
    from .. import bench

    diffs = bench.compare_rows(rows, saved, args.threshold)
    print()
    if not diffs:
        print(f"nothing to compare: no row of {args.compare} matches "
              f"(engine, model, batch, optimizer, profile) of this run")
        return 0
    print(f"compared with {args.compare}:")
    print(bench.format_comparison(diffs, args.threshold))
    bad = [d for d in diffs if d["regression"]]
    if bad:
        print(f"{len(bad)} regression(s) beyond {args.threshold:.0%}")
        return 1
    print(f"no regression beyond {args.threshold:.0%}")
    return 0
