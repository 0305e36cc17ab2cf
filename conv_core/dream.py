"""Hallucinations: change the input a bit towards what the network "sees".

Inceptionism / DeepDream (Mordvintsev, 2015) on the seed CNN: gradient ascent
on 1/2 ||h||^2 of a layer, whose input gradient is h^T dh/dx (the lecture's
d||h||^2/dx = 2 h^T dh/dx). Class "hallucinations" instead maximise one logit
starting from noise, with an L2 decay and a total-variation penalty so the
result is a smooth dark-background image rather than high-frequency noise.

Everything works on raw pixels in [0, 1] (the model's own input), so clipping
to the valid range is just clamp(0, 1).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from conv_core.evaluate import to_model_input
from conv_core.gradients import eval_mode, forward_to, one_thread


def _as_batch(model: nn.Module, images) -> torch.Tensor:
    images = torch.as_tensor(images)
    if images.dim() == 2:
        images = images.unsqueeze(0)
    return to_model_input(images, int(getattr(model, "input_size", 28))).to(next(model.parameters()).device)


def _half_squared_norm(model: nn.Module, x: torch.Tensor, layer: str) -> torch.Tensor:
    """1/2 ||h||^2 of `layer` for each image, shape (N,)."""
    return 0.5 * forward_to(model, x, layer).flatten(1).pow(2).sum(dim=1)


@one_thread()
def dream(model: nn.Module, images, layer: str, steps: int = 100, step_size: float = 0.01, jitter: int = 2,
          seed: int = 0) -> tuple[torch.Tensor, dict]:
    """Batched DeepDream ascent on 1/2 ||h_layer||^2; images raw in [0, 1], (N, H, W) or (N, 1, H, W).

    Each step rolls the batch by one random jitter, takes the gradient, rolls it
    back and moves every image by step_size * g / mean|g| (its own mean), so the
    step is the same size whatever the layer's scale. Returns (N, H, W) images and
    {"norm_before", "norm_after": (N,) tensors of ||h||, "steps"}.
    """
    generator = torch.Generator().manual_seed(seed)
    x = _as_batch(model, images).clone()
    with eval_mode(model):
        with torch.no_grad():
            norm_before = _half_squared_norm(model, x, layer).mul(2).sqrt()
        for _ in range(steps):
            dy, dx = torch.randint(-jitter, jitter + 1, (2,), generator=generator).tolist()
            # Jitter: a different alignment every step keeps the ascent from building
            # pixel-exact patterns that only work at one offset.
            shifted = x.roll((dy, dx), dims=(-2, -1)).requires_grad_(True)
            with torch.enable_grad():
                objective = _half_squared_norm(model, shifted, layer).sum()
                (gradient,) = torch.autograd.grad(objective, shifted)
            gradient = gradient.roll((-dy, -dx), dims=(-2, -1))
            scale = gradient.abs().mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
            x = (x + step_size * gradient / scale).clamp(0.0, 1.0)
        with torch.no_grad():
            norm_after = _half_squared_norm(model, x, layer).mul(2).sqrt()
    return x[:, 0].detach(), {"norm_before": norm_before.cpu(), "norm_after": norm_after.cpu(), "steps": steps}


def hallucinate(model: nn.Module, image, layer: str, steps: int = 100, step_size: float = 0.01, jitter: int = 2,
                seed: int = 0) -> tuple[torch.Tensor, dict]:
    """One image (H, W) in [0, 1] dreamt towards `layer`: (image, {norm_before, norm_after, steps}) with float norms."""
    image = torch.as_tensor(image)
    dreamt, record = dream(model, image.reshape(1, *image.shape[-2:]), layer, steps, step_size, jitter, seed)
    return dreamt[0], {"norm_before": float(record["norm_before"][0]),
                       "norm_after": float(record["norm_after"][0]), "steps": steps}


def layer_hallucinations(model: nn.Module, images, layers=("relu1", "relu2", "fc1"), steps: int = 100,
                         step_size: float = 0.01, jitter: int = 2, seed: int = 0) -> dict[str, tuple]:
    """The same images dreamt towards each layer: {layer: (images (N, H, W), record)}."""
    return {layer: dream(model, images, layer, steps, step_size, jitter, seed) for layer in layers}


def norm_gradient_identity(model: nn.Module, image, layer: str) -> dict:
    """The lecture's d||h||^2/dx = 2 h^T dh/dx, both sides computed, on one image in [0, 1].

    Left: autograd's gradient of ||h||^2. Right: the full Jacobian dh/dx (forward
    mode, one tangent per pixel), contracted with 2h. In float64, so a
    difference measures the identity, not rounding. Returns both sides' largest
    magnitude and their largest absolute difference.
    """
    x = _as_batch(model, image)[:1].double()
    model64 = copy.deepcopy(model).double()
    with eval_mode(model64), torch.enable_grad():
        x.requires_grad_(True)
        h = forward_to(model64, x, layer).flatten()
        (autograd_side,) = torch.autograd.grad(h.pow(2).sum(), x)
        # Forward mode, one tangent per pixel: a different route through the network from autograd's backward.
        jacobian = torch.func.jacfwd(lambda inp: forward_to(model64, inp, layer).flatten())(x.detach())
    jacobian_side = 2 * torch.einsum("u,u...->...", h.detach(), jacobian.detach().reshape(len(h), *x.shape))
    return {"layer": layer, "max_abs_gradient": float(autograd_side.abs().max()),
            "max_abs_difference": float((autograd_side - jacobian_side).abs().max()),
            "units": len(h)}


# --------------------------------------------------------------------------- class hallucinations


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation of each image (N, 1, H, W), shape (N,)."""
    vertical = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).sum(dim=1)
    horizontal = (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).sum(dim=1)
    return vertical + horizontal


