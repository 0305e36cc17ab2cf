import torch

from conv_core.models import build_model
from conv_core.representations import (
    Triplet, choose_triplet, knn_accuracy, layer_features, pca_2d, representation_layers,
    triplet_distances, triplet_flip_rates, triplet_ordering_rate, within_between_ratio,
)


def _clusters(per_class=20, spread=0.1, seed=0):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.eye(10) * 5
    labels = torch.arange(10).repeat_interleave(per_class)
    return centres[labels] + spread * torch.randn(len(labels), 10, generator=generator), labels


def test_layers_run_from_pixels_to_logits():
    assert representation_layers(build_model("seed_cnn")) == {
        "pixels": "input", "conv1": "relu1", "pool1": "pool1", "conv2": "relu2", "pool2": "pool2", "logits": "fc1"}
    assert representation_layers(build_model("mlp")) == {"pixels": "input", "fc1": "relu1", "fc2": "relu2", "logits": "fc3"}
    features = layer_features(build_model("seed_cnn"), torch.randint(0, 256, (3, 28, 28), dtype=torch.uint8))
    assert {k: v.shape[1] for k, v in features.items()} == {
        "pixels": 784, "conv1": 7056, "pool1": 1764, "conv2": 3136, "pool2": 784, "logits": 10}


def test_triplet_rule_picks_by_typicality_and_the_pixel_order_can_come_out_either_way():
    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (60, 28, 28), generator=generator, dtype=torch.uint8)
    labels = torch.tensor([4, 9, 1] * 20)
    triplet = choose_triplet(images, labels)
    assert labels[triplet.nine] == 9 and labels[triplet.four_a] == 4 and labels[triplet.four_b] == 4
    assert triplet.four_a != triplet.four_b
    assert choose_triplet(images, labels) == triplet
    pixels = images.flatten(1).float() / 255
    row = triplet_distances({"pixels": pixels}, triplet)[0]
    assert abs(row["ratio"] - row["d_9A_4A"] / row["d_4A_4B"]) < 1e-9
    # The rule, written out plainly: distances to the mean 4 only.
    fours = [int(i) for i in torch.nonzero(labels == 4).flatten()]
    nines = [int(i) for i in torch.nonzero(labels == 9).flatten()]
    mean_four = pixels[fours].mean(dim=0)
    radius = {i: float(torch.dist(pixels[i], mean_four)) for i in fours + nines}
    by_radius = sorted(fours, key=radius.get)
    others = by_radius[1:]
    assert triplet == Triplet(min(nines, key=radius.get), by_radius[0], others[(len(others) - 1) // 2])


def _three_clusters(nine_offset: float):
    """4s around one image, 9s around another `nine_offset` away (pixel units 0-1, 784 pixels)."""
    generator = torch.Generator().manual_seed(0)
    base = torch.zeros(784)
    base[:100] = 0.5
    direction = torch.zeros(784)
    direction[400:500] = 1.0
    fours = base + 0.05 * torch.randn(20, 784, generator=generator)
    nines = base + nine_offset * direction / direction.norm() + 0.05 * torch.randn(20, 784, generator=generator)
    images = (torch.cat([fours, nines]).clamp(0, 1) * 255).round().to(torch.uint8).view(-1, 28, 28)
    return images, torch.tensor([4] * 20 + [9] * 20)


def test_the_triplet_rule_does_not_decide_the_pixel_order():
    """9s that sit among the 4s give a ratio below 1; 9s far from them, above: the rule decides neither."""
    for offset, below_one in ((0.0, True), (5.0, False)):
        images, labels = _three_clusters(offset)
        triplet = choose_triplet(images, labels)
        pixels = images.flatten(1).float() / 255
        ratio = triplet_distances({"pixels": pixels}, triplet)[0]["ratio"]
        assert (ratio < 1) == below_one, (offset, ratio)


def test_measures_on_separated_and_on_random_features():
    features, labels = _clusters()
    distances = torch.cdist(features, features)
    assert knn_accuracy(features, labels, features + 0.01, labels) == 1.0
    assert triplet_ordering_rate(distances, labels) == 1.0
    assert triplet_ordering_rate(distances, labels, classes=(4, 9)) == 1.0
    assert within_between_ratio(distances, labels) < 0.1
    noise = torch.randn(400, 50, generator=torch.Generator().manual_seed(0))
    noise_labels = torch.arange(10).repeat(40)
    noise_distances = torch.cdist(noise, noise)
    assert 0.4 < triplet_ordering_rate(noise_distances, noise_labels) < 0.6
    assert 0.9 < within_between_ratio(noise_distances, noise_labels) < 1.1


def test_triplet_sampling_never_uses_the_anchor_as_its_positive():
    # Two points per class, far apart within the class: an anchor paired with
    # itself would count as "closer" and push the rate up to 1.
    features = torch.tensor([[0.0], [10.0], [5.0]])
    labels = torch.tensor([0, 0, 1])  # the lone 1 cannot anchor a triplet
    distances = torch.cdist(features, features)
    assert triplet_ordering_rate(distances, labels, count=2000) == 0.0


def test_pca_keeps_the_main_direction():
    line = torch.linspace(-1, 1, 50)[:, None] * torch.tensor([[3.0, 4.0, 0.0]])
    projected = pca_2d(line)
    assert projected.shape == (50, 2)
    assert torch.allclose(projected[:, 0].abs(), (line.norm(dim=1)), atol=1e-4)


def test_flip_rate_counts_the_wrongly_ordered_triplets_a_layer_puts_right():
    generator = torch.Generator().manual_seed(2)
    images = torch.randint(0, 256, (60, 28, 28), generator=generator, dtype=torch.uint8)
    labels = torch.tensor([4, 9, 1] * 20)
    pixels = images.flatten(1).float() / 255
    # Pixels themselves never put their own wrong triplets right; label one-hots always do.
    onehot = torch.nn.functional.one_hot(labels, 10).float()
    rates = triplet_flip_rates({"pixels": pixels, "labels": onehot}, images, labels)
    assert rates == {"pixels": 0.0, "labels": 1.0}
