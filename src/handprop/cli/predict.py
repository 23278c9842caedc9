"""`handprop predict DIR FILE`: classify a .npy array or an image with a trained run."""

from __future__ import annotations

import json

from . import add_backend_argument

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff")


def register(subparsers):
    p = subparsers.add_parser("predict", help="classify a .npy array or an image file",
                              description="Predict classes with the model of a run folder. FILE is a "
                              ".npy array of raw samples (one sample or a batch, in the dataset's raw "
                              "form) or an image, which is converted to the dataset's image size.")
    p.add_argument("run_dir", metavar="DIR", help="the --out folder of `handprop train`")
    p.add_argument("file", metavar="FILE", help=".npy array or image (png, jpg, ...)")
    p.add_argument("--top", type=int, default=3, help="how many classes to list per sample")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_backend_argument(p)
    p.set_defaults(func=run)


def load_image(path, input_shape):
    """An image file as one raw sample of ``input_shape`` with values 0..255.

    Grey-scale datasets (MNIST) are white strokes on black; a picture that is
    mostly light is inverted to match.
    """
    import numpy as np
    from PIL import Image

    from ..errors import DataError

    try:
        image = Image.open(path)
        image.load()
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read image {path}: {exc}") from None
    if len(input_shape) == 2:  # (H, W): grey-scale
        image = image.convert("L").resize((input_shape[1], input_shape[0]), Image.BILINEAR)
        pixels = np.asarray(image, dtype=np.float64)
        if pixels.mean() > 127:
            pixels = 255.0 - pixels
        return pixels[None]
    if len(input_shape) == 3:  # (H, W, C) or (C, H, W)
        channels_last = input_shape[-1] in (1, 3)
        height, width = (input_shape[0], input_shape[1]) if channels_last else input_shape[1:]
        pixels = np.asarray(image.convert("RGB").resize((width, height), Image.BILINEAR),
                            dtype=np.float64)
        if not channels_last:
            pixels = pixels.transpose(2, 0, 1)
        return pixels[None]
    raise DataError(f"this model takes inputs of shape {input_shape}, not images; give a .npy file")


def run(args) -> int:
    from pathlib import Path

    import numpy as np

    from ..data import apply_preprocessing
    from ..errors import DataError
    from ..train.run_folder import RunFolder

    if args.top < 1:
        from ..errors import ConfigError

        raise ConfigError("--top must be at least 1")
    folder = RunFolder.read(args.run_dir)
    model, saved = folder.load_model(args.backend), folder.saved
    preprocessing = saved["preprocessing"]
    input_shape = tuple(preprocessing["input_shape"])
    path = Path(args.file)
    if not path.exists():
        raise DataError(f"no such file: {path}")
    if path.suffix.lower() == ".npy":
        try:
            raw = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise DataError(f"cannot read {path} as a NumPy array without pickle: {exc}") from None
        if raw.shape == input_shape or raw.shape == (int(np.prod(input_shape)),):
            raw = raw[None]  # one sample
    elif path.suffix.lower() in IMAGE_SUFFIXES:
        raw = load_image(path, input_shape)
    else:
        raise DataError(f"{path.name}: give a .npy array or an image ({', '.join(IMAGE_SUFFIXES)})")
    x = apply_preprocessing(preprocessing, raw).astype(model.dtype, copy=False)
    engine = model.engine
    outputs = engine.to_numpy(model.forward(engine.asarray(x, model.dtype))).astype(np.float64)
    loss = saved["config"]["output_loss"]
    if outputs.shape[1] == 1:  # one output: probability of class 1
        p1 = 1 / (1 + np.exp(-outputs[:, 0])) if loss == "binary_cross_entropy" else outputs[:, 0]
        probs = np.stack([1 - p1, p1], axis=1)
    elif loss == "softmax_cross_entropy":
        shifted = outputs - outputs.max(axis=1, keepdims=True)
        probs = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    else:
        probs = outputs
    names = saved.get("class_names") or [str(i) for i in range(probs.shape[1])]
    results = []
    for row in probs:
        order = np.argsort(-row)[:args.top]
        results.append({"prediction": int(order[0]), "label": names[int(order[0])],
                        "top": [{"class": int(i), "label": names[int(i)], "score": float(row[i])}
                                for i in order]})
    if args.json:
        print(json.dumps({"samples": results}, indent=2))
    else:
        for i, r in enumerate(results):
            tops = ", ".join(f"{t['label']} {t['score']:.1%}" for t in r["top"])
            print(f"sample {i}: {r['label']}   ({tops})")
    return 0
