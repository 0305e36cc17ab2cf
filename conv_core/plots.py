"""Figures: each function returns a matplotlib Figure and never shows or saves it.

The caller decides where a figure goes (a PNG under the run's storage, an
MLflow artifact, a report), so nothing here touches the file system.
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


def _as_numpy(images) -> np.ndarray:
    if isinstance(images, torch.Tensor):
        images = images.detach().float().cpu().numpy()
    return np.asarray(images, dtype=np.float32)


def image_grid(images, titles: Sequence[str] | None = None, columns: int = 10, cmap: str = "gray",
               suptitle: str | None = None, symmetric: bool = False, cell: float = 1.0) -> Figure:
    """A grid of 2-D images (N, H, W). `symmetric` centres a diverging colour map on 0."""
    array = _as_numpy(images)
    if array.ndim == 4:
        array = array[:, 0]
    count = len(array)
    columns = max(1, min(columns, count))
    rows = max(1, math.ceil(count / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(cell * columns, cell * rows + (0.4 if suptitle else 0)),
                             squeeze=False)
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
            ax.set_title(titles[i], fontsize=7)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return fig


def digit_examples(images, labels, per_class: int = 8) -> Figure:
    """The first `per_class` digits of each class, one row per class."""
    labels = torch.as_tensor(labels)
    picks = [torch.nonzero(labels == c).flatten()[:per_class] for c in range(10)]
    chosen = torch.cat(picks)
    return image_grid(torch.as_tensor(images)[chosen], columns=per_class, cell=0.7,
                      titles=[str(int(labels[i])) for i in chosen])


def confusion_matrix(confusion, title: str = "confusion matrix") -> Figure:
    """Counts with true class down and predicted class across, numbers in the cells."""
    matrix = _as_numpy(confusion).astype(int)
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    ax.imshow(np.log1p(matrix), cmap="Blues")
    for (row, col), value in np.ndenumerate(matrix):
        if value:
            ax.text(col, row, str(value), ha="center", va="center", fontsize=7,
                    color="white" if row == col else "black")
    ax.set_xticks(range(10))
    ax.set_yticks(range(10))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def training_curves(history: Sequence[dict], title: str = "training") -> Figure:
    """Loss and accuracy per epoch, train and validation (the test split is measured once, after)."""
    epochs = [h["epoch"] for h in history]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(9, 3.4))
    loss_ax.plot(epochs, [h["train_loss"] for h in history], label="train")
    acc_ax.plot(epochs, [h["train_accuracy"] for h in history], label="train")
    if history and history[0].get("validation_loss") is not None:
        loss_ax.plot(epochs, [h["validation_loss"] for h in history], label="validation")
        acc_ax.plot(epochs, [h["validation_accuracy"] for h in history], label="validation")
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy", yscale="log", title=f"{title}: loss")
    acc_ax.set(xlabel="epoch", ylabel="accuracy", title=f"{title}: accuracy")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return fig


def conv_filters(weight: torch.Tensor, title: str) -> Figure:
    """Filters of a conv layer, weight (out, in, k, k): one row per output channel.

    Red is positive and blue negative, each filter on its own symmetric scale,
    since the lecture's point is the shape of each filter. Drawn as one mosaic
    image: a grid of 144 separate axes takes seconds to render.
    """
    weight = weight.detach().float().cpu()
    out_channels, in_channels, k = weight.shape[0], weight.shape[1], weight.shape[-1]
    rows, columns = (out_channels, in_channels) if in_channels > 1 else (1, out_channels)
    tiles = weight.reshape(rows, columns, k, k)
    scale = tiles.abs().amax(dim=(2, 3), keepdim=True).clamp_min(1e-12)
    mosaic = torch.full((rows * (k + 1) + 1, columns * (k + 1) + 1), float("nan"))
    for r in range(rows):
        for c in range(columns):
            mosaic[1 + r * (k + 1):1 + r * (k + 1) + k, 1 + c * (k + 1):1 + c * (k + 1) + k] = (tiles / scale)[r, c]
    fig, ax = plt.subplots(figsize=(max(3.0, 0.45 * columns * k / 5 + 1), max(1.6, 0.45 * rows * k / 5 + 0.8)))
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="white")
    ax.imshow(mosaic.numpy(), cmap=cmap, vmin=-1, vmax=1)
    ax.set_xticks([1 + c * (k + 1) + k // 2 for c in range(columns)], [str(c) for c in range(columns)], fontsize=7)
    ax.set_yticks([1 + r * (k + 1) + k // 2 for r in range(rows)] if rows > 1 else [],
                  [str(r) for r in range(rows)] if rows > 1 else [], fontsize=7)
    ax.set_xlabel("input channel" if in_channels > 1 else "filter", fontsize=8)
    if in_channels > 1:
        ax.set_ylabel("output channel", fontsize=8)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def scatter_labelled(xs: Sequence[float], ys: Sequence[float], labels: Sequence[str], xlabel: str, ylabel: str,
                     title: str, log_x: bool = False) -> Figure:
    """A scatter plot with a text label beside each point."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(xs, ys)
    for x, y, label in zip(xs, ys, labels):
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if log_x:
        ax.set_xscale("log")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _layer_order(names) -> list[str]:
    """Layers of several models on one axis: pixels first, logits last, the rest as first seen."""
    seen = list(dict.fromkeys(names))
    middle = [name for name in seen if name not in ("pixels", "logits")]
    return [n for n in ("pixels",) if n in seen] + middle + [n for n in ("logits",) if n in seen]


