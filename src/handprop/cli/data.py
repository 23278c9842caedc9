"""``handprop data info NAME``: sizes, class counts and raw pixel statistics of a dataset."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "data", help="inspect the datasets (mnist, fashion-mnist, cifar10, linear, xor)",
        description="Inspect the datasets handprop can train on.",
    )
    actions = parser.add_subparsers(dest="data_action", metavar="ACTION")
    info = actions.add_parser(
        "info", help="sizes, class counts and raw pixel mean/std of a dataset",
        description="Print the size of each split, its class counts, and the mean and "
        "standard deviation of the raw (unscaled) input values.",
    )
    info.add_argument("name", metavar="NAME", help="mnist, fashion-mnist, cifar10, linear or xor")
    info.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    info.add_argument("--data-dir", default=None, metavar="DIR",
                      help="read the dataset from this folder only (mnist: your own IDX "
                      "files, not the bundled copy); without it fashion-mnist and cifar10 are "
                      "looked for in $HANDPROP_DATA, the user cache and (fashion-mnist) "
                      "/usr/share/datasets")
    info.add_argument("--download", action="store_true",
                      help="download Fashion-MNIST or CIFAR-10 (checksum-verified) if not found")
    info.add_argument("--n-linear", type=int, default=200, metavar="N",
                      help="points per split of the linear toy set (default: 200)")
    info.add_argument("--seed", type=int, default=0, help="seed of the toy sets (default: 0)")
    info.set_defaults(func=run)
    parser.set_defaults(func=run, _data_parser=parser)


def split_summary(x, y, classes: int) -> dict:
    """``n``, ``class_counts`` (list indexed by class) and raw ``pixel_mean``/``pixel_std``."""
    import numpy as np

    from ..data import mean_std

    mean, std = mean_std(x) if len(x) else (float("nan"), float("nan"))
    return {
        "n": int(len(y)),
        "class_counts": np.bincount(y, minlength=classes).astype(int).tolist(),
        "pixel_mean": mean,
        "pixel_std": std,
    }


def dataset_info(name: str, data_dir=None, download: bool = False, n_linear: int = 200,
                 seed: int = 0) -> dict:
    from ..data import load_dataset

    dataset = load_dataset(name, data_dir=data_dir, download=download, n_linear=n_linear, seed=seed)
    return {
        "name": dataset.name,
        "classes": dataset.classes,
        "class_names": dataset.class_names,
        "input_shape": list(dataset.sample_shape),
        "dtype": str(dataset.x_train.dtype),
        "value_range": list(dataset.value_range),
        "source": dataset.source,
        "train": split_summary(dataset.x_train, dataset.y_train, dataset.classes),
        "test": split_summary(dataset.x_test, dataset.y_test, dataset.classes),
    }


def format_info(info: dict) -> str:
    names = info["class_names"] or [str(i) for i in range(info["classes"])]
    lines = [
        f"dataset      {info['name']}",
        f"source       {info['source']}",
        f"input        {' x '.join(map(str, info['input_shape']))} {info['dtype']}, "
        f"values in [{info['value_range'][0]:g}, {info['value_range'][1]:g}]",
        f"classes      {info['classes']}",
    ]
    for split in ("train", "test"):
        s = info[split]
        lines.append(f"{split:<12} n={s['n']}  pixel mean={s['pixel_mean']:.4f}  std={s['pixel_std']:.4f}")
        counts = ", ".join(f"{n}: {c}" for n, c in zip(names, s["class_counts"]))
        lines.append(f"{'':<12} class counts  {counts}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "data_action", None) != "info":
        args._data_parser.print_help()
        return 2
    import json

    info = dataset_info(args.name, data_dir=args.data_dir, download=args.download,
                        n_linear=args.n_linear, seed=args.seed)
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0
