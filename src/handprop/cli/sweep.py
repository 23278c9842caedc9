"""`handprop sweep`: grid, random and coarse-to-fine searches over any `train` option,
each point with several seeds, on local processes or a Dask cluster."""

from __future__ import annotations

import argparse

from .train import add_training_flags, flags_to_config

SWEEP_KEYS = ("seeds", "trials", "sample_seed", "refine")
REFINE_KEYS = ("factor", "points", "mode")

EPILOG = """\
examples:
  handprop sweep --train-subset 5000 --epochs 5 --grid l2=0,1e-4,1e-3,1e-2 --seeds 0,1
  handprop sweep --random "l2=loguniform(1e-5,1e-1)" --trials 12 --refine --workers 2
  handprop sweep --config examples/sweeps/l2_coarse_to_fine.toml --scheduler local
  handprop sweep --train-subset 5000 --epochs 3 --grid "arch=dense:128,relu;conv:8:5:1:same,relu,maxpool:2,flatten,dense:128,relu"

A sweep TOML file has [base] (training options, as in `handprop train --config`),
[space] (option = [values] for a grid axis, option = "loguniform(a, b)" /
"uniform(a, b)" / "randint(a, b)" / "choice(a, b)" for random search) and
[sweep] (seeds, trials, sample_seed, refine = {factor, points, mode}).
Flags win over the file. Rerunning the same command resumes: finished trials
are skipped, failed ones run again.

Architectures hold commas, so on the command line the values of an arch axis
are separated by ";" (--grid "arch=dense:128,relu;dense:256,relu", and
--random "arch=choice(dense:128,relu; dense:256,relu)"); "none" is the --hidden
MLP. Any other option whose values contain a ";" is split on ";" too
(--grid "hidden=64;128,128"). In a sweep TOML each value of an arch axis is
one architecture, a string or a list of tokens:
[space] arch = [["conv:8:5:1:same", "relu", "maxpool:2", "flatten"], "dense:128,relu"].
"""


def register(subparsers):
    p = subparsers.add_parser(
        "sweep", help="hyperparameter sweeps and multi-seed studies, with tables and plots",
        description="Run `handprop train` over a grid, a random search or a coarse-to-fine "
        "search, each point with several seeds. Writes one run folder per trial, results.csv, "
        "results.md (ranked by validation accuracy), best.toml and plots into --out.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_training_flags(p)
    for action in p._actions:  # same flag as `train`, but here it may hold a whole sweep
        if action.dest == "config":
            action.help = ("TOML file: a sweep ([base], [space], [sweep]) or plain training "
                           "options; flags win")
    g = p.add_argument_group("search space")
    g.add_argument("--grid", action="append", default=[], metavar="OPT=V1,V2,...",
                   help="grid axis (repeat for a cartesian product), e.g. lr=0.01,0.1; "
                   "hidden widths as 64,128x128; architectures separated by ';', e.g. "
                   "\"arch=dense:128,relu;dense:256,relu\"")
    g.add_argument("--random", action="append", default=[], metavar="OPT=DIST",
                   help="random axis: uniform(a,b), loguniform(a,b), randint(a,b) or "
                   "choice(a,b,...), e.g. \"l2=loguniform(1e-5,1e-1)\"")
    g.add_argument("--trials", type=int, default=None,
                   help="random points to draw (default 10; with --grid, per grid point)")
    g.add_argument("--sample-seed", type=int, default=None,
                   help="seed of the random points (default 0), apart from training seeds")
    g.add_argument("--seeds", default=None, metavar="S1,S2,...",
                   help="training seeds run at every point, e.g. 0,1,2,3 (default: --seed)")
    g.add_argument("--refine", action="store_true", default=None,
                   help="coarse-to-fine: a second stage around the best point of the first")
    g.add_argument("--refine-factor", type=float, default=None,
                   help="how many times narrower the second-stage range is (default 4)")
    g.add_argument("--refine-points", type=int, default=None,
                   help="values per option (grid mode) or samples (random mode); default 5")
    g.add_argument("--refine-mode", choices=("grid", "random"), default=None,
                   help="second stage as an even grid (default) or random samples")
    e = p.add_argument_group("execution and output")
    e.add_argument("--workers", type=int, default=None,
                   help="parallel trials: local processes (default 1, in this process), or the "
                   "LocalCluster size with --scheduler local (default one per core); "
                   "workers x threads <= cores")
    e.add_argument("--threads", type=int, default=None,
                   help="BLAS/Numba threads per worker (default cores // workers)")
    e.add_argument("--scheduler", default=None, metavar="tcp://HOST:PORT|local",
                   help="run trials on a Dask cluster, or 'local' for a LocalCluster of --workers")
    e.add_argument("--out", metavar="DIR", default=None,
                   help="sweep folder (default runs/sweep-<config name>); rerun to resume")
    e.add_argument("--dry-run", action="store_true", help="list the trials and stop")
    e.add_argument("--no-plots", action="store_true",
                   help="no PNG plots (neither the sweep's nor each trial's curves.png)")
    e.add_argument("--no-progress", action="store_true", help="no progress bar or trial lines")
    p.set_defaults(func=run)


def _read_toml(path) -> dict:
    from ..train.config import load_toml

    # load_toml unwraps [train]; a sweep file's sections are read from the raw table.
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    load_toml(path)  # existence and syntax errors, worded as for `train`
    with open(path, "rb") as handle:
        return tomllib.load(handle)


def build_spec(args):
    """The ``SweepSpec`` from the TOML file (if any) and the flags (which win)."""
    from ..errors import ConfigError
    from ..experiments.space import (Refine, Space, parse_grid_flag, parse_random_flag,
                                     space_from_toml)
    from ..experiments.sweep import SweepSpec
    from ..train.config import load_toml, make_config

    base, space, settings = {}, Space(), {}
    if args.config:
        raw = _read_toml(args.config)
        if any(k in raw for k in ("base", "space", "sweep")):
            unknown = set(raw) - {"base", "space", "sweep"}
            if unknown:
                raise ConfigError(f"{args.config}: unknown sections {', '.join(sorted(unknown))}; "
                                  f"a sweep file has [base], [space] and [sweep]")
            base = dict(raw.get("base", {}))
            space = space_from_toml(raw.get("space", {}))
            settings = dict(raw.get("sweep", {}))
            bad = set(settings) - set(SWEEP_KEYS)
            if bad:
                raise ConfigError(f"{args.config} [sweep]: unknown keys {', '.join(sorted(bad))}; "
                                  f"use {', '.join(SWEEP_KEYS)}")
        else:
            base = load_toml(args.config)
    flags = flags_to_config(args)
    given = set(base) | set(flags)
    base = make_config(base, flags, refuse_unused=False)

    grid, random = dict(space.grid), dict(space.random)
    for text in args.grid:
        key, values = parse_grid_flag(text)
        random.pop(key, None)
        grid[key] = values
    for text in args.random:
        key, dist = parse_random_flag(text)
        grid.pop(key, None)
        random[key] = dist
    space = Space(grid, random)

    seeds = settings.get("seeds", [base["seed"]])
    if args.seeds is not None:
        try:
            seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        except ValueError:
            raise ConfigError(f"--seeds takes whole numbers like 0,1,2,3; "
                              f"got {args.seeds!r}") from None
    valid = all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)
    if not seeds or not valid or len(set(seeds)) < len(seeds):
        raise ConfigError(f"seeds must be distinct whole numbers >= 0; got {seeds!r}")

    refine = settings.get("refine", False)
    if isinstance(refine, dict):
        bad = set(refine) - set(REFINE_KEYS)
        if bad:
            raise ConfigError(f"[sweep] refine: unknown keys {', '.join(sorted(bad))}; "
                              f"use {', '.join(REFINE_KEYS)}")
        refine_options, refine = dict(refine), True
    else:
        refine_options = {}
    if args.refine:
        refine = True
    for key in REFINE_KEYS:
        value = getattr(args, f"refine_{key}")
        if value is not None:
            refine_options[key] = value
            refine = True  # a refine option alone asks for refinement
    trials = args.trials if args.trials is not None else settings.get("trials", 10)
    if args.trials is not None and not space.random:
        raise ConfigError("--trials counts random points: add a --random option "
                          "(a grid runs every combination)")
    spec = SweepSpec(base=base, space=space, seeds=seeds, trials=int(trials),
                     sample_seed=int(args.sample_seed if args.sample_seed is not None
                                     else settings.get("sample_seed", 0)),
                     refine=Refine(**refine_options) if refine else None)
    refuse_unused_everywhere(spec, given | set(space.options))
    return spec


