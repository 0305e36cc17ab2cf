"""conv_core.segment: the classifier as a fully convolutional net, slid over a canvas."""

from __future__ import annotations

import copy

import pytest
import torch

from conv_core.evaluate import predict_logits
from conv_core.segment import (
    BACKGROUND,
    class_map,
    compare_sliding,
    dense_logits,
    fully_convolutional,
    make_canvas,
    multiply_adds,
    output_stride,
    sliding_costs,
    sliding_window_logits,
)


@pytest.fixture(scope="module")
def digits(sample_digits):
    return sample_digits


@pytest.fixture(scope="module")
def model(briefly_trained_cnn):
    return copy.deepcopy(briefly_trained_cnn)


@pytest.fixture(scope="module")
def fcn(model):
    return fully_convolutional(model)


@pytest.fixture(scope="module")
def canvas(digits):
    # gap=8: no other digit inside any placed digit's receptive field (window + 6 px each side).
    return make_canvas(digits.test_images, digits.test_labels, size=112, count=4, seed=0, gap=8)


def test_fcn_equals_the_classifier_on_28x28(model, fcn, digits):
    images = digits.test_images[:64]
    expected = predict_logits(model, images)
    got = fcn(images[:, None].float() / 255).detach()
    assert got.shape == (64, 10, 1, 1)
    # float32: the 7x7 conv and the matmul add in different orders (|logits| ~ 20).
    torch.testing.assert_close(got[:, :, 0, 0], expected, rtol=1e-5, atol=1e-5)
    # float64 shows the two are the same function, not merely close.
    model64, fcn64 = copy.deepcopy(model).double(), copy.deepcopy(fcn).double()
    x = images[:, None].double() / 255
    assert (fcn64(x)[:, :, 0, 0] - model64(x)).abs().max() < 1e-10


def test_the_linear_layer_becomes_a_7x7_conv_in_flatten_order(model, fcn):
    weight = fcn.fc1.weight
    assert isinstance(fcn.fc1, torch.nn.Conv2d) and weight.shape == (10, 16, 7, 7)
    # nn.Flatten orders features (c, h, w): feature c*49 + h*7 + w.
    assert weight[3, 5, 2, 6] == model.fc1.weight[3, 5 * 49 + 2 * 7 + 6]
    assert "normalize" in dict(fcn.named_children()) and "flatten" not in dict(fcn.named_children())
    assert isinstance(model.fc1, torch.nn.Linear)  # the classifier is untouched
    assert output_stride(fcn) == 4


def test_explicit_windows_line_up_with_the_canvas(model, canvas):
    image, _ = canvas
    explicit = sliding_window_logits(model, image, stride=4)
    assert explicit.shape == (10, 22, 22)
    crop = image[4 * 7:4 * 7 + 28, 4 * 13:4 * 13 + 28]
    torch.testing.assert_close(explicit[:, 7, 13], predict_logits(model, crop[None])[0], rtol=1e-5, atol=1e-5)


def test_fcn_matches_explicit_windows_on_isolated_digits(model, fcn, canvas):
    image, placements = canvas
    fcn_logits, explicit = dense_logits(fcn, image), sliding_window_logits(model, image)
    assert fcn_logits.shape == explicit.shape == (10, 22, 22)
    for p in placements:
        i, j = p.top // 4, p.left // 4
        spread = float(explicit[:, i, j].max() - explicit[:, i, j].min())
        difference = float((fcn_logits[:, i, j] - explicit[:, i, j]).abs().max())
        # Not exact: padding at the window's edge sees background pixels in the FCN
        # but zeros (grey, after normalisation) in the crop. Measured ~1-3% of the spread.
        assert difference < 0.06 * spread, (p, difference, spread)
        assert fcn_logits[:, i, j].argmax() == explicit[:, i, j].argmax()
    report = compare_sliding(fcn_logits, explicit, placements)
    assert report["max_abs_difference"] >= report["max_abs_difference_on_digits"] > 0


