"""Search spaces: grid axes, random distributions, and coarse-to-fine refinement.

A ``Space`` maps training options (the keys of ``handprop train``'s config)
either to a list of values (a grid axis) or to a ``Distribution`` sampled for
each random trial. Points are plain dicts ``{option: value}``; the grid part
is the cartesian product of the axes, and with distributions every grid point
is combined with each of the ``trials`` random samples.

Everything random is drawn from ``numpy.random.default_rng(sample_seed)`` in a
fixed order, so the same space and seed always give the same points, on any
machine. Sampled floats are rounded to 4 significant digits: trial names and
tables stay readable, and no sweep resolves a hyperparameter finer than that.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field

from ..errors import ConfigError

SIGNIFICANT_DIGITS = 4
DISTRIBUTIONS = ("uniform", "loguniform", "randint", "choice")
_CALL = re.compile(r"^\s*([a-z_]+)\s*\((.*)\)\s*$", re.S)


# ----------------------------------------------------------------- values
def parse_value(text: str):
    """``"0.1"`` -> 0.1, ``"5000"`` -> 5000, ``"true"`` -> True, ``"relu"`` -> "relu"."""
    text = text.strip()
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text.strip("'\"")


def round_sig(value: float, digits: int = SIGNIFICANT_DIGITS) -> float:
    if value == 0 or not math.isfinite(value):
        return float(value)
    return float(f"{value:.{digits - 1}e}")


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def axis_scale(values) -> str:
    """"log", "symlog" (zero plus log-spaced positives) or "linear" for numeric values.

    Log when the positive values span a factor of 20 or more, or are evenly
    spaced in ratio rather than in difference (0.01, 0.03, 0.1, ...; two values
    a factor of 10 or more apart).
    """
    nums = sorted({float(v) for v in values if is_number(v)})
    if len(nums) < 2 or nums[0] < 0:
        return "linear"
    positive = [v for v in nums if v > 0]
    if len(positive) < 2:
        return "linear"
    ratio = positive[-1] / positive[0]
    if len(positive) == 2:
        log = ratio >= 10
    else:
        def spread(xs):
            steps = [b - a for a, b in zip(xs, xs[1:])]
            mean = sum(steps) / len(steps)
            return (sum((d - mean) ** 2 for d in steps) / len(steps)) ** 0.5 / mean
        log = ratio >= 20 or (ratio >= 4 and spread([math.log(v) for v in positive])
                              < spread(positive))
    if not log:
        return "linear"
    return "log" if nums[0] > 0 else "symlog"


# ---------------------------------------------------------- distributions
@dataclass(frozen=True)
class Distribution:
    kind: str              # uniform | loguniform | randint | choice
    args: tuple

    def __post_init__(self):
        if self.kind not in DISTRIBUTIONS:
            raise ConfigError(f"unknown distribution {self.kind!r}; use one of "
                              f"{', '.join(d + '(...)' for d in DISTRIBUTIONS)}")
        if self.kind == "choice":
            if not self.args:
                raise ConfigError("choice(...) needs at least one value")
            return
        if len(self.args) != 2 or not all(is_number(a) for a in self.args):
            raise ConfigError(f"{self.kind}(low, high) takes two numbers; got {self}")
        low, high = self.args
        if not low < high:
            raise ConfigError(f"{self}: low must be below high")
        if self.kind == "loguniform" and low <= 0:
            raise ConfigError(f"{self}: both bounds must be > 0 (the exponent is uniform)")
        if self.kind == "randint" and not all(float(a).is_integer() for a in self.args):
            raise ConfigError(f"{self}: bounds must be whole numbers")

    def __str__(self):
        return f"{self.kind}({', '.join(map(str, self.args))})"

    @property
    def numeric(self) -> bool:
        return self.kind != "choice"

    @property
    def log(self) -> bool:
        return self.kind == "loguniform"

    def sample(self, rng):
        if self.kind == "choice":
            return self.args[int(rng.integers(len(self.args)))]
        low, high = self.args
        if self.kind == "uniform":
            return round_sig(rng.uniform(low, high))
        if self.kind == "loguniform":
            return round_sig(10 ** rng.uniform(math.log10(low), math.log10(high)))
        return int(rng.integers(int(low), int(high) + 1))  # randint: both ends included


def parse_distribution(text: str) -> Distribution:
    """``"loguniform(1e-5, 1e-1)"``, ``"uniform(0, 0.9)"``, ``"randint(16, 256)"``,
    ``"choice(relu, tanh)"``."""
    match = _CALL.match(text)
    if not match:
        raise ConfigError(f"{text!r} is not a distribution; write e.g. loguniform(1e-5,1e-1), "
                          f"uniform(0,0.9), randint(16,256) or choice(relu,tanh)")
    kind, inner = match.groups()
    # Values that hold commas themselves (architectures) are separated by ";".
    args = tuple(parse_value(a) for a in inner.split(";" if ";" in inner else ",") if a.strip())
    return Distribution(kind, args)


# ------------------------------------------------------------------ space
def option_key(name: str) -> str:
    """A config key from a config key or a `train` flag name (``decay-rate``, ``--loss``)."""
    from ..train.config import DEFAULTS, FLAG_KEYS

    bare = name.strip().lstrip("-")
    key = FLAG_KEYS.get(bare, bare.replace("-", "_"))
    if key == "seed":
        raise ConfigError("seeds are not part of the space: give them with --seeds 0,1,2 "
                          "(or seeds = [...] under [sweep])")
    if key not in DEFAULTS:
        import difflib

        close = difflib.get_close_matches(key, list(DEFAULTS), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"cannot sweep {name!r}: not a training option{hint}")
    return key


@dataclass
class Space:
    grid: dict = field(default_factory=dict)      # key -> list of values
    random: dict = field(default_factory=dict)    # key -> Distribution

    def __post_init__(self):
        both = set(self.grid) & set(self.random)
        if both:
            raise ConfigError(f"{', '.join(sorted(both))}: an option is either a grid axis "
                              f"or a distribution, not both")
        for key, values in self.grid.items():
            if not isinstance(values, list) or not values:
                raise ConfigError(f"grid axis {key} needs a non-empty list of values")
        if "arch" in self.grid:
            self.grid["arch"] = [_arch_value(v) for v in self.grid["arch"]]
        dist = self.random.get("arch")
        if dist is not None:
            if dist.kind != "choice":
                raise ConfigError(f"arch is drawn with choice(a; b; ...), not {dist.kind}(...)")
            self.random["arch"] = Distribution("choice", tuple(_arch_value(v) for v in dist.args))

    @property
    def options(self) -> list[str]:
        return list(self.grid) + list(self.random)

    def points(self, trials: int = 1, sample_seed: int = 0) -> list[dict]:
        """Grid product, each grid point combined with ``trials`` random samples."""
        import numpy as np

        keys = list(self.grid)
        grid_points = [dict(zip(keys, combo)) for combo in
                       itertools.product(*(self.grid[k] for k in keys))]
        if not self.random:
            return _dedupe(grid_points)
        if trials < 1:
            raise ConfigError(f"random search needs --trials >= 1; got {trials}")
        rng = np.random.default_rng(sample_seed)
        samples = [{k: self.random[k].sample(rng) for k in self.random} for _ in range(trials)]
        return _dedupe([{**g, **s} for g in grid_points for s in samples])

    def describe(self) -> dict:
        return {"grid": self.grid, "random": {k: str(d) for k, d in self.random.items()}}


def _arch_value(value):
    """One swept architecture (text, or a list of tokens) as its canonical text; None (``none``
    on the command line) is the --hidden MLP."""
    from ..nn.arch import normalize_arch

    try:
        return normalize_arch(value)
    except ConfigError as exc:
        raise ConfigError(f"swept arch {value!r}: {exc}") from None


def _dedupe(points: list[dict]) -> list[dict]:
    seen, out = set(), []
    for p in points:
        marker = repr(sorted(p.items()))
        if marker not in seen:
            seen.add(marker)
            out.append(p)
    return out


def parse_grid_flag(text: str) -> tuple[str, list]:
    """``"lr=0.01,0.1"`` -> ("lr", [0.01, 0.1]). Hidden widths use ``x``: ``hidden=64,128x128``.

    Values that hold commas themselves are separated by ``;``: architectures always
    (``"arch=dense:128,relu;dense:256,relu"``; ``none`` is the --hidden MLP), any option
    whose values contain a ``;`` (``"hidden=64;128,128"``).
    """
    name, sep, values = text.partition("=")
    if not sep or not values.strip():
        raise ConfigError(f"--grid takes OPTION=V1,V2,...; got {text!r}")
    key = option_key(name)
    separator = ";" if key == "arch" or ";" in values else ","
    return key, [parse_value(v) for v in values.split(separator) if v.strip()]


def parse_random_flag(text: str) -> tuple[str, Distribution]:
    """``"l2=loguniform(1e-5,1e-1)"`` -> ("l2", Distribution)."""
    name, sep, dist = text.partition("=")
    if not sep:
        raise ConfigError(f"--random takes OPTION=DIST(...), e.g. l2=loguniform(1e-5,1e-1); "
                          f"got {text!r}")
    return option_key(name), parse_distribution(dist)


def space_from_toml(section: dict) -> Space:
    """``[space]``: a list is a grid axis, a string like ``"loguniform(1e-5, 1e-1)"`` a
    distribution; ``[space.grid]`` / ``[space.random]`` tables say it explicitly."""
    grid, random = {}, {}
    for name, value in section.items():
        if name in ("grid", "random") and isinstance(value, dict):
            for sub, v in value.items():
                if name == "grid":
                    grid[option_key(sub)] = v if isinstance(v, list) else [v]
                else:
                    random[option_key(sub)] = parse_distribution(str(v))
        elif isinstance(value, list):
            grid[option_key(name)] = value
        elif isinstance(value, str) and _CALL.match(value):
            random[option_key(name)] = parse_distribution(value)
        else:
            raise ConfigError(f"[space] {name} = {value!r}: give a list of values (grid) or a "
                              f"distribution string such as \"loguniform(1e-5, 1e-1)\"")
    return Space(grid, random)


# ---------------------------------------------------------- coarse-to-fine
@dataclass(frozen=True)
class Refine:
    """Second stage around the best point of the first.

    A distribution's range is narrowed ``factor`` times (in log10 units for
    log-uniform), centred on the best value and shifted to stay inside the
    original bounds. A grid axis is refined between the best value's
    neighbours. ``mode="grid"`` takes ``points`` evenly spaced values per
    numeric option (their product when several), ``"random"`` draws ``points``
    samples. Non-numeric options stay at their best value.
    """

    factor: float = 4.0
    points: int = 5
    mode: str = "grid"

    def __post_init__(self):
        if self.mode not in ("grid", "random"):
            raise ConfigError(f"--refine-mode is grid or random; got {self.mode!r}")
        if not self.factor > 1:
            raise ConfigError(f"--refine-factor must be > 1 (how many times narrower); "
                              f"got {self.factor}")
        if self.points < 2:
            raise ConfigError(f"--refine-points must be at least 2; got {self.points}")


def refine_ranges(space: Space, best: dict, factor: float) -> dict:
    """``{option: (low, high, log, integer)}`` for every numeric option, around ``best``."""
    ranges = {}
    for key, dist in space.random.items():
        if not dist.numeric:
            continue
        low, high = (float(a) for a in dist.args)
        v = float(best[key])
        to, back = (math.log10, lambda t: 10 ** t) if dist.log else (float, float)
        width = (to(high) - to(low)) / factor
        start = min(max(to(v) - width / 2, to(low)), to(high) - width)
        ranges[key] = (back(start), back(start + width), dist.log, dist.kind == "randint")
    for key, values in space.grid.items():
        nums = sorted({v for v in values if is_number(v)})
        if len(nums) < 2 or len(nums) != len(values) or not is_number(best[key]):
            continue
        i = nums.index(best[key])
        low, high = nums[max(i - 1, 0)], nums[min(i + 1, len(nums) - 1)]
        log = axis_scale(nums) in ("log", "symlog") and low > 0
        integer = all(isinstance(v, int) for v in nums)
        ranges[key] = (float(low), float(high), log, integer)
    return ranges


def refine_points(space: Space, best: dict, refine: Refine, sample_seed: int = 0) -> list[dict]:
    """Points of the fine stage; seeded separately from the coarse stage."""
    import numpy as np

    ranges = refine_ranges(space, best, refine.factor)
    if not ranges:
        raise ConfigError("coarse-to-fine needs at least one numeric swept option "
                          "(a numeric grid axis or a uniform/loguniform/randint distribution)")

    def finish(value, log, integer):
        return int(round(value)) if integer else round_sig(value)

    fixed = {k: v for k, v in best.items() if k not in ranges}
    if refine.mode == "grid":
        axes = {}
        for key, (low, high, log, integer) in ranges.items():
            raw = (np.logspace(math.log10(low), math.log10(high), refine.points) if log
                   else np.linspace(low, high, refine.points))
            axes[key] = list(dict.fromkeys(finish(float(v), log, integer) for v in raw))
        combos = itertools.product(*axes.values())
        points = [{**fixed, **dict(zip(axes, combo))} for combo in combos]
    else:
        rng = np.random.default_rng([sample_seed, 1])  # independent of the coarse draws
        points = []
        for _ in range(refine.points):
            point = dict(fixed)
            for key, (low, high, log, integer) in ranges.items():
                raw = (10 ** rng.uniform(math.log10(low), math.log10(high)) if log
                       else rng.uniform(low, high))
                point[key] = finish(float(raw), log, integer)
            points.append(point)
    # Keep the option order of the space, so names and tables stay aligned.
    return _dedupe([{k: p[k] for k in space.options} for p in points])
