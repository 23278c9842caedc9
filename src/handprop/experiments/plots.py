"""Sweep plots (matplotlib PNGs, no display needed).

* ``curves.png``: loss and accuracy against epoch, one colour per point (per
  value of the swept option), train dashed and validation solid; with several
  seeds the line is their mean and the band +-1 standard deviation.
* ``val_vs_<option>.png``: final validation accuracy and loss against each
  numeric option (training dashed beside it), on a log axis when the values
  are log-spaced (symlog when they include 0), mean with a +-1 std band.
* ``heatmap_<a>_<b>.png``: mean validation accuracy over two swept options
  (the best over any other option); a coloured scatter when the values are
  continuous (random search).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..plotting import pyplot, save_figure
from .space import axis_scale, is_number

MAX_CURVES = 10
MAX_CELLS = 12  # distinct values per axis drawn as a heat map; beyond, a scatter


def _label(point: dict) -> str:
    def fmt(v):
        return f"{v:g}" if isinstance(v, float) else str(v)
    return ", ".join(f"{k}={fmt(v)}" for k, v in point.items()) or "base configuration"


def _ok(row):
    return [r for r in row["records"] if r["status"] == "ok" and r["history"]]


def _epoch_stats(records, key):
    """Mean and std per epoch over seeds (runs may stop early at different epochs)."""
    by_epoch: dict[int, list[float]] = {}
    for r in records:
        for h in r["history"]:
            if h.get(key) is not None:
                by_epoch.setdefault(h["epoch"], []).append(h[key])
    epochs = sorted(by_epoch)
    mean = np.array([np.mean(by_epoch[e]) for e in epochs])
    std = np.array([np.std(by_epoch[e], ddof=1) if len(by_epoch[e]) > 1 else 0.0
                    for e in epochs])
    return np.array(epochs), mean, std


def _set_scale(ax, values, axis="x"):
    scale = axis_scale(values)
    setter = ax.set_xscale if axis == "x" else ax.set_yscale
    if scale == "log":
        setter("log")
    elif scale == "symlog":
        setter("symlog", linthresh=min(v for v in values if v > 0))
    return scale


def plot_curves_by_point(rows: list[dict], options: list[str], path) -> Path:
    """Loss and accuracy per epoch, one curve per point of the sweep (mean over seeds,
    with a band of one standard deviation), train dashed and validation solid."""
    plt = pyplot()
    rows = [r for r in rows if _ok(r)]
    shown = rows[:MAX_CURVES]
    numeric = len(options) == 1 and all(is_number(r["point"][options[0]]) for r in shown)
    if numeric:  # one swept number: order the legend by value, colour along a colormap
        shown = sorted(shown, key=lambda r: r["point"][options[0]])
        colors = plt.cm.viridis(np.linspace(0, 0.9, max(len(shown), 1)))
    else:
        colors = [plt.cm.tab10(i % 10) for i in range(len(shown))]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(12, 4.5))
    for row, color in zip(shown, colors):
        records = _ok(row)
        for ax, metric in ((ax_loss, "loss"), (ax_acc, "acc")):
            for split, style in (("train", "--"), ("val", "-")):
                epochs, mean, std = _epoch_stats(records, f"{split}_{metric}")
                if not len(epochs):
                    continue
                label = _label(row["point"]) if split == "val" and metric == "loss" else None
                ax.plot(epochs, mean, style, color=color, lw=1.6, label=label)
                if len(records) > 1:
                    ax.fill_between(epochs, mean - std, mean + std, color=color, alpha=0.15,
                                    lw=0)
                    if len(shown) == 1 and split == "val":  # one point: show each seed too
                        for r in records:
                            e, v, _ = _epoch_stats([r], f"{split}_{metric}")
                            ax.plot(e, v, "-", color=color, lw=0.6, alpha=0.5)
    seeds = max((len(_ok(r)) for r in shown), default=0)
    for ax, name in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    low, high = ax_loss.get_ylim()
    if low > 0 and high / low > 3:  # a log axis only helps when the loss spans a wide range
        ax_loss.set_yscale("log")
    ax_loss.plot([], [], "k--", label="train (dashed)")
    ax_loss.plot([], [], "k-", label="validation (solid)")
    ax_loss.legend(fontsize=8)
    title = "loss and accuracy per epoch"
    if len(rows) > len(shown):
        title += f" ({len(shown)} best of {len(rows)} points)"
    if seeds > 1:
        title += f"; mean ± 1 std over {seeds} seeds"
    fig.suptitle(title)
    return save_figure(fig, path)


def plot_metric_vs_option(rows: list[dict], options: list[str], option: str, path) -> Path:
    """Final validation accuracy and loss against ``option``; one line per combination of
    the other options when there are few, else a scatter."""
    plt = pyplot()
    others = [o for o in options if o != option]
    groups: dict[str, list[dict]] = {}
    for row in rows:
        if _ok(row):
            key = _label({o: row["point"][o] for o in others}) if others else ""
            groups.setdefault(key, []).append(row)
    lines = len(groups) <= 6
    if not lines:
        groups = {"": [r for g in groups.values() for r in g]}
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(12, 4.5))
    values = [row["point"][option] for g in groups.values() for row in g]
    for i, (name, members) in enumerate(sorted(groups.items())):
        members = sorted(members, key=lambda r: r["point"][option])
        x = np.array([float(r["point"][option]) for r in members])
        color = plt.cm.tab10(i % 10)
        for ax, metric in ((ax_acc, "accuracy"), (ax_loss, "loss")):
            for split, style in (("train", "--"), ("val", "-")):
                stats = [_final(_ok(r), f"{split}_{metric}") for r in members]
                mean = np.array([s[0] for s in stats])
                std = np.array([s[1] for s in stats])
                label = (name or "validation") if split == "val" else None
                if lines:
                    ax.plot(x, mean, style + "o", color=color, ms=4, lw=1.4, label=label)
                    if any(len(_ok(r)) > 1 for r in members):
                        ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.15,
                                        lw=0)
                elif split == "val":
                    ax.errorbar(x, mean, yerr=std, fmt="o", color=color, ms=4, capsize=2)
    for ax, name in ((ax_acc, "final accuracy"), (ax_loss, "final loss")):
        scale = _set_scale(ax, values)
        ax.set_xlabel(option + ("" if scale == "linear" else f" ({scale} axis)"))
        ax.set_ylabel(name)
        ax.grid(alpha=0.3, which="both")
    if lines:
        ax_acc.plot([], [], "k--", label="train (dashed)")
        ax_acc.legend(fontsize=8)
    fig.suptitle(f"validation (solid) and training (dashed) against {option}")
    return save_figure(fig, path)


def _final(records, key):
    """Mean and std over seeds of a final metric (``val_accuracy``, ``train_loss``, ...)."""
    values = [r["metrics"].get(key) for r in records]
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return math.nan, 0.0
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def plot_heatmap(rows: list[dict], a: str, b: str, path) -> Path:
    """Mean validation accuracy over options ``a`` (x) and ``b`` (y)."""
    plt = pyplot()
    cells: dict[tuple, float] = {}
    distinct = [{repr(r["point"][o]) for r in rows} for o in (a, b)]
    # Few distinct values: a grid of cells; continuous numbers (random search): a scatter.
    continuous = (max(map(len, distinct)) > MAX_CELLS
                  and all(is_number(r["point"][o]) for r in rows for o in (a, b)))
    for row in rows:
        if row["val_accuracy"] is None:
            continue
        key = (_tick(row["point"][a]), _tick(row["point"][b])) if not continuous else \
            (row["point"][a], row["point"][b])
        cells[key] = max(cells.get(key, -1.0), row["val_accuracy"])  # best over other options
    order = {_tick(r["point"][o]): _sort_key(r["point"][o]) for r in rows for o in (a, b)}
    xs = sorted({k[0] for k in cells}, key=lambda v: order.get(v, (1, 0.0, str(v))))
    ys = sorted({k[1] for k in cells}, key=lambda v: order.get(v, (1, 0.0, str(v))))
    fig, ax = plt.subplots(figsize=(7, 5.5) if continuous else
                           (1.2 * max(len(xs), 4) + 2, 0.6 * max(len(ys), 4) + 2))
    if not continuous:
        grid = np.full((len(ys), len(xs)), np.nan)
        for (x, y), acc in cells.items():
            grid[ys.index(y), xs.index(x)] = acc
        image = ax.imshow(grid, cmap="viridis", origin="lower", aspect="auto")
        ax.set_xticks(range(len(xs)), xs)
        ax.set_yticks(range(len(ys)), ys)
        finite = grid[np.isfinite(grid)]
        middle = (finite.min() + finite.max()) / 2 if finite.size else 0
        for (i, j), acc in np.ndenumerate(grid):
            if np.isfinite(acc):
                ax.text(j, i, f"{acc:.1%}", ha="center", va="center", fontsize=8,
                        color="black" if acc > middle else "white")
    else:  # continuous values (random search): a scatter coloured by accuracy
        keys = list(cells)
        image = ax.scatter([float(k[0]) for k in keys], [float(k[1]) for k in keys],
                           c=[cells[k] for k in keys], cmap="viridis", s=40)
        _set_scale(ax, [float(k[0]) for k in keys], "x")
        _set_scale(ax, [float(k[1]) for k in keys], "y")
    fig.colorbar(image, ax=ax, label="validation accuracy (mean over seeds)")
    ax.set_xlabel(a)
    ax.set_ylabel(b)
    ax.set_title(f"validation accuracy over {a} and {b}")
    return save_figure(fig, path)


def _sort_key(value):
    return (0, float(value), "") if is_number(value) else (1, 0.0, _tick(value))


def _tick(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):  # hidden widths
        return "x".join(map(str, value))
    return str(value)


def write_plots(records: list[dict], rows: list[dict], options: list[str], plot_dir) -> list[Path]:
    """Every plot that fits the sweep's options; returns the files written."""
    plot_dir = Path(plot_dir)
    written = [plot_curves_by_point(rows, options, plot_dir / "curves.png")]
    varied = [o for o in options
              if len({repr(r["point"][o]) for r in rows if r["val_accuracy"] is not None}) > 1]
    for option in varied:
        if all(is_number(r["point"][option]) for r in rows):
            written.append(plot_metric_vs_option(rows, options, option,
                                                 plot_dir / f"val_vs_{option}.png"))
    for i, a in enumerate(varied):
        for b in varied[i + 1:]:
            written.append(plot_heatmap(rows, a, b, plot_dir / f"heatmap_{a}_{b}.png"))
    return written
