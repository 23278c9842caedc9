"""Sweeps: plan trials from a space and seeds, run them, resume, rank, report.

Output folder::

    sweep.json              what was asked (base options, space, seeds, refinement)
    trials/<id>/            one `handprop train` run folder per trial, plus result.json
    results.csv             one row per trial (status, seed, options, metrics, error)
    results.md              one row per point, mean +- std over seeds, best first
    best.toml               the best point's full configuration, for `handprop train --config`
    plots/*.png             curves, metric against option, heat maps

A trial's id is a readable slug of its point and seed plus a hash of its full
configuration, so rerunning the same command finds finished trials and skips
them, while changing a base option gives new trials instead of reusing stale
ones. ``result.json`` is written last and atomically: a trial without it never
finished and runs again.

Selection uses validation metrics only (mean validation accuracy over seeds,
ties broken by the lower mean validation loss); test metrics are reported
beside them and never consulted.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import math
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError
from ..io import atomic_write_bytes, atomic_write_json, atomic_write_text
from ..progress import progress_bar
from .space import Refine, Space, refine_points

RESULT_NAME = "result.json"


@dataclass
class SweepSpec:
    base: dict                                  # training options shared by every trial
    space: Space = field(default_factory=Space)
    seeds: list = field(default_factory=lambda: [0])
    trials: int = 10                            # random samples (only with distributions)
    sample_seed: int = 0                        # seeds the random points, not the training
    refine: Refine | None = None

    def describe(self) -> dict:
        return {"base": self.base, "space": self.space.describe(), "seeds": self.seeds,
                "trials": self.trials, "sample_seed": self.sample_seed,
                "refine": None if self.refine is None else vars(self.refine)}


@dataclass
class Trial:
    id: str
    stage: int
    point: dict
    seed: int
    config: dict


# ----------------------------------------------------------------- planning
def format_value(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "x".join(map(str, value))
    return str(value)


def trial_id(point: dict, seed: int, config: dict) -> str:
    """``l2=0.0001_seed=0-1a2b3c4d``: readable, and unique to the full configuration."""
    slug = "_".join(f"{k}={format_value(v)}" for k, v in point.items()) or "base"
    slug = re.sub(r"[^A-Za-z0-9._=+-]", "-", slug)[:80]
    digest = hashlib.sha1(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()
    return f"{slug}_seed={seed}-{digest[:8]}"


def plan_trials(spec: SweepSpec, points: list[dict], stage: int) -> list[Trial]:
    """One trial per point and seed, each with its full, validated configuration."""
    from ..train.config import make_config

    trials = []
    for point in points:
        for seed in spec.seeds:
            try:
                config = make_config(spec.base, point, {"seed": seed}, refuse_unused=False)
            except ConfigError as exc:
                where = ", ".join(f"{k}={format_value(v)}" for k, v in point.items()) or "base options"
                raise ConfigError(f"point {where}: {exc}") from None
            if not config["val_size"]:
                raise ConfigError("a sweep selects on validation metrics, so it needs a "
                                  "validation split: set val_size > 0 (e.g. --val-size 5000)")
            trials.append(Trial(trial_id(point, seed, config), stage, point, seed, config))
    return trials


# ---------------------------------------------------------------- records
def selection_metrics(summary: dict, history: list[dict]) -> dict:
    """Validation metrics of the epoch whose weights the run kept (the best one with early
    stopping, else the last), beside the test metrics."""
    row = history[-1] if history else {}
    best_epoch = summary.get("best_epoch")
    for candidate in history:
        if candidate.get("epoch") == best_epoch:
            row = candidate
    return {"val_accuracy": row.get("val_acc"), "val_loss": row.get("val_loss"),
            "train_accuracy": row.get("train_acc"), "train_loss": row.get("train_loss"),
            "test_accuracy": summary.get("test_accuracy"), "test_loss": summary.get("test_loss"),
            "epochs": summary.get("epochs"), "engine": summary.get("engine")}


def load_record(trial_dir: Path) -> dict | None:
    path = trial_dir / RESULT_NAME
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # unreadable: treat as missing and run the trial again


def store_result(trial: Trial, trial_dir: Path, result: dict | None, error) -> dict:
    """Write a finished trial's files and then its result.json (the completion mark)."""
    if trial_dir.exists():
        shutil.rmtree(trial_dir)  # leftovers of an earlier, failed attempt
    trial_dir.mkdir(parents=True)
    if result is None:  # the trial function itself never returned (worker lost, ...)
        result = {"status": "failed", "summary": None, "history": [], "files": {},
                  "seconds": None, "error": f"{type(error).__name__}: {error}"}
    for name, data in result.get("files", {}).items():
        atomic_write_bytes(trial_dir / name, data)
    record = {"trial": trial.id, "stage": trial.stage, "point": trial.point,
              "seed": trial.seed, "status": result["status"], "error": result.get("error"),
              "traceback": result.get("traceback"), "seconds": result.get("seconds"),
              "threads": result.get("threads"), "config": trial.config, "history": result.get("history", []),
              "summary": result.get("summary")}
    record["metrics"] = (selection_metrics(record["summary"], record["history"])
                         if record["status"] == "ok" else {})
    atomic_write_json(trial_dir / RESULT_NAME, record)
    return record


