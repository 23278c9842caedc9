"""The handprop error family.

Every error a user can cause is a ``HandpropError`` whose message says what
went wrong and what to do about it. The CLI prints these without a traceback
and exits with status 2.
"""


class HandpropError(Exception):
    """Base class of every error handprop raises on purpose."""


class ConfigError(HandpropError, ValueError):
    """An option, flag or argument has a value that cannot be used."""


class ShapeError(HandpropError, ValueError):
    """Arrays do not have the shapes an operation needs."""


class DataError(HandpropError, ValueError):
    """A dataset file is missing, truncated, corrupt or holds unusable values."""


class EngineUnavailableError(HandpropError, RuntimeError):
    """The requested engine cannot run on this machine; the message says why."""


class CheckpointError(HandpropError, RuntimeError):
    """A checkpoint or saved model cannot be read or does not fit the model."""


class NumericalError(HandpropError, FloatingPointError):
    """Training produced NaN or Inf."""
