"""The lecture's networks, described as data and built by one function.

Each model is a list of layer specs (the way torchvision writes VGG). The same
specs drive `build_model` and `conv_core.counting`, so the torch module and
the lecture's arithmetic can never drift apart. Flattened sizes are computed
from the input size, never typed in.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from conv_core.data import MNIST_MEAN, MNIST_STD
from conv_core import conv_backward
from conv_core.first_layer import ConvPoolReLU, layer_fits
from conv_core.pooling import MaxPool2x2, is_plain_2x2


@dataclass(frozen=True)
class Conv:
    out_channels: int
    kernel: int
    padding: int = 0


@dataclass(frozen=True)
class Pool:
    size: int = 2


@dataclass(frozen=True)
class Linear:
    out_features: int


@dataclass(frozen=True)
class Dropout:
    p: float


# Every Conv and every hidden Linear is followed by its own ReLU module (captum's
# deconvnet and guided backprop override nn.ReLU modules, one per use). The last
# Linear produces the logits and gets none.
ARCHITECTURES: dict[str, dict] = {
    # The lecture's network: 28x28x1 -> 28x28x9 -> 14x14x9 -> 14x14x16 -> 7x7x16 -> 10.
    "seed_cnn": dict(
        input_size=28,
        layers=[Conv(9, 5, padding=2), Pool(2), Conv(16, 5, padding=2), Pool(2), Linear(10)],
        description="the lecture's CNN: 5x5 convs with 9 and 16 channels, 2x2 max pools, linear to 10",
    ),
    # The lecture's introductory MNIST network.
    "mlp": dict(
        input_size=28,
        layers=[Linear(225), Linear(144), Linear(10)],
        description="the lecture's MLP baseline: 784 -> 225 -> 144 -> 10",
    ),
    # "Trend in 2015 towards small filters (3x3) and poolings (2x2), but lots of layers."
    "vgg_small": dict(
        input_size=28,
        layers=[
            Conv(8, 3, padding=1), Conv(8, 3, padding=1), Pool(2),
            Conv(16, 3, padding=1), Conv(16, 3, padding=1), Pool(2),
            Conv(32, 3, padding=1), Conv(32, 3, padding=1), Pool(2),
            Linear(10),
        ],
        description="VGG-style: six 3x3 convs in three 2x2-pooled blocks, linear to 10",
    ),
    # The network of the lecture's Caffe notebooks: 24x24 random crops, input
    # dropout 0.1, no padding and no second pool, so 6x6x16 = 576 -> 10.
    "caffe_notebook": dict(
        input_size=24,
        layers=[Dropout(0.1), Conv(9, 5), Pool(2), Conv(16, 5), Linear(10)],
        description="the Caffe notebooks' variant: 24x24 crops, input dropout, no second pool, 576 -> 10",
    ),
}

MODEL_NAMES: tuple[str, ...] = tuple(ARCHITECTURES)


class Normalize(nn.Module):
    """Maps raw pixels in [0, 1] to zero mean, unit variance, inside the model (the data set's constants).

    Keeping it in the model means a saved model takes raw images and needs no
    project code at prediction time.
    """

    def __init__(self, mean: float = MNIST_MEAN, std: float = MNIST_STD):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean))
        self.register_buffer("std", torch.tensor(std))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def model_normalization(model: nn.Module) -> tuple[float, float]:
    """The (mean, std) a built model normalises its input with."""
    return float(model.normalize.mean), float(model.normalize.std)


class LayerNet(nn.Sequential):
    """A Sequential with named stages, its name and the input size it expects.

    Input: float images in [0, 1], shape (N, 1, input_size, input_size).
    """

    def __init__(self, name: str, input_size: int, stages: OrderedDict):
        super().__init__(stages)
        self.name = name
        self.input_size = input_size

    def body(self) -> nn.Sequential:
        """The network without its input normalisation (acts on normalised pixels)."""
        return nn.Sequential(OrderedDict((n, m) for n, m in self.named_children() if n != "normalize"))


def architecture(name: str, **overrides) -> dict:
    """The spec of a named model, with `layers` or `input_size` optionally replaced."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODEL_NAMES)}")
    unknown = set(overrides) - {"layers", "input_size", "in_channels"}
    if unknown:
        raise ValueError(f"unknown override(s) {sorted(unknown)} for model {name!r}; "
                         "allowed: layers, input_size, in_channels")
    spec = dict(ARCHITECTURES[name], in_channels=1)
    spec.update(overrides)
    return spec


