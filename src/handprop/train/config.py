"""Training configuration: defaults, TOML files, flags, and validation.

A configuration is a flat dict of plain values. It is written to a run's
``config.json`` and is all that is needed to rerun it, so sweeps can send it
to another process or machine. Precedence: defaults, then a TOML file, then
explicit flags.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

DEFAULTS: dict = {
    "dataset": "mnist",
    "data_dir": None,
    "download": False,
    "train_subset": None,     # use only this many training samples (quick runs)
    "val_size": 5000,         # count, or a fraction in [0, 1)
    "normalize": "scale",     # scale | zscore | zscore-feature | none
    "backend": None,          # None: $HANDPROP_BACKEND, else auto
    "dtype": "float32",
    "seed": 0,
    "arch": None,             # any model as tokens (handprop.nn.arch); None: the --hidden MLP
    "hidden": [100],
    "activation": "sigmoid",
    "dropout": 0.0,           # dropout rate after each hidden layer
    "batch_norm": False,      # Dense -> BatchNorm -> activation in each hidden layer
    "output_loss": "softmax_cross_entropy",
    "init": "auto",
    "optimizer": "sgd",
    "lr": 0.1,
    "momentum": 0.9,
    "beta1": 0.9,
    "beta2": 0.999,
    "eps": 1e-8,
    "weight_decay": 0.0,
    "schedule": "constant",   # constant | step | exponential | inverse_time | cyclic
    "decay_rate": 0.5,        # step drop factor, or exponential rate per decay_epochs
    "decay_epochs": 1.0,      # step/exponential period, in epochs
    "decay_k": 0.001,         # inverse-time k, per update
    "eta_min": None,          # cyclic: lower bound (default lr/10)
    "cycle_epochs": 2.0,      # cyclic: half-cycle length in epochs
    "cycles": None,           # cyclic: number of cycles, then eta_min
    "batch_size": 64,
    "epochs": 10,
    "l2": 0.0,
    "patience": None,         # early stopping on validation loss
    "eval_batch_size": 2048,
    "compile": True,          # the engine's compiled training path where it has one
}

CHOICES = {
    "normalize": ("scale", "zscore", "zscore-feature", "none"),
    "dtype": ("float32", "float64"),
    "optimizer": ("sgd", "momentum", "nesterov", "adam"),
    "schedule": ("constant", "step", "exponential", "inverse_time", "cyclic"),
    "output_loss": ("softmax_cross_entropy", "mse", "binary_cross_entropy"),
}


@dataclass(frozen=True)
class Flag:
    """One `handprop train` flag and the configuration key it sets.

    ``kind`` converts the text (``None``: an on/off switch that sets True, or False
    with ``switch_off``). The help text gets its "(default ...)" from ``DEFAULTS``,
    or from ``default`` where the default is worked out at run time.
    """

    flag: str
    key: str
    kind: type | None
    help: str
    default: str | None = None
    switch_off: bool = False

    def help_text(self) -> str:
        if self.kind is None:
            return self.help
        shown = self.default if self.default is not None else _shown(DEFAULTS[self.key])
        return f"{self.help} (default {shown})" if shown else self.help


def _shown(value) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ",".join(map(str, value)) or "''"
    return str(value)


def val_size(text: str):
    """``--val-size``: a count (5000) or a fraction (0.1)."""
    value = float(text)
    return int(value) if value.is_integer() and value >= 1 else value


#: Every training flag, shared by `train`, `sweep` and `lr-find`. Flags default to
#: None on the command line so that only those given override a TOML file.
TRAIN_FLAGS = (
    Flag("--dataset", "dataset", str, "mnist, fashion-mnist, cifar10, linear or xor"),
    Flag("--data-dir", "data_dir", str, "read the dataset from this folder only (mnist: your "
         "own IDX files, not the bundled copy)", default="none: fashion-mnist and cifar10 are "
         "looked for in $HANDPROP_DATA, the user cache and (fashion-mnist) /usr/share/datasets"),
    Flag("--download", "download", None,
         "download Fashion-MNIST or CIFAR-10 (checksum-verified) if not found"),
    Flag("--train-subset", "train_subset", int, "use only this many training samples",
         default="all"),
    Flag("--val-size", "val_size", val_size,
         "validation count (e.g. 5000) or fraction (e.g. 0.1); 0 = none"),
    Flag("--normalize", "normalize", str, ", ".join(CHOICES["normalize"])),
    Flag("--dtype", "dtype", str, " or ".join(CHOICES["dtype"])),
    Flag("--seed", "seed", int, "seed of weights, split and batch order"),
    Flag("--arch", "arch", str,
         "any model as comma-separated tokens: conv:FILTERS:KERNEL[:STRIDE[:PADDING]] (PADDING "
         "a number or same), maxpool:SIZE[:STRIDE], avgpool:SIZE[:STRIDE], flatten, "
         "dense:UNITS, an activation name, dropout:RATE, batchnorm; e.g. "
         "conv:16:5:1:same,relu,maxpool:2,flatten,dense:128,relu. The output layer is added "
         "for the dataset; flatten is never added for you (put it before the first dense "
         "layer); an activation right after conv or dense is fused into it. Replaces "
         "--hidden, --activation, --dropout and --batch-norm (refused with it); --init "
         "applies to every conv and dense layer", default="none: the --hidden MLP"),
    Flag("--hidden", "hidden", str, "hidden widths, e.g. 300 or 256,256 ('' for none)"),
    Flag("--activation", "activation", str,
         "sigmoid, tanh, relu, leaky_relu, lecun_tanh or identity"),
    Flag("--dropout", "dropout", float, "dropout rate after each hidden layer, in [0, 1)"),
    Flag("--batch-norm", "batch_norm", None,
         "Dense -> BatchNorm -> activation in each hidden layer"),
    Flag("--loss", "output_loss", str, ", ".join(CHOICES["output_loss"])),
    Flag("--init", "init", str,
         "auto, uniform, lecun, xavier_uniform, xavier_normal, he or he_uniform"),
    Flag("--optimizer", "optimizer", str, ", ".join(CHOICES["optimizer"])),
    Flag("--lr", "lr", float, "learning rate"),
    Flag("--momentum", "momentum", float, "momentum / Nesterov coefficient"),
    Flag("--beta1", "beta1", float, "Adam beta1"),
    Flag("--beta2", "beta2", float, "Adam beta2"),
    Flag("--eps", "eps", float, "Adam epsilon"),
    Flag("--weight-decay", "weight_decay", float, "coupled weight decay in the optimizer"),
    Flag("--schedule", "schedule", str, ", ".join(CHOICES["schedule"])),
    Flag("--decay-rate", "decay_rate", float,
         "step: factor per period; exponential: rate per period"),
    Flag("--decay-epochs", "decay_epochs", float, "period of step/exponential decay, in epochs"),
    Flag("--decay-k", "decay_k", float, "inverse_time: lr0 / (1 + k * update)"),
    Flag("--eta-min", "eta_min", float, "cyclic: lowest learning rate", default="lr/10"),
    Flag("--cycle-epochs", "cycle_epochs", float, "cyclic: half-cycle length in epochs"),
    Flag("--cycles", "cycles", int, "cyclic: number of cycles, then eta_min",
         default="no limit"),
    Flag("--batch-size", "batch_size", int, "mini-batch size, 1 to the full set"),
    Flag("--epochs", "epochs", int, "epochs"),
    Flag("--l2", "l2", float, "L2 strength: l2/2*sum(W^2) added to the loss"),
    Flag("--patience", "patience", int,
         "early stopping: epochs without a better validation loss", default="off"),
    Flag("--backend", "backend", str, "engine: cpu, numba, cuda or auto",
         default="$HANDPROP_BACKEND, else auto"),
    Flag("--no-compile", "compile", None, "run layer by layer even where the engine has a "
         "compiled training path (the reference and teaching path)", switch_off=True),
)
FLAG_KEYS = {f.flag.lstrip("-"): f.key for f in TRAIN_FLAGS}


def load_toml(path) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    # Allow the options either at top level or under [train].
    return dict(data.get("train", data))


def parse_hidden(value) -> list[int]:
    """``"256,256"``, ``300``, ``[256, 256]`` or ``""`` (no hidden layer)."""
    if isinstance(value, int):
        value = [value]
    if isinstance(value, str):
        parts = [p.strip() for p in value.replace("x", ",").split(",") if p.strip()]
        try:
            value = [int(p) for p in parts]
        except ValueError:
            raise ConfigError(f"hidden widths look like 300 or 256,256; got {value!r}") from None
    if not isinstance(value, (list, tuple)) or any(not isinstance(h, int) or h < 1 for h in value):
        raise ConfigError(f"hidden widths must be positive integers, got {value!r}")
    return list(value)


def make_config(*sources: dict | None, refuse_unused: bool = True) -> dict:
    """Merge ``DEFAULTS`` with each source in turn (later wins) and validate.

    An option given in a source that this configuration would not use (``--momentum``
    with Adam) is refused, unless ``refuse_unused`` is False (a sweep checks that each
    of its options is used by some trial instead).
    """
    config, given = dict(DEFAULTS), set()
    for source in sources:
        for key, value in (source or {}).items():
            if key not in DEFAULTS:
                close = [k for k in DEFAULTS if k.startswith(key[:3])]
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise ConfigError(f"unknown training option {key!r}{hint}")
            config[key] = value
            given.add(key)
    config = validate(config)
    if refuse_unused:
        problems = unused_options(config, given)
        if problems:
            raise ConfigError("; ".join(problems))
    return config


#: Options that mean something only with certain values of another option:
#: key -> (that option, the values with which the key is used).
USED_ONLY_WITH = {
    "momentum": ("optimizer", ("momentum", "nesterov")),
    "beta1": ("optimizer", ("adam",)),
    "beta2": ("optimizer", ("adam",)),
    "eps": ("optimizer", ("adam",)),
    "decay_rate": ("schedule", ("step", "exponential")),
    "decay_epochs": ("schedule", ("step", "exponential")),
    "decay_k": ("schedule", ("inverse_time",)),
    "eta_min": ("schedule", ("cyclic",)),
    "cycle_epochs": ("schedule", ("cyclic",)),
    "cycles": ("schedule", ("cyclic",)),
}


def flag_name(key: str) -> str:
    """The `train` flag that sets config key ``key`` (``--loss`` for output_loss)."""
    return next((f.flag for f in TRAIN_FLAGS if f.key == key), key)


#: Options that shape the --hidden MLP, and how to write each of them into --arch instead.
MLP_ONLY = {"hidden": "dense:256,relu,dense:128,relu", "activation": "dense:256,tanh",
            "dropout": "dense:256,relu,dropout:0.2", "batch_norm": "dense:256,batchnorm,relu"}


def unused_options(config: dict, given) -> list[str]:
    """For each option in ``given`` that ``config`` would not use: what it needs."""
    problems = []
    for key in sorted(given):
        if key in MLP_ONLY and config["arch"] is not None:
            problems.append(f"--arch describes every layer itself, so {flag_name(key)} (which "
                            f"shapes the --hidden MLP) would not be used: drop it and write it "
                            f"into --arch, e.g. --arch {MLP_ONLY[key]}")
        if key not in USED_ONLY_WITH:
            continue
        other, values = USED_ONLY_WITH[key]
        if config[other] not in values:
            problems.append(f"{flag_name(key)} is used only with {flag_name(other)} "
                            f"{' or '.join(values)}, and this run has {config[other]}: drop it "
                            f"or change {flag_name(other)}")
    return problems


def validate(config: dict) -> dict:
    from ..nn.arch import arch_tokens, normalize_arch

    # Defaults fill options added after a run's config.json was written.
    c = {**DEFAULTS, **config}
    c["hidden"] = parse_hidden(c["hidden"])
    if c["arch"] is not None:
        c["arch"] = normalize_arch(c["arch"])
    if c["data_dir"] is not None:
        # Absolute, so `evaluate` and `--resume` find the data from any folder.
        c["data_dir"] = str(Path(c["data_dir"]).expanduser().absolute())
    for key, choices in CHOICES.items():
        if c[key] not in choices:
            raise ConfigError(f"{key} must be one of {', '.join(choices)}; got {c[key]!r}")

    def number(key, low=None, *, strict=False, integer=False, allow_none=False):
        value = c[key]
        if value is None and allow_none:
            return
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if ok and integer:
            ok = float(value).is_integer()
        if ok and low is not None:
            ok = value > low if strict else value >= low
        if not ok:
            kind = "a whole number" if integer else "a number"
            bound = "" if low is None else f" {'>' if strict else '>='} {low}"
            raise ConfigError(f"{key} must be {kind}{bound}; got {value!r}")
        if integer:
            c[key] = int(value)

    number("lr", 0, strict=True)
    number("batch_size", 1, integer=True)
    number("eval_batch_size", 1, integer=True)
    number("epochs", 1, integer=True)
    number("seed", 0, integer=True)
    number("l2", 0)
    number("weight_decay", 0)
    number("eps", 0, strict=True)
    number("decay_rate", 0, strict=True)
    number("decay_epochs", 0, strict=True)
    number("decay_k", 0)
    number("cycle_epochs", 0, strict=True)
    number("eta_min", 0, strict=True, allow_none=True)
    number("cycles", 1, integer=True, allow_none=True)
    number("patience", 1, integer=True, allow_none=True)
    number("train_subset", 1, integer=True, allow_none=True)
    for key in ("batch_norm", "compile"):
        if not isinstance(c[key], bool):
            raise ConfigError(f"{key} must be true or false; got {c[key]!r}")
    if c["batch_norm"] and c["batch_size"] < 2:
        raise ConfigError("batch_norm normalizes over the batch, which needs batch_size >= 2; "
                          "raise --batch-size or drop --batch-norm")
    if (c["arch"] is not None and c["batch_size"] < 2
            and any(t.kind == "batchnorm" for t in arch_tokens(c["arch"]))):
        raise ConfigError("batchnorm normalizes over the batch, which needs batch_size >= 2; "
                          "raise --batch-size or drop batchnorm from --arch")
    for key in ("momentum", "beta1", "beta2", "dropout"):
        number(key, 0)
        if c[key] >= 1:
            raise ConfigError(f"{key} must be in [0, 1); got {c[key]!r}")
    if c["decay_rate"] > 1:
        raise ConfigError(f"decay_rate must be in (0, 1]; got {c['decay_rate']!r}")
    val = c["val_size"]
    if isinstance(val, bool) or not isinstance(val, (int, float)) or val < 0 or (
            isinstance(val, float) and not val.is_integer() and val >= 1):
        raise ConfigError(f"val_size is a count (0, 5000, ...) or a fraction in [0, 1); got {val!r}")
    if c["patience"] is not None and not val:
        raise ConfigError("early stopping (patience) watches the validation loss: set val_size > 0")
    if c["eta_min"] is not None and c["eta_min"] > c["lr"]:
        raise ConfigError(f"eta_min ({c['eta_min']}) must not exceed lr ({c['lr']})")
    return c
