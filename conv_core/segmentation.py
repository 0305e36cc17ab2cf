"""Semantic segmentation the FCN way (Long et al., 2015), at MNIST scale.

The trained classifier becomes a fully convolutional net (`segment.fully_convolutional`)
whose 7x7 classifier conv gets an 11th output channel, background. Three steps make
it a segmenter:

- pad: the input gets a blank margin of (28 - 4) / 2 = 12 pixels, so coarse cell
  (i, j) is exactly the classifier's 28x28 window centred on the 4x4 pixel block
  (4i..4i+3, 4j..4j+3); an H x W scene gives an H/4 x W/4 coarse map;
- upsample: the coarse logits are interpolated bilinearly back to pixels (fixed,
  as in FCN-32s), which lines cell centres up with block centres exactly
  (`align_corners=False` maps pixel p to cell (p + 0.5) / 4 - 0.5); a skip adds
  the first conv layer's stride-1 features, scored by a 1x1 conv (as FCN-8s
  adds pool3's scores), since a 4x4 cell is wider than a stroke;
- fine-tune: every weight, with per-pixel cross-entropy on training scenes.

The baseline is the same padded classifier without training: a cell is its top
digit, or background when the top softmax probability is below 0.9 (the rule of
`segment.class_map`); the label map is upsampled the same way (bilinearly, as
one-hot scores). Both are scored by a confusion matrix over all held-out pixels.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from conv_core.models import LayerNet
from conv_core.scenes import BACKGROUND_CLASS, CLASS_NAMES, DIGIT_CLASSES, SceneConfig, Scenes, make_scenes
from conv_core.segment import BACKGROUND_THRESHOLD, fully_convolutional, output_stride

CLASSES = len(CLASS_NAMES)  # 10 digits + background
# Strokes are 2-3 pixels wide and the coarse map has one cell per 4x4 block, so
# the stride-1 features of the first conv are scored too (an FCN-8s-style skip).
SKIP_LAYER = "relu1"


class Segmenter(nn.Module):
    """pad -> fully convolutional net (stride s) -> bilinear upsampling by s: per-pixel logits.

    With `skip` (a layer name, e.g. "relu1") the finer features of that layer are
    scored by a 1x1 conv and added to the upsampled logits, as FCN-16s and FCN-8s
    add pool4's and pool3's scores: the coarse map says which digit, the fine one
    where its strokes are. The skip's scorer starts at zero, so before training
    the output is the coarse map's alone.
    """

    def __init__(self, fcn: LayerNet, skip: str | None = None, classes: int | None = None):
        super().__init__()
        self.fcn = fcn
        self.stride = output_stride(fcn)
        window = int(fcn.input_size)
        if (window - self.stride) % 2:
            raise ValueError(f"a {window}-pixel window cannot be centred on a {self.stride}-pixel block")
        self.margin = (window - self.stride) // 2
        self.skip = skip
        if skip is not None:
            names = [name for name, _ in fcn.named_children()]
            if skip not in names:
                raise ValueError(f"no layer {skip!r} in {fcn.name}; layers: {', '.join(names)}")
            upto = nn.Sequential(*[m for _, m in list(fcn.named_children())[:names.index(skip) + 1]])
            self.skip_stride = output_stride(upto)
            if self.margin % self.skip_stride:
                raise ValueError(f"{skip}'s stride {self.skip_stride} does not divide the margin {self.margin}")
            channels = [m.out_channels for m in upto.modules() if isinstance(m, nn.Conv2d)][-1]
            classes = classes or getattr(fcn, _last_conv(fcn)).out_channels
            self.skip_score = nn.Conv2d(channels, classes, 1)
            nn.init.zeros_(self.skip_score.weight)
            nn.init.zeros_(self.skip_score.bias)

    def _pad(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-1] % self.stride or images.shape[-2] % self.stride:
            raise ValueError(f"scene sides must be multiples of {self.stride}, got {tuple(images.shape[-2:])}")
        m = self.margin
        return F.pad(images, (m, m, m, m))  # zeros: blank canvas, normalised inside the net

    def coarse(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 1, H, W) pixels in [0, 1] -> (N, classes, H/s, W/s): cell (i, j) sees the window centred on block (i, j)."""
        return self.fcn(self._pad(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.skip is None:
            return upsample(self.coarse(images), self.stride)
        x = self._pad(images)
        for name, module in self.fcn.named_children():
            x = module(x)
            if name == self.skip:
                fine = x
        # The skip layer's cell i covers pixels s*i..s*i+s-1 of the padded input: drop the margin's cells.
        s, (height, width) = self.skip_stride, images.shape[-2:]
        fine = fine[..., self.margin // s:(self.margin + height) // s, self.margin // s:(self.margin + width) // s]
        return upsample(x, self.stride) + upsample(self.skip_score(fine), s)


def upsample(coarse: torch.Tensor, stride: int) -> torch.Tensor:
    """Bilinear interpolation of per-cell scores to pixels, cell centres on block centres."""
    if stride == 1:
        return coarse
    return F.interpolate(coarse, scale_factor=stride, mode="bilinear", align_corners=False)


def _last_conv(fcn: LayerNet) -> str:
    return [name for name, module in fcn.named_children() if isinstance(module, nn.Conv2d)][-1]


def with_background(model: LayerNet, threshold: float = BACKGROUND_THRESHOLD,
                    skip: str | None = SKIP_LAYER) -> Segmenter:
    """The classifier as an 11-class segmenter (a copy; `model` is untouched).

    The digit channels keep the classifier's weights, so before fine-tuning the
    10 digit logits are the classifier's own. The background channel starts with
    zero weights, i.e. a constant logit b, chosen so that on a blank window
    background gets probability `threshold` (0.9) against the ten digits:
    b = logsumexp(blank digit logits) + log(threshold / (1 - threshold)).
    So background starts where the baseline's rule would put it on empty canvas,
    and a window the classifier is sure of still goes to its digit.
    """
    fcn = fully_convolutional(model)
    name = _last_conv(fcn)
    old = getattr(fcn, name)
    window = int(fcn.input_size)
    with torch.no_grad():
        blank = fcn(torch.zeros(1, 1, window, window, device=old.weight.device))[0, :, 0, 0]
        new = nn.Conv2d(old.in_channels, old.out_channels + 1, old.kernel_size).to(old.weight.device)
        new.weight.zero_()
        new.weight[:old.out_channels] = old.weight
        new.bias[:old.out_channels] = old.bias
        new.bias[old.out_channels] = torch.logsumexp(blank, 0) + math.log(threshold / (1 - threshold))
    setattr(fcn, name, new)
    fcn.name = f"{model.name}_segmenter"
    return Segmenter(fcn, skip)


# --------------------------------------------------------------------------- fine-tuning


@dataclass(frozen=True)
class SegmentationConfig:
    """Fine-tuning on training scenes: Adam on every weight, per-pixel cross-entropy."""

    epochs: int = 8
    batch_size: int = 16
    lr: float = 3e-3
    seed: int = 0
    # One intra-op thread: on this busy 2-core machine a second thread measured no
    # faster (31 versus 32 ms a step, channels_last) and up to 5x slower in NCHW.
    threads: int = 1


@contextlib.contextmanager
def _threads(count: int):
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, min(count, before)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _scene_batch(images: torch.Tensor, device) -> torch.Tensor:
    return images.unsqueeze(1).float().to(device)


def fine_tune(segmenter: Segmenter, scenes: Scenes, config: SegmentationConfig = SegmentationConfig()) -> list[dict]:
    """Train `segmenter` in place on `scenes`; returns the per-epoch mean loss and seconds."""
    device = next(segmenter.parameters()).device
    segmenter.to(memory_format=torch.channels_last)  # NHWC: about 1.3x faster convs on CPU
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.Adam(segmenter.parameters(), lr=config.lr)
    history = []
    segmenter.train()
    with _threads(config.threads):
        for epoch in range(1, config.epochs + 1):
            started, total = time.perf_counter(), 0.0
            order = torch.randperm(len(scenes), generator=generator)
            for start in range(0, len(order), config.batch_size):
                batch = order[start:start + config.batch_size]
                x = _scene_batch(scenes.images[batch], device).contiguous(memory_format=torch.channels_last)
                target = scenes.labels[batch].to(device)
                loss = F.cross_entropy(segmenter(x), target)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.item() * len(batch)
            history.append({"epoch": epoch, "loss": total / len(scenes), "seconds": time.perf_counter() - started})
    segmenter.eval()
    return history


# --------------------------------------------------------------------------- prediction


@torch.no_grad()
def predict(segmenter: Segmenter, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Per-pixel classes (N, H, W) of scenes (N, H, W) in [0, 1]."""
    segmenter.eval()
    device = next(segmenter.parameters()).device
    return torch.cat([segmenter(_scene_batch(images[start:start + batch_size], device)).argmax(1).cpu()
                      for start in range(0, len(images), batch_size)])


@torch.no_grad()
def predict_sliding_baseline(model: LayerNet, images: torch.Tensor, threshold: float = BACKGROUND_THRESHOLD,
                             batch_size: int = 64) -> torch.Tensor:
    """The untrained classifier slid over the scenes: top digit per cell, background below `threshold`.

    Same padding and the same bilinear upsampling as the segmenter; the cells'
    labels are upsampled as one-hot scores, so each pixel takes the label that
    dominates its neighbourhood of cells.
    """
    sliding = Segmenter(fully_convolutional(model))
    device = next(sliding.parameters()).device
    predicted = []
    for start in range(0, len(images), batch_size):
        probabilities = sliding.coarse(_scene_batch(images[start:start + batch_size], device)).softmax(1)
        confidence, digit = probabilities.max(1)
        cells = torch.where(confidence < threshold, torch.full_like(digit, BACKGROUND_CLASS), digit)
        scores = F.one_hot(cells, CLASSES).permute(0, 3, 1, 2).float()
        predicted.append(upsample(scores, sliding.stride).argmax(1).cpu())
    return torch.cat(predicted)


# --------------------------------------------------------------------------- metrics


def confusion_matrix(predicted: torch.Tensor, target: torch.Tensor, classes: int = CLASSES) -> torch.Tensor:
    """(classes, classes) pixel counts: row = true class, column = predicted class."""
    index = target.flatten().long() * classes + predicted.flatten().long()
    return torch.bincount(index, minlength=classes * classes).reshape(classes, classes)


def iou_per_class(confusion: torch.Tensor) -> torch.Tensor:
    """TP / (TP + FP + FN) per class; NaN for a class neither present nor predicted."""
    confusion = confusion.double()
    hits = confusion.diagonal()
    union = confusion.sum(0) + confusion.sum(1) - hits
    return torch.where(union > 0, hits / union.clamp(min=1), torch.full_like(hits, float("nan")))


def segmentation_scores(confusion: torch.Tensor) -> dict:
    """Per-class IoU (by class name), mean IoU over the classes that occur, pixel accuracy."""
    iou = iou_per_class(confusion)
    return {"per_class_iou": {name: float(v) for name, v in zip(CLASS_NAMES, iou)},
            "mean_iou": float(iou.nanmean()),
            "digit_mean_iou": float(iou[:DIGIT_CLASSES].nanmean()),
            "pixel_accuracy": float(confusion.diagonal().sum() / confusion.sum())}


def score(predicted: torch.Tensor, scenes: Scenes) -> dict:
    """`segmentation_scores` of per-pixel predictions against the scenes' labels."""
    return segmentation_scores(confusion_matrix(predicted, scenes.labels))


# --------------------------------------------------------------------------- the experiment


@dataclass
class SegmentationResult:
    segmenter: Segmenter
    history: list[dict]
    train_scenes: Scenes
    heldout: Scenes
    predicted: torch.Tensor  # (N, H, W) the fine-tuned segmenter's classes on the held-out scenes
    baseline_predicted: torch.Tensor  # (N, H, W) the sliding classifier's, threshold rule
    scores: dict  # segmentation_scores of `predicted`
    baseline_scores: dict
    start_scores: dict  # the segmenter before fine-tuning


def segment_scenes(model: LayerNet, train_split, test_split, scenes: SceneConfig = SceneConfig(),
                   heldout_count: int = 200, config: SegmentationConfig = SegmentationConfig(),
                   skip: str | None = SKIP_LAYER) -> SegmentationResult:
    """Scenes from each split ((images, labels) uint8), fine-tune the classifier on the training ones,
    and score it and the sliding baseline on the held-out ones (made of test digits only)."""
    train_scenes = make_scenes(*train_split, scenes)
    heldout = make_scenes(*test_split, replace(scenes, count=heldout_count, seed=scenes.seed + 1))
    segmenter = with_background(model, skip=skip)
    with _threads(config.threads):
        start = score(predict(segmenter, heldout.images), heldout)
        history = fine_tune(segmenter, train_scenes, config)
        predicted = predict(segmenter, heldout.images)
        baseline = predict_sliding_baseline(model, heldout.images)
    return SegmentationResult(segmenter, history, train_scenes, heldout, predicted, baseline,
                              score(predicted, heldout), score(baseline, heldout), start)
