"""Tables, comparison with a saved run, and the bar chart."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import ConfigError

#: key fields that identify a row (for --compare)
ROW_KEY = ("engine", "model", "batch", "optimizer", "profile")


def fmt(value, spec=",.0f", none="-"):
    return none if value is None else format(value, spec)


def table(head, body, markdown=False) -> str:
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines)
    widths = [max(len(str(c)) for c in col) for col in zip(head, *body)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(head, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in body]
    return "\n".join(lines)


#: comparator columns beyond PyTorch eager: (row-key prefix, shown name)
EXTRA_COMPARATORS = (("torch_compile", "torch.compile"), ("jax_scan", "jax scan"),
                     ("jax_step", "jax step"))


def _present(rows, key) -> bool:
    return any(r.get(key) is not None for r in rows)


def rate_cell(row: dict, key: str) -> str:
    """``median [min-max]`` of a samples/s figure."""
    if row.get(key) is None:
        return "-"
    return f"{fmt(row[key])} [{fmt(row.get(key + '_min'))}-{fmt(row.get(key + '_max'))}]"


def ratio_cell(row: dict, key: str, scale: float = 1.0, spec: str = ".2f") -> str:
    """``median [min-max]`` of a per-round ratio."""
    if row.get(key) is None:
        return "-"
    low, high = row.get(key + "_min"), row.get(key + "_max")
    text = format(row[key] * scale, spec)
    if low is not None and high is not None:
        text += f" [{low * scale:{spec}}-{high * scale:{spec}}]"
    return text


def noise_mark(row: dict) -> str:
    return f"{100 * row.get('spread', 0):.0f} %" + (" noisy" if row.get("noisy") else "")


def format_training_table(rows: list[dict], markdown: bool = False) -> str:
    """engine, model, batch, optimizer, samples/s (median [min-max]) and its spread, then
    ratios: the median [min-max] of the per-round ratios against every runner measured in
    the same rounds; a row whose own spread is over 25 % is marked noisy."""
    has_cpu = _present(rows, "ratio_to_cpu")
    has_torch = _present(rows, "torch_samples_per_s")
    has_ceiling = _present(rows, "ceiling_samples_per_s")
    extras = [(key, name) for key, name in EXTRA_COMPARATORS
              if _present(rows, f"{key}_samples_per_s")]
    head = ["engine", "model", "batch", "opt", "samples/s median [min-max]", "spread"]
    head += ["x cpu"] if has_cpu else []
    head += ["x torch"] if has_torch else []
    head += [f"x {name}" for _, name in extras]
    has_peak = _present(rows, "fma_share")
    if has_ceiling:
        head += ["% GEMM ceiling", "GFLOP/s", "% sgemm"]
    head += ["% FMA peak"] if has_peak else []
    body = []
    for r in rows:
        cells = [r["engine"], r["model"], str(r["batch"]), r.get("optimizer", "-"),
                 rate_cell(r, "samples_per_s"), noise_mark(r)]
        cells += [ratio_cell(r, "ratio_to_cpu")] if has_cpu else []
        cells += [ratio_cell(r, "ratio_to_torch")] if has_torch else []
        cells += [ratio_cell(r, f"ratio_to_{key}") for key, _ in extras]
        if has_ceiling:
            share = r.get("sgemm_share")
            cells += [ratio_cell(r, "ceiling_share", 100, ".0f"), fmt(r.get("gflops"), ".1f"),
                      fmt(None if share is None else 100 * share, ".0f")]
        if has_peak:
            peak = r.get("fma_share")
            cells.append(fmt(None if peak is None else 100 * peak, ".0f"))
        body.append(cells)
    return table(head, body, markdown)


def side_by_side(rows: list[dict]) -> tuple[list, dict]:
    """``(columns, {(model, batch, optimizer): {column: median samples/s}})``: every
    handprop row, then each comparator, then the GEMM-only ceiling."""
    columns = list(dict.fromkeys(r["engine"] for r in rows))
    others = [("torch", "PyTorch eager"), *EXTRA_COMPARATORS, ("ceiling", "GEMM-only ceiling")]
    others = [(key, name) for key, name in others if _present(rows, f"{key}_samples_per_s")]
    groups: dict = {}
    for r in rows:
        cells = groups.setdefault((r["model"], r["batch"], r.get("optimizer")), {})
        cells[r["engine"]] = r["samples_per_s"]
        for key, name in others:
            if r.get(f"{key}_samples_per_s") is not None:
                cells.setdefault(name, r[f"{key}_samples_per_s"])
    return columns + [name for _, name in others], groups


def format_side_by_side(rows: list[dict], markdown: bool = False) -> str:
    """One line per (model, batch, optimizer), one column per runner: median samples/s."""
    columns, groups = side_by_side(rows)
    head = ["model", "batch", "opt", *columns]
    body = [[m, str(b), o or "-", *[fmt(cells.get(c)) for c in columns]]
            for (m, b, o), cells in groups.items()]
    return table(head, body, markdown)


def probe_note(rows: list[dict]) -> str:
    """One sentence for a report: did handprop's timed epochs in ``rows`` (one saved
    run's handprop rows) include the trainer's per-epoch gradient-norm probe? Rows
    measured since the benchmark turns it off carry ``gradient_probe`` (0); rows
    saved before carry none, and their epochs included the default 1,024-sample probe."""
    sizes = {r.get("gradient_probe") for r in rows}
    if not sizes:
        return ""
    if sizes == {0}:
        return ("handprop's timed epochs run `Trainer.fit` with its per-epoch gradient-norm "
                "probe off (`gradient_probe=0`): no comparator computes gradient norms.")
    if sizes <= {None}:
        return ("handprop's timed epochs here include `Trainer.fit`'s per-epoch gradient-norm "
                "probe (a forward and backward pass over the first 1,024 training samples, "
                "which no comparator runs): this run was saved before the benchmark turned "
                "the probe off.")
    shown = ", ".join("1024 (not recorded)" if s is None else str(s)
                      for s in sorted(sizes, key=lambda s: -1 if s is None else s))
    return (f"handprop's timed epochs here ran `Trainer.fit`'s per-epoch gradient-norm probe "
            f"on different numbers of training samples (0 = off): {shown}.")


def row_key(row: dict) -> tuple:
    """A row's identity; rows saved before CPU profiles ran as the environment stood."""
    return tuple(row.get(k, "as-is" if k == "profile" else None) for k in ROW_KEY)


