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

from conv_core.plots import SMALLEST_FONT, _as_numpy, legible, report_inches  # noqa: E402


def _image(ax, image, title: str | None = None, fontsize: float = SMALLEST_FONT) -> None:
    image = _as_numpy(image)
    ax.imshow(image, cmap="gray", vmin=0, vmax=max(1.0, float(image.max())))
    _finish(ax, title, fontsize)


def _signed(ax, image, title: str | None = None, fontsize: float = SMALLEST_FONT) -> None:
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


def _as_unit_range(image) -> torch.Tensor:
    image = torch.as_tensor(image)
    return image.float() / 255 if image.dtype == torch.uint8 else image.float()


@legible
def layer1_gradients_figure(image, result: dict) -> Figure:
    """conv1's filters above each layer-1 unit's input gradient dh1/dx (from `layer1_gradients`).

    The gradient is shown cut to the unit's 5x5 receptive field, at the size of
    the filter above it, so that the two can be compared cell by cell; the input
    on the left marks where each unit sits.
    """
    units, gradients = result["units"], result["gradients"]
    count = len(units)
    fig, axes = plt.subplots(2, count + 1, figsize=(report_inches("large"), 2.9), squeeze=False)
    image = _as_unit_range(image)
    _image(axes[0, 0], image, "input, units")
    size = image.shape[-1]
    k = result["weights"].shape[-1]
    half = k // 2
    for i, (channel, y, x) in enumerate(units):
        _box(axes[0, 0], y - half, x - half, y + half, x + half, color="gold", size=size)
        padded = torch.nn.functional.pad(torch.as_tensor(gradients[i]), (half, half, half, half))
        window = padded[y:y + k, x:x + k]  # the receptive field, zero outside the image
        _signed(axes[0, i + 1], result["weights"][channel], f"filter {channel}")
        _signed(axes[1, i + 1], window, f"unit at ({y},{x})")
        for ax in (axes[0, i + 1], axes[1, i + 1]):
            _cell_grid(ax, k)
    axes[1, 0].axis("off")
    axes[1, 0].text(0.5, 0.5, "this row: dh1/dx\nin the 5x5\naround the unit\n= 1(h1>0) W1", ha="center", va="center")
    fig.suptitle("Layer-1 input gradients are the filters, placed at the unit "
                 f"(max |difference| {result['max_abs_difference']:.1e})")
    fig.tight_layout()
    return fig


def _cell_grid(ax, k: int) -> None:
    """Thin grey lines between the k x k cells of a small image, so each weight reads as a cell."""
    for edge in np.arange(0.5, k - 1, 1.0):
        ax.axhline(edge, color="0.55", linewidth=0.5)
        ax.axvline(edge, color="0.55", linewidth=0.5)


@legible
def unit_projections_figure(image, projections: dict, layer: str, unit: Sequence[int], value: float | None = None,
                            field: tuple[int, int, int, int] | None = None) -> Figure:
    """The input beside a unit's gradient, deconvnet and guided-backprop maps (receptive field outlined).

    With a receptive field, a second row shows the same maps cut to it, so that
    the pixels the unit looks at are large enough to read.
    """
    image = _as_unit_range(image)
    names = [name for name in ("gradient", "deconvnet", "guided_backprop") if name in projections]
    rows = 2 if field is not None else 1
    fig, axes = plt.subplots(rows, len(names) + 1, figsize=(report_inches("large"), 2.6 * rows + 0.5), squeeze=False)
    unit_name = f"{layer}{tuple(int(u) for u in unit)}"
    _image(axes[0, 0], image, "input" + (f", {unit_name} = {value:.2f}" if value is not None else ""))
    for ax, name in zip(axes[0, 1:], names):
        _signed(ax, projections[name], name.replace("_", " "))
    if field is not None:
        size = image.shape[-1]
        for ax in axes[0]:
            _box(ax, *field, color="gold" if ax is axes[0, 0] else "black", size=size)
        top, left, bottom, right = max(field[0], 0), max(field[1], 0), min(field[2], size - 1), min(field[3], size - 1)
        crop = (slice(top, bottom + 1), slice(left, right + 1))
        _image(axes[1, 0], image[crop], f"input, rows {top}-{bottom}, cols {left}-{right}")
        for ax, name in zip(axes[1, 1:], names):
            _signed(ax, torch.as_tensor(projections[name])[crop], f"{name.replace('_', ' ')}, receptive field")
    fig.suptitle(f"What {unit_name} looks at, in input space")
    fig.tight_layout()
    return fig


