"""How cost grows: samples/s against batch size and against hidden width."""

from __future__ import annotations

from handprop.bench import bench_engines, measure_config, mlp_name, throughput, torch_available
from handprop.bench.workload import MIN_EPOCH_SAMPLES

SCALING_BATCHES = (1, 4, 16, 64, 256, 1024, 4096)
SCALING_WIDTHS = (32, 128, 512, 2048)


def measure_scaling(engines=None, batches=SCALING_BATCHES, widths=SCALING_WIDTHS,
                    repeats: int = 3, samples: int = MIN_EPOCH_SAMPLES, with_torch: bool | None = None,
                    log=None) -> list[dict]:
    """Samples/s against batch size (784-100-10 sigmoid, SGD) and against hidden
    width (784-W-10 relu, SGD, batch 128), engines side by side."""
    engines = bench_engines(engines)
    if with_torch is None:
        with_torch = torch_available()
    rows = []
    plan = [("batch", b, ([100], "sigmoid"), b) for b in batches]
    plan += [("width", w, ([w], "relu"), 128) for w in widths]
    for axis, value, model, batch in plan:
        steps = max(3, -(-samples // batch))
        if log:
            log(f"  scaling {axis}={value}: {steps} steps x {repeats}")
        secs, steps = measure_config(model, batch, "sgd", engines, steps=steps,
                                     repeats=repeats, with_torch=with_torch, with_ceiling=True)
        for label, st in secs.items():
            t = throughput(st, steps * batch)
            rows.append({"axis": axis, "value": value, "engine": label,
                         "model": mlp_name(*model), "batch": batch,
                         **t.as_dict("samples_per_s")})
    return rows


def plot_scaling(rows: list[dict], path) -> None:
    from handprop.plotting import pyplot, save_figure

    fig, axes = pyplot().subplots(1, 2, figsize=(11, 4.2))
    for ax, axis, xlabel in ((axes[0], "batch", "batch size (784-100-10 sigmoid, SGD)"),
                             (axes[1], "width", "hidden width (784-W-10 relu, SGD, batch 128)")):
        sel = [r for r in rows if r["axis"] == axis]
        for label in dict.fromkeys(r["engine"] for r in sel):
            pts = [(r["value"], r["samples_per_s"]) for r in sel if r["engine"] == label]
            ax.plot(*zip(*pts), marker="o", label=label,
                    linestyle="--" if label == "ceiling" else "-")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("samples / s (median)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    save_figure(fig, path, dpi=110)
