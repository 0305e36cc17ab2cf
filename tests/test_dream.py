"""conv_core.dream on a briefly trained seed CNN and synthetic strokes.

Random weights are not enough here: their logits are tiny next to the L2 and
total-variation penalties, so a class hallucination has nothing to climb.
"""

from __future__ import annotations

import copy

import pytest
import torch

from conv_core.dream import class_hallucination, class_hallucinations, dream, hallucinate, total_variation


@pytest.fixture(scope="module")
def model(briefly_trained_cnn):
    return copy.deepcopy(briefly_trained_cnn)


@pytest.fixture(scope="module")
def strokes():
    """A ring, a bar and a diagonal: digit-like [0, 1] images."""
    yy, xx = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    ring = ((((yy - 14) ** 2 + (xx - 14) ** 2).sqrt() - 8).abs() < 1.5).float()
    bar = ((xx - 14).abs() < 1.5).float() * ((yy - 14).abs() < 10).float()
    diagonal = ((yy - xx).abs() < 1.5).float() * ((yy - 14).abs() < 10).float()
    return torch.stack([ring, bar, diagonal])


@pytest.mark.parametrize("layer", ["relu1", "relu2", "fc1"])
def test_dreaming_increases_the_layer_norm_and_stays_in_range(model, strokes, layer):
    dreamt, record = dream(model, strokes, layer, steps=30)
    assert dreamt.shape == strokes.shape
    assert dreamt.min() >= 0 and dreamt.max() <= 1
    assert torch.all(record["norm_after"] > record["norm_before"]), record
    assert record["steps"] == 30


def test_hallucinate_one_image(model, strokes):
    image, record = hallucinate(model, strokes[0], "relu2", steps=20)
    assert image.shape == (28, 28)
    assert record["norm_after"] > record["norm_before"]
    assert set(record) == {"norm_before", "norm_after", "steps"}


def test_dreaming_is_deterministic_given_the_seed(model, strokes):
    first, _ = hallucinate(model, strokes[1], "relu2", steps=10, seed=3)
    again, _ = hallucinate(model, strokes[1], "relu2", steps=10, seed=3)
    other, _ = hallucinate(model, strokes[1], "relu2", steps=10, seed=4)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)  # a different jitter sequence


def test_dreaming_leaves_the_model_alone(model, strokes):
    def snapshot():
        return {name: (p.detach().clone(), None if p.grad is None else p.grad.clone())
                for name, p in model.named_parameters()}

    before = snapshot()
    dream(model, strokes, "relu2", steps=3)
    class_hallucinations(model, [0, 1], steps=3)
    after = snapshot()
    for name, (weight, grad) in before.items():
        assert torch.equal(weight, after[name][0]), name
        assert (grad is None and after[name][1] is None) or torch.equal(grad, after[name][1]), name
    assert not model.training


def test_class_hallucinations_raise_each_logit(model):
    images, records = class_hallucinations(model, steps=40)
    assert images.shape == (10, 28, 28)
    assert images.min() >= 0 and images.max() <= 1
    assert [r["digit"] for r in records] == list(range(10))
    for record in records:
        assert record["logit_after"] > record["logit_before"], record
        assert 0 <= record["probability"] <= 1
    with torch.no_grad():
        probabilities = model(images[:, None]).softmax(dim=1)
    torch.testing.assert_close(probabilities.diagonal(), torch.tensor([r["probability"] for r in records]))


def test_class_hallucination_is_deterministic(model):
    first, record = class_hallucination(model, 3, steps=10, seed=1)
    again, _ = class_hallucination(model, 3, steps=10, seed=1)
    assert torch.equal(first, again) and record["digit"] == 3


def test_total_variation_counts_edges():
    square = torch.zeros(1, 1, 6, 6)
    square[..., 2:4, 2:4] = 1.0
    assert total_variation(square).item() == 8.0  # 4 vertical and 4 horizontal unit steps