# ------------------------------------------------------------- aggregation
def _mean_std(values):
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    # Sample standard deviation (n - 1): a handful of seeds estimates the spread.
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def point_key(point: dict) -> str:
    return json.dumps(point, sort_keys=True, default=str)


def aggregate(records: list[dict]) -> list[dict]:
    """One row per point, ranked: best mean validation accuracy first, ties by lower mean
    validation loss; points with no successful trial last."""
    groups: dict[str, list[dict]] = {}
    for record in records:
        groups.setdefault(point_key(record["point"]), []).append(record)
    rows = []
    for members in groups.values():
        ok = [r for r in members if r["status"] == "ok"]
        row = {"point": members[0]["point"], "records": members, "n_ok": len(ok),
               "n_failed": len(members) - len(ok), "stage": min(r["stage"] for r in members)}
        for metric in ("val_accuracy", "val_loss", "test_accuracy", "test_loss"):
            row[metric], row[f"{metric}_std"] = _mean_std([r["metrics"][metric] for r in ok])
        rows.append(row)

    def rank_key(row):
        if row["val_accuracy"] is None:
            return (1, 0.0, 0.0)
        loss = row["val_loss"] if row["val_loss"] is not None else math.inf
        return (0, -row["val_accuracy"], loss)

    rows.sort(key=rank_key)
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    return rows


def best_row(rows: list[dict]) -> dict | None:
    return rows[0] if rows and rows[0]["val_accuracy"] is not None else None


# ----------------------------------------------------------------- reports
CSV_METRICS = ("val_accuracy", "val_loss", "test_accuracy", "test_loss", "train_accuracy",
               "train_loss", "epochs", "engine")


def write_results_csv(path: Path, rows: list[dict], options: list[str]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["rank", "trial", "stage", "status", "seed", *options, *CSV_METRICS,
                     "seconds", "error"])
    for row in rows:
        for r in sorted(row["records"], key=lambda r: r["seed"]):
            writer.writerow([row["rank"], r["trial"], r["stage"], r["status"], r["seed"],
                             *[format_value(r["point"].get(k, "")) for k in options],
                             *[r["metrics"].get(m, "") for m in CSV_METRICS],
                             "" if r["seconds"] is None else f"{r['seconds']:.2f}",
                             r["error"] or ""])
    atomic_write_text(path, buffer.getvalue())


def _pm(mean, std, percent=False):
    if mean is None:
        return "-"
    if percent:
        return f"{mean:.2%}" + ("" if std is None else f" ± {std * 100:.2f}")
    return f"{mean:.4f}" + ("" if std is None else f" ± {std:.4f}")


