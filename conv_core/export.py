"""A trained model as plain torch modules, for use without this project.

`LayerNet` and `Normalize` live in conv_core, so pickling them ties a saved
model to this code. `portable_model` rebuilds the same function from stock
`torch.nn` modules only: the input normalisation becomes a fixed 1x1
convolution and a smaller input size a negative zero-padding (a centre crop).
Its input is raw images, float in [0, 1], shape (N, 1, 28, 28).
"""

from __future__ import annotations

import copy
from collections import OrderedDict

import torch
from torch import nn

from conv_core.models import LayerNet, Normalize

RAW_SIZE = 28


def portable_model(model: LayerNet) -> nn.Sequential:
    """An `nn.Sequential` of stock modules computing `model` on raw 28x28 images."""
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
    return nn.Sequential(stages).eval()
