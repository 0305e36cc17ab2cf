"""Figures: each function returns a matplotlib Figure and never shows or saves it.

The caller decides where a figure goes (a PNG under the run's storage, an
MLflow artifact, a report), so nothing here touches the file system.

Figures are drawn at the size the report shows them (`REPORT_WIDTH_PX`): a
figure `REPORT_WIDTH_PX[slot] / 96` inches wide is shown at its own size, so
a font of N points reads as N * 96 / 72 screen pixels, and the smallest font
used here (`SMALLEST_FONT`, 8.5 pt) as about 11 px.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # headless: figures are written to files, never shown
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

# How wide the report shows a figure, in CSS pixels (conv_core/report/style.css: a 976 px column;
# figure.small 340 px, figure.medium 620 px, figure.large the column). In a row, a small figure keeps
# its 340 px and a large one beside it gets the rest (612 px); two large ones share it (476 px each).
REPORT_WIDTH_PX = {"small": 340, "medium": 620, "large": 976, "beside_small": 612, "half": 476}
CSS_PX_PER_INCH = 96
SMALLEST_FONT = 8.5  # points: about 11 px when the figure is shown at its slot's width
# Font sizes for every figure here, applied while a figure is built (rc_context), so nothing is left at
# matplotlib's defaults for tick labels and legends.
LEGIBLE = {"font.size": 9.5, "axes.titlesize": 10, "axes.labelsize": 9.5, "xtick.labelsize": SMALLEST_FONT,
           "ytick.labelsize": SMALLEST_FONT, "legend.fontsize": SMALLEST_FONT, "legend.title_fontsize": 9,
           "figure.titlesize": 10.5}


def report_inches(slot: str) -> float:
    """The width, in inches, at which a figure is shown at its own size in a report slot."""
    return REPORT_WIDTH_PX[slot] / CSS_PX_PER_INCH


def legible(function):
    """Build the figure under `LEGIBLE` font sizes (a decorator)."""
    import functools

    @functools.wraps(function)
    def build(*args, **kwargs):
        with plt.rc_context(LEGIBLE):
            return function(*args, **kwargs)
    return build


def _as_numpy(images) -> np.ndarray:
    if isinstance(images, torch.Tensor):
        images = images.detach().float().cpu().numpy()
    return np.asarray(images, dtype=np.float32)


def _grid_title_size(cell: float) -> float:
    """Titles grow with the cell, so that a grid of big cells, shrunk into its slot, still reads at ~11 px."""
    return max(SMALLEST_FONT + 1, 7.2 * cell)


def image_grid(images, titles: Sequence[str] | None = None, columns: int = 10, cmap: str = "gray",
               suptitle: str | None = None, symmetric: bool = False, cell: float = 1.0) -> Figure:
    """A grid of 2-D images (N, H, W). `symmetric` centres a diverging colour map on 0."""
    array = _as_numpy(images)
    if array.ndim == 4:
        array = array[:, 0]
    count = len(array)
    columns = max(1, min(columns, count))
    rows = max(1, math.ceil(count / columns))
    title_size = _grid_title_size(cell)
    with plt.rc_context(LEGIBLE):
        fig, axes = plt.subplots(rows, columns, squeeze=False,
                                 figsize=(cell * columns, cell * rows + (0.3 if titles is not None else 0)
                                          + (0.45 if suptitle else 0)))
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= count:
            continue
        image = array[i]
        if symmetric:
            limit = float(np.abs(image).max()) or 1.0
            ax.imshow(image, cmap="RdBu_r", vmin=-limit, vmax=limit)
        else:
            ax.imshow(image, cmap=cmap)
        if titles is not None:
            ax.set_title(titles[i], fontsize=title_size)
    if suptitle:
        fig.suptitle(suptitle, fontsize=title_size + 1)
    fig.tight_layout()
    return fig


def _class_names(class_names: Sequence[str] | None) -> tuple[str, ...]:
    """The given class names, or MNIST's digits."""
    return tuple(class_names) if class_names is not None else tuple(str(digit) for digit in range(10))


