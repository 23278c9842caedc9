"""`handprop train`: train an MLP on a dataset and write a run folder."""

from __future__ import annotations

import argparse

from . import add_backend_argument

# flag -> (config key, type, help). Every flag defaults to None so that only
# the flags actually given override the TOML file and the defaults.
TRAIN_FLAGS = [
    ("--dataset", "dataset", str, "mnist, fashion-mnist, cifar10, linear or xor (default mnist)"),
    ("--data-dir", "data_dir", str, "read the dataset from this folder only (mnist: your own IDX files, "
     "not the bundled copy); without it fashion-mnist and cifar10 are looked for in "
     "$HANDPROP_DATA, the user cache and (fashion-mnist) /usr/share/datasets"),
    ("--train-subset", "train_subset", int, "use only this many training samples"),
    ("--val-size", "val_size", float, "validation count (e.g. 5000) or fraction (e.g. 0.1); 0 = none"),
    ("--normalize", "normalize", str, "scale, zscore, zscore-feature or none (default scale)"),
    ("--dtype", "dtype", str, "float32 (default) or float64"),
    ("--seed", "seed", int, "seed of weights, split and batch order (default 0)"),
    ("--hidden", "hidden", str, "hidden widths, e.g. 300 or 256,256 ('' for none; default 100)"),
    ("--activation", "activation", str,
     "sigmoid, tanh, relu, leaky_relu, lecun_tanh or identity (default sigmoid)"),
    ("--dropout", "dropout", float, "dropout rate after each hidden layer, in [0, 1) (default 0)"),
    ("--loss", "output_loss", str, "softmax_cross_entropy (default), mse or binary_cross_entropy"),
    ("--init", "init", str, "auto, uniform, lecun, xavier_uniform, xavier_normal, he, he_uniform"),
    ("--optimizer", "optimizer", str, "sgd (default), momentum, nesterov or adam"),
    ("--lr", "lr", float, "learning rate (default 0.1)"),
    ("--momentum", "momentum", float, "momentum / Nesterov coefficient (default 0.9)"),
    ("--beta1", "beta1", float, "Adam beta1 (default 0.9)"),
    ("--beta2", "beta2", float, "Adam beta2 (default 0.999)"),
    ("--eps", "eps", float, "Adam epsilon (default 1e-8)"),
    ("--weight-decay", "weight_decay", float, "coupled weight decay in the optimizer (default 0)"),
    ("--schedule", "schedule", str, "constant, step, exponential, inverse_time or cyclic"),
    ("--decay-rate", "decay_rate", float, "step: factor per period; exponential: rate per period"),
    ("--decay-epochs", "decay_epochs", float, "period of step/exponential decay, in epochs"),
    ("--decay-k", "decay_k", float, "inverse_time: lr0 / (1 + k * update)"),
    ("--eta-min", "eta_min", float, "cyclic: lowest learning rate (default lr/10)"),
    ("--cycle-epochs", "cycle_epochs", float, "cyclic: half-cycle length in epochs"),
    ("--cycles", "cycles", int, "cyclic: number of cycles, then eta_min"),
    ("--batch-size", "batch_size", int, "mini-batch size, 1 to the full set (default 64)"),
    ("--epochs", "epochs", int, "epochs (default 10)"),
    ("--l2", "l2", float, "L2 strength: l2/2*sum(W^2) added to the loss (default 0)"),
    ("--patience", "patience", int, "early stopping: epochs without a better validation loss"),
]


def _val_size(text):
    value = float(text)
    return int(value) if value.is_integer() and value >= 1 else value


def add_training_flags(parser: argparse.ArgumentParser) -> None:
    """The training options, shared with `handprop sweep`."""
    parser.add_argument("--config", metavar="TOML", help="TOML file of options (flags win)")
    for flag, key, kind, text in TRAIN_FLAGS:
        parser.add_argument(flag, dest=key, type=_val_size if key == "val_size" else kind,
                            default=None, help=text)
    parser.add_argument("--batch-norm", dest="batch_norm", action="store_true", default=None,
                        help="Dense -> BatchNorm -> activation in each hidden layer")
    parser.add_argument("--download", action="store_true", default=None,
                        help="download Fashion-MNIST or CIFAR-10 (checksum-verified) if not found")
    add_backend_argument(parser)


def flags_to_config(args) -> dict:
    """Only the options given on the command line."""
    keys = [key for _, key, _, _ in TRAIN_FLAGS] + ["batch_norm", "download", "backend"]
    return {key: getattr(args, key) for key in keys if getattr(args, key, None) is not None}


def register(subparsers):
    p = subparsers.add_parser(
        "train", help="train a model and write config, metrics, checkpoint, curves and summary",
        description="Train a multi-layer perceptron. Writes config.json, metrics.jsonl, "
        "checkpoint.npz, model.npz, curves.png and summary.json into --out.",
    )
    add_training_flags(p)
    p.add_argument("--out", metavar="DIR", default=None,
                   help="run folder (default runs/<dataset>-<time>)")
    p.add_argument("--resume", metavar="DIR", default=None,
                   help="continue the interrupted run in DIR from its last checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar or epoch lines")
    p.set_defaults(func=run)


def run(args) -> int:
    import time
    from pathlib import Path

    from ..train.config import load_toml
    from ..train.run import run_training

    if args.resume:
        out = Path(args.resume)
        config, resume = ({"backend": args.backend} if args.backend else {}), True
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
