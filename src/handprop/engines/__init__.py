"""Array engines: the reference ``cpu`` engine and the fused ``numba``/``cuda`` ones."""

from .base import ACTIVATIONS, Engine
from .registry import (
    ENGINE_NAMES,
    EngineStatus,
    available_engines,
    engine_status,
    get_engine,
    reference_engine,
    resolve_name,
)

__all__ = [
    "ACTIVATIONS",
    "ENGINE_NAMES",
    "Engine",
    "EngineStatus",
    "available_engines",
    "engine_status",
    "get_engine",
    "reference_engine",
    "resolve_name",
]
