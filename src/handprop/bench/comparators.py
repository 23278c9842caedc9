"""Who runs beside handprop: the library's rows and the reference implementations.

A handprop row is a (label, engine, Trainer ``compile`` option); an engine's
default is one row named after it. numba has two: its compiled epoch and the
layer-by-layer loop (the reference and teaching path). The compiled epoch
covers dense stacks only, so on the CNN numba has its one layer-by-layer row.
"""

from __future__ import annotations

from .workload import is_cnn, jax_available, torch_available

#: engine -> its rows: (label, Trainer's ``compile`` option; None = not passed)
HANDPROP_ROWS: dict[str, list[tuple[str, bool | None]]] = {
    "numba": [("numba compiled", True), ("numba layer-by-layer", False)],
}

#: comparator -> the prefix of its keys in a result row
COMPARATORS = {"torch": "torch", "torch.compile": "torch_compile", "jax scan": "jax_scan",
               "jax step": "jax_step"}
#: comparators that run in a worker process of their own (see ``worker``)
ISOLATED = frozenset({"jax scan", "jax step"})


def handprop_rows(engines, model=None) -> list[tuple[str, str, bool | None]]:
    """``(label, engine, compile)`` for every row of the given engines on ``model``
    (one row per engine on the CNN, which no engine compiles)."""
    if model is not None and is_cnn(model):
        return [(engine, engine, None) for engine in engines]
    return [(label, engine, compile) for engine in engines
            for label, compile in HANDPROP_ROWS.get(engine, [(engine, None)])]


def comparator_unavailable(name: str) -> str:
    """Why ``name`` cannot run here ("" when it can)."""
    if name not in COMPARATORS:
        raise KeyError(name)
    if name.startswith("torch") and not torch_available():
        return "PyTorch is not installed (pip install 'handprop[compare]')"
    if name.startswith("jax"):
        import importlib.util

        if not jax_available() or importlib.util.find_spec("optax") is None:
            return "JAX or optax is not installed (pip install 'handprop[compare]')"
    return ""


def available_comparators() -> list[str]:
    return [name for name in COMPARATORS if not comparator_unavailable(name)]


def make_comparator(name: str, model, batch: int, optimizer: str, steps: int, seed: int = 0,
                    isolate: bool | None = None):
    """The runner of comparator ``name``; in its own process when ``isolate``
    (default: for those in ``ISOLATED``)."""
    kind, options = {"torch": ("torch", {}), "torch.compile": ("torch", {"compile": True}),
                     "jax scan": ("jax", {"scan": True}),
                     "jax step": ("jax", {"scan": False})}[name]
    kwargs = dict(model=model, batch=batch, optimizer=optimizer, steps=steps, seed=seed,
                  **options)
    if name in ISOLATED if isolate is None else isolate:
        from .worker import ProcessRunner

        return ProcessRunner(kind, **kwargs)
    if kind == "jax":
        from .jax_runner import JaxRunner

        return JaxRunner(**kwargs)
    from .torch_runner import TorchRunner

    return TorchRunner(**kwargs)
