"""`handprop lr-find`: the learning-rate range test for a training configuration."""

from __future__ import annotations

import json

#: Training options the range test decides itself (a growing rate, --steps batches).
SET_BY_THE_TEST = ("lr", "schedule", "decay_rate", "decay_epochs", "decay_k", "eta_min",
                   "cycle_epochs", "cycles", "epochs", "patience")


def register(subparsers):
    from .train import add_training_flags

    p = subparsers.add_parser(
        "lr-find", help="learning-rate range test: loss against a growing learning rate",
        description="Train the configured model for --steps mini-batches while the learning "
        "rate grows geometrically from --lr-min to --lr-max, then plot the loss against the "
        "learning rate and suggest one: a tenth of the rate where the smoothed loss is lowest. Takes the same "
        "options as `handprop train` except those the test sets itself (--lr, --schedule and "
        "its options, --epochs, --patience); writes no run folder.")
    add_training_flags(p)
    p.add_argument("--lr-min", type=float, default=1e-6, help="first learning rate (default 1e-6)")
    p.add_argument("--lr-max", type=float, default=10.0, help="last learning rate (default 10)")
    p.add_argument("--steps", type=int, default=200, help="mini-batches to run (default 200)")
    p.add_argument("--out", metavar="PNG", default="lr_find.png",
                   help="where to write the plot (default lr_find.png)")
    p.add_argument("--json", action="store_true", help="print the curve and suggestions as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..errors import ConfigError
    from ..plotting import check_figure_path
    from ..train.config import flag_name, load_toml, make_config
    from ..train.lr_find import lr_range_test, plot_range_test
    from .train import flags_to_config

    check_figure_path(args.out)
    flags = flags_to_config(args)
    refused = [flag_name(key) for key in flags if key in SET_BY_THE_TEST]
    if refused:
        raise ConfigError(f"lr-find sets the learning rate itself and runs --steps mini-batches, "
                          f"so {', '.join(refused)} would not be used; drop "
                          f"{'it' if len(refused) == 1 else 'them'}")
    file_options = load_toml(args.config) if args.config else {}
    # A training TOML may hold a rate and schedule; the range test replaces them.
    file_options = {k: v for k, v in file_options.items() if k not in SET_BY_THE_TEST}
    config = make_config(file_options, flags)
    result = lr_range_test(config, args.lr_min, args.lr_max, args.steps,
                           progress=not args.no_progress and not args.json)
    from ..train.run import short_model_text

    what = (f"{config['dataset']} {short_model_text(config)}, {config['optimizer']}, "
            f"batch {config['batch_size']}")
    plot = plot_range_test(result, args.out, title=f"learning-rate range test: {what}")
    if args.json:
        print(json.dumps({**result.to_dict(), "plot": str(plot)}, indent=2))
        return 0
    print(f"lr range test on {what}: {len(result.losses)} steps from {args.lr_min:g} "
          f"to {result.lrs[-1]:.3g}" if result.lrs else f"lr range test on {what}: no finite loss")
    print(result.path)
    if result.stopped:
        print(f"stopped early: {result.stopped}")
    if result.suggestion is None:
        print("the loss never fell; widen the range (--lr-max) or run more --steps")
    else:
        steepest = ("" if result.steepest is None
                    else f"; it falls fastest at lr {result.steepest:.3g}")
        print(f"the smoothed loss is lowest at lr {result.minimum:.3g}{steepest}")
        print(f"suggested: --lr {result.suggestion:.2g} (a tenth of the lowest point's rate)")
        if not result.stopped and result.minimum == result.lrs[-1]:
            print("note: the loss was still falling at the end of the range; a larger --lr-max "
                  "would show where it turns")
    print(f"plot: {plot}")
    return 0
