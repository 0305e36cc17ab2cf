"""Scenes for semantic segmentation: several digits on a larger blank canvas, labelled per pixel.

Each scene pastes a few 28x28 digits of one split at random spots of a square
canvas. A pixel belongs to a digit's class where that digit's ink is at least
`ink_threshold` (in [0, 1]); everything else is background, class 10. Boxes
may overlap by a few pixels (MNIST digits have an empty border of about four
pixels, so the ink rarely touches); where two digits do overlap, the brighter
ink wins both the pixel and its label.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

DIGIT_CLASSES = 10
BACKGROUND_CLASS = 10  # the 11th class: no digit's ink here
CLASS_NAMES = tuple(str(d) for d in range(DIGIT_CLASSES)) + ("background",)
# Half intensity: MNIST's anti-aliased rim is labelled background, the stroke digit.
INK_THRESHOLD = 0.5


@dataclass(frozen=True)
class SceneConfig:
    """How scenes are drawn; `size` must be a multiple of the segmenter's output stride (4)."""

    count: int = 400
    size: int = 64
    digits: int = 3
    overlap: int = 4  # at most this many pixels of two boxes' sides overlap
    ink_threshold: float = INK_THRESHOLD
    seed: int = 0


@dataclass
class Scenes:
    images: torch.Tensor  # (N, size, size) float in [0, 1]
    labels: torch.Tensor  # (N, size, size) int64 in 0..10, 10 = background
    boxes: list[list[tuple[int, int, int]]]  # per scene: (digit class, top, left) of each pasted digit

    def __len__(self) -> int:
        return len(self.images)


def _spots(count: int, size: int, window: int, overlap: int, generator: torch.Generator,
           max_tries: int = 1000) -> list[tuple[int, int]]:
    """`count` top-left corners whose boxes overlap by at most `overlap` pixels along some axis."""
    apart = window - overlap
    for _ in range(max_tries):
        corners: list[tuple[int, int]] = []
        for _ in range(count):
            top, left = torch.randint(size - window + 1, (2,), generator=generator).tolist()
            if all(abs(top - t) >= apart or abs(left - l) >= apart for t, l in corners):
                corners.append((top, left))
        if len(corners) == count:
            return corners
    raise ValueError(f"cannot place {count} digits of {window}x{window} on a {size}x{size} canvas "
                     f"with at most {overlap} pixels of overlap")


def paste_digits(digits: torch.Tensor, classes, corners, size: int,
                 ink_threshold: float = INK_THRESHOLD) -> tuple[torch.Tensor, torch.Tensor]:
    """One scene from float digits (k, 28, 28) in [0, 1] at the given corners: (image, per-pixel labels)."""
    image = torch.zeros(size, size)
    owner = torch.full((size, size), BACKGROUND_CLASS, dtype=torch.long)
    window = digits.shape[-1]
    for digit, label, (top, left) in zip(digits, classes, corners):
        region = image[top:top + window, left:left + window]  # a view: writes land in `image`
        brighter = digit > region
        region[brighter] = digit[brighter]
        owner[top:top + window, left:left + window][brighter] = int(label)
    labels = torch.where(image >= ink_threshold, owner, torch.full_like(owner, BACKGROUND_CLASS))
    return image, labels


def make_scenes(images, labels, config: SceneConfig = SceneConfig()) -> Scenes:
    """`config.count` seeded scenes from one split's uint8 digits (N, 28, 28) and their labels.

    Pass the training split for training scenes and the test split for held-out
    ones: a scene only ever holds digits of the split it is given.
    """
    images, labels = torch.as_tensor(images), torch.as_tensor(labels)
    generator = torch.Generator().manual_seed(config.seed)
    window = images.shape[-1]
    scene_images, scene_labels, boxes = [], [], []
    for _ in range(config.count):
        chosen = torch.randint(len(images), (config.digits,), generator=generator)
        corners = _spots(config.digits, config.size, window, config.overlap, generator)
        digits = images[chosen].float() / 255
        classes = labels[chosen].tolist()
        image, label_map = paste_digits(digits, classes, corners, config.size, config.ink_threshold)
        scene_images.append(image)
        scene_labels.append(label_map)
        boxes.append([(c, t, l) for c, (t, l) in zip(classes, corners)])
    return Scenes(torch.stack(scene_images), torch.stack(scene_labels), boxes)
