"""Regenerate bench/RESULTS.md: ``python bench/make_results.py`` (every part under every CPU
profile), or ``--parts training,cnn --profiles avx2`` then ``--render-only``.

Each part saves ``bench/results/<part>_<profile>.json``; the Markdown is rendered from
whatever JSON is there, so parts can be re-measured one at a time in quiet moments. A
profile other than ``as-is`` runs the measurement in a child process under that profile's
environment (``handprop.bench.profiles``); nothing changes this process's. Every training
figure is taken by the benchmark's one clock (``handprop.bench.measure``): each round runs
every contender's lead-in and timed epoch in turn, and a ratio is the median [min-max] of
the per-round ratios. ``--wait-load X`` waits (up to ``--max-wait`` s) until the 1-minute
load average is below X before each configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchlib.primitives import format_primitive_table, measure_primitives
from benchlib.profiling import format_profile_table, profile_steps

from handprop import bench as hb
from handprop.bench.comparators import available_comparators
from handprop.bench.profiles import (PROFILE_NAMES, describe_kernels, kernels_in_use,
                                     profile_changes, profile_environment)
from handprop.bench.report import EXTRA_COMPARATORS, ratio_cell, table

HERE = Path(__file__).resolve().parent
PARTS = ("sgemm", "training", "cnn", "primitives", "profile")
#: Parts measured once per profile (the others once, as the environment stands).
PROFILED_PARTS = ("sgemm", "training", "cnn")


def wait_for_quiet(limit, max_wait, log=print):
    if not limit:
        return
    started = time.time()
    while os.getloadavg()[0] >= limit and time.time() - started < max_wait:
        time.sleep(10)
    log(f"  load average {os.getloadavg()[0]:.2f} after waiting {time.time() - started:.0f}s")


def measure(part, engines, out: Path, args, profile: str):
    comparators = ([c.strip() for c in args.comparators.split(",") if c.strip()]
                   if args.comparators is not None else available_comparators())
    kinds = engines + (["torch"] if hb.torch_available() else [])
    env = hb.environment(kinds)
    env.update(comparators=comparators, profile=profile, kernels=kernels_in_use())
    wait = lambda: wait_for_quiet(args.wait_load, 60)  # noqa: E731
    t0 = time.time()
    if part == "sgemm":
        from handprop.bench.peak import fma_peak_gflops

        data = {str(n): vars(hb.sgemm_gflops(n=n, repeats=5)) for n in (2048, 4096)}
        data["fma"] = {"values": [fma_peak_gflops() for _ in range(5)]}
    elif part in ("training", "cnn"):
        from handprop.bench.peak import fma_peak_gflops

        sgemm, peak = hb.sgemm_gflops(n=2048, repeats=5), fma_peak_gflops()
        env["fma_peak_gflops"] = peak
        models = [hb.CNN_MODEL] if part == "cnn" else None
        data = hb.measure_training(models, engines=engines, repeats=args.repeats,
                                   scale=args.scale, sgemm=sgemm, log=print,
                                   comparators=comparators, before_config=wait, fma_peak=peak)
        for row in data:
            row.update(profile=profile, kernels=env["kernels"])
    elif part == "primitives":
        data = measure_primitives(engines=engines, repeats=args.repeats)
    elif part == "profile":
        data = [profile_steps(e, m, b, o) for m in hb.MODELS for b in hb.BATCHES
                for o in ("sgd",) for e in engines]
    else:
        raise SystemExit(f"unknown part {part!r}; choose from: {', '.join(PARTS)}")
    env["load_average_end"] = list(os.getloadavg())
    env["seconds"] = time.time() - t0
    name = f"{part}_{profile}" if part in PROFILED_PARTS else part
    (out / f"{name}.json").write_text(json.dumps({"env": env, "data": data}, indent=1))


def _load(out, name):
    path = out / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _env_lines(env):
    v = env["versions"]
    load = ", ".join(f"{x:.2f}" for x in env.get("load_average", []))
    load_end = ", ".join(f"{x:.2f}" for x in env.get("load_average_end", []))
    lines = [f"- measured {env['date']} on **{env['machine']}**, {env['usable_cpus']} cores "
             f"({env['platform']})",
             f"- python {v['python']}, handprop {v['handprop']}, numpy {v['numpy']}, numba "
             f"{v['numba']}, torch {v['torch']}" + (f", jax {v['jax']} (jaxlib "
                                                    f"{v.get('jaxlib')})" if v.get("jax") else "")]
    if env.get("kernels"):
        lines.append(f"- kernels that ran: {describe_kernels(env['kernels'])}; profile "
                     f"variables set: {env['kernels'].get('variables') or 'none'}")
    else:
        lines.append(f"- BLAS: {env['blas_kernel']}")
    lines += [f"- threads: numba {env.get('numba_threads', '-')}, torch "
              f"{env.get('torch_threads', '-')}; speed variables in the environment: "
              f"{env['env'] or 'none set'}",
              f"- load average (1, 5, 15 min) at start {load}, at end {load_end} "
              f"(other jobs share these cores)"]
    return lines


PROFILE_TITLES = {"as-is": "as the environment stands",
                  "avx512": "`avx512`: OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE unset",
                  "avx2": "`avx2`: every contender capped at AVX2"}
METHOD = (
    "One clock for every contender: each round runs every contender's lead-in epoch and then "
    "its timed epoch, one contender after another, the order rotating by one each round; "
    "the figure is the wall time between the two epoch ends (handprop: one `Trainer.fit` "
    "call read by its `on_epoch_end` hook, so the once-per-fit input checks fall on the "
    "lead-in; JAX: consecutive jitted epoch calls, each with the read-back of its losses; "
    "PyTorch: the training loop with its per-step loss reads). Every timed epoch has at least "
    "16,384 samples (CNN: 4,096) and lasts at least 0.25 s for the fastest contender. "
    "samples/s: median over the rounds [min-max]; spread: (max - min) / median of the row's "
    "own rounds, 'noisy' over 25 %; x NAME: the median [min-max] of the per-round ratios; "
    "% GEMM ceiling: the share of the GEMM-only ceiling (only the step's matrix products, "
    "preallocated), per round likewise.")
COMPARATORS_NOTE = (
    "Every comparator starts from the handprop model's weights and sees the trainer's "
    "batches (one host permutation per epoch from the same seed); their per-batch losses "
    "agree with handprop's within 2e-5 relative (`tests/bench/test_comparators.py`). "
    "PyTorch: eager autograd and `torch.optim` (the CNN in `channels_last` memory, as "
    "PyTorch's CPU guide advises), and `torch.compile` of the model and `optimizer.step` "
    "(compiled in the warm-up). JAX: `jax.value_and_grad`, optax, jitted with parameters "
    "and optimizer state donated; `jax scan` runs the epoch as one jitted `lax.scan` call, "
    "`jax step` a jitted step per batch; each JAX runner runs in a worker process.")


def summary_section(out: Path) -> list[str]:
    """The headline rows of every profile: numba's fastest row against each comparator."""
    keys = [("torch", "PyTorch eager"), *EXTRA_COMPARATORS]
    head = ["profile", "model", "batch", "opt", "numba row", "samples/s", "spread",
            *[f"x {name}" for _, name in keys], "% GEMM ceiling"]
    body = []
    for part in ("training", "cnn"):
        for profile in PROFILE_NAMES:
            result = _load(out, f"{part}_{profile}")
            for r in (result or {}).get("data", []):
                if r["engine"] not in ("numba compiled", "numba"):
                    continue
                body.append([f"`{profile}`", r["model"], str(r["batch"]), r["optimizer"],
                             r["engine"], f"{r['samples_per_s']:,.0f}",
                             f"{100 * r['spread']:.0f} %" + (" noisy" if r["noisy"] else ""),
                             *[ratio_cell(r, f"ratio_to_{k}") for k, _ in keys],
                             ratio_cell(r, "ceiling_share", 100, ".0f")])
    if not body:
        return []
    return ["## Summary: numba against every comparator, by CPU profile", "",
            table(head, body, markdown=True), ""]


