"""Pixel space versus feature space: "in pixel space 9-4 is closer; in feature space 4-4 is".

Distances are Euclidean on each layer's flattened activations. Layers are
compared by ratios and ranks, which do not depend on a layer's scale.

The pair of classes is the data set's (conv_core.datasets: `Dataset.triplet`):
an anchor class (the lecture's 4) and a confusable one (its 9). The names
below keep the lecture's words, "nine" for the confusable item and "four" for
the anchors, whatever the classes are.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from conv_core.datasets import MNIST
from conv_core.evaluate import layer_activations

# The lecture's pair: two 4s and a 9.
LECTURE_ANCHOR, LECTURE_CONFUSABLE = MNIST.triplet.classes


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
    """Indices into the test split: a 9 and two 4s (an item of the confusable class and two anchors)."""

    nine: int
    four_a: int
    four_b: int

    def as_dict(self) -> dict:
        return asdict(self)


TRIPLET_RULE = (
    "In the test split, in pixel space, by typicality alone: 4A is the most typical 4 (the 4 nearest the mean "
    "image of the 4s), 4B a typical other 4 (the 4 at the median distance from that mean), 9A the most 4-like 9 "
    "(the 9 nearest the mean of the 4s). Ties go to the lowest index. The rule never looks at the network, nor "
    "at the distances the claims compare (d(9A,4A) against d(4A,4B)), so the pixel order may come out either way."
)


def nearest_nine_triplets(images: torch.Tensor, labels: torch.Tensor, limit: int = 500,
                          anchor: int = LECTURE_ANCHOR, confusable: int = LECTURE_CONFUSABLE,
                          ) -> tuple[list[Triplet], torch.Tensor]:
    """One triplet per 4 of the first `limit` (its nearest 9, its median other 4), and each one's pixel ratio.

    Chosen to be confusing in pixel space: the population `triplet_flip_rates` asks the layers about.
    `anchor` and `confusable` replace the 4 and the 9.
    """
    pixels = torch.as_tensor(images).flatten(1).float() / 255.0
    fours = torch.nonzero(labels == anchor).flatten()[:limit]
    nines = torch.nonzero(labels == confusable).flatten()[:limit]
    if len(fours) < 3 or len(nines) < 1:
        raise ValueError(f"choosing a triplet needs at least three of class {anchor} and one of class "
                         f"{confusable} in the split")
    four_to_nine = torch.cdist(pixels[fours], pixels[nines])
    four_to_four = torch.cdist(pixels[fours], pixels[fours])
    nearest_nine = four_to_nine.argmin(dim=1)
    # The median over the other 4s (the diagonal's zero is excluded by dropping the smallest).
    order = four_to_four.argsort(dim=1, stable=True)[:, 1:]
    median_four = order[:, (order.shape[1] - 1) // 2]
    rows = torch.arange(len(fours))
    ratios = four_to_nine[rows, nearest_nine] / four_to_four[rows, median_four]
    triplets = [Triplet(nine=int(nines[n]), four_a=int(fours[a]), four_b=int(fours[b]))
                for a, n, b in zip(rows.tolist(), nearest_nine.tolist(), median_four.tolist())]
    return triplets, ratios


def choose_triplet(images: torch.Tensor, labels: torch.Tensor, limit: int = 500,
                   anchor: int = LECTURE_ANCHOR, confusable: int = LECTURE_CONFUSABLE) -> Triplet:
    """The lecture's 9-4-4 triplet, chosen by TRIPLET_RULE among the first `limit` 4s and 9s.

    `anchor` and `confusable` replace the 4 and the 9 (a data set's `triplet` pair).
    """
    pixels = torch.as_tensor(images).flatten(1).float() / 255.0
    fours = torch.nonzero(torch.as_tensor(labels) == anchor).flatten()[:limit]
    nines = torch.nonzero(torch.as_tensor(labels) == confusable).flatten()[:limit]
    if len(fours) < 2 or len(nines) < 1:
        raise ValueError(f"choosing a triplet needs at least two of class {anchor} and one of class "
                         f"{confusable} in the split")
    mean_four = pixels[fours].mean(dim=0)
    four_radius = (pixels[fours] - mean_four).norm(dim=1)
    nine_radius = (pixels[nines] - mean_four).norm(dim=1)
    by_radius = torch.sort(four_radius, stable=True).indices
    four_a = by_radius[0]
    others = by_radius[1:]
    four_b = others[(len(others) - 1) // 2]
    nine = torch.sort(nine_radius, stable=True).indices[0]
    return Triplet(nine=int(nines[nine]), four_a=int(fours[four_a]), four_b=int(fours[four_b]))


def triplet_flip_rates(features: dict[str, torch.Tensor], images: torch.Tensor, labels: torch.Tensor,
                       limit: int = 500, anchor: int = LECTURE_ANCHOR,
                       confusable: int = LECTURE_CONFUSABLE) -> dict[str, float]:
    """Per layer: of the triplets whose pixel order is wrong, the share this layer puts right (ratio > 1).

    The unbiased counterpart of one chosen triplet: every 4 (every `anchor`) of the split as anchor.
    """
    triplets, ratios = nearest_nine_triplets(images, labels, limit, anchor, confusable)
    wrong = [t for t, r in zip(triplets, ratios.tolist()) if r < 1]
    if not wrong:
        return {layer: float("nan") for layer in features}
    nine = torch.tensor([t.nine for t in wrong])
    four_a = torch.tensor([t.four_a for t in wrong])
    four_b = torch.tensor([t.four_b for t in wrong])
    rates = {}
    for layer, feats in features.items():
        feats = feats.float()
        ratio = (feats[nine] - feats[four_a]).norm(dim=1) / (feats[four_a] - feats[four_b]).norm(dim=1)
        rates[layer] = float((ratio > 1).float().mean())
    return rates


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


def triplet_ordering_rate(distances: torch.Tensor, labels: torch.Tensor, count: int = 20000,
                          classes: tuple[int, ...] | None = None, seed: int = 0) -> float:
    """P[d(a, p) < d(a, n)] over random triplets, from a pairwise distance matrix.

    Anchor and positive share a class (and differ), the negative has another
    one. `classes` restricts all three to those digits (e.g. (4, 9), the
    lecture's pair). 0.5 is chance; 1.0 means same-class pairs are always closer.
    """
    generator = torch.Generator().manual_seed(seed)
    pool = torch.arange(len(labels)) if classes is None else torch.nonzero(
        torch.isin(labels, torch.tensor(classes))).flatten()
    # Sort the pool by class: each class is then one contiguous block, and a
    # random member of a block (or of everything outside it) is one randint.
    order = torch.sort(labels[pool], stable=True)
    pool, pool_labels = pool[order.indices], order.values
    starts = torch.searchsorted(pool_labels, pool_labels, right=False)
    sizes = torch.searchsorted(pool_labels, pool_labels, right=True) - starts
    anchor = torch.randint(len(pool), (count,), generator=generator)
    block_start, block_size = starts[anchor], sizes[anchor]
    # Positive: another member of the anchor's block (an offset of 1..size-1 from it, wrapped).
    offset = 1 + (torch.rand(count, generator=generator) * (block_size - 1)).long()
    positive = block_start + (anchor - block_start + offset) % block_size
    # Negative: a position among the len(pool) - size others, skipping the block.
    negative = (torch.rand(count, generator=generator) * (len(pool) - block_size)).long()
    negative = torch.where(negative >= block_start, negative + block_size, negative)
    valid = block_size > 1
    anchors, positives, negatives = pool[anchor[valid]], pool[positive[valid]], pool[negative[valid]]
    return float((distances[anchors, positives] < distances[anchors, negatives]).float().mean())


def within_between_ratio(distances: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean within-class distance over mean between-class distance (lower is better)."""
    same = labels[:, None] == labels[None, :]
    off_diagonal = ~torch.eye(len(labels), dtype=torch.bool)
    return float(distances[same & off_diagonal].mean() / distances[~same].mean())


def silhouette(distances: torch.Tensor, labels: torch.Tensor) -> float:
    """scikit-learn's silhouette score with the true classes as clusters."""
    from sklearn.metrics import silhouette_score

    return float(silhouette_score(distances.double().numpy(), labels.numpy(), metric="precomputed"))


def representation_measures(train_features: dict[str, torch.Tensor], train_labels: torch.Tensor,
                            test_features: dict[str, torch.Tensor], test_labels: torch.Tensor,
                            measure_limit: int = 1000, seed: int = 0,
                            pair: tuple[int, int] = (LECTURE_ANCHOR, LECTURE_CONFUSABLE)) -> list[dict]:
    """Per layer: 1-NN accuracy (train -> test), triplet ordering rates, within/between ratio, silhouette.

    The distance-matrix measures use a sample: the first `measure_limit` test digits.
    `triplet_order_rate_4_9` keeps its name for any `pair` (the data set's triplet classes).
    """
    rows = []
    labels = test_labels[:measure_limit]
    for layer, test in test_features.items():
        subset = test[:measure_limit].float()
        distances = torch.cdist(subset, subset).double().fill_diagonal_(0)
        rows.append({
            "layer": layer,
            "dimensions": int(test.shape[1]),
            "knn1_accuracy": knn_accuracy(train_features[layer], train_labels, test, test_labels),
            "triplet_order_rate": triplet_ordering_rate(distances, labels, seed=seed),
            "triplet_order_rate_4_9": triplet_ordering_rate(distances, labels, classes=tuple(pair), seed=seed),
            "within_between_ratio": within_between_ratio(distances, labels),
            "silhouette": silhouette(distances, labels),
        })
    return rows


def pca_2d(features: torch.Tensor) -> torch.Tensor:
    """The first two principal components (N, 2) of centred features."""
    centred = features.float() - features.float().mean(dim=0)
    _, _, v = torch.pca_lowrank(centred, q=2, center=False, niter=4)
    return centred @ v[:, :2]
