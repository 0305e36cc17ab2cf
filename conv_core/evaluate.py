"""Accuracy, confusion and per-layer activations of a trained classifier."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class Evaluation:
    """Test-set metrics. `confusion[t, p]` counts digits of true class t predicted as p."""

    accuracy: float
    per_class_accuracy: list[float]
    confusion: torch.Tensor
    loss: float
    count: int

    def as_dict(self) -> dict:
        """JSON-friendly copy (a class with no test digits has accuracy None)."""
        return {
            "accuracy": self.accuracy,
            "per_class_accuracy": [None if math.isnan(a) else a for a in self.per_class_accuracy],
            "confusion": self.confusion.tolist(),
            "loss": self.loss,
            "count": self.count,
        }


def input_size_of(model: nn.Module, default: int = 28) -> int:
    """The square image size the model expects (LayerNet records it)."""
    return int(getattr(model, "input_size", default))


def center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """The central size x size window of (..., H, W) images."""
    height, width = images.shape[-2:]
    if (height, width) == (size, size):
        return images
    if size > min(height, width):
        raise ValueError(f"cannot crop {height}x{width} images to {size}x{size}")
    top, left = (height - size) // 2, (width - size) // 2
    return images[..., top:top + size, left:left + size]


def to_model_input(images, input_size: int = 28) -> torch.Tensor:
    """Images as the model takes them: float in [0, 1], shape (N, 1, S, S).

    uint8 pixels are divided by 255; float images are taken to be in [0, 1]
    already. (N, H, W) gets a channel axis. Larger images are centre-cropped
    (the evaluation counterpart of random-crop training).
    """
    images = torch.as_tensor(images)
    if images.dim() == 3:
        images = images.unsqueeze(1)
    if images.dim() != 4:
        raise ValueError(f"expected images of shape (N, H, W) or (N, C, H, W), got {tuple(images.shape)}")
    images = center_crop(images, input_size)
    if images.dtype == torch.uint8:
        return images.float().div_(255)
    return images.float()


def _model_device(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _resolve(model: nn.Module, device) -> torch.device:
    """The device to run on; moves the model there (in place) when one is named."""
    if device is None:
        return _model_device(model)
    device = torch.device(device)
    model.to(device)
    return device


def predict_logits(model: nn.Module, images, batch_size: int = 1000, device=None) -> torch.Tensor:
    """Logits (N, classes) on the CPU, computed in eval mode without gradients.

    `images`: uint8 (N, 28, 28) or (N, 1, 28, 28), or floats in [0, 1]; a tensor
    on any device or a numpy array. `device=None` runs where the model is.
    """
    device = _resolve(model, device)
    images = torch.as_tensor(images)
    size = input_size_of(model)
    was_training = model.training
    model.eval()
    outputs = []
    try:
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                batch = to_model_input(images[start:start + batch_size].to(device, non_blocking=True), size)
                outputs.append(model(batch).float().cpu())
    finally:
        model.train(was_training)
    if not outputs:
        return torch.empty(0, 0)
    return torch.cat(outputs)


def evaluate(model: nn.Module, images, labels, batch_size: int = 1000, device=None,
             num_classes: int = 10) -> Evaluation:
    """Accuracy, mean cross-entropy, confusion matrix and per-class accuracy."""
    labels = torch.as_tensor(labels).long().cpu()
    if len(labels) != len(images):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    if len(labels) == 0:
        raise ValueError("cannot evaluate on an empty set")
    logits = predict_logits(model, images, batch_size=batch_size, device=device)
    predicted = logits.argmax(dim=1)
    confusion = torch.bincount(labels * num_classes + predicted, minlength=num_classes ** 2)
    confusion = confusion.reshape(num_classes, num_classes)
    correct = confusion.diagonal()
    per_class_total = confusion.sum(dim=1)
    per_class = [c / t if t else float("nan") for c, t in zip(correct.tolist(), per_class_total.tolist())]
    return Evaluation(
        accuracy=correct.sum().item() / len(labels),
        per_class_accuracy=per_class,
        confusion=confusion,
        loss=F.cross_entropy(logits, labels).item(),
        count=len(labels),
    )


def layer_activations(model: nn.Module, images, layer_names: list[str] | None = None,
                      batch_size: int = 1000, device=None) -> dict[str, torch.Tensor]:
    """Outputs of named stages (CPU tensors), plus the model's input under "input".

    Uses forward hooks on the named submodules ("conv1", "relu1", "pool1", ...);
    `None` takes every top-level stage, in order.
    """
    device = _resolve(model, device)
    modules = dict(model.named_modules())
    if layer_names is None:
        layer_names = [name for name, _ in model.named_children()]
    unknown = [name for name in layer_names if name not in modules or name == ""]
    if unknown:
        known = [name for name, _ in model.named_children()]
        raise ValueError(f"unknown layer name(s) {unknown}; the model's stages are {known}")

    images = torch.as_tensor(images)
    size = input_size_of(model)
    captured: dict[str, list[torch.Tensor]] = {"input": [], **{name: [] for name in layer_names}}

    def keep(name):
        # clone: a later in-place op (e.g. ReLU(inplace=True)) would overwrite the tensor.
        def hook(module, inputs, output):
            captured[name].append(output.detach().float().cpu().clone())
        return hook

    handles = [modules[name].register_forward_hook(keep(name)) for name in layer_names]
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                batch = to_model_input(images[start:start + batch_size].to(device), size)
                captured["input"].append(batch.cpu().clone())
                model(batch)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return {name: torch.cat(chunks) for name, chunks in captured.items() if chunks}