def layer_lines(series: dict[str, dict[str, float]], ylabel: str, title: str,
                reference: float | None = None) -> Figure:
    """One line per series over layers (x axis: the union of layers, in first-seen order)."""
    layers = _layer_order(layer for values in series.values() for layer in values)
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for name, values in series.items():
        xs = [layers.index(layer) for layer in values]
        ax.plot(xs, list(values.values()), marker="o", label=name,
                linestyle="--" if "lecture" in name else "-")
    if reference is not None:
        ax.axhline(reference, color="gray", linewidth=1)
    ax.set_xticks(range(len(layers)), layers)
    ax.set(ylabel=ylabel, title=title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


MEASURE_LABELS = {
    "knn1_accuracy": "1-NN accuracy (train -> test)",
    "triplet_order_rate": "P[d(a,p) < d(a,n)], all digits",
    "triplet_order_rate_4_9": "P[d(a,p) < d(a,n)], 4s and 9s",
    "within_between_ratio": "within / between class distance",
    "silhouette": "silhouette (true classes)",
    "wrong_pixel_triplets_put_right": "9-4-4 triplets wrong in pixels, put right",
}


def measure_panels(measures) -> Figure:
    """One panel per representation measure, one line per model, layers along x.

    `measures`: a pandas DataFrame with columns model, layer and the measures.
    """
    layers = _layer_order(measures["layer"])
    fig, axes = plt.subplots(1, len(MEASURE_LABELS), figsize=(4 * len(MEASURE_LABELS), 3.4))
    for ax, (column, label) in zip(axes, MEASURE_LABELS.items()):
        for model, rows in measures.groupby("model", sort=False):
            ax.plot([layers.index(layer) for layer in rows["layer"]], rows[column], marker="o", label=model)
        ax.set_xticks(range(len(layers)), layers, rotation=45, fontsize=8)
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def pca_maps(maps: dict[str, torch.Tensor], labels) -> Figure:
    """2-D PCA maps (name -> (N, 2) points), coloured by class."""
    labels = _as_numpy(labels).astype(int)
    fig, axes = plt.subplots(1, len(maps), figsize=(4.2 * len(maps), 4), squeeze=False)
    for ax, (name, points) in zip(axes[0], maps.items()):
        xy = _as_numpy(points)
        scatter = ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="tab10", s=5, vmin=-0.5, vmax=9.5)
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(scatter, ax=axes[0].tolist(), ticks=range(10), label="digit")
    return fig


def accuracy_by_variant(table) -> Figure:
    """Grouped bars: test accuracy per model, one bar per data variant, error bars over seeds.

    `table`: a DataFrame with model, data_variant, accuracy_mean, accuracy_std.
    """
    models = list(dict.fromkeys(table["model"]))
    variants = list(dict.fromkeys(table["data_variant"]))
    width = 0.8 / max(1, len(variants))
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for i, variant in enumerate(variants):
        rows = table[table["data_variant"] == variant].set_index("model")
        xs = [models.index(m) + i * width for m in rows.index]
        ax.bar(xs, rows["accuracy_mean"], width, yerr=rows["accuracy_std"], capsize=3, label=variant)
    low = float(table["accuracy_mean"].min())
    ax.set_ylim(max(0.0, low - 0.05), 1.0)
    ax.set_xticks([m + width * (len(variants) - 1) / 2 for m in range(len(models))], models)
    ax.set(ylabel="test accuracy", title="test accuracy by data variant (error bars: spread over seeds)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig
