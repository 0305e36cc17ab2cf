"""A trained model as plain torch code, for use without this project.

`LayerNet` and `Normalize` live in conv_core, so pickling them ties a saved
model to this code. `portable_model` rebuilds the same function from stock
`torch.nn` modules only: the input normalisation becomes a fixed 1x1
convolution and a smaller input size a negative zero-padding (a centre crop).

The stages sit in a `DigitClassifier`, an `nn.Sequential` (same stage names
and state dict) that checks its input first: it takes a batch of 28x28
images with or without the channel axis, and refuses what the network would
misread without a word (pixels scaled 0-255, other sizes). The class refers
to nothing but torch, so it can be pickled by value and loaded where this
project is not installed.
"""

from __future__ import annotations

import copy
from collections import OrderedDict

import torch
from torch import nn

from conv_core.models import LayerNet, Normalize

RAW_SIZE = 28


class DigitClassifier(nn.Sequential):
    """Ten digit logits for a batch of grey images, float pixels in [0, 1].

    Accepts shape (N, 28, 28) or (N, 1, 28, 28); raises ValueError for any other
    shape, for integer pixels and for values outside [0, 1].
    """

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        size = RAW_SIZE
        if images.dim() == 3:
            images = images.unsqueeze(1)
        if images.dim() != 4 or tuple(images.shape[1:]) != (1, size, size):
            raise ValueError(f"expected images of shape (N, {size}, {size}) or (N, 1, {size}, {size}), "
                             f"got {tuple(images.shape)}")
        if not images.is_floating_point():
            raise ValueError(f"expected float pixels in [0, 1], got dtype {images.dtype}: "
                             "convert with images.float() / 255")
        if not bool(torch.isfinite(images).all()):
            raise ValueError("pixel values must be finite numbers in [0, 1]; the images hold NaN or infinity")
        if images.numel():
            low, high = float(images.min()), float(images.max())
            if low < 0.0 or high > 1.0:
                raise ValueError(f"pixel values must lie in [0, 1], got values from {low:g} to {high:g}: "
                                 "divide 0-255 images by 255 first")
        return super().forward(images)


def portable_model(model: LayerNet) -> DigitClassifier:
    """Stock modules computing `model` on raw images, float in [0, 1], in eval mode."""
    stages: OrderedDict[str, nn.Module] = OrderedDict()
    margin = (RAW_SIZE - model.input_size) // 2
    if margin:
        stages["center_crop"] = nn.ZeroPad2d(-margin)
    for name, module in model.named_children():
        if isinstance(module, Normalize):
            affine = nn.Conv2d(1, 1, kernel_size=1)
            with torch.no_grad():
                affine.weight.fill_(1.0 / float(module.std))
                affine.bias.fill_(-float(module.mean) / float(module.std))
            affine.requires_grad_(False)
            stages[name] = affine
        else:
            stages[name] = copy.deepcopy(module)
    return DigitClassifier(stages).eval()

