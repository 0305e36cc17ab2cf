"""The segmentation figure: scene | ground truth | prediction, like the slide (Long et al., 2015).

Returns a matplotlib Figure and never shows or saves it, like `conv_core.plots`.
Digits keep their tab10 colours (as in the sliding class map); background is black.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # headless: figures are written to files, never shown
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from conv_core.plots import _as_numpy  # noqa: E402
from conv_core.scenes import CLASS_NAMES  # noqa: E402

CLASS_COLOURS = (*plt.get_cmap("tab10").colors, (0.0, 0.0, 0.0))
CLASS_CMAP = ListedColormap(CLASS_COLOURS)


def _panel(ax, image, title: str | None, labels: bool) -> None:
    if labels:
        ax.imshow(_as_numpy(image), cmap=CLASS_CMAP, vmin=-0.5, vmax=len(CLASS_NAMES) - 0.5, interpolation="nearest")
    else:
        ax.imshow(_as_numpy(image), cmap="gray", vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=10)


def segmentation_figure(images, truths, predictions, baselines=None, scores: Sequence[float] | None = None,
                        title: str | None = None) -> Figure:
    """One row per scene: image, ground truth, prediction (and the sliding baseline's, if given).

    `images` (k, H, W) in [0, 1]; the others (k, H, W) class maps with 10 = background;
    `scores` optional per-scene numbers (e.g. pixel accuracy) shown over the prediction.
    """
    columns = [("image", images, False), ("ground truth", truths, True), ("FCN prediction", predictions, True)]
    if baselines is not None:
        columns.append(("sliding baseline", baselines, True))
    rows = len(images)
    fig, axes = plt.subplots(rows, len(columns), figsize=(2.0 * len(columns) + 0.4, 2.0 * rows + 1.1), squeeze=False)
    for r in range(rows):
        for c, (name, maps, labels) in enumerate(columns):
            heading = name if r == 0 else None
            if scores is not None and name == "FCN prediction":
                heading = f"{name + chr(10) if r == 0 else ''}{100 * scores[r]:.0f}% of pixels right"
            _panel(axes[r, c], maps[r], heading, labels)
    handles = [Patch(facecolor=colour, edgecolor="0.5", label=name)
               for colour, name in zip(CLASS_COLOURS, CLASS_NAMES)]
    fig.legend(handles=handles, loc="lower center", ncol=6, fontsize=9, frameon=False, handlelength=1.2,
               columnspacing=1.0)
    fig.suptitle(title or "Semantic segmentation: every pixel gets a class (10 digits or background)", fontsize=10)
    fig.tight_layout(rect=(0, 0.09 * 3 / (rows + 1.5), 1, 0.97))
    return fig


def pixel_accuracies(truths, predictions) -> list[float]:
    """Per-scene share of pixels labelled right."""
    return [float(np.mean(_as_numpy(t) == _as_numpy(p))) for t, p in zip(truths, predictions)]
