"""`handprop doctor`: check an engine's fused primitives against the cpu reference.

The checks live in ``handprop.engines.selfcheck``; this prints them as a table
and a verdict line that names the device. Exit status: 0 all match, 1 a
mismatch, 2 the engine cannot run here (the reason is printed).
"""

from __future__ import annotations

from . import add_backend_argument


def register(subparsers):
    p = subparsers.add_parser(
        "doctor",
        help="check an engine's fused primitives against the cpu reference",
        description="Run every fused primitive (bias+activation forward and backward, softmax "
        "cross-entropy, bias gradient, sum of squares, batch norm, im2col/col2im, max and "
        "average pooling, SGD/momentum/Nesterov/Adam updates) on "
        "the chosen engine and on the cpu reference, on a few shapes including extreme values, "
        "and print a per-check table and a verdict. Exit 0 when all match, 1 on a mismatch, "
        "2 when the engine cannot run here.",
    )
    add_backend_argument(p)
    p.add_argument("--dtype", choices=("float32", "float64", "both"), default="both",
                   help="precision(s) to check (default: both)")
    p.set_defaults(func=run)


def format_table(checks) -> str:
    """One row per ``selfcheck.Check``, then the first errors of each failed one."""
    header = ("check", "dtype", "cases", "max |diff|", "worst/tol", "result")
    rows = [(c.primitive, c.dtype, str(c.cases), f"{c.max_abs:.2e}", f"{c.worst:.2f}",
             "ok" if c.ok else "MISMATCH") for c in checks]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip()  # noqa: E731
    out = [line(header), line(tuple("-" * w for w in widths)), *map(line, rows)]
    for c in checks:
        for err in c.errors[:3]:
            out.append(f"  {c.primitive} {c.dtype}: {err}")
    return "\n".join(out)


def format_implementations(engine) -> str:
    """Which implementation runs each window product on the checked image geometries."""
    from ..engines.cases import IMAGES, filters_for

    lines = [f"window products on {engine.name} (x shape, window, stride, padding: "
             f"forward / weight gradient / first layer's backward / input gradient)"]
    for x_shape, window, stride, padding in IMAGES:
        chosen = engine.window_implementations(filters_for(x_shape), x_shape[1], window, stride,
                                               padding)
        lines.append(f"  {x_shape} {window} {stride} {padding}, {filters_for(x_shape)} filters: "
                     + " / ".join(chosen.values()))
    return "\n".join(lines)


def run(args) -> int:
    from ..engines import get_engine
    from ..engines.selfcheck import device_name, run_checks

    engine = get_engine(args.backend)  # EngineUnavailableError -> exit 2 with the reason
    reference = get_engine("cpu")
    dtypes = ("float32", "float64") if args.dtype == "both" else (args.dtype,)
    checks = run_checks(engine, reference, dtypes)
    print(format_table(checks))
    print()
    print(format_implementations(engine))
    failed = [c for c in checks if not c.ok]
    where = f"on {engine.name} ({device_name(engine)})"
    if failed:
        print(f"FAIL: {len(failed)} of {len(checks)} checks differ from the cpu reference {where}")
        return 1
    print(f"PASS: all {len(checks)} checks match the cpu reference {where}")
    return 0
