"""conv_core.evaluate on tiny synthetic inputs with known answers."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conv_core.evaluate import Evaluation, evaluate, layer_activations, predict_logits, to_model_input
from conv_core.models import build_model


class PixelVote(nn.Module):
    """Predicts the class written (as a pixel value 0..9) in the top-left pixel."""

    input_size = 28

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(5.0))

    def forward(self, x):
        return F.one_hot((x[:, 0, 0, 0] * 255).round().long(), 10).float() * self.scale


def images_predicting(classes: list[int]) -> torch.Tensor:
    images = torch.zeros(len(classes), 28, 28, dtype=torch.uint8)
    images[:, 0, 0] = torch.tensor(classes, dtype=torch.uint8)
    return images


def test_confusion_accuracy_and_per_class_agree():
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])
    predicted = [0, 0, 1, 1, 1, 2, 2, 0, 2, 5]
    result = evaluate(PixelVote(), images_predicting(predicted), labels)

    assert isinstance(result, Evaluation)
    assert result.confusion.shape == (10, 10) and result.confusion.dtype == torch.int64
    assert result.confusion.sum() == result.count == 10
    assert result.confusion.sum(dim=1).tolist() == torch.bincount(labels, minlength=10).tolist()
    assert result.confusion.sum(dim=0).tolist() == torch.bincount(torch.tensor(predicted), minlength=10).tolist()
    assert result.confusion[0, 1] == 1 and result.confusion[2, 0] == 1 and result.confusion[3, 5] == 1
    assert result.accuracy == pytest.approx(result.confusion.trace().item() / 10) == pytest.approx(0.7)
    assert result.per_class_accuracy[:4] == pytest.approx([2 / 3, 1.0, 3 / 4, 0.0])
    assert all(math.isnan(a) for a in result.per_class_accuracy[4:])  # no digits of these classes

    logits = predict_logits(PixelVote(), images_predicting(predicted))
    assert result.loss == pytest.approx(F.cross_entropy(logits, labels).item())

    as_dict = json.loads(json.dumps(result.as_dict()))
    assert as_dict["per_class_accuracy"][4] is None and as_dict["confusion"][0][1] == 1


def test_evaluate_rejects_mismatched_lengths():
    with pytest.raises(ValueError):
        evaluate(PixelVote(), images_predicting([1, 2]), torch.tensor([1]))


def test_predict_logits_accepts_uint8_and_float_and_ignores_batching():
    torch.manual_seed(0)
    model = build_model("seed_cnn")
    model.train()
    images = torch.randint(0, 256, (37, 28, 28), dtype=torch.uint8)
    from_uint8 = predict_logits(model, images, batch_size=10)
    from_float = predict_logits(model, images.float().div(255).unsqueeze(1), batch_size=1000)
    from_numpy = predict_logits(model, images.numpy(), batch_size=37)
    assert from_uint8.shape == (37, 10)
    torch.testing.assert_close(from_uint8, from_float)
    torch.testing.assert_close(from_uint8, from_numpy)
    assert model.training  # the caller's mode is restored


def test_smaller_input_models_see_the_centre_crop():
    torch.manual_seed(0)
    model = build_model("caffe_notebook").eval()
    images = torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8)
    expected = model(images[:, None, 2:26, 2:26].float() / 255)
    torch.testing.assert_close(predict_logits(model, images), expected.detach())
    assert to_model_input(images, 24).shape == (5, 1, 24, 24)


def test_layer_activations_of_the_seed_cnn():
    torch.manual_seed(0)
    model = build_model("seed_cnn")
    images = torch.randint(0, 256, (6, 28, 28), dtype=torch.uint8)
    activations = layer_activations(model, images, batch_size=4)

    expected_shapes = {
        "input": (6, 1, 28, 28), "conv1": (6, 9, 28, 28), "relu1": (6, 9, 28, 28), "pool1": (6, 9, 14, 14),
        "conv2": (6, 16, 14, 14), "relu2": (6, 16, 14, 14), "pool2": (6, 16, 7, 7), "fc1": (6, 10),
    }
    for name, shape in expected_shapes.items():
        assert activations[name].shape == shape, name
    assert list(activations)[:2] == ["input", "normalize"]
    torch.testing.assert_close(activations["input"], images[:, None].float() / 255)
    torch.testing.assert_close(activations["relu1"], activations["conv1"].clamp(min=0))
    torch.testing.assert_close(activations["fc1"], predict_logits(model, images))

    chosen = layer_activations(model, images, ["conv1", "pool2"])
    assert set(chosen) == {"input", "conv1", "pool2"}
    torch.testing.assert_close(chosen["pool2"], activations["pool2"])
    assert all(not module._forward_hooks for module in model.modules())  # hooks removed

    with pytest.raises(ValueError, match="conv9"):
        layer_activations(model, images, ["conv9"])