def compare_rows(rows: list[dict], saved: list[dict], threshold: float = 0.10) -> list[dict]:
    """Each row present in both, with the change in samples/s; ``regression`` is
    True where the new median is more than ``threshold`` below the saved one."""
    if not 0 <= threshold < 1:
        raise ConfigError(f"--threshold must be in [0, 1), got {threshold}")
    old = {row_key(r): r for r in saved if "samples_per_s" in r}
    out = []
    for r in rows:
        before = old.get(row_key(r))
        if before is None or not before.get("samples_per_s"):
            continue
        change = r["samples_per_s"] / before["samples_per_s"] - 1.0
        out.append({**{k: r.get(k) for k in ROW_KEY}, "saved_samples_per_s":
                    before["samples_per_s"], "samples_per_s": r["samples_per_s"],
                    "change": change, "regression": change < -threshold})
    return out


def format_comparison(diffs: list[dict], threshold: float) -> str:
    head = ["engine", "model", "batch", "opt", "saved samples/s", "now samples/s", "change", ""]
    body = [[d["engine"], d["model"], str(d["batch"]), str(d.get("optimizer") or "-"),
             fmt(d["saved_samples_per_s"]), fmt(d["samples_per_s"]),
             f"{100 * d['change']:+.1f}%",
             f"REGRESSION (> {100 * threshold:.0f}% slower)" if d["regression"] else ""]
            for d in diffs]
    return table(head, body)


def load_rows(path) -> list[dict]:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no saved benchmark file at {path}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not a JSON benchmark file: {exc}") from None
    if isinstance(data, dict):  # tolerate {"rows": [...]} too
        data = data.get("rows", [])
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise ConfigError(f"{path} does not hold a list of benchmark rows")
    return data


def plot_rows(rows: list[dict], path) -> None:
    """Bar chart of median samples/s per (model, batch, optimizer), one bar per
    handprop row and per comparator, and the GEMM-only ceiling when measured."""
    from ..plotting import pyplot, save_figure

    plt = pyplot()
    columns, groups = side_by_side(rows)
    keys = list(groups)
    width = 0.8 / max(1, len(columns))
    fig, ax = plt.subplots(figsize=(max(7, 0.25 * len(keys) * len(columns) + 2), 4.5))
    for i, column in enumerate(columns):
        xs = [j + i * width for j, k in enumerate(keys) if groups[k].get(column) is not None]
        values = [groups[k][column] for k in keys if groups[k].get(column) is not None]
        ax.bar(xs, values, width, label=column,
               hatch="//" if column == "GEMM-only ceiling" else None)
    ax.set_xticks([j + width * (len(columns) - 1) / 2 for j in range(len(keys))])
    ax.set_xticklabels([f"{m}\nbatch {b} {o or ''}" for m, b, o in keys], fontsize=7)
    ax.set_ylabel("samples / s (median)")
    ax.set_title("handprop training throughput")
    ax.legend(fontsize=7, ncol=2)
    save_figure(fig, path, dpi=110)
