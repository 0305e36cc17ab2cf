"""Figures that look inside the network: gradients, projections, dreams and class maps.

Like `conv_core.plots`, every function returns a matplotlib Figure and never
shows or saves it. Signed maps (gradients, projections) use a red/blue scale
centred on zero; images use grey.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # headless: figures are written to files, never shown
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch, Rectangle  # noqa: E402

from conv_core.plots import _as_numpy  # noqa: E402


def _image(ax, image, title: str | None = None, fontsize: int = 8) -> None:
    image = _as_numpy(image)
    ax.imshow(image, cmap="gray", vmin=0, vmax=max(1.0, float(image.max())))
    _finish(ax, title, fontsize)


def _signed(ax, image, title: str | None = None, fontsize: int = 8) -> None:
    image = _as_numpy(image)
    limit = float(np.abs(image).max()) or 1.0
    ax.imshow(image, cmap="RdBu_r", vmin=-limit, vmax=limit)
    _finish(ax, title, fontsize)


def _finish(ax, title, fontsize) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=fontsize)


def _box(ax, top: int, left: int, bottom: int, right: int, color: str = "yellow", size: int = 28) -> None:
    """Outline pixels top..bottom, left..right (inclusive), clipped to the image."""
    top, left = max(top, 0), max(left, 0)
    bottom, right = min(bottom, size - 1), min(right, size - 1)
    ax.add_patch(Rectangle((left - 0.5, top - 0.5), right - left + 1, bottom - top + 1,
                           fill=False, edgecolor=color, linewidth=1.2))


def layer1_gradients_figure(image, result: dict) -> Figure:
    """conv1's filters above each layer-1 unit's input gradient dh1/dx (from `layer1_gradients`)."""
    units, gradients = result["units"], result["gradients"]
    count = len(units)
    fig, axes = plt.subplots(2, count + 1, figsize=(1.15 * (count + 1), 2.9), squeeze=False)
    _image(axes[0, 0], torch.as_tensor(image).float() / (255 if torch.as_tensor(image).dtype == torch.uint8 else 1),
           "input")
    axes[1, 0].axis("off")
    axes[1, 0].text(0.5, 0.5, "dh1/dx\n=\n1(h1>0) W1", ha="center", va="center", fontsize=8)
    for i, (channel, y, x) in enumerate(units):
        _signed(axes[0, i + 1], result["weights"][channel], f"filter {channel}")
        _signed(axes[1, i + 1], gradients[i], f"({y},{x})")
        _box(axes[1, i + 1], y - 2, x - 2, y + 2, x + 2, color="black")
    fig.suptitle("Layer-1 input gradients are the filters, placed at the unit "
                 f"(max |difference| {result['max_abs_difference']:.1e})", fontsize=9)
    fig.tight_layout()
    return fig


def unit_projections_figure(image, projections: dict, layer: str, unit: Sequence[int], value: float | None = None,
                            field: tuple[int, int, int, int] | None = None) -> Figure:
    """The input beside a unit's gradient, deconvnet and guided-backprop maps (receptive field outlined)."""
    image = torch.as_tensor(image)
    image = image.float() / 255 if image.dtype == torch.uint8 else image.float()
    names = [name for name in ("gradient", "deconvnet", "guided_backprop") if name in projections]
    fig, axes = plt.subplots(1, len(names) + 1, figsize=(2.2 * (len(names) + 1), 2.6))
    unit_name = f"{layer}{tuple(int(u) for u in unit)}"
    _image(axes[0], image, "input" + (f", {unit_name} = {value:.2f}" if value is not None else ""))
    for ax, name in zip(axes[1:], names):
        _signed(ax, projections[name], name.replace("_", " "))
    if field is not None:
        for ax in axes:
            _box(ax, *field, color="gold" if ax is axes[0] else "black", size=image.shape[-1])
    fig.suptitle(f"What {unit_name} looks at, in input space", fontsize=10)
    fig.tight_layout()
    return fig


def _tile_row(tiles: np.ndarray, colour, border: int = 1) -> np.ndarray:
    """(k, H, W) tiles -> one RGB strip (H + 2b, k * (W + 2b), 3), each tile through `colour` with a grey border."""
    rgb = np.stack([colour(tile) for tile in tiles])  # (k, H, W, 3)
    rgb = np.pad(rgb, ((0, 0), (border, border), (border, border), (0, 0)), constant_values=0.6)
    return np.concatenate(list(rgb), axis=1)


