"""A drawing made into an MNIST digit, the way the MNIST digits themselves were made.

LeCun, Cortes and Burges: "The original black and white images from NIST were
size normalized to fit in a 20x20 pixel box while preserving their aspect
ratio. The resulting images contain grey levels as a result of the
anti-aliasing technique used by the normalization algorithm. The images were
centered in a 28x28 image by computing the center of mass of the pixels, and
translating the image so as to position this center of mass at the center of
the 28x28 field."

A network trained on MNIST has only seen digits like that: a drawing fed to
it raw (small, off centre, thin) is another distribution, so the pad's image
goes through the same steps first.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SIZE = 28
BOX = 20
# Where the centre of mass of an MNIST digit lies, in pixel indices: measured on
# the test digits (mean 14.00 in y and 14.01 in x), not the geometric centre 13.5.
CENTRE = 14.0
# Pad pixels fainter than this are taken as background when finding the digit's box.
INK = 0.05


class EmptyDrawingError(ValueError):
    """The drawing has no ink."""


def ink_box(image: torch.Tensor) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of the pixels above INK, bottom and right exclusive."""
    rows = (image > INK).any(dim=1).nonzero()
    cols = (image > INK).any(dim=0).nonzero()
    if len(rows) == 0:
        raise EmptyDrawingError("the drawing is empty: draw a digit on the pad, or pick a test digit")
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def fit_in_box(image: torch.Tensor, box: int = BOX) -> torch.Tensor:
    """The inked part of `image`, scaled (keeping its aspect ratio) so its longer side is `box` pixels."""
    top, left, bottom, right = ink_box(image)
    digit = image[top:bottom, left:right]
    height, width = digit.shape
    scale = box / max(height, width)
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    # Antialiased resampling: the grey edges LeCun's normalisation produced.
    scaled = F.interpolate(digit[None, None], size=size, mode="bilinear", antialias=True, align_corners=False)
    return scaled[0, 0].clamp(0, 1)


def centre_of_mass(image: torch.Tensor) -> tuple[float, float]:
    """(y, x) of the intensity-weighted mean pixel position."""
    mass = image.sum()
    rows = torch.arange(image.shape[0], dtype=image.dtype)
    cols = torch.arange(image.shape[1], dtype=image.dtype)
    return float((image.sum(dim=1) * rows).sum() / mass), float((image.sum(dim=0) * cols).sum() / mass)


def _shift_keeping_ink(offset: float, low: int, high: int) -> int:
    """The whole-pixel shift nearest `offset` that keeps pixels low..high-1 inside 0..SIZE-1."""
    return max(-low, min(SIZE - high, round(offset)))


def mnist_style(image) -> torch.Tensor:
    """A drawing (H, W), ink bright on dark, uint8 or float in [0, 1], as a float 28x28 MNIST digit in [0, 1]."""
    image = torch.as_tensor(image)
    if image.dim() != 2:
        raise ValueError(f"a drawing is one grey image (H, W), got shape {tuple(image.shape)}")
    image = image.float() / 255 if image.dtype == torch.uint8 else image.float().clamp(0, 1)
    digit = fit_in_box(image)
    height, width = digit.shape
    canvas = torch.zeros(SIZE, SIZE)
    top, left = (SIZE - height) // 2, (SIZE - width) // 2
    canvas[top:top + height, left:left + width] = digit
    y, x = centre_of_mass(canvas)
    dy = _shift_keeping_ink(CENTRE - y, top, top + height)
    dx = _shift_keeping_ink(CENTRE - x, left, left + width)
    centred = torch.zeros(SIZE, SIZE)
    centred[top + dy:top + dy + height, left + dx:left + dx + width] = digit
    return centred
