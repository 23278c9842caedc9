"""Freed host memory is kept for the next step: no page faults for a step's big arrays."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc",
                                reason="keeping freed memory is a glibc mallopt setting")

# Allocate, touch and free arrays of 6.4, 3.2 and 12.8 MB (a conv layer's output rows at batch
# 128 and its like) 20 times, as 20 training steps do, after making an engine; report the page faults and the setting.
PROBE = """
import json, resource, numpy as np
from handprop.engines import get_engine
from handprop.engines.host_memory import keep_freed_memory
get_engine("cpu")
def step():
    arrays = [np.empty(n, dtype=np.float32) for n in (1_600_000, 800_000, 3_200_000)]
    for a in arrays:
        a[:] = 1.0
step()  # the first step's pages are new either way
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"faults": faults, "set": keep_freed_memory()}))
"""


def probe(**env) -> dict:
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                            env={**os.environ, **env}, timeout=120, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_an_engine_keeps_freed_memory_so_each_step_costs_no_page_faults():
    kept = probe()
    assert kept["set"] is True
    assert kept["faults"] < 100  # up to 20 x 5,470 pages would fault without it
    left = probe(HANDPROP_KEEP_FREED_MEMORY="0")
    assert left["set"] is False
    assert left["faults"] > 10 * kept["faults"] + 1000