@legible
def digit_examples(images, labels, per_class: int = 8, class_names: Sequence[str] | None = None) -> Figure:
    """The first `per_class` images of each class, one row per class, labelled on the left with its name
    (`class_names`, the data set's; the digits 0-9 when not given)."""
    class_names = _class_names(class_names)
    labels = torch.as_tensor(labels)
    images = _as_numpy(torch.as_tensor(images))
    size = images.shape[-1]
    rows = len(class_names)
    mosaic = np.ones((rows * (size + 2), per_class * (size + 2)), dtype=np.float32) * float(images.max() or 1)
    for digit in range(rows):
        picks = torch.nonzero(labels == digit).flatten()[:per_class].tolist()
        for column, index in enumerate(picks):
            top, left = digit * (size + 2) + 1, column * (size + 2) + 1
            mosaic[top:top + size, left:left + size] = images[index]
    width = report_inches("small")
    fig, ax = plt.subplots(figsize=(width, (width - 0.4) * rows / per_class + 0.3))
    ax.imshow(mosaic, cmap="gray_r", interpolation="nearest")
    ax.set_yticks([(d + 0.5) * (size + 2) for d in range(rows)], list(class_names))
    ax.set_xticks([])
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_ylabel("class")
    fig.tight_layout(pad=0.3)
    return fig


@legible
def confusion_matrix(confusion, title: str = "confusion matrix", class_names: Sequence[str] | None = None) -> Figure:
    """Counts with true class down and predicted class across, numbers in the cells, classes by name
    (`class_names`, the data set's; the digits 0-9 when not given)."""
    matrix = _as_numpy(confusion).astype(int)
    class_names = _class_names(class_names)
    width = report_inches("half")
    fig, ax = plt.subplots(figsize=(width, width * 0.92))
    ax.imshow(np.log1p(matrix), cmap="Blues")
    for (row, col), value in np.ndenumerate(matrix):
        if value:
            ax.text(col, row, str(value), ha="center", va="center", fontsize=SMALLEST_FONT,
                    color="white" if row == col else "black")
    # digits fit upright; longer names ("T-shirt/top") are turned so they do not overlap
    long_names = max(map(len, class_names)) > 2
    ax.set_xticks(range(len(class_names)), list(class_names), rotation=45 if long_names else 0,
                  ha="right" if long_names else "center")
    ax.set_yticks(range(len(class_names)), list(class_names))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    return fig


TRAIN_LOSS_NOTE = ("Train loss is computed with label smoothing: its minimum is above zero even when every "
                   "training digit is right, so it can sit above the validation loss, which is plain "
                   "cross-entropy. The test digits are measured once, after training.")


@legible
def training_curves(history: Sequence[dict], title: str = "training") -> Figure:
    """Loss (above) and accuracy (below) per epoch, train and validation.

    The history's train loss includes the label smoothing and its validation
    loss does not (conv_core.train.EpochStats), so the two are labelled as such
    and a note under the panels says why train loss can sit above it.
    """
    import textwrap

    from matplotlib.ticker import MaxNLocator

    epochs = [h["epoch"] for h in history]
    width = report_inches("half")
    fig, (loss_ax, acc_ax) = plt.subplots(2, 1, figsize=(width, 6.0), sharex=True)
    loss_ax.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train (label-smoothed)")
    acc_ax.plot(epochs, [h["train_accuracy"] for h in history], marker="o", label="train")
    if history and history[0].get("validation_loss") is not None:
        loss_ax.plot(epochs, [h["validation_loss"] for h in history], marker="o",
                     label="validation (plain cross-entropy)")
        acc_ax.plot(epochs, [h["validation_accuracy"] for h in history], marker="o", label="validation")
    loss_ax.set(ylabel="loss", title=f"{title}: loss and accuracy by epoch")
    acc_ax.set(xlabel="epoch", ylabel="accuracy")
    acc_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout(rect=(0, 0.11, 1, 1))
    fig.text(0.03, 0.015, textwrap.fill(TRAIN_LOSS_NOTE, 62), fontsize=SMALLEST_FONT, color="#444444",
             va="bottom", ha="left")
    return fig