def sgemm_section(out: Path) -> list[str]:
    """The machine's limits by profile: OpenBLAS sgemm at two sizes and the FMA peak."""
    md = []
    for profile in PROFILE_NAMES:
        result = _load(out, f"sgemm_{profile}")
        if not result:
            continue
        if not md:
            md = ["## Machine limits: sgemm and the FMA peak", "",
                  "sgemm: OpenBLAS `sgemm` at n x n, preallocated, 2 threads; fma: a loop of "
                  "fused multiply-adds only on every core (`handprop.bench.peak`), in the "
                  "widest vectors Numba's target CPU has.", "",
                  "| profile | what | GFLOP/s median | min | max | kernels |",
                  "|---|---|---|---|---|---|"]
        kernels = describe_kernels(result["env"]["kernels"])
        for n, stat in result["data"].items():
            values = sorted(stat["values"])
            what = "fma" if n == "fma" else f"sgemm {n}"
            md.append(f"| `{profile}` | {what} | {values[len(values) // 2]:.1f} | "
                      f"{values[0]:.1f} | {values[-1]:.1f} | {kernels} |")
    return md + [""] if md else []


def training_section(out: Path, part: str, profile: str) -> list[str]:
    result = _load(out, f"{part}_{profile}")
    if not result:
        return []
    what = "MNIST CNN" if part == "cnn" else "MLP training"
    md = [f"## {what}, CPU profile {PROFILE_TITLES[profile]}", ""] + _env_lines(result["env"])
    md += ["", hb.format_side_by_side(result["data"], markdown=True), "",
           hb.format_training_table(result["data"], markdown=True)]
    notes = out / f"notes_{part}_{profile}.md"
    if notes.exists():  # a hand-written reading of this run
        md += ["", notes.read_text().rstrip()]
    return md + [""]


