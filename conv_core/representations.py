"""Pixel space versus feature space: "in pixel space 9-4 is closer; in feature space 4-4 is".

Distances are Euclidean on each layer's flattened activations. Layers are
compared by ratios and ranks, which do not depend on a layer's scale.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from conv_core.evaluate import layer_activations


def representation_layers(model: nn.Module) -> dict[str, str]:
    """Display name -> stage name of the signals worth comparing, input to logits.

    A ReLU's output is named after the weight layer it follows ("conv1",
    "fc1"), the way Caffe's in-place ReLUs are; pools keep their names; the
    last weight layer is "logits". The input is "pixels".
    """
    stages = list(model.named_children())
    last_weight = max(i for i, (_, m) in enumerate(stages) if isinstance(m, (nn.Conv2d, nn.Linear)))
    layers = {"pixels": "input"}
    previous_weight = None
    for i, (name, module) in enumerate(stages):
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            previous_weight = name
            if i == last_weight:
                layers["logits"] = name
        elif isinstance(module, nn.ReLU) and previous_weight:
            layers[previous_weight] = name
        elif isinstance(module, nn.MaxPool2d):
            layers[name] = name
    return layers


def layer_features(model: nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Flattened activations (N, D) at every representation layer, keyed by display name."""
    layers = representation_layers(model)
    stages = [stage for stage in layers.values() if stage != "input"]
    activations = layer_activations(model, images, stages)
    return {display: activations[stage].flatten(1) for display, stage in layers.items()}


@dataclass(frozen=True)
class Triplet:
    """Indices into the test split: a 9 and two 4s."""

    nine: int
    four_a: int
    four_b: int

    def as_dict(self) -> dict:
        return asdict(self)


TRIPLET_RULE = (
    "Among the test split's 4s and 9s, in pixel space: for every 4 (the anchor, 4A) take its nearest 9 "
    "(9A) and the 4 at the median distance from it (4B, a typical other 4); keep the anchor whose "
    "ratio d(9A,4A)/d(4A,4B) is smallest, i.e. the triplet whose pixel-space order is most clearly wrong. "
    "Ties go to the lowest index."
)


def choose_triplet(images: torch.Tensor, labels: torch.Tensor, limit: int = 500) -> Triplet:
    """The lecture's 9-4-4 triplet, chosen by TRIPLET_RULE among the first `limit` 4s and 9s."""
    pixels = torch.as_tensor(images).flatten(1).float() / 255.0
    fours = torch.nonzero(labels == 4).flatten()[:limit]
    nines = torch.nonzero(labels == 9).flatten()[:limit]
    if len(fours) < 3 or len(nines) < 1:
        raise ValueError("choosing a triplet needs at least three 4s and one 9 in the split")
    four_to_nine = torch.cdist(pixels[fours], pixels[nines])
    four_to_four = torch.cdist(pixels[fours], pixels[fours])
    nearest_nine = four_to_nine.argmin(dim=1)
    # The median over the other 4s (the diagonal's zero is excluded by dropping the smallest).
    order = four_to_four.argsort(dim=1)[:, 1:]
    median_four = order[:, (order.shape[1] - 1) // 2]
    rows = torch.arange(len(fours))
    ratio = four_to_nine[rows, nearest_nine] / four_to_four[rows, median_four]
    anchor = int(ratio.argmin())
    return Triplet(nine=int(nines[nearest_nine[anchor]]), four_a=int(fours[anchor]),
                   four_b=int(fours[median_four[anchor]]))


def triplet_distances(features: dict[str, torch.Tensor], triplet: Triplet) -> list[dict]:
    """Per layer: d(9A,4A), d(4A,4B) and their ratio (> 1 means the two 4s are closer)."""
    rows = []
    for layer, feats in features.items():
        nine, four_a, four_b = feats[triplet.nine], feats[triplet.four_a], feats[triplet.four_b]
        d_nine = float(torch.dist(nine, four_a))
        d_four = float(torch.dist(four_a, four_b))
        rows.append({"layer": layer, "d_9A_4A": d_nine, "d_4A_4B": d_four,
                     "ratio": d_nine / d_four if d_four else float("inf")})
    return rows


def knn_accuracy(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                 test_labels: torch.Tensor, k: int = 1, chunk: int = 1000) -> float:
    """Accuracy of k-nearest-neighbour classification (Euclidean, majority vote; k=1 by default)."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    correct = 0
    train_features = train_features.float()
    for start in range(0, len(test_features), chunk):
        queries = test_features[start:start + chunk].float()
        neighbours = torch.cdist(queries, train_features).topk(k, largest=False).indices
        votes = train_labels[neighbours]
        predicted = torch.mode(votes, dim=1).values if k > 1 else votes[:, 0]
        correct += int((predicted == test_labels[start:start + chunk]).sum())
    return correct / len(test_features)
