"""`handprop compare RUN...`: several run folders side by side, as a table and curves.

Runs are labelled by the options in which their configurations differ, so
`compare runs/sigmoid runs/relu` draws "activation=sigmoid" against
"activation=relu". Runs that differ only in their seed are one curve, the
mean with a band of one standard deviation, as in a sweep.
"""

from __future__ import annotations

import json
from pathlib import Path

#: Options that cannot change what a run learns, left out of the labels.
NOT_COMPARED = {"seed", "data_dir", "download", "eval_batch_size"}


def register(subparsers):
    p = subparsers.add_parser(
        "compare", help="several runs side by side: a table and overlaid curves",
        description="Compare finished (or interrupted) run folders of `handprop train`: one "
        "table row per run, labelled by the options in which the runs differ, and one picture "
        "of loss and accuracy per epoch (train dashed, validation solid). Runs that differ "
        "only in their seed are drawn as a mean with a ±1 std band.")
    p.add_argument("run_dirs", metavar="RUN", nargs="+", help="run folders (--out of train)")
    p.add_argument("--out", metavar="PNG", default="compare.png",
                   help="where to write the curves (default compare.png)")
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    p.set_defaults(func=run)


def differing_options(configs: list[dict]) -> list[str]:
    """Options whose values are not the same in every configuration, in name order."""
    keys = sorted(set().union(*configs) - NOT_COMPARED)
    return [k for k in keys if len({json.dumps(c.get(k), sort_keys=True) for c in configs}) > 1]


def run(args) -> int:
    from ..errors import ConfigError
    from ..experiments.plots import plot_curves_by_point
    from ..experiments.sweep import format_value, aggregate, selection_metrics
    from ..plotting import check_figure_path
    from ..train.run_folder import RunFolder

    check_figure_path(args.out)
    dirs = [Path(d) for d in args.run_dirs]
    if len({d.resolve() for d in dirs}) < len(dirs):
        raise ConfigError("a run folder is named twice; give each run once")
    folders = [RunFolder.read(d) for d in dirs]
    options = differing_options([folder.config for folder in folders])
    records = []
    for run_dir, folder in zip(dirs, folders):
        config, history, summary = folder.config, folder.history, folder.summary
        records.append({
            "trial": str(run_dir), "stage": 1, "seed": config.get("seed"),
            "point": {k: config.get(k) for k in options}, "config": config,
            "status": "ok" if history else "failed",
            "error": None if history else "no epoch finished yet", "history": history,
            "summary": summary, "finished": folder.finished,
            "metrics": selection_metrics(summary or {}, history),
            "seconds": (summary or {}).get("train_seconds",
                                           sum(h.get("seconds") or 0.0 for h in history)),
        })
    plot = plot_curves_by_point(aggregate(records), options, args.out)

    table = [{"run": r["trial"], **{k: r["point"][k] for k in options}, "seed": r["seed"],
              "epochs": len(r["history"]), "finished": r["finished"],
              **{k: r["metrics"][k] for k in ("val_accuracy", "test_accuracy", "test_loss")},
              "train_seconds": r["seconds"], "engine": r["metrics"]["engine"]} for r in records]
    if args.json:
        print(json.dumps({"options": options, "runs": table, "plot": str(plot)}, indent=2))
        return 0
    if not options:
        print("the runs have the same configuration" + (" except the seed" if len(dirs) > 1 else ""))

    def cell(key, value):
        if value is None:
            return "-"
        if key.endswith("accuracy"):
            return f"{value:.2%}"
        if key == "test_loss":
            return f"{value:.4f}"
        if key == "train_seconds":
            return f"{value:.1f} s"
        if key == "finished":
            return "yes" if value else "no"
        return format_value(value)

    header = ["run", *options, "seed", "epochs", "finished", "val acc", "test acc", "test loss",
              "time", "engine"]
    keys = ["run", *options, "seed", "epochs", "finished", "val_accuracy", "test_accuracy",
            "test_loss", "train_seconds", "engine"]
    rows = [header] + [[cell(k, row[k]) for k in keys] for row in table]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in rows[:1] + [["-" * w for w in widths]] + rows[1:]:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    print(f"curves: {plot}")
    return 0
