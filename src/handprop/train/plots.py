"""Training curves as a PNG (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

from ..plotting import pyplot, save_figure


def batch_positions(batch_losses, epochs: int):
    """x of each mini-batch loss in epochs: epoch e's batches fill (e - 1, e].

    None when the losses do not split evenly into ``epochs`` (a run resumed
    from a checkpoint written before per-batch losses were kept).
    """
    import numpy as np

    count = len(batch_losses)
    if not count or not epochs or count % epochs:
        return None
    per_epoch = count // epochs
    return (np.arange(count) + 1) / per_epoch


def plot_curves(rows: list[dict], path, title: str = "", batch_losses=None) -> Path:
    """Loss and accuracy per epoch, train dashed and validation solid; behind the
    loss, each mini-batch's training loss as a thin line."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    epochs = [r["epoch"] for r in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    x_batches = batch_positions(batch_losses or [], len(rows))
    if x_batches is not None:
        import numpy as np

        losses = np.asarray(batch_losses, dtype=np.float64)
        ax_loss.plot(x_batches, losses, "-", color="0.6", lw=0.5, alpha=0.4,
                     label="train loss per batch")
        # Many batches make the raw line a band; a running mean shows the trend in it.
        window = max(1, round(len(losses) / len(rows)) // 10)
        if window > 1:
            smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
            ax_loss.plot(x_batches[window - 1:], smooth, "-", color="0.3", lw=0.9,
                         label=f"running mean of {window} batches")
    for key, ax, label in (("loss", ax_loss, "loss"), ("acc", ax_acc, "accuracy")):
        ax.plot(epochs, [r[f"train_{key}"] for r in rows], "--o", ms=3, label=f"train {label}")
        if any(r.get(f"val_{key}") is not None for r in rows):
            ax.plot(epochs, [r[f"val_{key}"] for r in rows], "-o", ms=3, label=f"validation {label}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    ax_loss.set_yscale("log")
    ax_acc.yaxis.set_major_formatter(PercentFormatter(1.0))
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


# ------------------------------------------------------------------ evaluation
def is_image_shape(shape) -> bool:
    """Inputs that are pictures: (height, width) or (height, width, 1 or 3 channels)."""
    shape = tuple(shape)
    return (len(shape) == 2 and min(shape) > 1) or (len(shape) == 3 and shape[-1] in (1, 3))


def _display(image):
    """An image scaled to [0, 1] for showing, whatever the normalization was."""
    import numpy as np

    image = np.asarray(image, dtype=np.float64)
    low, high = image.min(), image.max()
    return (image - low) / (high - low) if high > low else np.zeros_like(image)


def plot_confusion(matrix, names, path, title: str = "") -> Path:
    """Confusion matrix: colour is the share of the true class, numbers are counts."""
    import numpy as np

    plt = pyplot()
    from matplotlib.ticker import PercentFormatter

    matrix = np.asarray(matrix)
    classes = len(names)
    totals = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
    side = max(4.5, 0.5 * classes + 2.5)
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    if classes <= 20:  # past that the numbers would not fit in their cells
        for i in range(classes):
            for j in range(classes):
                if matrix[i, j]:
                    ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if share[i, j] > 0.5 else "black")
    rotate = 45 if max(len(n) for n in names) > 2 else 0
    ax.set_xticks(range(classes), names, rotation=rotate, ha="right" if rotate else "center")
    ax.set_yticks(range(classes), names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    accuracy = np.trace(matrix) / max(matrix.sum(), 1)
    ax.set_title(f"{title + ': ' if title else ''}accuracy {accuracy:.2%} of {matrix.sum():,}")
    fig.colorbar(image, ax=ax, format=PercentFormatter(1.0), label="share of the true class")
    return save_figure(fig, path)


def plot_mistakes(images, truth, pred, indices, names, image_shape, path, title: str = "") -> Path:
    """A grid of the given misclassified inputs, each titled 'true → predicted'."""
    import math

    plt = pyplot()
    count = len(indices)
    cols = min(8, max(count, 1))
    rows = max(1, math.ceil(count / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.4 * cols + 0.4, 1.6 * rows + 0.6), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, indices):
        picture = _display(images[i].reshape(image_shape))
        ax.imshow(picture, cmap="gray" if picture.ndim == 2 or picture.shape[-1] == 1 else None)
        ax.set_title(f"{names[truth[i]]} → {names[pred[i]]}", fontsize=8)
    if not count:
        axes.flat[0].text(0.5, 0.5, "no mistakes", ha="center", va="center")
    fig.suptitle(title or "most confident mistakes (true → predicted)")
    return save_figure(fig, path)


def weight_tiles(weights, image_shape, count: int = 64):
    """The first ``count`` columns of a first-layer weight matrix as images.

    Grayscale tiles keep their sign, scaled to [-1, 1] by the largest
    magnitude of each unit; colour tiles are scaled to [0, 1] per unit.
    """
    import numpy as np

    weights = np.asarray(weights, dtype=np.float64)
    tiles = []
    for j in range(min(count, weights.shape[1])):
        tile = weights[:, j].reshape(image_shape)
        if tile.ndim == 3 and tile.shape[-1] == 3:
            tiles.append(_display(tile))
        else:
            peak = np.abs(tile).max()
            tiles.append(tile.reshape(image_shape[:2]) / peak if peak > 0 else tile.reshape(image_shape[:2]))
    return tiles


def plot_weights(weights, image_shape, path, title: str = "", count: int = 64) -> Path:
    """What the first hidden units look for: each unit's input weights as an image."""
    import math

    plt = pyplot()
    tiles = weight_tiles(weights, image_shape, count)
    cols = math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.1 * cols + 0.4, 1.1 * rows + 0.8), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for j, (ax, tile) in enumerate(zip(axes.flat, tiles)):
        if tile.ndim == 2:  # red positive, blue negative, white zero
            ax.imshow(tile, cmap="RdBu_r", vmin=-1.0, vmax=1.0)
        else:
            ax.imshow(tile)
        ax.set_title(str(j), fontsize=7)
    shown = f"{len(tiles)} of {weights.shape[1]}" if len(tiles) < weights.shape[1] else len(tiles)
    legend = " (red +, blue -)" if tiles and tiles[0].ndim == 2 else ""
    fig.suptitle(title or f"first-layer weights of {shown} units{legend}")
    return save_figure(fig, path)


def plot_gradient_norms(rows: list[dict], path, shapes: dict | None = None, title: str = "") -> Path:
    """Per-layer gradient norm of the weights against epoch, on a log axis."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    # Runs resumed from older checkpoints may lack norms for their first epochs.
    names = list(dict.fromkeys(name for r in rows for name in (r.get("grad_norms") or {})))
    fig, ax = plt.subplots(figsize=(7, 4))
    epochs = [r["epoch"] for r in rows]
    colors = plt.cm.viridis([i / max(len(names) - 1, 1) * 0.9 for i in range(len(names))])
    for number, (name, color) in enumerate(zip(names, colors), start=1):
        values = [(r.get("grad_norms") or {}).get(name) for r in rows]
        shape = (shapes or {}).get(name)
        where = ""
        if shape is not None and len(shape) == 2:
            where = f" ({shape[0]}→{shape[1]})"
        elif shape is not None and len(shape) == 4:  # a convolution's (filters, channels, kh, kw)
            where = f" (conv {shape[1]}→{shape[0]}, {shape[2]}x{shape[3]})"
        ax.plot(epochs, values, "-o", ms=3, color=color, label=f"weights {number}{where}")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("‖∂loss/∂W‖ (Euclidean norm)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3, which="both")
    if names:
        ax.legend(fontsize=8, title="input side first", title_fontsize=8)
    ax.set_title(title or "gradient norm per layer, after each epoch")
    return save_figure(fig, path)


def decision_grid(model, loss, x, resolution: int = 200):
    """``(g0, g1, classes)``: a grid over the data's range (plus 10 %) and the class predicted at
    each of its points, for a model of two inputs."""
    import numpy as np

    from ..nn.losses import get_loss

    x = np.asarray(x, dtype=np.float64)
    engine, loss = model.engine, get_loss(loss)
    low, high = x.min(axis=0), x.max(axis=0)
    margin = 0.1 * np.maximum(high - low, 1e-9)
    g0, g1 = np.meshgrid(np.linspace(low[0] - margin[0], high[0] + margin[0], resolution),
                         np.linspace(low[1] - margin[1], high[1] + margin[1], resolution))
    points = np.column_stack([g0.ravel(), g1.ravel()])
    out = model.forward(engine.asarray(points, model.dtype))
    classes = np.asarray(engine.to_numpy(loss.predict(engine, out))).reshape(g0.shape)
    return g0, g1, classes


def plot_decision_regions(model, loss, x, y, names, path, what: str = "", resolution: int = 200):
    """For two inputs: the class the model predicts at every point of the plane, with the data.

    The background is coloured by predicted class; points are the samples in
    their true class's colour, and a cross marks each one the model gets wrong.
    """
    import numpy as np

    from ..nn.losses import get_loss

    plt = pyplot()
    from matplotlib.colors import ListedColormap

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y)
    engine = model.engine
    g0, g1, regions = decision_grid(model, loss, x, resolution)
    out = model.forward(engine.asarray(x, model.dtype))
    pred = np.asarray(engine.to_numpy(get_loss(loss).predict(engine, out)))
    classes = len(names)
    cmap = ListedColormap([plt.cm.tab10(i % 10) for i in range(classes)])
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.contourf(g0, g1, regions, levels=np.arange(classes + 1) - 0.5, cmap=cmap, alpha=0.25)
    for c in range(classes):
        mine = y == c
        ax.scatter(x[mine, 0], x[mine, 1], s=28, color=cmap(c), edgecolors="black",
                   linewidths=0.5, label=f"class {names[c]}")
    wrong = pred != y
    if wrong.any():
        ax.scatter(x[wrong, 0], x[wrong, 1], s=90, marker="x", color="black",
                   label=f"wrong ({int(wrong.sum())})")
    ax.set_xlabel("input 1")
    ax.set_ylabel("input 2")
    ax.legend(fontsize=8, loc="best")
    accuracy = float((~wrong).mean()) if len(y) else float("nan")
    ax.set_title(f"decision regions{', ' + what if what else ''}: "
                 f"{accuracy:.1%} of {len(y)} points right")
    return save_figure(fig, path)


# ------------------------------------------------------------ convolutions
def filter_tiles(weights):
    """Tiles of a convolution's weights (filters, channels, kh, kw): one (kh, kw) tile per
    filter and channel, signed and scaled to [-1, 1] by the filter's largest magnitude, or one
    RGB tile per filter (scaled to [0, 1]) when there are three channels."""
    import numpy as np

    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape[1] == 3:
        return [[_display(f.transpose(1, 2, 0))] for f in weights]
    rows = []
    for f in weights:
        peak = np.abs(f).max()
        rows.append([c / peak if peak > 0 else c for c in f])
    return rows


def plot_filters(weights, path, title: str = "", count: int = 64) -> Path:
    """A convolution's filters, one row per filter and one column per input channel (red
    positive, blue negative), or one colour tile per filter for RGB inputs."""
    import math

    plt = pyplot()
    rows = filter_tiles(weights)[:count]
    channels = len(rows[0])
    if channels == 1:  # one tile per filter: lay them out in a square
        tiles = [row[0] for row in rows]
        cols = math.ceil(math.sqrt(len(tiles)))
        grid = [tiles[i:i + cols] for i in range(0, len(tiles), cols)]
    else:
        grid, cols = rows, channels
    fig, axes = plt.subplots(len(grid), cols, squeeze=False,
                             figsize=(max(4.8, 1.1 * cols + 0.6), 1.1 * len(grid) + 0.8))
    for ax in axes.flat:
        ax.axis("off")
    for r, row in enumerate(grid):
        for c, tile in enumerate(row):
            ax = axes[r, c]
            if tile.ndim == 2:
                ax.imshow(tile, cmap="RdBu_r", vmin=-1.0, vmax=1.0)
            else:
                ax.imshow(tile)
            number = r * cols + c if channels == 1 else r
            ax.set_title(str(number) if channels == 1 or c == 0 else "", fontsize=7)
    f, ch, kh, kw = weights.shape
    fig.suptitle(title or f"first convolution: {f} filters of {ch}x{kh}x{kw}"
                 f"{' (red +, blue -)' if ch != 3 else ''}", fontsize=10)
    return save_figure(fig, path)


def plot_feature_maps(image, layer_maps, path, title: str = "", count: int = 16) -> Path:
    """One input and what each convolution makes of it: ``layer_maps`` is a list of
    ``(name, maps)`` with maps (channels, height, width); up to ``count`` maps per layer."""
    import numpy as np

    plt = pyplot()
    image = np.asarray(image, dtype=np.float64)
    cols = max(1, min(count, max(len(maps) for _, maps in layer_maps)))
    fig, axes = plt.subplots(len(layer_maps) + 1, cols,
                             figsize=(1.2 * cols + 0.6, 1.4 * (len(layer_maps) + 1) + 0.6),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    shown = image[0] if image.shape[0] == 1 else _display(image.transpose(1, 2, 0))
    axes[0, 0].imshow(_display(shown) if shown.ndim == 2 else shown,
                      cmap="gray" if shown.ndim == 2 else None)
    axes[0, 0].set_title("input", fontsize=8)
    for r, (name, maps) in enumerate(layer_maps, start=1):
        for c, fmap in enumerate(np.asarray(maps, dtype=np.float64)[:cols]):
            axes[r, c].imshow(fmap, cmap="viridis")
            axes[r, c].set_title(f"{name} [{c}]" if c == 0 else str(c), fontsize=7)
    fig.suptitle(title or "feature maps of one input")
    return save_figure(fig, path)