def refuse_unused_everywhere(spec, given) -> None:
    """An option that no trial of the sweep would use (``--momentum`` when every point
    trains with Adam) is refused; one used by some trials only is applied where it is."""
    from ..errors import ConfigError
    from ..train.config import make_config, unused_options

    configs = [make_config(spec.base, point, refuse_unused=False)
               for point in spec.space.points(spec.trials, spec.sample_seed)]
    for key in sorted(given):
        problems = [unused_options(config, {key}) for config in configs]
        if configs and all(problems):
            raise ConfigError(f"{problems[0][0]} (in every trial of this sweep)")


def run(args) -> int:
    import hashlib
    import json
    from pathlib import Path

    from ..experiments.executors import make_executor
    from ..experiments.sweep import plan_trials, run_sweep

    spec = build_spec(args)
    if args.out:
        out = Path(args.out)
    elif args.config:
        out = Path("runs") / f"sweep-{Path(args.config).stem}"
    else:  # the same command lands in the same folder, so rerunning it resumes
        digest = hashlib.sha1(json.dumps(spec.describe(), sort_keys=True, default=str).encode())
        out = Path("runs") / f"sweep-{digest.hexdigest()[:8]}"
    # Built (not started) before a dry run too, so bad --workers/--threads are refused.
    executor = make_executor(args.workers, args.scheduler, args.threads)
    if args.dry_run:
        trials = plan_trials(spec, spec.space.points(spec.trials, spec.sample_seed), stage=1)
        for trial in trials:
            print(trial.id)
        more = " (plus a refinement stage after them)" if spec.refine else ""
        print(f"{len(trials)} trials{more} into {out}, on {executor.description}")
        return 0
    result = run_sweep(spec, out, executor, progress=not args.no_progress,
                       plots=not args.no_plots)
    print(f"{result['ran']} trials run ({result['failed']} failed), "
          f"{result['skipped']} already done, {result['seconds']:.1f} s")
    table = (out / "results.md").read_text().splitlines()
    print("\n".join(table[4:4 + 22]))
    print(f"results: {out / 'results.md'}, {out / 'results.csv'}")
    if result["best"] is not None:
        print(f"best:    {out / 'best.toml'}  (handprop train --config {out / 'best.toml'})")
    if result["plots"]:
        print(f"plots:   {out / 'plots'}/")
    return 1 if result["best"] is None else 0
