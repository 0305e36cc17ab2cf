"""Semantic segmentation the lecture's way: slide the classifier over a bigger image.

Long et al. (2015): a classifier whose last layer is dense can be rewritten as a
fully convolutional net (FCN). Linear(784, 10) reads a 7x7x16 block, so it is
the same thing as Conv2d(16, 10, 7); on a larger canvas that conv slides, and
every window shares the convolutions computed underneath it. The FCN's output
at (i, j) is the 28x28 window whose top-left corner is (4i, 4j): output stride 4
(two 2x2 pools). Denser maps (stride 2 or 1) come from shift-and-stitch: run the
FCN on the canvas shifted by 0..3 pixels and interleave.

One honest caveat: the FCN and an explicitly cropped window agree exactly only
when the window is the whole input. On a canvas, conv padding at a window's
edge sees the neighbouring canvas pixels in the FCN but zeros (in normalised
units, i.e. grey 0.1307) in the crop, so border-sensitive logits differ.
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from conv_core.evaluate import to_model_input
from conv_core.gradients import eval_mode, one_thread
from conv_core.models import LayerNet

# The classifier never saw an empty or off-centre window, so "background" can only
# be "not confident": a location whose top softmax probability is below this.
BACKGROUND_THRESHOLD = 0.9
BACKGROUND = -1


def output_stride(model: nn.Module) -> int:
    """How far apart (in pixels) neighbouring outputs of the fully convolutional net are."""
    stride = 1
    for module in model.modules():
        if isinstance(module, (nn.MaxPool2d, nn.Conv2d)):
            step = module.stride
            stride *= step[0] if isinstance(step, tuple) else step
    return stride


def fully_convolutional(model: LayerNet) -> LayerNet:
    """The classifier as a fully convolutional net (a copy; the original is untouched).

    The first Linear after Flatten becomes a Conv2d whose kernel covers the whole
    flattened feature map; later Linears become 1x1 convs. nn.Flatten orders
    features (C, H, W), so fc.weight.view(out, C, H, W) is that conv's weight.
    """
    stages: OrderedDict[str, nn.Module] = OrderedDict()
    channels = getattr(model, "in_channels", 1)
    flattened = False
    for name, module in model.named_children():
        if isinstance(module, nn.Conv2d):
            channels = module.out_channels
        if isinstance(module, nn.Flatten):
            flattened = True
            continue
        if isinstance(module, nn.Linear):
            if flattened:
                side = math.isqrt(module.in_features // channels)
                if channels * side * side != module.in_features:
                    raise ValueError(f"{name}: {module.in_features} features are not {channels} square maps")
                flattened = False
            else:
                channels, side = module.in_features, 1
            conv = nn.Conv2d(channels, module.out_features, side)
            with torch.no_grad():
                conv.weight.copy_(module.weight.reshape(module.out_features, channels, side, side))
                conv.bias.copy_(module.bias)
            stages[name] = conv.to(module.weight.device, module.weight.dtype)
            channels = module.out_features
            continue
        stages[name] = copy.deepcopy(module)
    fcn = LayerNet(f"{model.name}_fcn", model.input_size, stages)
    return fcn.eval()


# --------------------------------------------------------------------------- a canvas of digits


class Placement(NamedTuple):
    label: int
    top: int
    left: int
    index: int  # which of the given images


def make_canvas(images, labels, size: int = 112, count: int = 5, seed: int = 0, align: int = 4, gap: int = 0,
                max_tries: int = 10_000) -> tuple[torch.Tensor, list[Placement]]:
    """`count` random digits pasted at non-overlapping 28x28 spots on an empty (0) canvas.

    Corners are multiples of `align` (4 = the FCN's output stride), so each digit
    sits exactly in one of the FCN's windows; boxes are at least `gap` pixels
    apart (8 keeps every other digit out of a window's receptive field). Returns
    a float (size, size) canvas in [0, 1] and the placements, in pasting order.
    """
    images = to_model_input(torch.as_tensor(images))[:, 0]
    labels = torch.as_tensor(labels)
    window = images.shape[-1]
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(len(images), generator=generator)[:count].tolist()
    corners = torch.arange(0, size - window + 1, align)
    canvas = torch.zeros(size, size)
    placements: list[Placement] = []
    for index in chosen:
        for _ in range(max_tries):
            top, left = corners[torch.randint(len(corners), (2,), generator=generator)].tolist()
            if all(abs(top - p.top) >= window + gap or abs(left - p.left) >= window + gap for p in placements):
                break
        else:
            raise ValueError(f"could not place {count} digits on a {size}x{size} canvas without overlap")
        canvas[top:top + window, left:left + window] = images[index]
        placements.append(Placement(int(labels[index]), top, left, index))
    return canvas, placements


# --------------------------------------------------------------------------- sliding: FCN and explicit


def _canvas_batch(canvas, device) -> torch.Tensor:
    canvas = torch.as_tensor(canvas)
    if canvas.dtype == torch.uint8:
        canvas = canvas.float() / 255
    return canvas.float().reshape(1, 1, *canvas.shape[-2:]).to(device)


@one_thread()
def dense_logits(fcn: nn.Module, canvas, stride: int | None = None) -> torch.Tensor:
    """FCN logits (classes, rows, cols) for every window at `stride` (default: the net's own).

    Output (i, j) is the window with top-left corner (stride * i, stride * j).
    A stride finer than the net's comes from shift-and-stitch.
    """
    net_stride = output_stride(fcn)
    stride = stride or net_stride
    if net_stride % stride:
        raise ValueError(f"stride must divide the FCN's output stride {net_stride}, got {stride}")
    x = _canvas_batch(canvas, next(fcn.parameters()).device)
    height, width = x.shape[-2:]
    window = int(getattr(fcn, "input_size", 28))
    rows, cols = (height - window) // stride + 1, (width - window) // stride + 1
    step = net_stride // stride
    with eval_mode(fcn), torch.no_grad():
        out = None
        for dy in range(0, net_stride, stride):
            for dx in range(0, net_stride, stride):
                part = fcn(x[..., dy:, dx:])[0]
                if out is None:
                    out = part.new_empty(part.shape[0], rows, cols)
                out[:, dy // stride::step, dx // stride::step] = part
    return out.cpu()


@one_thread()
def sliding_window_logits(model: nn.Module, canvas, stride: int = 4, batch_size: int = 2048) -> torch.Tensor:
    """The explicit baseline: crop every window at `stride` and classify each crop.

    Same indexing as `dense_logits` (window (i, j) has its corner at stride * (i, j))
    and no canvas padding, so the two maps line up cell for cell.
    """
    x = _canvas_batch(canvas, next(model.parameters()).device)[0, 0]
    window = int(getattr(model, "input_size", 28))
    crops = x.unfold(0, window, stride).unfold(1, window, stride)  # (rows, cols, window, window), a view
    rows, cols = crops.shape[:2]
    crops = crops.reshape(rows * cols, 1, window, window)
    with eval_mode(model), torch.no_grad():
        logits = torch.cat([model(crops[start:start + batch_size]) for start in range(0, len(crops), batch_size)])
    return logits.T.reshape(-1, rows, cols).cpu()


def compare_sliding(fcn_logits: torch.Tensor, explicit_logits: torch.Tensor, placements=(), stride: int = 4) -> dict:
    """How far the FCN's map is from the explicit windows' (same grid): overall and on the placed digits."""
    difference = (fcn_logits - explicit_logits).abs().amax(dim=0)  # (rows, cols), worst class
    agreement = (fcn_logits.argmax(dim=0) == explicit_logits.argmax(dim=0)).float().mean()
    on_digits = [float(difference[p.top // stride, p.left // stride]) for p in placements]
    return {"max_abs_difference": float(difference.max()), "median_abs_difference": float(difference.median()),
            "argmax_agreement": float(agreement), "max_abs_difference_on_digits": max(on_digits, default=0.0)}


# --------------------------------------------------------------------------- a class map


@dataclass
class ClassMap:
    """Per-window classification of a canvas; window (i, j) has its corner at stride * (i, j)."""

    logits: torch.Tensor  # (classes, rows, cols)
    probabilities: torch.Tensor  # (classes, rows, cols), softmax over classes
    predicted: torch.Tensor  # (rows, cols) class, or BACKGROUND where confidence < threshold
    confidence: torch.Tensor  # (rows, cols) top softmax probability
    threshold: float
    stride: int
    window: int

    def window_of(self, top: int, left: int) -> tuple[int, int]:
        """The (row, col) of the window whose corner is (top, left); both must be multiples of stride."""
        if top % self.stride or left % self.stride:
            raise ValueError(f"({top}, {left}) is not on the stride-{self.stride} grid")
        return top // self.stride, left // self.stride

    def background_fraction(self) -> float:
        return float((self.predicted == BACKGROUND).float().mean())


def class_map(fcn: nn.Module, canvas, stride: int | None = None,
              threshold: float = BACKGROUND_THRESHOLD) -> ClassMap:
    """Class, confidence and logits at every window of the canvas, with a background rule.

    Background is "the classifier is not sure": top softmax probability below
    `threshold` (default 0.9). It is a heuristic, not a trained background class;
    an empty window can still be confidently called some digit.
    """
    logits = dense_logits(fcn, canvas, stride)
    probabilities = logits.softmax(dim=0)
    confidence, predicted = probabilities.max(dim=0)
    predicted = torch.where(confidence < threshold, torch.full_like(predicted, BACKGROUND), predicted)
    return ClassMap(logits, probabilities, predicted, confidence, threshold,
                    stride or output_stride(fcn), int(getattr(fcn, "input_size", 28)))


def placement_hits(result: ClassMap, placements: list[Placement]) -> list[bool]:
    """Whether the window exactly on each placed digit predicts its label."""
    return [int(result.predicted[result.window_of(p.top, p.left)]) == p.label for p in placements]


# --------------------------------------------------------------------------- cost


@one_thread()
def multiply_adds(model: nn.Module, height: int, width: int) -> int:
    """Multiply-adds of one forward pass on a (1, C, height, width) input, from conv and linear layers.

    A conv does k*k*cin/groups multiply-adds per output value; a linear in_features per output.
    """
    total = 0

    def count(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            total += output.numel() * kh * kw * module.in_channels // module.groups
        else:
            total += output.numel() * module.in_features

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    first_conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    in_channels = first_conv.in_channels if first_conv is not None else 1
    try:
        with eval_mode(model), torch.no_grad():
            model(torch.zeros(1, in_channels, height, width, device=next(model.parameters()).device))
    finally:
        for hook in hooks:
            hook.remove()
    return total


def sliding_costs(model: nn.Module, fcn: nn.Module, size: int = 112, stride: int = 4) -> dict:
    """Multiply-adds for a size x size canvas: explicit windows versus the FCN (shift-and-stitch below its stride)."""
    window = int(getattr(model, "input_size", 28))
    per_axis = (size - window) // stride + 1
    explicit = per_axis ** 2 * multiply_adds(model, window, window)
    net_stride = output_stride(fcn)
    if net_stride % stride:
        raise ValueError(f"stride must divide the FCN's output stride {net_stride}, got {stride}")
    fcn_total = sum(multiply_adds(fcn, size - dy, size - dx)
                    for dy in range(0, net_stride, stride) for dx in range(0, net_stride, stride))
    return {"size": size, "stride": stride, "windows": per_axis ** 2, "explicit_multiply_adds": explicit,
            "fcn_multiply_adds": fcn_total, "ratio": explicit / fcn_total}
