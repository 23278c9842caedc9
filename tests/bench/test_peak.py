"""The FMA peak's loop does its work (nothing folded away) on either vector width. No speed
is asserted."""

from __future__ import annotations

import math

import numpy as np
import pytest

from handprop.engines import engine_status

pytestmark = pytest.mark.skipif(not engine_status("numba").available,
                                reason="the FMA loop is compiled by Numba")


@pytest.mark.parametrize("lanes", [8, 16])
def test_the_chains_compute_what_they_count(lanes):
    from handprop.bench.peak import CHAINS, _kernel

    kernel = _kernel(lanes)
    results = []
    for iterations in (0, 1, 3):
        out = np.full(lanes, 0.5, np.float32)
        kernel(iterations, out)
        results.append(out.copy())
    # by hand: chain i starts at 0.5 + i/1000 and becomes x * 0.5 + 0.0005 each iteration
    want = []
    for iterations in (0, 1, 3):
        total = 0.0
        for i in range(CHAINS):
            x = np.float32(0.5 + i * 1e-3)
            for _ in range(iterations):
                x = np.float32(x * np.float32(0.5) + np.float32(0.5) * np.float32(1e-3))
            total += x
        want.append(total)
    for got, expected in zip(results, want):
        np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert not np.allclose(results[0], results[2])


def test_the_peak_is_a_finite_positive_rate():
    from handprop.bench.peak import fma_peak_gflops

    peak = fma_peak_gflops(threads=1, seconds=0.02)
    assert math.isfinite(peak) and peak > 0
