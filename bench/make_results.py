"""Regenerate bench/RESULTS.md: ``python bench/make_results.py`` (all parts), or
``python bench/make_results.py --parts training,profile`` then ``--render-only``.

Each part saves ``bench/results/<part>.json``; the Markdown is rendered from
whatever JSON is there, so parts can be re-measured one at a time in quiet
moments. ``--wait-load X`` waits (up to ``--max-wait`` s) until the 1-minute
load average is below X before each part. Nothing here sets OPENBLAS_* or
thread variables; run it under ``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE``
(and ``--tag unset``) to document a run without them: every tagged training
run gets its own section, with the BLAS kernel that ran (threadpoolctl).
``--scale 0.25 --repeats 3`` makes a quick run; ``--comparators`` narrows the
references (default: every installed one: PyTorch eager, torch.compile, JAX).
The ``cnn`` part measures the MNIST CNN (batch 64/128, SGD and Adam) and renders
as its own section (``cnn<tag>.json``, optional ``notes_cnn<tag>.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from benchlib.accuracy import time_to_accuracy
from benchlib.primitives import format_primitive_table, measure_primitives
from benchlib.profiling import format_profile_table, profile_steps
from benchlib.scaling import measure_scaling, plot_scaling

from handprop import bench as hb
from handprop.bench.comparators import available_comparators
from handprop.bench.report import EXTRA_COMPARATORS, probe_note

HERE = Path(__file__).resolve().parent
PARTS = ("sgemm", "training", "cnn", "targets", "primitives", "profile", "scaling", "tta")


def wait_for_quiet(limit, max_wait, log=print):
    if not limit:
        return
    started = time.time()
    while os.getloadavg()[0] >= limit and time.time() - started < max_wait:
        time.sleep(10)
    log(f"  load average {os.getloadavg()[0]:.2f} after waiting {time.time() - started:.0f}s")


def measure(part, engines, out: Path, args):
    comparators = ([c.strip() for c in args.comparators.split(",") if c.strip()]
                   if args.comparators is not None else available_comparators())
    kinds = engines + (["torch"] if hb.torch_available() else [])
    env = hb.environment(kinds)
    env["comparators"] = comparators
    t0 = time.time()
    if part == "sgemm":
        data = {str(n): vars(hb.sgemm_gflops(n=n, repeats=5)) for n in (2048, 4096)}
    elif part == "training":
        sgemm = hb.sgemm_gflops(n=2048, repeats=5)
        data = hb.measure_training(
            engines=engines, repeats=args.repeats, scale=args.scale, sgemm=sgemm, log=print,
            comparators=comparators, before_config=lambda: wait_for_quiet(args.wait_load, 60))
        hb.plot_rows(data, out / f"training{args.tag}.png")
    elif part == "cnn":
        # The MNIST CNN (batch 64/128, SGD and Adam) on every engine and comparator.
        sgemm = hb.sgemm_gflops(n=2048, repeats=5)
        data = hb.measure_training(
            [hb.CNN_MODEL], engines=engines, repeats=args.repeats, scale=args.scale,
            sgemm=sgemm, log=print, comparators=comparators,
            before_config=lambda: wait_for_quiet(args.wait_load, 60))
    elif part == "targets":
        # The numba issue's targets (SGD), with more repeats: 784-100-10 sigmoid at
        # 64/128/1024 and 784-256-256-10 relu at 128.
        sgemm = hb.sgemm_gflops(n=2048, repeats=5)
        wait = lambda: wait_for_quiet(args.wait_load, 60)  # noqa: E731
        data = hb.measure_training(["784-100-10 sigmoid"], [64, 128, 1024], ["sgd"], engines,
                                   repeats=args.target_repeats, sgemm=sgemm, log=print,
                                   comparators=comparators, before_config=wait)
        data += hb.measure_training(["784-256-256-10 relu"], [128], ["sgd"], engines,
                                    repeats=args.target_repeats, sgemm=sgemm, log=print,
                                    comparators=comparators, before_config=wait)
    elif part == "primitives":
        data = measure_primitives(engines=engines, repeats=args.repeats)
    elif part == "profile":
        data = [profile_steps(e, m, b, o) for m in hb.MODELS for b in hb.BATCHES
                for o in ("sgd",) for e in engines]
    elif part == "scaling":
        data = measure_scaling(engines, repeats=3, log=print)
        plot_scaling(data, out / "scaling.png")
    elif part == "tta":
        data = [time_to_accuracy(e, max_epochs=args.max_epochs, log=print)
                for e in kinds]
    env["load_average_end"] = list(os.getloadavg())
    env["seconds"] = time.time() - t0
    (out / f"{part}{args.tag}.json").write_text(json.dumps({"env": env, "data": data}, indent=1))


def _load(out, part, tag=""):
    path = out / f"{part}{tag}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _env_lines(env):
    v = env["versions"]
    load = ", ".join(f"{x:.2f}" for x in env.get("load_average", []))
    load_end = ", ".join(f"{x:.2f}" for x in env.get("load_average_end", []))
    return [f"- measured {env['date']} on **{env['machine']}**, {env['usable_cpus']} cores "
            f"({env['platform']})",
            f"- python {v['python']}, handprop {v['handprop']}, numpy {v['numpy']}, numba "
            f"{v['numba']}, torch {v['torch']}" + (f", jax {v['jax']} (jaxlib {v.get('jaxlib')})"
                                                    if v.get("jax") else ""),
            f"- BLAS: {env['blas_kernel']}; numba threads {env.get('numba_threads', '-')}; "
            f"torch threads {env.get('torch_threads', '-')}; OPENBLAS_* in the environment: "
            f"{env['env'] or 'none set'}",
            f"- load average (1, 5, 15 min) at start {load}, at end {load_end} "
            f"(other jobs share these 2 cores)"]


TRAINING_TITLES = {
    "": "Training throughput through `Trainer.fit`",
    "_unset": "Training throughput, run with OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE unset",
}
COMPARATOR_NOTE = (
    "Side by side, same run: handprop's rows, then the comparators, then the ceiling "
    "(median samples/s). Every comparator starts from the handprop model's weights and "
    "sees the trainer's batches (one host permutation per epoch from the same seed); their "
    "per-batch losses agree with handprop's within 2e-5 relative "
    "(`tests/bench/test_comparators.py`). torch.compile: the model and `optimizer.step` "
    "compiled (mode default); compiling happens in the warm-up epoch ({compile}). JAX: "
    "`jax.value_and_grad` of the same loss, optax SGD/Adam, jitted with the parameters "
    "and optimizer state donated; `jax scan` runs the whole epoch as one jitted call "
    "(`lax.scan` over the batches, the gather inside), `jax step` a jitted step per batch "
    "from a Python loop; both read the epoch's losses back once at its end, and each runs "
    "in a worker process of its own.")


def training_tags(out: Path) -> list[str]:
    """Tags of the training runs saved in ``out`` (``training<tag>.json``): the
    untagged run first, then ``_unset``, then the others."""
    tags = [p.stem[len("training"):] for p in out.glob("training*.json")]
    return sorted(tags, key=lambda t: (t != "", t != "_unset", t))


CNN_NOTE = (
    "The MNIST CNN: conv 16@5x5 same, relu, maxpool 2, conv 32@5x5 same, relu, maxpool 2, "
    "flatten, dense 10; softmax cross-entropy; float32 images (N, 1, 28, 28). PyTorch: "
    "`nn.Conv2d(padding=2)`, `nn.MaxPool2d`, `nn.Linear` (eager, autograd, oneDNN "
    "convolutions), the model and each batch in `torch.channels_last` memory as PyTorch's "
    "CPU performance guide advises for CNNs; JAX: `lax.conv_general_dilated` in NCHW and `lax.reduce_window` max, "
    "jitted, the epoch under `lax.scan` (`jax scan`) or a jitted step per batch (`jax step`); "
    "all start from the handprop model's weights on the same batches (first per-batch "
    "losses agree, `tests/bench/test_comparators.py`). GEMM-only ceiling: only the step's "
    "conv and dense matrix products on preallocated im2col-shaped buffers (no im2col, "
    "col2im, pooling or element-wise work).")


def cnn_section(out: Path, tag: str) -> list[str]:
    result = _load(out, "cnn", tag)
    suffix = f" (run tagged `{tag.lstrip('_')}`)" if tag else ""
    md = [f"## MNIST CNN through `Trainer.fit`{suffix}", ""] + _env_lines(result["env"])
    md += ["", CNN_NOTE + " " + probe_note(result["data"]), "",
           hb.format_side_by_side(result["data"], markdown=True), "",
           hb.format_training_table(result["data"], markdown=True)]
    notes = out / f"notes_cnn{tag}.md"
    if notes.exists():  # a hand-written reading of this run
        md += ["", notes.read_text().rstrip()]
    return md + [""]


def part_tags(out: Path, part: str) -> list[str]:
    """Tags of the ``part`` runs saved in ``out`` (``<part><tag>.json``), untagged first."""
    tags = [p.stem[len(part):] for p in out.glob(f"{part}*.json")]
    return sorted(tags, key=lambda t: (t != "", t != "_unset", t))


def training_section(out: Path, tag: str) -> list[str]:
    tr = _load(out, "training", tag)
    title = TRAINING_TITLES.get(tag, f"Training throughput through `Trainer.fit` "
                                     f"(run tagged `{tag.lstrip('_')}`)")
    md = [f"## {title}", ""] + _env_lines(tr["env"])
    md += ["", "Columns: x cpu / x torch = engine median over the cpu / PyTorch median of "
           "the same run; % ceiling = share of the GEMM-only ceiling (only the step's "
           "matrix products, preallocated, same shapes); GFLOP/s = the step's GEMM FLOPs "
           "at the engine's rate; % sgemm = that over the 2048^2 sgemm median measured "
           f"in this run ({tr['data'][0].get('sgemm_gflops', 0):.1f} GFLOP/s). "
           "PyTorch: same model, initial weights and batches; nn.Linear + activation + "
           "CrossEntropyLoss + torch.optim (eager, autograd), reading loss and accuracy "
           "back each step like the library's loop. " + probe_note(tr["data"]), ""]
    extras = [key for key, _ in EXTRA_COMPARATORS
              if any(r.get(f"{key}_samples_per_s") for r in tr["data"])]
    if extras:
        spent = [r["torch_compile_warmup_seconds"] for r in tr["data"]
                 if r.get("torch_compile_warmup_seconds")]
        compile_text = (f"{min(spent):.0f}-{max(spent):.0f} s per configuration here"
                        if spent else "not measured in this run")
        md += [COMPARATOR_NOTE.format(compile=compile_text), "",
               hb.format_side_by_side(tr["data"], markdown=True), ""]
    md.append(hb.format_training_table(tr["data"], markdown=True))
    notes = out / f"notes_training{tag}.md"
    if notes.exists():  # a hand-written reading of this run
        md += ["", notes.read_text().rstrip()]
    figure = f"training{tag}.png"
    if not tag or (out / figure).exists():
        md += ["", f"![training throughput](results/{figure})"]
    return md + [""]


def render(out: Path) -> str:
    md = ["# handprop benchmark results", "",
          "Regenerate: `python bench/make_results.py` (this file and `bench/results/`). "
          "Quick user version: `handprop bench --quick`. Full pytest-benchmark suite: "
          "`pytest bench/ --benchmark-only` (`--benchmark-save=NAME`, `--benchmark-compare`).",
          "", "All figures are float32, MNIST-shaped (packaged MNIST, first samples, scaled to "
          "[0,1]), measured side by side in one run per row group (each repeat runs every "
          "engine, PyTorch and the GEMM ceiling once, in rotating order), after a warm-up "
          "epoch. samples/s: median of the repeats [min-max]. Ratios are ratios of medians. "
          "No GPU on this machine: no cuda figure.", ""]
    notes = out / "notes.md"
    if notes.exists():  # hand-written reading of the figures below
        md += [notes.read_text().rstrip(), ""]
    sg = _load(out, "sgemm")
    if sg:
        md += ["## Machine limit: sgemm", ""] + _env_lines(sg["env"]) + [""]
        md += ["| n | GFLOP/s median | min | max |", "|---|---|---|---|"]
        for n, st in sg["data"].items():
            vals = st["values"]
            md.append(f"| {n} | {sorted(vals)[len(vals)//2]:.1f} | {min(vals):.1f} | "
                      f"{max(vals):.1f} |")
        md.append("")
    for tag in training_tags(out):
        md += training_section(out, tag)
    for tag in part_tags(out, "cnn"):
        md += cnn_section(out, tag)
    def section(result, title, table, note=None):
        """A heading, the run's environment, an optional note, the table."""
        if not result:
            return
        md.extend([f"## {title}", ""] + _env_lines(result["env"]) + [""])
        if note:
            md.extend([note, ""])
        md.extend([table(result["data"], markdown=True), ""])

    targets = _load(out, "targets")
    section(targets, "The numba targets, re-measured with more repeats (SGD)",
            hb.format_training_table, note=probe_note(targets["data"]) if targets else None)
    profile = _load(out, "profile")
    section(profile, "Where a step's time goes (per-step microseconds, SGD)",
            format_profile_table,
            note="total = trainer epoch clock / steps; primitives timed by wrapping the "
                 "engine's methods; gemm_ceiling = the same GEMMs preallocated (measured right "
                 "after); gemm_alloc_extra = what those GEMMs cost more when each allocates "
                 "its output as the layers do; gather = the batch `take`s; correct = the "
                 "trainer's per-batch accuracy count; other = total minus all of these (Python "
                 "in layers/model/optimizer/trainer, temporaries). Medians of 7 repeats per "
                 "phase." + (" " + probe_note(profile["data"]) if profile else ""))
    section(_load(out, "primitives"), "Fused primitives on their own (microseconds per call)",
            format_primitive_table)
    sc = _load(out, "scaling")
    if sc:
        md += ["## How cost grows", ""] + _env_lines(sc["env"]) + [""]
        md += ["784-100-10 sigmoid SGD against batch size; 784-W-10 relu SGD at batch 128 "
               "against hidden width W. samples/s median [min-max] over 3 repeats.", ""]
        labels = list(dict.fromkeys(r["engine"] for r in sc["data"]))
        for axis in ("batch", "width"):
            vals = list(dict.fromkeys(r["value"] for r in sc["data"] if r["axis"] == axis))
            md += [f"| {axis} | " + " | ".join(labels) + " |",
                   "|---|" + "---|" * len(labels)]
            for v in vals:
                cells = []
                for lab in labels:
                    r = next(r for r in sc["data"] if r["axis"] == axis and r["value"] == v
                             and r["engine"] == lab)
                    cells.append(f"{r['samples_per_s']:,.0f} [{r['samples_per_s_min']:,.0f}-"
                                 f"{r['samples_per_s_max']:,.0f}]")
                md.append(f"| {v} | " + " | ".join(cells) + " |")
            md.append("")
        md += ["![scaling](results/scaling.png)", ""]
    tt = _load(out, "tta")
    if tt:
        md += ["## Time to accuracy (README best recipe)", ""] + _env_lines(tt["env"])
        md += ["", "784-512-256-10 relu, Adam lr 0.001, batch 128, exponential decay 0.85 per "
               "epoch, 55,000 training samples (5,000 held out as in `handprop train`), test "
               "accuracy after every epoch; seconds = training time only (trainer epoch clock, "
               "evaluation excluded). Engines run one after another, not interleaved. "
               + probe_note([r for r in tt["data"] if r["engine"] != "torch"]), "",
               "| engine | 97 %: epoch | 97 %: seconds | 98 %: epoch | 98 %: seconds | "
               "epochs run | best test acc |", "|---|---|---|---|---|---|---|"]
        for r in tt["data"]:
            cells = []
            for t in ("0.97", "0.98"):
                hit = r["reached"].get(t)
                cells += [str(hit["epoch"]), f"{hit['seconds']:.1f}"] if hit else ["-", "-"]
            best = max(c["test_acc"] for c in r["curve"])
            md.append(f"| {r['engine']} | " + " | ".join(cells) +
                      f" | {len(r['curve'])} | {best:.2%} |")
        md.append("")
    return "\n".join(md)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--parts", default=",".join(PARTS))
    p.add_argument("--engines", default=None)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--max-epochs", type=int, default=20)
    p.add_argument("--target-repeats", type=int, default=15)
    p.add_argument("--wait-load", type=float, default=None)
    p.add_argument("--max-wait", type=float, default=600)
    p.add_argument("--tag", default="", help="suffix of the JSON files (e.g. _unset); each "
                   "tagged training run gets its own section in RESULTS.md")
    p.add_argument("--scale", type=float, default=1.0,
                   help="fraction of the samples per timing (e.g. 0.25 for a quick run)")
    p.add_argument("--comparators", default=None,
                   help="comma-separated comparators (default: every installed one)")
    p.add_argument("--render-only", action="store_true")
    p.add_argument("--out", default=str(HERE / "results"))
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.tag and not args.tag.startswith("_"):
        args.tag = "_" + args.tag
    if not args.render_only:
        engines = hb.bench_engines(args.engines.split(",") if args.engines else None)
        for part in args.parts.split(","):
            wait_for_quiet(args.wait_load, args.max_wait)
            print(f"== {part}", flush=True)
            measure(part, engines, out, args)
    (HERE / "RESULTS.md").write_text(render(out) + "\n")
    print(f"wrote {HERE / 'RESULTS.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