def results_markdown(rows: list[dict], options: list[str], title: str = "Sweep results") -> str:
    lines = [f"# {title}", "",
             "Sorted by mean validation accuracy (ties: lower validation loss), mean ± sample "
             "standard deviation over seeds. Test metrics are reported beside and never used "
             "to choose.", ""]
    header = ["rank", *options, "seeds", "val acc", "val loss", "test acc", "test loss"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join("---:" if h not in options else "---" for h in header) + "|")
    for row in rows:
        seeds = f"{row['n_ok']}" + (f" ({row['n_failed']} failed)" if row["n_failed"] else "")
        cells = [str(row["rank"]), *[format_value(row["point"].get(k, "")) for k in options], seeds,
                 _pm(row["val_accuracy"], row["val_accuracy_std"], True),
                 _pm(row["val_loss"], row["val_loss_std"]),
                 _pm(row["test_accuracy"], row["test_accuracy_std"], True),
                 _pm(row["test_loss"], row["test_loss_std"])]
        lines.append("| " + " | ".join(cells) + " |")
    failed = [r for row in rows for r in row["records"] if r["status"] != "ok"]
    if failed:
        lines += ["", "## Failed trials", ""]
        lines += [f"- `{r['trial']}`: {r['error']}" for r in failed]
    return "\n".join(lines) + "\n"


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def best_toml(row: dict) -> str:
    ok = sorted((r for r in row["records"] if r["status"] == "ok"), key=lambda r: r["seed"])
    config = ok[0]["config"]
    point = ", ".join(f"{k}={format_value(v)}" for k, v in row["point"].items()) or "base options"
    lines = [f"# Best point of a handprop sweep: {point}",
             f"# validation accuracy {_pm(row['val_accuracy'], row['val_accuracy_std'], True)}, "
             f"loss {_pm(row['val_loss'], row['val_loss_std'])} over {row['n_ok']} seed(s)",
             f"# test accuracy {_pm(row['test_accuracy'], row['test_accuracy_std'], True)} "
             f"(reported only; the choice used validation metrics)",
             "# Train it with: handprop train --config best.toml --out DIR", "", "[train]"]
    # TOML has no null: options left at None keep their default when read back.
    # Options this point does not use (momentum with Adam) are left out, as
    # `handprop train` would refuse them.
    from ..train.config import unused_options

    lines += [f"{key} = {_toml_value(value)}" for key, value in config.items()
              if value is not None and not unused_options(config, {key})]
    return "\n".join(lines) + "\n"


def write_reports(out: Path, records: list[dict], options: list[str], plots: bool) -> dict:
    rows = aggregate(records)
    write_results_csv(out / "results.csv", rows, options)
    atomic_write_text(out / "results.md", results_markdown(rows, options))
    best = best_row(rows)
    if best is not None:
        atomic_write_text(out / "best.toml", best_toml(best))
    written = []
    if plots and any(r["status"] == "ok" for r in records):
        from .plots import write_plots

        written = write_plots(records, rows, options, out / "plots")
    return {"rows": rows, "best": best, "plots": written}


