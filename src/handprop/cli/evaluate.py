"""`handprop evaluate DIR`: loss, accuracy and confusion matrix of a trained run."""

from __future__ import annotations

import json

from . import add_backend_argument


def register(subparsers):
    p = subparsers.add_parser("evaluate", help="loss, accuracy, confusion matrix and pictures of a trained run",
                              description="Evaluate the model of a run folder on a split of its dataset.")
    p.add_argument("run_dir", metavar="DIR", help="the --out folder of `handprop train`")
    p.add_argument("--split", choices=("test", "val", "train"), default="test")
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.add_argument("--plot", action="store_true",
                   help="also draw the confusion matrix, the most confident mistakes and, for "
                   "image data, the first layer's weights (for a convolutional model its "
                   "filters and one input's feature maps) as PNGs in the run folder")
    add_backend_argument(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..errors import DataError
    from ..nn.losses import get_loss
    from ..train.evaluation import evaluate_split, most_confident_mistakes
    from ..train.run import prepare_data
    from ..train.run_folder import RunFolder

    folder = RunFolder.read(args.run_dir)
    model, saved = folder.load_model(args.backend), folder.saved
    config = dict(saved["config"], dtype=model.dtype)
    data = prepare_data(config)
    x, y = {"test": (data.x_test, data.y_test), "val": (data.x_val, data.y_val),
            "train": (data.x_train, data.y_train)}[args.split]
    if len(y) == 0:
        raise DataError(f"this run has no {args.split} split (val_size was 0)")
    loss = get_loss(config["output_loss"])
    samples = raw_layout(x, data.input_shape)  # as the dataset keeps them, for the pictures
    x = model_inputs(x, model, data.input_shape)
    classes = max(int(saved.get("classes", model.output_dim)), 2)
    result = evaluate_split(model, loss, x, y, classes)
    value, accuracy, engine = result.loss, result.accuracy, model.engine
    truth, pred, matrix = result.truth, result.predicted, result.confusion
    mistakes = most_confident_mistakes(result.outputs, truth, pred, 32,
                                       loss.single_output_threshold)
    names = saved.get("class_names") or [str(i) for i in range(classes)]
    per_class = result.per_class_accuracy
    plots = (_draw(args, model, loss, data, samples, x, truth, pred, mistakes, matrix, names)
             if args.plot else [])
    if args.json:
        print(json.dumps({"split": args.split, "n": int(len(y)), "loss": value, "accuracy": accuracy,
                          "engine": engine.name, "class_names": names,
                          "per_class_accuracy": per_class,
                          "confusion_matrix": matrix.tolist(), "plots": plots}, indent=2))
        return 0
    print(f"{args.split}: {len(y):,} samples, loss {value:.4f}, accuracy {accuracy:.2%} "
          f"(engine {engine.name})")
    print("confusion matrix (rows: true class, columns: predicted; last column: class accuracy)")
    width = max(5, max(len(n) for n in names) + 1, len(str(matrix.max())) + 1)
    print(" " * width + "".join(n[:width - 1].rjust(width) for n in names) + "   accuracy")
    for name, row, share in zip(names, matrix, per_class):
        shown = "-" if share is None else f"{share:.1%}"
        print(name[:width - 1].rjust(width) + "".join(str(v).rjust(width) for v in row)
              + shown.rjust(11))
    for path in plots:
        print(f"wrote {path}")
    return 0


def model_inputs(x, model, image_shape):
    """``x`` as the model takes it: flat rows of images become (N, C, H, W) for a model built
    for images, from the dataset's (H, W) or (H, W, C) sample shape."""
    import numpy as np

    shape = tuple(model.input_shape)
    if tuple(x.shape[1:]) == shape or len(shape) != 3 or x.ndim != 2:
        return x  # check_inputs names any other mismatch
    image_shape = tuple(image_shape)
    if x.shape[1] != int(np.prod(shape)) or int(np.prod(image_shape)) != x.shape[1]:
        return x
    if len(image_shape) == 2:
        return x.reshape(len(x), 1, *image_shape)
    return x.reshape(len(x), *image_shape).transpose(0, 3, 1, 2)


def raw_layout(x, image_shape):
    """Channels-first images (N, C, H, W) back in the dataset's own sample shape ((H, W) or
    (H, W, C)), for drawing; any other ``x`` as it is."""
    image_shape = tuple(image_shape)
    if x.ndim != 4 or len(image_shape) not in (2, 3):
        return x
    return x.transpose(0, 2, 3, 1).reshape(len(x), *image_shape)


def _draw(args, model, loss, data, samples, x, truth, pred, mistakes, matrix,
          names) -> list[str]:
    """The evaluation pictures, written next to the run's curves.png; ``samples`` are the
    inputs as the dataset keeps them, ``x`` as the model takes them."""
    from pathlib import Path

    import numpy as np

    from ..train.evaluation import feature_maps, first_weights
    from ..train.plots import (is_image_shape, plot_confusion, plot_decision_regions,
                               plot_feature_maps, plot_filters, plot_mistakes, plot_weights)

    run_dir = Path(args.run_dir)
    written = [plot_confusion(matrix, names, run_dir / f"confusion-{args.split}.png",
                              title=f"{args.split} split")]
    if tuple(data.input_shape) == (2,):
        written.append(plot_decision_regions(model, loss, x, truth, names,
                                             run_dir / f"decision-{args.split}.png",
                                             what=f"{args.split} split"))
    if is_image_shape(data.input_shape):
        written.append(plot_mistakes(samples, truth, pred, mistakes, names, data.input_shape,
                                     run_dir / f"mistakes-{args.split}.png",
                                     title=f"most confident mistakes on the {args.split} split "
                                           f"({int((pred != truth).sum()):,} in all; true → predicted)"))
        kind, weights = first_weights(model)
        if kind == "filters":
            written.append(plot_filters(weights, run_dir / "filters-layer1.png"))
            written.append(plot_feature_maps(
                np.asarray(x[0]), feature_maps(model, x[0]),
                run_dir / f"feature-maps-{args.split}.png",
                title=f"{args.split} sample 0 (true {names[truth[0]]}, predicted "
                      f"{names[pred[0]]}): what each convolution makes of it"))
        elif kind == "weights":
            written.append(plot_weights(weights, data.input_shape, run_dir / "weights-layer1.png"))
    return [str(path) for path in written]
