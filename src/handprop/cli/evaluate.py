"""`handprop evaluate DIR`: loss, accuracy and confusion matrix of a trained run."""

from __future__ import annotations

import json

from . import add_backend_argument


def register(subparsers):
    p = subparsers.add_parser("evaluate", help="loss, accuracy and confusion matrix of a trained run",
                              description="Evaluate the model of a run folder on a split of its dataset.")
    p.add_argument("run_dir", metavar="DIR", help="the --out folder of `handprop train`")
    p.add_argument("--split", choices=("test", "val", "train"), default="test")
    p.add_argument("--json", action="store_true", help="print a JSON object")
    add_backend_argument(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import numpy as np

    from ..errors import DataError
    from ..nn.losses import get_loss
    from ..train.run import confusion_matrix, load_run, prepare_data
    from ..train.trainer import evaluate

    model, saved = load_run(args.run_dir, args.backend)
    config = dict(saved["config"], dtype=model.dtype)
    data = prepare_data(config)
    x, y = {"test": (data.x_test, data.y_test), "val": (data.x_val, data.y_val),
            "train": (data.x_train, data.y_train)}[args.split]
    if len(y) == 0:
        raise DataError(f"this run has no {args.split} split (val_size was 0)")
    loss = get_loss(config["output_loss"])
    value, accuracy = evaluate(model, loss, x, y)
    engine = model.engine
    outputs = []
    for start in range(0, len(x), 4096):
        out = model.forward(engine.asarray(x[start:start + 4096], model.dtype))
        outputs.append(engine.to_numpy(loss.predict(engine, out)))
    pred = np.concatenate(outputs)
    classes = max(int(saved.get("classes", model.output_dim)), 2)
    matrix = confusion_matrix(np.asarray(y), pred, classes)
    names = saved.get("class_names") or [str(i) for i in range(classes)]
    if args.json:
        print(json.dumps({"split": args.split, "n": int(len(y)), "loss": value, "accuracy": accuracy,
                          "engine": engine.name, "class_names": names,
                          "confusion_matrix": matrix.tolist()}, indent=2))
        return 0
    print(f"{args.split}: {len(y):,} samples, loss {value:.4f}, accuracy {accuracy:.2%} "
          f"(engine {engine.name})")
    print("confusion matrix (rows: true class, columns: predicted)")
    width = max(5, max(len(n) for n in names) + 1, len(str(matrix.max())) + 1)
    print(" " * width + "".join(n[:width - 1].rjust(width) for n in names))
    for name, row in zip(names, matrix):
        print(name[:width - 1].rjust(width) + "".join(str(v).rjust(width) for v in row))
    return 0