def _filter_mosaic(tiles: torch.Tensor) -> tuple[np.ndarray, list[tuple[tuple[float, float], tuple[float, float]]]]:
    """(rows, columns, k, k) tiles, each scaled to [-1, 1], laid out with one empty (NaN) cell between them;
    and the line segments of a grid around every weight of every tile."""
    rows, columns, k = tiles.shape[0], tiles.shape[1], tiles.shape[-1]
    scale = tiles.abs().amax(dim=(2, 3), keepdim=True).clamp_min(1e-12)
    mosaic = np.full((rows * (k + 1) + 1, columns * (k + 1) + 1), np.nan)
    grid = []
    for r in range(rows):
        for c in range(columns):
            if torch.isnan(tiles[r, c]).all():
                continue  # a padding tile of a square layout
            top, left = 1 + r * (k + 1), 1 + c * (k + 1)
            mosaic[top:top + k, left:left + k] = (tiles / scale)[r, c]
            for i in range(k + 1):
                grid.append(((left - 0.5, top + i - 0.5), (left + k - 0.5, top + i - 0.5)))
                grid.append(((left + i - 0.5, top - 0.5), (left + i - 0.5, top + k - 0.5)))
    return mosaic, grid


@legible
def conv_filters(weight: torch.Tensor, title: str) -> Figure:
    """Filters of a conv layer, weight (out, in, k, k), every weight a cell with a grey grid line around it.

    Red is positive and blue negative, each filter on its own symmetric scale,
    since the lecture's point is the shape of each filter. A one-channel layer's
    filters are laid out in a square, each titled (the report's small slot); a
    deeper layer's as one row per output channel and one column per input
    channel (the slot beside it). Drawn as one mosaic image and one set of
    grid lines: a grid of 144 separate axes takes seconds to render.
    """
    from matplotlib.collections import LineCollection

    weight = weight.detach().float().cpu()
    out_channels, in_channels, k = weight.shape[0], weight.shape[1], weight.shape[-1]
    if in_channels == 1:
        columns = math.ceil(math.sqrt(out_channels))
        rows = math.ceil(out_channels / columns)
        padded = torch.cat([weight[:, 0], torch.full((rows * columns - out_channels, k, k), float("nan"))])
        tiles = padded.reshape(rows, columns, k, k)
        width = report_inches("small")
    else:
        rows, columns = out_channels, in_channels
        tiles = weight
        width = report_inches("beside_small")
    mosaic, grid = _filter_mosaic(tiles)
    if in_channels == 1:
        # A title row above every filter row: k + 1 rows per filter row become k + 3.
        labelled = np.full((rows * (k + 3) + 1, mosaic.shape[1]), np.nan)
        for r in range(rows):
            labelled[r * (k + 3) + 3:r * (k + 3) + 3 + k] = mosaic[1 + r * (k + 1):1 + r * (k + 1) + k]
        shift = [2 * (1 + int((y0 - 0.5) // (k + 1))) for (_, y0), _ in grid]  # 2 more rows per filter row
        grid = [((x0, y0 + down), (x1, y1 + down)) for ((x0, y0), (x1, y1)), down in zip(grid, shift)]
        mosaic = labelled
    plot_width = width - (0.9 if in_channels > 1 else 0.2)
    height = min(9.0, plot_width * mosaic.shape[0] / mosaic.shape[1]) + 0.8
    fig, ax = plt.subplots(figsize=(width, height))
    ax.imshow(mosaic, cmap=plt.get_cmap("RdBu_r").with_extremes(bad="white"), vmin=-1, vmax=1,
              interpolation="nearest")
    ax.add_collection(LineCollection(grid, colors="0.55", linewidths=0.5))
    centre = lambda i: 1 + i * (k + 1) + (k - 1) / 2  # noqa: E731
    if in_channels == 1:
        for i in range(out_channels):
            r, c = divmod(i, columns)
            ax.text(centre(c), r * (k + 3) + 2.2, f"filter {i}", ha="center", va="bottom")
        ax.set_xticks([])
        ax.set_yticks([])
    else:
        ax.set_xticks([centre(c) for c in range(columns)], [str(c) for c in range(columns)])
        ax.set_yticks([centre(r) for r in range(rows)], [str(r) for r in range(rows)])
        ax.set_xlabel("input channel")
        ax.set_ylabel("output channel")
        ax.xaxis.tick_top()
        ax.xaxis.set_label_position("top")
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(f"{title}\nred +, blue \u2212; each filter on its own scale")
    fig.tight_layout(pad=0.4)
    return fig


# Where a point's label may go, tried in order: (dx, dy) in points, horizontal and vertical alignment.
LABEL_SPOTS = [(6, 0, "left", "center"), (-6, 0, "right", "center"), (6, 9, "left", "bottom"),
               (6, -9, "left", "top"), (-6, 9, "right", "bottom"), (-6, -9, "right", "top"),
               (0, 9, "center", "bottom"), (0, -9, "center", "top"), (14, 20, "left", "bottom"),
               (14, -20, "left", "top"), (-14, 20, "right", "bottom"), (-14, -20, "right", "top")]


def place_labels(ax, xs: Sequence[float], ys: Sequence[float], labels: Sequence[str]) -> list:
    """Label each point beside it, at the first of `LABEL_SPOTS` that overlaps no point and no label before.

    Call after the figure's layout is final (the overlaps are measured on screen).
    A label with no free spot takes the first one. Returns the labels' Text artists.
    """
    from matplotlib.transforms import Bbox

    renderer = ax.figure.canvas.get_renderer()
    area = ax.get_window_extent(renderer)
    taken = [Bbox.from_bounds(px - 4, py - 4, 8, 8) for px, py in ax.transData.transform(np.column_stack([xs, ys]))]
    placed = []
    for x, y, label in zip(xs, ys, labels):
        chosen = None
        for dx, dy, ha, va in LABEL_SPOTS:
            far = abs(dy) > 10
            text = ax.annotate(label, (x, y), xytext=(dx, dy), textcoords="offset points", ha=ha, va=va,
                               fontsize=SMALLEST_FONT,
                               arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.6} if far else None)
            box = text.get_window_extent(renderer)
            inside = area.x0 <= box.x0 and box.x1 <= area.x1 and area.y0 <= box.y0 and box.y1 <= area.y1
            if inside and not any(box.overlaps(other) for other in taken):
                chosen = text
                break
            text.remove()
        if chosen is None:
            dx, dy, ha, va = LABEL_SPOTS[0]
            chosen = ax.annotate(label, (x, y), xytext=(dx, dy), textcoords="offset points", ha=ha, va=va,
                                 fontsize=SMALLEST_FONT)
        taken.append(chosen.get_window_extent(renderer))
        placed.append(chosen)
    return placed


@legible
def scatter_labelled(xs: Sequence[float], ys: Sequence[float], labels: Sequence[str], xlabel: str, ylabel: str,
                     title: str, log_x: bool = False) -> Figure:
    """A scatter plot with a text label beside each point, placed so that no two labels overlap."""
    xs, ys = [float(x) for x in xs], [float(y) for y in ys]
    fig, ax = plt.subplots(figsize=(report_inches("medium"), 4.4))
    ax.scatter(xs, ys, zorder=3)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if log_x:
        ax.set_xscale("log")
    ax.margins(x=0.25, y=0.15)  # room for the labels inside the axes
    ax.grid(alpha=0.3)
    fig.tight_layout()
    place_labels(ax, xs, ys, labels)
    return fig


def _layer_order(names) -> list[str]:
    """Layers of several models on one axis: pixels first, logits last, the rest as first seen."""
    seen = list(dict.fromkeys(names))
    middle = [name for name in seen if name not in ("pixels", "logits")]
    return [n for n in ("pixels",) if n in seen] + middle + [n for n in ("logits",) if n in seen]


@legible
def layer_lines(series: dict[str, dict[str, float]], ylabel: str, title: str,
                reference: float | None = None) -> Figure:
    """One panel per model, over that model's own layers, so that no two models' layers share an axis.

    A series named like "lecture ..." is a reference: it is drawn (dashed) on
    each model's panel whose layers include all of its layers, or on a panel of
    its own when no model has them.
    """
    references = {name: values for name, values in series.items() if "lecture" in name}
    panels = {name: values for name, values in series.items() if name not in references}
    homes = {name: [model for model, values in panels.items() if set(ref) <= set(values)]
             for name, ref in references.items()}
    panels.update({name: references[name] for name, models in homes.items() if not models})
    ratios = [max(3, len(values)) for values in panels.values()]
    fig, axes = plt.subplots(1, len(panels), figsize=(report_inches("medium"), 4.0), sharey=True, squeeze=False,
                             gridspec_kw={"width_ratios": ratios})
    for ax, (model, values) in zip(axes[0], panels.items()):
        layers = list(values)
        dashed = model in references
        ax.plot(range(len(layers)), list(values.values()), marker="o", linestyle="--" if dashed else "-",
                label=model if dashed else "this run")
        for name, ref in references.items():
            if model in homes[name]:
                ax.plot([layers.index(layer) for layer in ref], list(ref.values()), marker="s", linestyle="--",
                        color="0.4", label=name)
        if reference is not None:
            ax.axhline(reference, color="gray", linewidth=1)
        ax.set_xticks(range(len(layers)), layers, rotation=35, ha="right")
        ax.set_title(model)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left")
    axes[0][0].set_ylabel(ylabel)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


MEASURE_LABELS = {
    "knn1_accuracy": "1-NN accuracy (train -> test)",
    "triplet_order_rate": "P[d(a,p) < d(a,n)], all digits",
    "triplet_order_rate_4_9": "P[d(a,p) < d(a,n)], 4s and 9s",
    "within_between_ratio": "within / between class distance",
    "silhouette": "silhouette (true classes)",
    "wrong_pixel_triplets_put_right": "9-4-4 triplets wrong in pixels,\nput right",
}


@legible
def measure_panels(measures) -> Figure:
    """One panel per representation measure (two rows of three), one line per model, layers along x.

    `measures`: a pandas DataFrame with columns model, layer and the measures.
    """
    layers = _layer_order(measures["layer"])
    columns = 3
    rows = math.ceil(len(MEASURE_LABELS) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(report_inches("large"), 3.3 * rows + 0.4), squeeze=False)
    for ax, (column, label) in zip(axes.flat, MEASURE_LABELS.items()):
        for model, frame in measures.groupby("model", sort=False):
            ax.plot([layers.index(layer) for layer in frame["layer"]], frame[column], marker="o", label=model)
        ax.set_xticks(range(len(layers)), layers, rotation=35, ha="right")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(MEASURE_LABELS):]:
        ax.axis("off")
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="upper center", ncol=len(names), frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return fig


@legible
def pca_maps(maps: dict[str, torch.Tensor], labels) -> Figure:
    """2-D PCA maps (name -> (N, 2) points), coloured by class."""
    labels = _as_numpy(labels).astype(int)
    width = report_inches("large")
    fig, axes = plt.subplots(1, len(maps), figsize=(width, 0.8 * width / max(1, len(maps)) + 0.5), squeeze=False)
    for ax, (name, points) in zip(axes[0], maps.items()):
        xy = _as_numpy(points)
        scatter = ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="tab10", s=5, vmin=-0.5, vmax=9.5)
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(scatter, ax=axes[0].tolist(), ticks=range(10), label="digit")
    return fig


