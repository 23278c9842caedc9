"""`handprop info`: engines, threads, versions and settings of this machine.

The machine's facts come from ``handprop.host`` (which the benchmark and the
sweep executors read too). Nothing here imports Numba, CuPy or torch just to
read a version: ``importlib.metadata`` reads the installed distributions.
Numba is imported only to read its thread count, and only when it is installed.
"""

from __future__ import annotations

import json

from ..host import ENV_VARS


def register(subparsers):
    p = subparsers.add_parser(
        "info",
        help="engines (and why any is unavailable), threads, versions, settings",
        description="Report which engines can run here and why the others cannot, what "
        "`auto` resolves to, the default dtype, CPU/BLAS/Numba threads, library versions, "
        "the platform, and the environment variables that change handprop's behaviour.",
    )
    p.add_argument("--json", action="store_true", help="print a JSON object instead of tables")
    p.set_defaults(func=run)


def _backend_choice() -> dict:
    """What HANDPROP_BACKEND (if set) selects, or why that value is not usable."""
    import os

    from ..engines.registry import ENV_VAR, resolve_name
    from ..errors import HandpropError

    value = os.environ.get(ENV_VAR)
    choice = {"variable": ENV_VAR, "value": value, "resolves_to": None, "error": None}
    try:
        choice["resolves_to"] = resolve_name(value or "auto")
    except HandpropError as exc:
        choice["error"] = str(exc)
    return choice


def collect() -> dict:
    """Everything ``info`` reports, as plain JSON-ready data."""
    import inspect

    from .. import __version__, host
    from ..engines import available_engines, resolve_name
    from ..nn.model import Sequential

    return {
        "handprop": __version__,
        "engines": [{"name": s.name, "available": s.available, "reason": s.reason}
                    for s in available_engines()],
        "auto": resolve_name("auto"),
        "backend": _backend_choice(),
        # Read from the library so the report cannot drift from the real default.
        "default_dtype": inspect.signature(Sequential).parameters["dtype"].default,
        "threads": {
            "cpu_count": host.cpu_count(),
            "usable_cpus": host.usable_cpus(),
            "blas": host.thread_pools(),
            "numba": host.numba_threads(),
        },
        "kernels": _kernels(),
        "versions": host.library_versions(),
        "platform": host.platform_facts(),
        "environment": host.environment_variables(),
    }


def _kernels() -> dict:
    """The vector kernels that run here: BLAS's, Numba's target CPU, direct convolutions."""
    from .. import host
    from ..bench.profiles import direct_convolutions, numba_target, vector_isa

    return {"blas": host.blas_kernel(), "numba_cpu": numba_target(), "vectors": vector_isa(),
            "direct_convolutions": direct_convolutions()}


def _rows(rows, indent="  ") -> list[str]:
    width = max(len(k) for k, _ in rows)
    return [f"{indent}{k.ljust(width)}  {v}" for k, v in rows]


def format_info(info: dict) -> str:
    out = [f"handprop {info['handprop']}", "", "engines"]
    out += _rows([(e["name"], "available" if e["available"] else f"unavailable: {e['reason']}")
                  for e in info["engines"]])
    b = info["backend"]
    if b["value"] is None:
        choice = f"not set (auto -> {info['auto']})"
    elif b["error"]:
        choice = f"{b['value']!r} is not usable: {b['error']}"
    else:
        choice = f"{b['value']!r} -> {b['resolves_to']}"
    out += ["", "selection"]
    out += _rows([("auto", f"resolves to {info['auto']}"), (b["variable"], choice),
                  ("default dtype", info["default_dtype"])])

    t = info["threads"]
    out += ["", "threads"]
    rows = [("cpu_count", t["cpu_count"])]
    if t["usable_cpus"] is not None:
        rows.append(("usable cpus", t["usable_cpus"]))
    for pool in t["blas"]:
        detail = f"{pool.get('num_threads')} threads"
        for key in ("version", "threading_layer", "architecture"):
            if pool.get(key):
                detail += f", {key.replace('_', ' ')} {pool[key]}"
        rows.append((f"{pool.get('user_api', 'blas')} ({pool.get('internal_api')})", detail))
    if not t["blas"]:
        rows.append(("blas", "no BLAS thread pool found (threadpoolctl missing?)"))
    rows.append(("numba", "not installed" if t["numba"] is None else t["numba"]))
    out += _rows(rows)

    k = info["kernels"]
    direct = {True: "on", False: "off: tiled GEMMs (the target CPU has neither AVX2 nor AVX-512)",
              None: "numba engine unavailable"}[k["direct_convolutions"]]
    out += ["", "kernels"]
    vectors = {"avx512": "AVX-512 (64-byte vectors, 32 registers)",
               "avx2": "AVX2 (32-byte vectors, 16 registers)"}.get(
        k["vectors"], "none: Numba's own loops and BLAS")
    out += _rows([("blas", k["blas"]), ("numba target cpu", k["numba_cpu"] or "not installed"),
                  ("vector kernels", vectors), ("direct convolutions", direct)])

    out += ["", "versions"]
    out += _rows([(k, v or "not installed") for k, v in info["versions"].items()])
    out += ["", "platform"]
    out += _rows(list(info["platform"].items()))
    out += ["", "environment"]
    out += _rows(list(info["environment"].items())) if info["environment"] else \
        ["  none of " + ", ".join(ENV_VARS) + " is set"]
    return "\n".join(out)


def run(args) -> int:
    info = collect()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(format_info(info))
    return 0