def render(out: Path) -> str:
    md = ["# handprop benchmark results", "",
          "Regenerate: `python bench/make_results.py` (this file and `bench/results/`). "
          "Quick user version: `handprop bench --quick --profile all`. Full pytest-benchmark "
          "suite: `pytest bench/ --benchmark-only`.", "",
          "All figures are float32, MNIST-shaped (packaged MNIST, first samples, scaled to "
          "[0,1]). " + METHOD, "", COMPARATORS_NOTE, "",
          "CPU profiles (`handprop.bench.profiles`): `as-is` is the environment unchanged; "
          "`avx512` unsets OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE; `avx2` sets "
          "OPENBLAS_CORETYPE=Haswell, NUMBA_CPU_NAME=haswell, XLA_FLAGS=--xla_cpu_max_isa=AVX2 "
          "and ATEN_CPU_CAPABILITY=avx2 for every contender alike. Each section names the "
          "kernels that ran. No GPU on this machine: no cuda figure.", ""]
    notes = out / "notes.md"
    if notes.exists():  # a hand-written reading of the figures below
        md += [notes.read_text().rstrip(), ""]
    md += summary_section(out) + sgemm_section(out)
    for part in ("training", "cnn"):
        for profile in PROFILE_NAMES:
            md += training_section(out, part, profile)
    for name, title, fmt_table in (
            ("profile", "Where a step's time goes (per-step microseconds, SGD)",
             format_profile_table),
            ("primitives", "Fused primitives on their own (microseconds per call)",
             format_primitive_table)):
        result = _load(out, name)
        if result:
            md += [f"## {title}", ""] + _env_lines(result["env"])
            md += ["", fmt_table(result["data"], markdown=True), ""]
    return "\n".join(md)


def child_command(args, profile: str, parts: list[str]) -> list[str]:
    """This script, measuring ``parts`` in a child process that ``profile`` applies to."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--parts", ",".join(parts),
            "--profiles", profile, "--in-child", "--no-render", "--repeats", str(args.repeats),
            "--scale", str(args.scale), "--out", args.out, "--max-wait", str(args.max_wait)]
    for flag in ("engines", "comparators", "wait_load"):
        if getattr(args, flag) is not None:
            argv += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    return argv


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--parts", default=",".join(PARTS))
    p.add_argument("--profiles", default=",".join(PROFILE_NAMES),
                   help="comma-separated CPU profiles for the profiled parts (sgemm, "
                   "training, cnn); the other parts run as the environment stands")
    p.add_argument("--engines", default=None)
    p.add_argument("--repeats", type=int, default=5, help="rounds per configuration")
    p.add_argument("--wait-load", type=float, default=None)
    p.add_argument("--max-wait", type=float, default=600)
    p.add_argument("--scale", type=float, default=1.0,
                   help="samples per epoch times this (never below the minimum epoch)")
    p.add_argument("--comparators", default=None,
                   help="comma-separated comparators (default: every installed one)")
    p.add_argument("--render-only", action="store_true")
    p.add_argument("--no-render", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--in-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", default=str(HERE / "results"))
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    parts = [part for part in args.parts.split(",") if part]
    profiles = [profile for profile in args.profiles.split(",") if profile]
    if not args.render_only:
        engines = hb.bench_engines(args.engines.split(",") if args.engines else None)
        for profile in profiles:
            wanted = [part for part in parts if part in PROFILED_PARTS or profile == "as-is"]
            if not wanted:
                continue
            print(f"== CPU profile {profile}: {profile_changes(profile)}", flush=True)
            if args.in_child or profile == "as-is":
                for part in wanted:
                    wait_for_quiet(args.wait_load, args.max_wait)
                    print(f"== {part}", flush=True)
                    measure(part, engines, out, args, profile)
            elif subprocess.call(child_command(args, profile, wanted),
                                 env=profile_environment(profile)) != 0:
                return 1
    if not args.no_render:
        (HERE / "RESULTS.md").write_text(render(out) + "\n")
        print(f"wrote {HERE / 'RESULTS.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
