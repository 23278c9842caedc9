"""Self-check of an engine: every fused primitive against the ``cpu`` reference.

Every case of the primitive table (``cases.py``) runs on the engine under test and on the
reference with the same seeded inputs, in float32 and float64, on its shapes (one element,
a small odd shape, one larger than a 256-thread block) with random and extreme values
(|x| = 1e4, zeros, tiny numbers). ``run_checks`` gives one ``Check`` per case and dtype;
``handprop doctor`` prints them.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field

# Element-wise tolerance |a - r| <= atol + rtol |r|: float32 allows a few ulp
# (GPU fused multiply-add, tanhf); float64 is near-exact.
TOLERANCES = {"float32": (1e-5, 1e-6), "float64": (1e-11, 1e-13)}


@dataclass
class Check:
    primitive: str
    dtype: str
    cases: int = 0
    worst: float = 0.0  # max |a - r| / (atol + rtol |r|); <= 1 passes
    max_abs: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and self.worst <= 1.0


def compare(check: Check, label: str, actual, expected) -> None:
    import numpy as np

    rtol, atol = TOLERANCES[check.dtype]
    a = np.asarray(actual, dtype=np.float64)
    r = np.asarray(expected, dtype=np.float64)
    check.cases += 1
    if a.shape != r.shape:
        check.errors.append(f"{label}: shape {a.shape} != {r.shape}")
        return
    both_nan = np.isnan(a) & np.isnan(r)
    same_inf = np.isinf(a) & (a == r)
    diff = np.where(both_nan | same_inf, 0.0, np.abs(a - r))
    diff = np.where(np.isnan(diff), np.inf, diff)  # NaN on one side only
    if diff.size:
        check.max_abs = max(check.max_abs, float(diff.max()))
        worst = float((diff / (atol + rtol * np.abs(np.nan_to_num(r)))).max())
        if worst > check.worst:
            check.worst = worst
            if worst > 1.0:
                check.errors.append(f"{label}: max |diff| {float(diff.max()):.3g}")


def run_checks(engine, reference, dtypes=("float32", "float64"), seed: int = 0) -> list[Check]:
    """Compare every case of the primitive table (``cases.py``) on ``engine`` with
    ``reference``; one Check per case and dtype."""
    import numpy as np

    from .cases import all_cases, trials

    checks: list[Check] = []
    for dtype in dtypes:
        for case in all_cases():
            check = Check(case.name, dtype)
            checks.append(check)
            for label, inputs in trials(case, dtype, seed):
                try:
                    mine = case.call(engine, lambda a: engine.asarray(np.array(a)), inputs)
                    ref = case.call(reference, lambda a: reference.asarray(np.array(a)), inputs)
                except Exception as exc:  # a kernel that fails to build or launch fails its check
                    check.errors.append(f"{label}: {type(exc).__name__}: {exc}")
                    continue
                scales = case.scale(inputs) if case.scale else [None] * len(mine)
                for (name, a), (_, r), scale in zip(mine, ref, scales):
                    a, r = engine.to_numpy(a), reference.to_numpy(r)
                    if scale is not None:
                        a, r = a / scale, r / scale
                    compare(check, f"{label}{name and ' ' + name.strip()}", a, r)
    return checks


def device_name(engine) -> str:
    info = engine.describe()
    if info.get("device"):
        return str(info["device"])
    return f"host CPU ({platform.processor() or platform.machine() or 'unknown'})"