# ---------------------------------------------------------------- progress
class SweepProgress:
    """A tqdm bar over trials with the best so far on a terminal; one line per trial
    elsewhere (logs, CI)."""

    def __init__(self, total: int, enabled: bool = True, stream=None, describe=None):
        self.stream = stream or sys.stderr
        self.enabled = enabled and total > 0
        self.total, self.done = total, 0
        self.describe = describe or (lambda point: str(point))
        self.bar = progress_bar(total, "trials", "trial", enabled=self.enabled,
                                stream=self.stream, mininterval=0.1)

    def update(self, record: dict, best: dict | None) -> None:
        self.done += 1
        if not self.enabled:
            return
        best_text = ("-" if best is None else
                     f"{best['val_accuracy']:.2%} ({self.describe(best['point'])})")
        if record["status"] == "ok":
            what = f"val_acc {record['metrics']['val_accuracy']:.2%}"
        else:
            what = f"FAILED {record['error']}"
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(f"best {best_text}", refresh=True)
            if record["status"] != "ok":
                self.bar.write(f"trial {record['trial']} {what}", file=self.stream)
        else:
            print(f"[{self.done}/{self.total}] {self.describe(record['point'])} "
                  f"seed={record['seed']}: {what} ({record['seconds'] or 0:.1f}s); "
                  f"best {best_text}", file=self.stream, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


# --------------------------------------------------------------------- run
def _describe(point) -> str:
    return ", ".join(f"{k}={format_value(v)}" for k, v in point.items()) or "base"


class _Stages:
    """The trials of a sweep run stage by stage into ``out``: records by trial id, counts, and
    the executor entered once, when there is work."""

    def __init__(self, out: Path, options, executor, stack, progress: bool, plots: bool, log):
        self.out, self.options, self.executor, self.stack = out, options, executor, stack
        self.progress, self.plots, self.log = progress, plots, log
        self.records: dict[str, dict] = {}
        self.counts = {"ran": 0, "skipped": 0, "failed": 0}
        self.entered = False

    def run(self, trials: list[Trial]) -> None:
        todo = []
        for trial in trials:
            if trial.id in self.records:  # the fine stage revisits a coarse point
                continue
            record = load_record(self.out / "trials" / trial.id)
            if record is not None and record.get("status") == "ok":
                self.records[trial.id] = record
                self.counts["skipped"] += 1
            else:  # missing, unfinished, or failed before: run (again)
                todo.append(trial)
        if len(todo) < len(trials):
            self.log(f"stage {trials[0].stage}: {len(trials) - len(todo)} of {len(trials)} "
                     f"trials already done, running {len(todo)}")
        if todo:
            self._execute(list({t.id: t for t in todo}.values()))  # identical ones run once

    def _execute(self, todo: list[Trial]) -> None:
        by_id = {t.id: t for t in todo}
        bar = SweepProgress(len(todo), enabled=self.progress, describe=_describe)
        if not self.entered:  # start workers (or a cluster) only when there is work, and once
            self.stack.enter_context(self.executor)
            self.entered = True
        try:
            for key, result, error in self.executor.run([(t.id, t.config) for t in todo],
                                                        self.plots):
                record = store_result(by_id[key], self.out / "trials" / key, result, error)
                self.records[key] = record
                self.counts["ran"] += 1
                self.counts["failed"] += record["status"] != "ok"
                # Tables after every trial: an interrupted sweep still has its results.
                rows = aggregate(list(self.records.values()))
                write_results_csv(self.out / "results.csv", rows, self.options)
                atomic_write_text(self.out / "results.md", results_markdown(rows, self.options))
                bar.update(record, best_row(rows))
        finally:
            bar.close()


def run_sweep(spec: SweepSpec, out_dir, executor=None, progress: bool = True,
              plots: bool = True, log=print) -> dict:
    """Run (or resume) the sweep ``spec`` into ``out_dir``; return a summary dict with
    ``rows`` (ranked points), ``best``, ``records`` and the counts ``ran``/``skipped``/
    ``failed``."""
    from .executors import InlineExecutor

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    options = spec.space.options
    executor = executor or InlineExecutor()
    atomic_write_json(out / "sweep.json", spec.describe())
    started = time.time()
    coarse = plan_trials(spec, spec.space.points(spec.trials, spec.sample_seed), stage=1)
    fine_points: list[dict] = []
    seeds = len(spec.seeds)
    log(f"sweep of {len(coarse)} trials ({len(coarse) // seeds} points x {seeds} "
        f"seed{'s' if seeds > 1 else ''}) on {executor.description} into {out}")
    with contextlib.ExitStack() as stack:
        stages = _Stages(out, options, executor, stack, progress, plots, log)
        stages.run(coarse)
        if spec.refine is not None:
            best = best_row(aggregate([stages.records[t.id] for t in coarse
                                       if t.id in stages.records]))
            if best is None:
                log("coarse stage: no trial succeeded, nothing to refine")
            else:
                fine_points = refine_points(spec.space, best["point"], spec.refine,
                                            spec.sample_seed)
                fine = plan_trials(spec, fine_points, stage=2)
                log(f"refining around {_describe(best['point'])}: {len(fine)} trials")
                stages.run(fine)
    records = list(stages.records.values())
    report = write_reports(out, records, options, plots)
    best = report["best"]
    if best is None:
        log("no trial succeeded; see results.md for the errors")
    else:
        log(f"best: {_describe(best['point'])}  val acc "
            f"{_pm(best['val_accuracy'], best['val_accuracy_std'], True)}  "
            f"(test acc {_pm(best['test_accuracy'], best['test_accuracy_std'], True)})")
    return {"out": out, "rows": report["rows"], "best": best, "records": records,
            "plots": report["plots"], "seconds": time.time() - started,
            "fine_points": fine_points, **stages.counts}
