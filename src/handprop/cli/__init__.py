"""The ``handprop`` command line.

Each sub-command lives in its own module of this package, exposing
``register(subparsers)``; the module's parser sets ``func`` to a function
``run(args) -> int``. Modules are imported only when listed, and heavy
libraries are imported inside ``run`` so ``handprop --help`` stays fast.

A ``HandpropError`` (a user mistake or an unusable machine) is printed as one
line without a traceback and exits with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .. import __version__
from ..errors import HandpropError

# Order is the order shown by --help.
COMMAND_MODULES = [
    "train",
    "sweep",
    "lr_find",
    "evaluate",
    "compare",
    "predict",
    "trace",
    "gradcheck",
    "data",
    "info",
    "doctor",
    "bench",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="handprop",
        description="Train neural networks with hand-written backpropagation "
        "on the cpu, numba or cuda engine.",
    )
    parser.add_argument("--version", action="version", version=f"handprop {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


def add_backend_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend",
        default=None,
        help="engine: cpu, numba, cuda or auto (default: $HANDPROP_BACKEND, else auto)",
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except HandpropError as exc:
        print(f"handprop {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. piped into `head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"handprop {args.command}: interrupted", file=sys.stderr)
        return 130