@one_thread()
def class_hallucinations(model: nn.Module, digits=range(10), steps: int = 150, step_size: float = 0.02,
                         l2: float = 0.1, tv: float = 0.1, jitter: int = 1,
                         seed: int = 0) -> tuple[torch.Tensor, list[dict]]:
    """One image per digit, maximising that digit's logit from faint noise; batched.

    Objective per image: logit[digit] - l2 * ||x||^2 - tv * TV(x), climbed with
    the same step as `dream` (roll jitter, x += step_size * g / mean|g|, clamp
    to [0, 1]). Returns (N, H, W) images and per digit {digit, logit_before,
    logit_after, probability (softmax of the digit at the end)}.
    """
    digits = torch.as_tensor(list(digits), dtype=torch.long)
    size = int(getattr(model, "input_size", 28))
    generator = torch.Generator().manual_seed(seed)
    x = (0.1 * torch.rand(len(digits), 1, size, size, generator=generator)).to(next(model.parameters()).device)
    chosen = (torch.arange(len(digits)), digits)
    with eval_mode(model):
        with torch.no_grad():
            logit_before = model(x)[chosen]
        for _ in range(steps):
            dy, dx = torch.randint(-jitter, jitter + 1, (2,), generator=generator).tolist()
            x.requires_grad_(True)
            with torch.enable_grad():
                logits = model(x.roll((dy, dx), dims=(-2, -1)))
                penalty = l2 * x.pow(2).flatten(1).sum(dim=1) + tv * total_variation(x)
                objective = (logits[chosen] - penalty).sum()
                # The gradient w.r.t. the pixels only: the model's own .grad stays untouched.
                (gradient,) = torch.autograd.grad(objective, x)
            scale = gradient.abs().mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
            x = (x.detach() + step_size * gradient / scale).clamp(0.0, 1.0)
        with torch.no_grad():
            logits = model(x)
    probabilities = logits.softmax(dim=1)[chosen]
    records = [{"digit": int(d), "logit_before": float(b), "logit_after": float(a), "probability": float(p)}
               for d, b, a, p in zip(digits, logit_before, logits[chosen], probabilities)]
    return x[:, 0], records


def class_hallucination(model: nn.Module, digit: int, steps: int = 150, step_size: float = 0.02,
                        l2: float = 0.1, tv: float = 0.1, jitter: int = 1, seed: int = 0) -> tuple[torch.Tensor, dict]:
    """One digit's hallucination: (image (H, W), {digit, logit_before, logit_after, probability})."""
    images, records = class_hallucinations(model, [digit], steps, step_size, l2, tv, jitter, seed)
    return images[0], records[0]