def test_fcn_output_is_shared_sliding_computation(fcn, canvas):
    """Exact: the FCN at window (i, j) equals the FCN on just that window plus an 8-pixel margin."""
    image, _ = canvas
    full = dense_logits(fcn, image)
    for i, j in [(2, 2), (10, 15), (18, 5)]:
        crop = image[4 * i - 8:4 * i + 36, 4 * j - 8:4 * j + 36]
        torch.testing.assert_close(dense_logits(fcn, crop)[:, 2, 2], full[:, i, j], rtol=1e-5, atol=1e-5)


def test_shift_and_stitch_gives_stride_1(model, fcn, canvas):
    image, _ = canvas
    dense4, dense1 = dense_logits(fcn, image, 4), dense_logits(fcn, image, 1)
    assert dense1.shape == (10, 85, 85)
    torch.testing.assert_close(dense1[:, ::4, ::4], dense4)
    explicit1 = sliding_window_logits(model, image, stride=1)
    torch.testing.assert_close(explicit1[:, ::4, ::4], sliding_window_logits(model, image, stride=4))
    # Off the stride-4 grid the FCN still sees the window it should: compare to the crop there.
    assert compare_sliding(dense1, explicit1)["argmax_agreement"] > 0.5


def test_make_canvas_is_deterministic_and_non_overlapping(digits):
    first, placements = make_canvas(digits.test_images, digits.test_labels, size=112, count=5, seed=3)
    again, same = make_canvas(digits.test_images, digits.test_labels, size=112, count=5, seed=3)
    assert torch.equal(first, again) and placements == same
    assert first.shape == (112, 112) and 0 <= first.min() and first.max() <= 1
    covered = torch.zeros(112, 112, dtype=torch.int)
    for p in placements:
        assert p.top % 4 == 0 and p.left % 4 == 0
        assert p.label == int(digits.test_labels[p.index])
        torch.testing.assert_close(first[p.top:p.top + 28, p.left:p.left + 28],
                                   digits.test_images[p.index].float() / 255)
        covered[p.top:p.top + 28, p.left:p.left + 28] += 1
    assert covered.max() == 1
    assert first[covered == 0].abs().max() == 0  # empty background
    with pytest.raises(ValueError):
        make_canvas(digits.test_images, digits.test_labels, size=56, count=5)


def test_class_map_marks_unsure_windows_as_background(fcn, canvas):
    image, _ = canvas
    result = class_map(fcn, image, threshold=0.9)
    assert result.predicted.shape == result.confidence.shape == (22, 22)
    unsure = result.confidence < 0.9
    assert torch.all(result.predicted[unsure] == BACKGROUND)
    assert torch.all(result.predicted[~unsure] == result.probabilities.argmax(dim=0)[~unsure])
    torch.testing.assert_close(result.probabilities.sum(dim=0), torch.ones(22, 22))
    assert 0 <= result.background_fraction() <= 1


def test_multiply_adds_match_the_lecture(model, fcn):
    assert multiply_adds(model, 28, 28) == 889_840  # 176,400 + 705,600 + 7,840
    assert multiply_adds(fcn, 28, 28) == 889_840
    # 112x112: conv1 112*112*9*25 + conv2 56*56*16*9*25 + the 7x7 conv at 22*22 positions.
    assert multiply_adds(fcn, 112, 112) == 112 * 112 * 225 + 56 * 56 * 3600 + 22 * 22 * 7840
    costs = sliding_costs(model, fcn, size=112, stride=4)
    assert costs["windows"] == 484
    assert costs["ratio"] > 10
    assert costs["ratio"] == pytest.approx(24.05, abs=0.01)  # (112*112*225 + 56*56*3600 + 22*22*7840) vs 484 windows of 889,840: 24x fewer
    assert sliding_costs(model, fcn, size=112, stride=1)["ratio"] > 10
