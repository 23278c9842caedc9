"""Repeated measurements and how they are timed."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field


@dataclass
class Stat:
    """Repeated measurements of one quantity (e.g. samples/s)."""

    values: list[float] = field(default_factory=list)

    @property
    def min(self) -> float:
        return min(self.values)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def max(self) -> float:
        return max(self.values)

    def as_dict(self, prefix: str) -> dict:
        return {f"{prefix}": self.median, f"{prefix}_min": self.min, f"{prefix}_max": self.max}


def throughput(seconds: Stat, samples: int) -> Stat:
    """Samples per second of each repeat, from its seconds."""
    return Stat([samples / s for s in seconds.values])


def time_call(fn, min_seconds: float = 0.05, repeats: int = 5, synchronize=None) -> Stat:
    """Seconds per call of ``fn``: ``repeats`` timings of enough calls to last
    ``min_seconds`` each (after one warm-up call)."""
    fn()
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < min_seconds / 5 or calls < 3:
        fn()
        calls += 1
    per_call = (time.perf_counter() - started) / calls
    loops = max(3, int(min_seconds / max(per_call, 1e-9)))
    stat = Stat()
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(loops):
            fn()
        if synchronize:
            synchronize()
        stat.values.append((time.perf_counter() - started) / loops)
    return stat


def ratio_stat(numerator: Stat, denominator: Stat) -> Stat:
    """Round by round, ``numerator / denominator`` (for seconds: how many times faster the
    denominator's contender ran than the numerator's in the same round)."""
    if len(numerator.values) != len(denominator.values):
        raise ValueError("a per-round ratio needs the same rounds on both sides")
    return Stat([a / b for a, b in zip(numerator.values, denominator.values)])


def spread(stat: Stat) -> float:
    """(max - min) / median: how far one contender's rounds disagree with each other."""
    return (stat.max - stat.min) / stat.median if stat.values and stat.median else 0.0
