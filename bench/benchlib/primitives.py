"""Each fused primitive on its own, at the shapes the benchmark models produce."""

from __future__ import annotations

import numpy as np

from handprop.bench import CLASSES, INPUT_DIM, Stat, bench_engines, resolve_model, time_call
from handprop.bench.report import fmt, table


def primitive_cases(model, batch: int, engine_name: str, seed: int = 0) -> dict:
    """``name -> zero-argument callable`` for each fused primitive of ``model``
    at ``batch``, on engine ``engine_name`` (inputs built once, outside timing)."""
    from handprop.engines import get_engine

    engine = get_engine(engine_name)
    engine.warmup()
    name, (hidden, activation) = resolve_model(model)
    dims = [INPUT_DIM, *hidden, CLASSES]
    rng = np.random.default_rng(seed)
    f32 = np.float32

    def arr(*shape, scale=1.0):
        return engine.asarray(rng.standard_normal(shape).astype(f32) * f32(scale), "float32")

    cases = {}
    for units in sorted(set(hidden)):
        z, b = arr(batch, units), arr(units)
        out = engine.bias_act(z, b, activation)
        g = arr(batch, units)
        cases[f"bias_act {activation} ({batch},{units})"] = (
            lambda z=z, b=b: engine.bias_act(z, b, activation))
        cases[f"act_backward {activation} ({batch},{units})"] = (
            lambda g=g, out=out: engine.act_backward(g, out, activation))
        cases[f"bias_grad ({batch},{units})"] = lambda g=g: engine.bias_grad(g)
    logits = arr(batch, CLASSES, scale=3.0)
    labels = engine.asarray(rng.integers(0, CLASSES, batch))
    b_out = arr(CLASSES)
    cases[f"bias_act identity ({batch},{CLASSES})"] = (
        lambda: engine.bias_act(logits, b_out, "identity"))
    cases[f"softmax_xent ({batch},{CLASSES})"] = lambda: engine.softmax_xent(logits, labels)
    shapes = [s for a, b in zip(dims[:-1], dims[1:]) for s in ((a, b), (b,))]
    params = [arr(*s, scale=0.05) for s in shapes]
    grads = [arr(*s, scale=0.01) for s in shapes]
    ms = [engine.xp.zeros_like(p) for p in params]
    vs = [engine.xp.zeros_like(p) for p in params]
    pcount = sum(int(np.prod(s)) for s in shapes)

    def sgd():
        for p, g in zip(params, grads):
            engine.sgd_update(p, g, 1e-6)

    step = [0]

    def adam():
        step[0] += 1
        for p, g, m, v in zip(params, grads, ms, vs):
            engine.adam_update(p, g, m, v, 1e-6, 0.9, 0.999, 1e-8, step[0])

    cases[f"sgd_update all params ({pcount:,})"] = sgd
    cases[f"adam_update all params ({pcount:,})"] = adam
    return cases


def measure_primitives(models=None, batches=None, engines=None, repeats: int = 5,
                       min_seconds: float = 0.05) -> list[dict]:
    """Microseconds per call of each fused primitive, engines side by side."""
    from handprop.bench import BATCHES, MODELS
    from handprop.engines import get_engine

    models = models or tuple(MODELS)
    batches = batches or BATCHES
    engines = bench_engines(engines)
    rows = []
    for model in models:
        name, _ = resolve_model(model)
        for batch in batches:
            cases = {e: primitive_cases(model, batch, e) for e in engines}
            for case in cases[engines[0]]:
                stats = {}
                for rep in range(repeats):  # interleave engines
                    for e in engines:
                        s = time_call(cases[e][case], min_seconds, repeats=1,
                                      synchronize=get_engine(e).synchronize)
                        stats.setdefault(e, Stat()).values.extend(s.values)
                for e in engines:
                    st = stats[e]
                    rows.append({"engine": e, "model": name, "batch": batch, "primitive": case,
                                 "us": st.median * 1e6, "us_min": st.min * 1e6,
                                 "us_max": st.max * 1e6,
                                 "speedup_vs_cpu": (stats["cpu"].median / st.median
                                                    if "cpu" in stats else None)})
    return rows


def format_primitive_table(rows: list[dict], markdown: bool = False) -> str:
    head = ["model", "batch", "primitive", "engine", "us/call median [min-max]", "x cpu"]
    body = [[r["model"], str(r["batch"]), r["primitive"], r["engine"],
             f"{r['us']:.1f} [{r['us_min']:.1f}-{r['us_max']:.1f}]",
             fmt(r.get("speedup_vs_cpu"), ".2f")] for r in rows]
    return table(head, body, markdown)
