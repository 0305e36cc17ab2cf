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


def shift_images(images: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """Shift image i of (N, H, W) or (N, C, H, W) by (dy[i], dx[i]) in -1..1, zero fill.

    One gather for the whole batch, on whatever device the images are.
    """
    squeeze = images.ndim == 3
    batch = images[:, None] if squeeze else images
    n, c, height, width = batch.shape
    padded = F.pad(batch, (1, 1, 1, 1))
    rows = (torch.arange(height, device=batch.device) + 1 - dy.to(batch.device)[:, None])[:, None, :, None]
    cols = (torch.arange(width, device=batch.device) + 1 - dx.to(batch.device)[:, None])[:, None, None, :]
    index_n = torch.arange(n, device=batch.device)[:, None, None, None]
    index_c = torch.arange(c, device=batch.device)[None, :, None, None]
    shifted = padded[index_n, index_c, rows, cols]
    return shifted[:, 0] if squeeze else shifted


def shift_batch(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image shifted by its own random one of the 9 shifts (the generator decides)."""
    choice = torch.randint(0, len(SHIFTS), (images.shape[0],), generator=generator,
                           device=generator.device).to(images.device)
    offsets = torch.tensor(SHIFTS, device=images.device)[choice]
    return shift_images(images, offsets[:, 0], offsets[:, 1])


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
