"""Examining gradients: what a hidden unit of the seed CNN looks at in input space.

The lecture (after Zeiler and Fergus, 2013) propagates a hidden unit back to the
input instead of the loss back to the weights. Three rules differ only at the
ReLUs, where the forward input is z and the signal arriving from above is R:

    gradient          R * [z > 0]
    deconvnet         relu(R)           (ignores the forward gate)
    guided backprop   relu(R) * [z > 0]

Max-pool goes back through its switches (where the max came from), which is
exactly what autograd does; a convolution goes back as the transposed
convolution with the same weights.

Input space here is the NORMALISED image (what `model.body()` takes), so the
gradient of a layer-1 unit is literally its conv1 filter. The raw [0, 1] image
is mapped by the model's `normalize` stage, x_n = (x - 0.1307) / 0.3081, a
positive scaling, so maps with respect to raw pixels are these divided by 0.3081.

Units are named (channel, y, x) in the output of a named stage; "relu2" is the
lecture's h^(2) (after the ReLU, before the pool).
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from captum.attr import NeuronDeconvolution, NeuronGradient, NeuronGuidedBackprop
from torch import nn

from conv_core.evaluate import to_model_input

RULES = ("gradient", "deconvnet", "guided_backprop")


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """Run in eval mode, then restore the caller's mode."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@contextlib.contextmanager
def one_thread():
    """Run torch on one intra-op thread, then restore the caller's count.

    The loops here push a handful of 28x28 images through a tiny net hundreds of
    times; splitting such small ops across threads gains nothing and, on a busy
    2-core machine, measured 50x slower (4.7 ms versus 260 ms per step).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def normalised_input(model: nn.Module, images) -> torch.Tensor:
    """uint8 or [0, 1] images, (H, W), (N, H, W) or (N, 1, H, W), as normalised (N, 1, H, W) floats."""
    images = torch.as_tensor(images)
    if images.dim() == 2:
        images = images.unsqueeze(0)
    x = to_model_input(images, int(getattr(model, "input_size", 28))).to(_device(model))
    with torch.no_grad():
        return model.normalize(x)


def stages_up_to(model: nn.Module, layer: str) -> list[tuple[str, nn.Module]]:
    """The body's stages (no `normalize`) from the first up to and including `layer`."""
    stages = []
    for name, module in model.body().named_children():
        stages.append((name, module))
        if name == layer:
            return stages
    known = [name for name, _ in model.named_children()]
    raise ValueError(f"unknown layer {layer!r}; the model's stages are {known}")


def forward_to(model: nn.Module, x: torch.Tensor, layer: str, normalised: bool = False) -> torch.Tensor:
    """The output of stage `layer`; `x` is raw [0, 1] unless `normalised`."""
    if not normalised:
        x = model.normalize(x)
    for _, module in stages_up_to(model, layer):
        x = module(x)
    return x


# --------------------------------------------------------------------------- layer 1: gradient = filter


@one_thread()
def layer1_input_gradient(model: nn.Module, image, channel: int, y: int, x: int) -> torch.Tensor:
    """d h1[channel, y, x] / d x_normalised by autograd, h1 = relu1's output. Shape (H, W)."""
    inputs = normalised_input(model, image)[:1].requires_grad_(True)
    with eval_mode(model), torch.enable_grad():
        h1 = forward_to(model, inputs, "relu1", normalised=True)
        (gradient,) = torch.autograd.grad(h1[0, channel, y, x], inputs)
    return gradient[0, 0].detach()


def filter_at_receptive_field(model: nn.Module, channel: int, y: int, x: int, image=None) -> torch.Tensor:
    """conv1's filter for `channel` placed where unit (y, x) reads the input, zero elsewhere.

    Padding clips the filter at the image borders. With `image`, it is multiplied
    by the unit's ReLU gate 1(h1 > 0) on that image: the lecture's dh1/dx = 1(h1 > 0) W1.
    """
    conv = model.conv1
    weight = conv.weight.detach()[channel, 0]
    kernel, padding = conv.kernel_size[0], conv.padding[0]
    size = int(getattr(model, "input_size", 28))
    placed = torch.zeros(size, size, dtype=weight.dtype, device=weight.device)
    # Cross-correlation: output (y, x) reads input rows y - padding .. y - padding + kernel - 1.
    top, left = y - padding, x - padding
    rows = slice(max(top, 0), min(top + kernel, size))
    cols = slice(max(left, 0), min(left + kernel, size))
    placed[rows, cols] = weight[rows.start - top:rows.stop - top, cols.start - left:cols.stop - left]
    if image is not None:
        with eval_mode(model), torch.no_grad():
            h1 = forward_to(model, normalised_input(model, image)[:1], "relu1", normalised=True)
        placed = placed * (h1[0, channel, y, x] > 0)
    return placed


