"""Each fused primitive on its own, per engine, at the shapes the benchmark models
produce (bias+activation, activation backward, bias gradient, softmax
cross-entropy, SGD and Adam updates over all parameters)."""

from __future__ import annotations

import pytest
from benchlib import ENGINES
from benchlib.primitives import primitive_cases

from handprop import bench as hb
from handprop.engines import get_engine

CASES = [(model, batch, name) for model in hb.MODELS for batch in hb.BATCHES
         for name in primitive_cases(model, batch, "cpu")]


@pytest.mark.parametrize("model, batch, primitive", CASES,
                         ids=[f"{m.split()[0]}-b{b}-{p.split(' (')[0].replace(' ', '_')}"
                              for m, b, p in CASES])
@pytest.mark.parametrize("engine", ENGINES)
def test_primitive(benchmark, record, engine, model, batch, primitive):
    fn = primitive_cases(model, batch, engine)[primitive]
    eng = get_engine(engine)
    benchmark.group = f"{primitive} {model}"

    def call():
        fn()
        eng.synchronize()

    benchmark.pedantic(call, rounds=200, iterations=5, warmup_rounds=20)
    record(model=model, batch=batch, primitive=primitive)