def top_activations_figure(images, top) -> Figure:
    """Per channel (rows), its k top-activating images (left) and their deconvnet projections (right).

    Drawn as one mosaic image (hundreds of separate axes take seconds to lay out).
    """
    images = _as_numpy(torch.as_tensor(images).float() / (255 if torch.as_tensor(images).dtype == torch.uint8 else 1))
    channels, k = top.indices.shape
    signed = plt.get_cmap("RdBu_r")

    def grey(tile):
        return np.repeat(np.clip(tile, 0, 1)[..., None], 3, axis=-1)

    def red_blue(tile):
        limit = float(np.abs(tile).max()) or 1.0
        return signed(0.5 + 0.5 * tile / limit)[..., :3]  # each projection on its own symmetric scale

    projections = _as_numpy(top.projections)
    rows = []
    for c in range(channels):
        left = _tile_row(images[top.indices[c].numpy()], grey)
        right = _tile_row(projections[c], red_blue)
        rows.append(np.concatenate([left, np.ones((left.shape[0], 8, 3)), right], axis=1))
    mosaic = np.concatenate(rows, axis=0)
    fig, ax = plt.subplots(figsize=(mosaic.shape[1] / 55, mosaic.shape[0] / 55 + 0.5))
    ax.imshow(mosaic, interpolation="nearest")
    row_height = mosaic.shape[0] / channels
    ax.set_yticks([(c + 0.5) * row_height for c in range(channels)], [f"ch {c}" for c in range(channels)], fontsize=7)
    half = (mosaic.shape[1] - 8) / 2
    ax.set_xticks([half / 2, half + 8 + half / 2], ["top-activating images", "deconvnet projections"], fontsize=8)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(f"{top.layer}: the {k} strongest images per channel (Zeiler and Fergus)", fontsize=10, pad=18)
    fig.tight_layout()
    return fig


def hallucinations_figure(originals, results: dict) -> Figure:
    """Each row an image: the original, then dreamt towards each layer (from `layer_hallucinations`)."""
    originals = torch.as_tensor(originals)
    originals = originals.float() / 255 if originals.dtype == torch.uint8 else originals.float()
    originals = originals.reshape(-1, *originals.shape[-2:])
    layers = list(results)
    fig, axes = plt.subplots(len(originals), len(layers) + 1, figsize=(1.3 * (len(layers) + 1), 1.3 * len(originals)),
                             squeeze=False)
    for row, original in enumerate(originals):
        _image(axes[row, 0], original, "original" if row == 0 else None)
        for col, layer in enumerate(layers, start=1):
            dreamt, record = results[layer]
            growth = float(record["norm_after"][row] / record["norm_before"][row].clamp_min(1e-12))
            _image(axes[row, col], dreamt[row], (f"{layer}\n" if row == 0 else "") + f"||h|| x{growth:.2f}", 7)
    steps = results[layers[0]][1]["steps"] if layers else 0
    fig.suptitle(f"Hallucinations: {steps} steps of ascent on 1/2 ||h||^2", fontsize=9)
    fig.tight_layout()
    return fig


def class_hallucinations_figure(images, records: Sequence[dict]) -> Figure:
    """One image per digit, maximising its logit from noise, titled with the class probability."""
    images = torch.as_tensor(images)
    count = len(images)
    fig, axes = plt.subplots(1, count, figsize=(1.15 * count, 1.6), squeeze=False)
    for ax, image, record in zip(axes[0], images, records):
        _image(ax, image, f"{record['digit']}: p={record['probability']:.2f}")
    fig.suptitle("Class hallucinations: maximise one logit from noise (L2 + total variation)", fontsize=9)
    fig.tight_layout()
    return fig


def class_map_figure(canvas, result, placements: Sequence = (), title: str | None = None) -> Figure:
    """The canvas with each window's predicted class painted at its centre (alpha = confidence).

    Background (below the confidence threshold) is left unpainted; true digit
    boxes are outlined in their class colour and labelled.
    """
    canvas = _as_numpy(canvas)
    colours = plt.get_cmap("tab10").colors
    predicted = result.predicted.numpy()
    confidence = result.confidence.numpy()
    rgba = np.zeros((*predicted.shape, 4))
    painted = predicted >= 0
    rgba[painted, :3] = np.asarray(colours)[predicted[painted]]
    # Fade from the threshold (faint) to certainty (0.6 opaque, so the digits still show).
    rgba[..., 3] = np.where(painted, 0.6 * (confidence - result.threshold) / (1 - result.threshold + 1e-9), 0)
    rgba[..., 3] = np.clip(rgba[..., 3], 0.15 * painted, 0.6)
    stride, window = result.stride, result.window
    rows, cols = predicted.shape
    centre = (window - 1) / 2  # window (i, j) is centred on pixel stride * (i, j) + centre
    extent = (centre - stride / 2, centre + (cols - 0.5) * stride, centre + (rows - 0.5) * stride, centre - stride / 2)

    fig, ax = plt.subplots(figsize=(6.2, 5.4))
    ax.imshow(canvas, cmap="gray", vmin=0, vmax=1)
    ax.imshow(rgba, extent=extent, interpolation="nearest")
    for p in placements:
        ax.add_patch(Rectangle((p.left - 0.5, p.top - 0.5), window, window, fill=False,
                               edgecolor=colours[p.label], linewidth=1.5, linestyle="--"))
        ax.text(p.left, p.top - 1, str(p.label), color=colours[p.label], fontsize=9, va="bottom", weight="bold")
    ax.set_xlim(-0.5, canvas.shape[1] - 0.5)
    ax.set_ylim(canvas.shape[0] - 0.5, -0.5)
    handles = [Patch(color=colours[c], label=str(c)) for c in range(len(colours))]
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, title="class",
              title_fontsize=8, frameon=False)
    share = 100 * result.background_fraction()
    ax.set_title(title or f"Classifier slid over the canvas, stride {stride}: colour = class at the window centre\n"
                 f"{share:.0f}% of windows are background (confidence < {result.threshold}); dashed = true digits",
                 fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    return fig

