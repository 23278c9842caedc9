"""`handprop gradcheck`: compare hand-written gradients with numerical ones."""

from __future__ import annotations

import json

from ..engines.base import ACTIVATIONS
from . import add_backend_argument

LOSS_CHOICES = ("softmax_cross_entropy", "mse", "binary_cross_entropy")
#: Activations whose derivative jumps at 0, where finite differences mislead.
KINKED = ("relu", "leaky_relu")


def register(subparsers):
    p = subparsers.add_parser(
        "gradcheck",
        help="check every layer's backward pass against finite differences (float64)",
        description="Build a small network (default: one that touches every activation; "
        "--conv: a small CNN with every convolution and pooling layer), compare analytic and "
        "numerical gradients of every parameter tensor and the input, and print the relative "
        "error of each.",
    )
    p.add_argument("--loss", choices=LOSS_CHOICES + ("all",), default="all",
                   help="loss to check (default: each in turn)")
    p.add_argument("--hidden", default=None,
                   help="hidden widths such as 16,8 (default: the every-activation network)")
    p.add_argument("--activation", default=None, choices=ACTIVATIONS,
                   help="activation of the --hidden layers (default tanh)")
    p.add_argument("--dropout", type=float, default=0.0,
                   help="dropout rate after each --hidden layer (masks are held fixed)")
    p.add_argument("--batch-norm", action="store_true",
                   help="--hidden layers as Dense (no bias) -> BatchNorm -> activation")
    p.add_argument("--conv", action="store_true",
                   help="check a small CNN instead: Conv2D at stride 1 ('same' padding), stride 2 "
                   "and without padding, batch norm per channel, dropout, max- and average-"
                   "pooling and Flatten, on 2x11x9 images")
    p.add_argument("--inputs", type=int, default=None, help="input width (default 4)")
    p.add_argument("--outputs", type=int, default=3, help="number of outputs (default 3)")
    p.add_argument("--samples", type=int, default=None,
                   help="batch size of the check (default 6; 4 with --conv)")
    p.add_argument("--l2", type=float, default=0.01, help="L2 strength included in the check")
    p.add_argument("--tolerance", type=float, default=1e-7, help="largest acceptable relative error")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print a JSON object instead of tables")
    add_backend_argument(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..engines import get_engine
    from ..errors import ConfigError
    from ..nn.model import mlp
    from ..teach.gradcheck import (CONV_INPUT_SHAPE, default_conv_network, default_network,
                                   default_problem, gradcheck)

    mlp_flags = [flag for flag, given in (("--hidden", args.hidden is not None),
                                          ("--activation", args.activation is not None),
                                          ("--inputs", args.inputs is not None),
                                          ("--dropout", bool(args.dropout)),
                                          ("--batch-norm", args.batch_norm)) if given]
    if args.conv and mlp_flags:
        raise ConfigError(f"--conv checks its own CNN on 2x11x9 images (with batch norm and "
                          f"dropout); {', '.join(mlp_flags)} "
                          f"{'shapes' if len(mlp_flags) == 1 else 'shape'} the MLP, so leave "
                          f"{'it' if len(mlp_flags) == 1 else 'them'} out")
    needs_hidden = [f for f in mlp_flags if f in ("--activation", "--dropout", "--batch-norm")]
    if needs_hidden and args.hidden is None:
        raise ConfigError(f"{', '.join(needs_hidden)} {'shapes' if len(needs_hidden) == 1 else 'shape'}"
                          f" the --hidden network; give --hidden "
                          f"too (the default network already has every activation, dropout and "
                          f"batch norm)")
    if not args.tolerance > 0 or args.l2 < 0 or args.seed < 0:
        raise ConfigError("--tolerance must be > 0, --l2 >= 0 and --seed >= 0")
    inputs = CONV_INPUT_SHAPE if args.conv else 4 if args.inputs is None else args.inputs
    samples = (4 if args.conv else 6) if args.samples is None else args.samples
    if (not args.conv and inputs < 1) or args.outputs < 1 or samples < 1:
        raise ConfigError("--inputs, --outputs and --samples must be positive")
    engine = get_engine(args.backend)
    losses = LOSS_CHOICES if args.loss == "all" else (args.loss,)
    reports = []
    for loss_name in losses:
        if args.hidden is not None:
            try:
                hidden = [int(h) for h in args.hidden.split(",") if h.strip()]
            except ValueError:
                raise ConfigError(f"--hidden takes widths like 16,8; got {args.hidden!r}") from None
            out_act = "sigmoid" if loss_name == "mse" else "identity"
            model = mlp(inputs, hidden, args.outputs, activation=args.activation or "tanh",
                        output_activation=out_act, engine=engine, dtype="float64", seed=args.seed,
                        dropout=args.dropout, batch_norm=args.batch_norm)
        elif args.conv:
            model = default_conv_network(loss_name, engine=engine, seed=args.seed,
                                         outputs=args.outputs)
        else:
            model = default_network(loss_name, engine=engine, seed=args.seed,
                                    inputs=inputs, outputs=args.outputs)
        x, targets = default_problem(loss_name, samples, inputs, args.outputs, args.seed)
        reports.append(gradcheck(model, loss_name, x, targets, l2=args.l2, seed=args.seed))

    worst = max(r.max_rel_error for r in reports)
    passed = worst < args.tolerance
    if args.json:
        print(json.dumps({"engine": engine.name, "network": "conv" if args.conv else "mlp",
                          "max_rel_error": worst, "tolerance": args.tolerance,
                          "passed": passed, "checks": [r.to_dict() for r in reports]}, indent=2))
    else:
        for r in reports:
            network = ", convolutional network" if args.conv else ""
            print(f"\nloss {r.loss}, l2 {r.l2}, engine {engine.name}{network}\n{r.table()}")
        verdict = "PASS" if passed else "FAIL"
        print(f"\n{verdict}: worst relative error {worst:.2e} (tolerance {args.tolerance:.0e})")
        if not passed and (args.activation or "tanh") in KINKED:
            print(f"note: {args.activation} has a kink at 0. Where a unit's input sits within a "
                  f"step of it (a unit that is off for a whole sample puts the next layer's "
                  f"input exactly at its bias), the numerical gradient is not the derivative. "
                  f"Try another --seed, or a smooth activation such as tanh, before doubting "
                  f"the backward pass.")
    return 0 if passed else 1