def receptive_field(model: nn.Module, layer: str, y: int, x: int) -> tuple[int, int, int, int]:
    """The input pixels unit (y, x) of `layer` reads: (top, left, bottom, right), inclusive.

    May run past the image border (that part is padding).
    """
    def pair(value):
        return value if isinstance(value, tuple) else (value, value)

    top, bottom, left, right = y, y, x, x
    for _, module in reversed(stages_up_to(model, layer)):
        if isinstance(module, (nn.Conv2d, nn.MaxPool2d)):
            (kh, kw), (sh, sw), (ph, pw) = pair(module.kernel_size), pair(module.stride), pair(module.padding)
            top, bottom = top * sh - ph, bottom * sh - ph + kh - 1
            left, right = left * sw - pw, right * sw - pw + kw - 1
        elif not isinstance(module, (nn.ReLU, nn.Dropout)):
            raise ValueError(f"{layer!r} is past the conv part of the network")
    return top, left, bottom, right


@one_thread()
def layer1_gradients(model: nn.Module, image) -> dict:
    """For each conv1 channel, at its most active position on `image`: dh1/dx and the placed, gated filter.

    Returns {"units": [(c, y, x)], "gradients": (C, H, W), "filters": (C, H, W),
    "weights": conv1's (C, k, k) filters, "max_abs_difference": float}; the difference is 0
    up to float rounding, as the lecture says.
    """
    with eval_mode(model), torch.no_grad():
        h1 = forward_to(model, normalised_input(model, image)[:1], "relu1", normalised=True)[0]
    width = h1.shape[-1]
    units = [(c, *divmod(int(h1[c].argmax()), width)) for c in range(h1.shape[0])]
    gradients = torch.stack([layer1_input_gradient(model, image, *unit) for unit in units])
    filters = torch.stack([filter_at_receptive_field(model, *unit, image=image) for unit in units])
    return {"units": units, "gradients": gradients.cpu(), "filters": filters.cpu(),
            "weights": model.conv1.weight.detach()[:, 0].cpu(),
            "max_abs_difference": float((gradients - filters).abs().max())}


# --------------------------------------------------------------------------- one unit, three rules


@one_thread()
def most_active_unit(model: nn.Module, image, layer: str = "relu2") -> tuple[int, int, int, float]:
    """(channel, y, x, value) of the largest activation of `layer` on one image."""
    with eval_mode(model), torch.no_grad():
        h = forward_to(model, normalised_input(model, image)[:1], layer, normalised=True)[0]
    if h.dim() != 3:
        raise ValueError(f"layer {layer!r} is not a conv feature map (shape {tuple(h.shape)})")
    flat_index = int(h.argmax())
    channel, rest = divmod(flat_index, h.shape[1] * h.shape[2])
    y, x = divmod(rest, h.shape[2])
    return channel, y, x, float(h[channel, y, x])


def upper_half_share(gradient: torch.Tensor, image, ink_threshold: int = 64) -> float:
    """Share of |gradient| that falls in the upper half of the digit's ink box.

    The box spans the rows holding ink (pixels above `ink_threshold` of 255);
    the upper half is the rows above its middle, so the answer says "the upper
    loop" of an 8 whatever the digit's position. 0.5 is no preference.
    """
    image = torch.as_tensor(image).reshape(gradient.shape[-2:])
    rows = torch.nonzero((image > ink_threshold).any(dim=1)).flatten()
    if len(rows) == 0:
        raise ValueError("the image has no ink above the threshold")
    top, bottom = int(rows.min()), int(rows.max())
    middle = (top + bottom + 1) / 2  # rows [top, middle) are the upper half
    magnitude = gradient.detach().abs().reshape(image.shape).double()
    total = float(magnitude.sum())
    if total == 0:
        return float("nan")
    upper = torch.arange(image.shape[0], dtype=torch.double) < middle
    return float(magnitude[upper & (torch.arange(image.shape[0]) >= top)].sum() / total)