def _tile_row(tiles: np.ndarray, colour, border: int = 1) -> np.ndarray:
    """(k, H, W) tiles -> one RGB strip (H + 2b, k * (W + 2b), 3), each tile through `colour` with a grey border."""
    rgb = np.stack([colour(tile) for tile in tiles])  # (k, H, W, 3)
    rgb = np.pad(rgb, ((0, 0), (border, border), (border, border), (0, 0)), constant_values=0.6)
    return np.concatenate(list(rgb), axis=1)


@legible
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
    width = report_inches("large")
    fig, ax = plt.subplots(figsize=(width, (width - 0.7) * mosaic.shape[0] / mosaic.shape[1] + 0.7))
    ax.imshow(mosaic, interpolation="nearest")
    row_height = mosaic.shape[0] / channels
    ax.set_yticks([(c + 0.5) * row_height for c in range(channels)], [f"ch {c}" for c in range(channels)])
    half = (mosaic.shape[1] - 8) / 2
    ax.set_xticks([half / 2, half + 8 + half / 2], ["top-activating images", "deconvnet projections"])
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(f"{top.layer}: the {k} strongest images per channel (Zeiler and Fergus)", pad=18)
    fig.tight_layout()
    return fig


@legible
def hallucinations_figure(originals, results: dict) -> Figure:
    """Each row an image: the original, then dreamt towards each layer (from `layer_hallucinations`)."""
    originals = _as_unit_range(originals)
    originals = originals.reshape(-1, *originals.shape[-2:])
    layers = list(results)
    columns = len(layers) + 1
    width = report_inches("large")
    fig, axes = plt.subplots(len(originals), columns, figsize=(width, (width / columns + 0.25) * len(originals) + 0.4),
                             squeeze=False)
    for row, original in enumerate(originals):
        _image(axes[row, 0], original, "original" if row == 0 else None)
        for col, layer in enumerate(layers, start=1):
            dreamt, record = results[layer]
            growth = float(record["norm_after"][row] / record["norm_before"][row].clamp_min(1e-12))
            _image(axes[row, col], dreamt[row], (f"{layer}\n" if row == 0 else "") + f"||h|| x{growth:.2f}")
    steps = results[layers[0]][1]["steps"] if layers else 0
    fig.suptitle(f"Hallucinations: {steps} steps of ascent on 1/2 ||h||^2 (pixels on 0-1, black = 0)")
    fig.tight_layout()
    return fig


def min_max_per_image(images) -> torch.Tensor:
    """Each image (N, H, W) stretched to span [0, 1] on its own: (x - min) / (max - min); a flat image is 0."""
    images = torch.as_tensor(images).float()
    flat = images.reshape(len(images), -1)
    low = flat.min(dim=1).values.reshape(-1, *([1] * (images.dim() - 1)))
    high = flat.max(dim=1).values.reshape(-1, *([1] * (images.dim() - 1)))
    return (images - low) / (high - low).clamp_min(1e-12)


@legible
def class_hallucinations_figure(images, records: Sequence[dict]) -> Figure:
    """One image per digit, maximising its logit from noise, titled with the class probability.

    The L2 and total-variation penalties keep these images faint (pixels near 0),
    which on a 0-1 grey scale is nearly black; each is therefore shown min-max
    normalised on its own, its raw pixel range written under it, and the title says so.
    """
    images = torch.as_tensor(images).float()
    images = images.reshape(-1, *images.shape[-2:])
    count = len(images)
    fig, axes = plt.subplots(1, count, figsize=(report_inches("large"), 2.3), squeeze=False)
    for ax, image, shown, record in zip(axes[0], images, min_max_per_image(images), records):
        ax.imshow(_as_numpy(shown), cmap="gray", vmin=0, vmax=1)
        _finish(ax, f"{record['digit']}: p={record['probability']:.2f}", SMALLEST_FONT)
        ax.set_xlabel(f"{float(image.min()):.2f}-{float(image.max()):.2f}", fontsize=SMALLEST_FONT)
    fig.suptitle("Class hallucinations: maximise one logit from noise (L2 + total variation)\n"
                 "each image min-max normalised on its own (black = its lowest pixel, white = its highest); "
                 "raw range below")
    fig.tight_layout()
    return fig


@legible
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
        ax.text(p.left, p.top - 1, str(p.label), color=colours[p.label], fontsize=10, va="bottom", weight="bold")
    ax.set_xlim(-0.5, canvas.shape[1] - 0.5)
    ax.set_ylim(canvas.shape[0] - 0.5, -0.5)
    handles = [Patch(color=colours[c], label=str(c)) for c in range(len(colours))]
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.01, 0.5), title="class", frameon=False)
    share = 100 * result.background_fraction()
    ax.set_title(title or f"Classifier slid over the canvas, stride {stride}: colour = class at the window centre\n"
                 f"{share:.0f}% of windows are background (confidence < {result.threshold}); dashed = true digits")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    return fig

