"""`handprop train`: train an MLP (``--hidden``) or any model (``--arch``) on a dataset and
write a run folder."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_training_flags(parser: argparse.ArgumentParser) -> None:
    """The training options (``train.config.TRAIN_FLAGS``), shared with `sweep` and `lr-find`."""
    from ..train.config import TRAIN_FLAGS

    parser.add_argument("--config", metavar="TOML", help="TOML file of options (flags win)")
    for f in TRAIN_FLAGS:
        if f.kind is None:
            parser.add_argument(f.flag, dest=f.key, default=None, help=f.help_text(),
                                action="store_false" if f.switch_off else "store_true")
        else:
            parser.add_argument(f.flag, dest=f.key, type=f.kind, default=None,
                                help=f.help_text())


def flags_to_config(args) -> dict:
    """Only the options given on the command line."""
    from ..train.config import TRAIN_FLAGS

    return {f.key: getattr(args, f.key) for f in TRAIN_FLAGS
            if getattr(args, f.key, None) is not None}


def resume_options(args, out) -> dict:
    """The options `--resume` applies; any other option is refused, not ignored."""
    from ..errors import ConfigError
    from ..train.config import flag_name
    from ..train.run import RESUME_OPTIONS

    given = flags_to_config(args)
    refused = [flag_name(key) for key in given if key not in RESUME_OPTIONS]
    if args.config:
        refused.insert(0, "--config")
    if args.out and Path(args.out).resolve() != out.resolve():
        refused.append("--out")
    if refused:
        raise ConfigError(f"--resume continues {out} as it was configured, so "
                          f"{', '.join(refused)} cannot change it; only --backend, --no-compile and "
                          f"--epochs (to train for longer) go with --resume")
    return {key: given[key] for key in RESUME_OPTIONS if key in given}


def register(subparsers):
    p = subparsers.add_parser(
        "train", help="train a model and write config, metrics, checkpoint, curves and summary",
        description="Train a multi-layer perceptron (--hidden) or any model, convolutional "
        "networks included (--arch). Writes config.json, metrics.jsonl, checkpoint.npz, "
        "model.npz, curves.png and summary.json into --out.",
    )
    add_training_flags(p)
    p.add_argument("--out", metavar="DIR", default=None,
                   help="run folder (default runs/<dataset>-<time>)")
    p.add_argument("--resume", metavar="DIR", default=None,
                   help="continue the run in DIR from its last checkpoint (with --epochs N: "
                   "train it to N epochs in all)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar or epoch lines")
    p.set_defaults(func=run)


def run(args) -> int:
    import time

    from ..train.config import load_toml
    from ..train.run import run_training

    if args.resume:
        out = Path(args.resume)
        config, resume = resume_options(args, out), True
    else:
        from ..train.config import make_config

        config = make_config(load_toml(args.config) if args.config else None, flags_to_config(args))
        out = Path(args.out or f"runs/{config['dataset']}-{time.strftime('%Y%m%d-%H%M%S')}")
        resume = False
    try:
        summary = run_training(config, out, resume=resume, progress=not args.no_progress)
    except KeyboardInterrupt:
        import sys

        saved = (out / "checkpoint.npz").exists()
        hint = (f"the last finished epoch is saved; continue with: handprop train --resume {out}"
                if saved else "no epoch had finished, so nothing was saved")
        print(f"\nhandprop train: interrupted; {hint}", file=sys.stderr)
        return 130
    print(f"test accuracy {summary['test_accuracy']:.2%}, test loss {summary['test_loss']:.4f} "
          f"after {summary['epochs']} epoch{'s' if summary['epochs'] != 1 else ''} "
          f"({summary['train_seconds']:.1f} s training, "
          f"engine {summary['engine']})")
    print(f"curves:  {out / 'curves.png'}")
    print(f"summary: {out / 'summary.json'}")
    return 0