@one_thread()
def unit_projections(model: nn.Module, image, layer: str, unit: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """The unit's gradient, deconvnet and guided-backprop maps in normalised input space (captum).

    The neuron is selected on the OUTPUT of the named stage. For "relu2" that is
    h2 itself: its own ReLU is part of the path, so a unit that is off has a zero
    gradient (honest) while deconvnet still projects it (it ignores gates). For an
    active unit, selecting on conv2 instead gives the same three maps.
    """
    body = model.body()
    module = getattr(model, layer)
    inputs = normalised_input(model, image)[:1].requires_grad_(True)
    methods = {"gradient": NeuronGradient, "deconvnet": NeuronDeconvolution,
               "guided_backprop": NeuronGuidedBackprop}
    with eval_mode(model), warnings.catch_warnings():
        # captum announces its temporary ReLU hooks on every call.
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
        return {name: method(body, module).attribute(inputs, neuron_selector=tuple(unit))[0, 0].detach()
                for name, method in methods.items()}


# --------------------------------------------------------------------------- the same rules by hand


def _back_through(module: nn.Module, z: torch.Tensor, signal: torch.Tensor, rule: str) -> torch.Tensor:
    """Send `signal` (at the module's output) back to its input z under `rule`."""
    if isinstance(module, nn.ReLU):
        open_gate = z > 0
        if rule == "gradient":
            return signal * open_gate
        if rule == "deconvnet":
            return F.relu(signal)
        return F.relu(signal) * open_gate
    if isinstance(module, nn.MaxPool2d):
        # The switches record where each max came from; unpooling puts the signal there.
        _, switches = F.max_pool2d(z, module.kernel_size, module.stride, module.padding,
                                   module.dilation, module.ceil_mode, return_indices=True)
        return F.max_unpool2d(signal, switches, module.kernel_size, module.stride, module.padding,
                              output_size=z.shape[-2:])
    if isinstance(module, nn.Conv2d):
        back = F.conv_transpose2d(signal, module.weight, stride=module.stride, padding=module.padding,
                                  dilation=module.dilation, groups=module.groups)
        if back.shape != z.shape:
            raise NotImplementedError(f"transposed conv gave {tuple(back.shape)}, expected {tuple(z.shape)}")
        return back
    if isinstance(module, nn.Linear):
        return signal @ module.weight
    if isinstance(module, nn.Flatten):
        return signal.reshape(z.shape)
    if isinstance(module, nn.Dropout):
        return signal  # eval mode: identity
    raise NotImplementedError(f"no backward rule for {type(module).__name__}")


@one_thread()
def project_to_input(model: nn.Module, images, layer: str, units, rule: str = "deconvnet",
                     keep_signals: bool = False):
    """Back-project one unit per image to the normalised input, by hand, batched.

    `units`: (N, k) integer tensor or list of tuples, each (channel, y, x) in the
    output of `layer` (or (feature,) for a linear layer). Returns (N, H, W); with
    `keep_signals`, also {stage name: signal arriving at that stage's input}.
    """
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; choose from {RULES}")
    stages = stages_up_to(model, layer)
    x = normalised_input(model, images)
    units = torch.as_tensor(units, dtype=torch.long, device=x.device).reshape(len(x), -1)
    with eval_mode(model), torch.no_grad():
        stage_inputs = []
        h = x
        for _, module in stages:
            stage_inputs.append(h)
            h = module(h)
        signal = torch.zeros_like(h)
        signal[(torch.arange(len(x), device=x.device), *units.unbind(1))] = 1.0
        signals = {}
        for (name, module), z in zip(reversed(stages), reversed(stage_inputs)):
            signal = _back_through(module, z, signal, rule)
            signals[name] = signal
    maps = signal[:, 0]
    return (maps, signals) if keep_signals else maps


def deconvnet_by_hand(model: nn.Module, image, layer: str, unit: tuple[int, ...]) -> torch.Tensor:
    """Zeiler and Fergus's deconvnet projection of one unit, written out (H, W)."""
    return project_to_input(model, image, layer, [tuple(unit)], rule="deconvnet")[0]


# --------------------------------------------------------------------------- top-activating images


@dataclass
class TopActivations:
    """For each channel of `layer`, the k images where it fires most (Zeiler and Fergus)."""

    layer: str
    indices: torch.Tensor  # (C, k) image indices, strongest first
    values: torch.Tensor  # (C, k) the channel's max activation over positions in each image
    positions: torch.Tensor  # (C, k, 2) (y, x) where that max is
    projections: torch.Tensor  # (C, k, H, W) deconvnet projection of that unit, normalised input space


@one_thread()
def top_activations(model: nn.Module, images, layer: str = "relu2", k: int = 9,
                    batch_size: int = 1000) -> TopActivations:
    """The k images with the largest max activation per channel, and their deconvnet projections."""
    images = torch.as_tensor(images)
    maxima, where = [], []
    with eval_mode(model), torch.no_grad():
        for start in range(0, len(images), batch_size):
            h = forward_to(model, normalised_input(model, images[start:start + batch_size]), layer,
                           normalised=True)
            if h.dim() != 4:
                raise ValueError(f"layer {layer!r} is not a conv feature map (shape {tuple(h.shape)})")
            value, position = h.flatten(2).max(dim=2)  # (n, C) each
            maxima.append(value)
            where.append(position)
    width = h.shape[-1]
    maxima, where = torch.cat(maxima), torch.cat(where)
    k = min(k, len(images))
    values, indices = maxima.topk(k, dim=0)  # (k, C)
    values, indices = values.T.contiguous(), indices.T.contiguous()
    channels = torch.arange(maxima.shape[1], device=maxima.device)[:, None].expand_as(indices)
    flat_position = where[indices, channels]
    positions = torch.stack([flat_position // width, flat_position % width], dim=-1)
    # One batch: every (image, unit) pair is an independent sample of the same backward pass.
    units = torch.cat([channels.reshape(-1, 1), positions.reshape(-1, 2)], dim=1)
    projections = project_to_input(model, images[indices.reshape(-1).cpu()], layer, units, rule="deconvnet")
    return TopActivations(layer, indices.cpu(), values.cpu(), positions.cpu(),
                          projections.reshape(*indices.shape, *projections.shape[-2:]).cpu())
