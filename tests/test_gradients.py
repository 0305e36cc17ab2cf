"""conv_core.gradients: input gradients, captum against hand-written backward rules, top activations."""

from __future__ import annotations

import copy

import pytest
import torch

from conv_core.evaluate import layer_activations
from conv_core.gradients import (
    deconvnet_by_hand,
    filter_at_receptive_field,
    forward_to,
    layer1_gradients,
    layer1_input_gradient,
    most_active_unit,
    normalised_input,
    project_to_input,
    receptive_field,
    top_activations,
    unit_projections,
)


@pytest.fixture(scope="module")
def digits(sample_digits):
    return sample_digits.train_images, sample_digits.train_labels, sample_digits.test_images, sample_digits.test_labels


@pytest.fixture(scope="module")
def model(briefly_trained_cnn):
    return copy.deepcopy(briefly_trained_cnn)


@pytest.fixture(scope="module")
def eight(digits):
    _, _, test_images, test_labels = digits
    return test_images[test_labels == 8][0]


def h1_of(model, image):
    with torch.no_grad():
        return forward_to(model, normalised_input(model, image), "relu1", normalised=True)[0]


def test_layer1_gradient_is_the_filter_at_the_receptive_field(model, eight):
    h1 = h1_of(model, eight)
    units = [(0, 0, 0), (3, 27, 27), (8, 0, 14)] + [(c, *divmod(int(h1[c].argmax()), 28)) for c in range(9)]
    for unit in units:
        gradient = layer1_input_gradient(model, eight, *unit)
        placed = filter_at_receptive_field(model, *unit, image=eight)
        assert (gradient - placed).abs().max() < 1e-6, unit


def test_a_closed_gate_gives_a_zero_gradient(model, eight):
    h1 = h1_of(model, eight)
    closed = (h1 <= 0).nonzero()
    assert len(closed), "expected some inactive layer-1 units"
    unit = tuple(int(v) for v in closed[len(closed) // 2])
    assert layer1_input_gradient(model, eight, *unit).abs().max() == 0
    assert filter_at_receptive_field(model, *unit, image=eight).abs().max() == 0
    # Ungated, the placement is the filter itself; deconvnet ignores the gate and projects exactly that.
    ungated = filter_at_receptive_field(model, *unit)
    assert torch.allclose(deconvnet_by_hand(model, eight, "relu1", unit), ungated, atol=1e-7)


def test_filter_is_clipped_at_the_border(model):
    placed = filter_at_receptive_field(model, 2, 0, 0)
    weight = model.conv1.weight.detach()[2, 0]
    assert torch.equal(placed[:3, :3], weight[2:, 2:])
    assert placed[3:].abs().sum() == 0 and placed[:, 3:].abs().sum() == 0


def test_layer1_gradients_summary_agrees(model, eight):
    result = layer1_gradients(model, eight)
    assert result["gradients"].shape == result["filters"].shape == (9, 28, 28)
    assert result["max_abs_difference"] < 1e-6


@pytest.mark.parametrize("layer", ["relu1", "relu2", "pool2", "fc1"])
def test_captum_matches_the_hand_written_backward_rules(model, eight, layer):
    unit = (7,) if layer == "fc1" else most_active_unit(model, eight, layer)[:3]
    captum_maps = unit_projections(model, eight, layer, unit)
    for rule, captum_map in captum_maps.items():
        by_hand = project_to_input(model, eight, layer, [unit], rule=rule)[0]
        torch.testing.assert_close(captum_map, by_hand, rtol=1e-5, atol=1e-6, msg=f"{layer} {rule}")
    torch.testing.assert_close(captum_maps["deconvnet"], deconvnet_by_hand(model, eight, layer, unit),
                               rtol=1e-5, atol=1e-6)


def test_the_three_rules_differ_on_a_layer2_unit(model, eight):
    unit = most_active_unit(model, eight, "relu2")[:3]
    maps = unit_projections(model, eight, "relu2", unit)
    assert not torch.allclose(maps["gradient"], maps["deconvnet"])
    assert not torch.allclose(maps["gradient"], maps["guided_backprop"])


def test_guided_backprop_is_zero_where_the_gradients_relu_gates_are_closed(model, eight):
    unit = most_active_unit(model, eight, "relu2")[:3]
    x = normalised_input(model, eight)
    with torch.no_grad():
        gate_inputs = {"relu1": forward_to(model, x, "conv1", normalised=True),
                       "relu2": forward_to(model, x, "conv2", normalised=True)}
    _, guided = project_to_input(model, eight, "relu2", [unit], rule="guided_backprop", keep_signals=True)
    _, deconv = project_to_input(model, eight, "relu2", [unit], rule="deconvnet", keep_signals=True)
    for relu, z in gate_inputs.items():
        closed = z <= 0
        assert guided[relu][closed].abs().max() == 0, relu
        assert guided[relu].min() >= 0  # and it only passes positive signal
    # The deconvnet does send signal through closed gates (it ignores the forward pass there).
    assert deconv["relu1"][gate_inputs["relu1"] <= 0].abs().max() > 0


def test_most_active_unit_is_the_maximum(model, eight):
    channel, y, x, value = most_active_unit(model, eight, "relu2")
    h2 = layer_activations(model, eight[None], ["relu2"])["relu2"][0]
    assert value == pytest.approx(float(h2.max()), rel=1e-6)
    assert h2[channel, y, x] == pytest.approx(value, rel=1e-6)


def test_receptive_field_of_a_layer2_unit(model):
    assert receptive_field(model, "conv1", 0, 0) == (-2, -2, 2, 2)
    # relu2 (5, 5): conv2 reads pool1 rows 3..7 = conv1 rows 6..15, which read input rows 4..17.
    assert receptive_field(model, "relu2", 5, 5) == (4, 4, 17, 17)


def test_top_activations_records_the_true_maxima(model, digits):
    images = digits[2][:400]
    top = top_activations(model, images, "relu2", k=9)
    assert top.indices.shape == top.values.shape == (16, 9)
    assert top.positions.shape == (16, 9, 2)
    assert top.projections.shape == (16, 9, 28, 28)
    per_image_max = layer_activations(model, images, ["relu2"])["relu2"].flatten(2).amax(dim=2)  # (N, 16)
    for channel in range(16):
        chosen = top.indices[channel]
        torch.testing.assert_close(top.values[channel], per_image_max[chosen, channel])
        assert torch.all(top.values[channel][:-1] >= top.values[channel][1:])
        others = torch.ones(len(images), dtype=torch.bool)
        others[chosen] = False
        assert per_image_max[others, channel].max() <= top.values[channel, -1]
    # The batched projections are the per-unit deconvnet of the recorded position.
    for channel, j in [(0, 0), (5, 3), (15, 8)]:
        y, x = top.positions[channel, j].tolist()
        single = deconvnet_by_hand(model, images[top.indices[channel, j]], "relu2", (channel, y, x))
        torch.testing.assert_close(top.projections[channel, j], single, rtol=1e-5, atol=1e-6)
