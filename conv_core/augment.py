"""Data augmentation as pure functions on whole batches.

"Cropping just 2 pixels gets you 9 times the data": a 26x26 window at each of
the 3x3 offsets {0,1,2}^2. Kept at 28x28 here, as shifts of -1..+1 pixel with
zero fill, so every model sees the input size it was built for. The shifted
image at offset (dy, dx) puts source pixel (r, c) at (r + dy, c + dx).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Row-major over (dy, dx) in {-1, 0, 1}^2; index 4 is the untouched image.
SHIFTS: tuple[tuple[int, int], ...] = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1))


def crop_at(images: torch.Tensor, top: torch.Tensor, left: torch.Tensor, size: int) -> torch.Tensor:
    """Per-image size x size windows of (N, C, H, W) images at offsets (top[i], left[i]): one gather."""
    n, c = images.shape[:2]
    span = torch.arange(size, device=images.device)
    rows = (top.to(images.device)[:, None] + span)[:, None, :, None]
    cols = (left.to(images.device)[:, None] + span)[:, None, None, :]
    batch = torch.arange(n, device=images.device)[:, None, None, None]
    channel = torch.arange(c, device=images.device)[None, :, None, None]
    return images[batch, channel, rows, cols]


def random_crop_batch(images: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """An independent random size x size window per image of (N, C, H, W) images."""
    n, _, height, width = images.shape
    top = torch.randint(0, height - size + 1, (n,), device=images.device, generator=generator)
    left = torch.randint(0, width - size + 1, (n,), device=images.device, generator=generator)
    return crop_at(images, top, left, size)


def shift_images(images: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """Shift image i of (N, H, W) or (N, C, H, W) by (dy[i], dx[i]) in -1..1, zero fill.

    A shift is a 28x28 window of the image padded by one pixel, at offset (1 - dy, 1 - dx).
    """
    batch = images[:, None] if images.ndim == 3 else images
    shifted = crop_at(F.pad(batch, (1, 1, 1, 1)), 1 - dy, 1 - dx, batch.shape[-1])
    return shifted[:, 0] if images.ndim == 3 else shifted


def shift_batch(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image of (N, C, H, W) shifted by its own random one of the 9 shifts (the generator decides).

    The same as a random crop of the one-pixel-padded batch, which is how it is drawn.
    """
    return random_crop_batch(F.pad(images, (1, 1, 1, 1)), images.shape[-1], generator)


def expand_shifts(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All 9 shifts of every image: 9N images, their labels, and each one's shift index.

    Laid out shift-major (all images at shift 0, then shift 1, ...), so
    `expanded[k * N + i]` is image i at `SHIFTS[k]`.
    """
    n = images.shape[0]
    offsets = torch.tensor(SHIFTS, device=images.device).repeat_interleave(n, dim=0)
    expanded = shift_images(images.repeat(len(SHIFTS), *([1] * (images.ndim - 1))), offsets[:, 0], offsets[:, 1])
    shift_index = torch.arange(len(SHIFTS), device=images.device).repeat_interleave(n)
    return expanded, labels.repeat(len(SHIFTS)), shift_index