def build_model(name: str, normalization: tuple[float, float] = (MNIST_MEAN, MNIST_STD), **overrides) -> LayerNet:
    """Build a named model from its layer specs. Unknown names raise ValueError.

    `normalization` is the (mean, std) of the training pixels in [0, 1] the
    model normalises with: its data set's (conv_core.datasets), MNIST's by default.
    """
    spec = architecture(name, **overrides)
    channels, size = spec["in_channels"], spec["input_size"]
    mean, std = normalization
    stages: OrderedDict[str, nn.Module] = OrderedDict(normalize=Normalize(mean, std))
    counters = {"conv": 0, "pool": 0, "fc": 0, "relu": 0, "dropout": 0}
    flat: int | None = None
    layers = spec["layers"]
    last_linear = max(i for i, layer in enumerate(layers) if isinstance(layer, Linear))

    def add(kind: str, module: nn.Module) -> None:
        counters[kind] += 1
        stages[f"{kind}{counters[kind]}"] = module

    for i, layer in enumerate(layers):
        if isinstance(layer, Dropout):
            add("dropout", nn.Dropout(layer.p))
        elif isinstance(layer, Conv):
            add("conv", nn.Conv2d(channels, layer.out_channels, layer.kernel, padding=layer.padding))
            add("relu", nn.ReLU())
            channels = layer.out_channels
            size = size + 2 * layer.padding - layer.kernel + 1
        elif isinstance(layer, Pool):
            add("pool", nn.MaxPool2d(layer.size))
            size //= layer.size
        elif isinstance(layer, Linear):
            if flat is None:
                stages["flatten"] = nn.Flatten()
                flat = channels * size * size
            add("fc", nn.Linear(flat, layer.out_features))
            flat = layer.out_features
            if i != last_linear:
                add("relu", nn.ReLU())
        else:
            raise TypeError(f"unknown layer spec {layer!r}")
    return LayerNet(name, spec["input_size"], stages)


def pool_before_relu(model: nn.Sequential) -> nn.Sequential:
    """The same modules in a faster order for training: every ReLU that a max pool
    follows moves behind it, and a 2x2 pool takes that ReLU into its own pass.

    Max pooling commutes with ReLU (both keep order), so the output is the
    same, and so is every gradient: the pool routes the gradient to the same
    window maximum, and the ReLU passes or stops it by the same sign. The
    ReLU then works on a quarter of the values (about 15% of a seed CNN step,
    fp32), and inside the pooling kernel (`MaxPool2x2(relu=True)`) it costs
    no pass of its own. A first layer of one input channel, its pool and
    ReLU become one stage (`ConvPoolReLU`, named after the convolution), and
    a 16-channel convolution takes its backward from a C kernel where
    that is faster (`conv_core.conv_backward`).
    Modules and parameters are shared with `model`, so its weights are what
    this trains; the model itself keeps the lecture's order, which captum's
    backward rules and the figures rely on.
    """
    stages = [(name, MaxPool2x2() if is_plain_2x2(module) else module) for name, module in model.named_children()]
    reordered = []
    while stages:
        (name, module), stages = stages[0], stages[1:]
        if isinstance(module, nn.ReLU) and stages and isinstance(stages[0][1], (nn.MaxPool2d, MaxPool2x2)):
            (pool_name, pool), stages = stages[0], stages[1:]
            if isinstance(pool, MaxPool2x2):
                reordered.append((pool_name, MaxPool2x2(relu=True)))
                continue
            reordered.append((pool_name, pool))
        reordered.append((name, module))
    stages = [(name, conv_backward.KernelBackwardConv(module) if conv_backward.layer_fits(module) else module)
              for name, module in _fuse_first_layer(reordered)]
    return nn.Sequential(OrderedDict(stages))


def _fuse_first_layer(stages: list[tuple[str, nn.Module]]) -> list[tuple[str, nn.Module]]:
    """A one-channel convolution followed by a pool with its ReLU becomes one `ConvPoolReLU` stage
    (conv_core.first_layer: one C pass where the CPU has AVX-512 or AVX2, the same two modules elsewhere)."""
    fused = []
    while stages:
        (name, module), stages = stages[0], stages[1:]
        if layer_fits(module) and stages and isinstance(stages[0][1], MaxPool2x2) and stages[0][1].relu:
            module, stages = ConvPoolReLU(module), stages[1:]
        fused.append((name, module))
    return fused