@legible
def accuracy_by_variant(table) -> Figure:
    """Grouped bars: test accuracy per model, one bar per data variant, its seed count written in it.

    `table`: a DataFrame with model, data_variant, accuracy_mean, accuracy_std
    and (optionally) seeds. A bar over one seed has no error bar: one run has
    no spread. The legend sits outside the axes, where it covers no bar.
    """
    models = list(dict.fromkeys(table["model"]))
    variants = list(dict.fromkeys(table["data_variant"]))
    width = 0.8 / max(1, len(variants))
    fig, ax = plt.subplots(figsize=(report_inches("medium"), 4.2))
    low = max(0.0, float(table["accuracy_mean"].min()) - 0.05)
    for i, variant in enumerate(variants):
        rows = table[table["data_variant"] == variant].set_index("model")
        seeds = rows["seeds"] if "seeds" in rows else None
        spread = rows["accuracy_std"].where(seeds > 1, 0.0) if seeds is not None else rows["accuracy_std"]
        xs = [models.index(m) + i * width for m in rows.index]
        ax.bar(xs, rows["accuracy_mean"], width, yerr=spread.fillna(0.0), capsize=3, label=variant)
        if seeds is not None:
            for x, count in zip(xs, seeds):
                ax.text(x, low + 0.004, f"n={int(count)}", ha="center", va="bottom", fontsize=SMALLEST_FONT,
                        color="white", rotation=90)
    ax.set_ylim(low, 1.0)
    ax.set_xticks([m + width * (len(variants) - 1) / 2 for m in range(len(models))], models)
    ax.set(ylabel="test accuracy", title="test accuracy by model and data variant")
    ax.legend(title="data", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.text(0.01, 0.01, "bar: mean over n seeds; error bar: std over seeds (none for a single run)",
             fontsize=SMALLEST_FONT, color="#444444")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig
