"""Find engines by name, say why one is unavailable, and resolve ``auto``.

Engines are imported lazily: ``import handprop`` and the ``cpu`` engine never
import Numba or CuPy.

Precedence of the choice: an explicit name (argument or ``--backend``), then
the ``HANDPROP_BACKEND`` environment variable, then ``auto``.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass

from ..errors import ConfigError, EngineUnavailableError
from .base import Engine

ENV_VAR = "HANDPROP_BACKEND"

# name -> "module:Class". Adding an engine is one line here plus its file.
ENGINE_CLASSES = {
    "cpu": "handprop.engines.cpu:NumpyEngine",
    "numba": "handprop.engines.numba.engine:NumbaEngine",
    "cuda": "handprop.engines.cuda.engine:CupyEngine",
}
ENGINE_NAMES = tuple(ENGINE_CLASSES)
#: The engine whose primitives are the reference (array-API code, run on NumPy).
REFERENCE = "cpu"
#: ``auto`` tries these in order.
AUTO_ORDER = ("cuda", "numba", "cpu")

_instances: dict[str, Engine] = {}


@dataclass(frozen=True)
class EngineStatus:
    name: str
    available: bool
    reason: str  # why not, or "" when available


def _engine_class(name: str):
    module_name, class_name = ENGINE_CLASSES[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def _check_name(name: str) -> str:
    key = name.strip().lower()
    if key != "auto" and key not in ENGINE_CLASSES:
        raise ConfigError(
            f"unknown engine {name!r}; valid names are: {', '.join(ENGINE_NAMES + ('auto',))}"
        )
    return key


def engine_status(name: str) -> EngineStatus:
    """Whether engine ``name`` can run here, and if not, why not."""
    name = _check_name(name)
    if name in _instances:
        return EngineStatus(name, True, "")
    try:
        cls = _engine_class(name)
    except ImportError as exc:
        missing = exc.name or str(exc)
        if missing.startswith("handprop"):
            return EngineStatus(name, False, f"its module {missing} is missing from this install")
        return EngineStatus(name, False, f"{missing} is not installed ({exc})")
    reason = cls.unavailable_reason()
    return EngineStatus(name, not reason, reason or "")


def available_engines() -> list[EngineStatus]:
    """Every known engine with its availability and the reason if unavailable."""
    return [engine_status(name) for name in ENGINE_NAMES]


def resolve_name(name: str | None = None) -> str:
    """Apply the precedence rule and resolve ``auto`` to a concrete engine name."""
    chosen = name or os.environ.get(ENV_VAR) or "auto"
    chosen = _check_name(chosen)
    if chosen != "auto":
        return chosen
    for candidate in AUTO_ORDER:
        if engine_status(candidate).available:
            return candidate
    return "cpu"


def get_engine(name: str | Engine | None = None) -> Engine:
    """The engine called ``name`` (or chosen by the precedence rule).

    Raises ``EngineUnavailableError`` naming the reason when an explicitly
    requested engine cannot run here. Only ``auto`` falls back.
    """
    if isinstance(name, Engine):
        return name
    resolved = resolve_name(name)
    if resolved in _instances:
        return _instances[resolved]
    status = engine_status(resolved)
    if not status.available:
        raise EngineUnavailableError(
            f"engine {resolved!r} is not usable on this machine: {status.reason}. "
            f"Use --backend auto to fall back, or run `handprop info` to see what is available."
        )
    engine = _engine_class(resolved)()
    _instances[resolved] = engine
    return engine


def reference_engine() -> Engine:
    """The reference engine: what shapes are checked with and every engine is held to."""
    return get_engine(REFERENCE)
