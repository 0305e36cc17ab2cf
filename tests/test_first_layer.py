"""The fused first layer of training (conv_core.first_layer): relu(max_pool2d(conv(x), 2)) in one C pass.

Its arithmetic is float32 throughout, so it is held to torch's float32
result within float32 rounding, and under bf16 autocast to a float64
reference within bfloat16 rounding of its output; its gradients follow the
same window winners (blank rows make ties). Where it does not apply, the
same modules run and give torch's bits.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conv_core.first_layer import SWITCH_VARIABLE, ConvPoolReLU, kernel_applies
from conv_core.models import build_model, pool_before_relu

pytestmark = pytest.mark.skipif(
    not kernel_applies(torch.nn.Conv2d(1, 9, 5, padding=2), torch.zeros(2, 1, 28, 28)),
    reason="no AVX-512 or AVX2, or no C compiler here: the first layer runs as torch's convolution and the pooling kernel")

LAYERS = [(9, 5, 2, 28), (9, 5, 0, 24), (16, 3, 1, 12), (5, 7, 3, 10), (8, 5, 2, 14)]  # channels, kernel, padding, side


def _batch(side: int, count: int = 6) -> torch.Tensor:
    x = torch.randn(count, 1, side, side, generator=torch.Generator().manual_seed(0))
    x[: count // 2, :, : side // 3] = 0  # blank rows: four equal cells in a window, the first one wins
    return x


def _reference(conv, x, dtype=torch.float64):
    """relu(max_pool2d(conv(x), 2)) in `dtype`, with its weight and bias gradients for `grad`."""
    weight = conv.weight.detach().to(dtype).requires_grad_()
    bias = conv.bias.detach().to(dtype).requires_grad_()
    out = F.relu(F.max_pool2d(F.conv2d(x.to(dtype), weight, bias, padding=conv.padding), 2))
    return out, weight, bias


@pytest.mark.parametrize("channels, kernel, padding, side", LAYERS)
@pytest.mark.parametrize("threads", [1, 2])
def test_float32_values_and_gradients_are_torchs_within_rounding(channels, kernel, padding, side, threads):
    torch.manual_seed(1)
    conv = torch.nn.Conv2d(1, channels, kernel, padding=padding)
    x = _batch(side)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        ours = ConvPoolReLU(conv)(x)
        grad = torch.randn(ours.shape, generator=torch.Generator().manual_seed(2))
        ours.backward(grad)
    finally:
        torch.set_num_threads(before)
    assert ours.dtype == torch.float32 and ours.is_contiguous(memory_format=torch.channels_last)
    theirs, weight, bias = _reference(conv, x)
    theirs.backward(grad.double())
    torch.testing.assert_close(ours.double(), theirs, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(conv.weight.grad.double(), weight.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(conv.bias.grad.double(), bias.grad, rtol=1e-4, atol=1e-4)


def test_under_bf16_autocast_the_output_is_the_float32_result_in_bfloat16():
    """bfloat16 out, the convolution's sums float32 (autocast would round input and weights first), and the
    gradients through the window winners that arithmetic chose."""
    torch.manual_seed(1)
    conv = torch.nn.Conv2d(1, 9, 5, padding=2)
    x = _batch(28)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = ConvPoolReLU(conv)(x)
    assert ours.dtype == torch.bfloat16
    grad = torch.randn(ours.shape, generator=torch.Generator().manual_seed(2)).to(torch.bfloat16)
    ours.backward(grad)
    convolved = F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), padding=2).detach().requires_grad_()
    expected = F.relu(F.max_pool2d(convolved, 2))
    torch.testing.assert_close(ours.double(), expected.to(torch.bfloat16).double(), rtol=2**-7, atol=1e-6)
    expected.backward(grad.double())
    weight = torch.nn.grad.conv2d_weight(x.double(), conv.weight.shape, convolved.grad, padding=2)
    torch.testing.assert_close(conv.weight.grad.double(), weight, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(conv.bias.grad.double(), convolved.grad.sum((0, 2, 3)), rtol=1e-4, atol=1e-3)


def test_the_same_threads_give_the_same_bits():
    results = []
    for _ in range(2):
        torch.manual_seed(1)
        conv = torch.nn.Conv2d(1, 9, 5, padding=2)
        out = ConvPoolReLU(conv)(_batch(28, count=40))
        out.square().sum().backward()
        results.append((out.detach(), conv.weight.grad, conv.bias.grad))
    assert all(torch.equal(a, b) for a, b in zip(*results))


@pytest.mark.parametrize("case", ["input needs its gradient", "switched off", "odd output"])
def test_where_it_does_not_apply_the_modules_give_torchs_bits(case, monkeypatch):
    torch.manual_seed(1)
    conv = torch.nn.Conv2d(1, 9, 5, padding=2)
    x = _batch(27 if case == "odd output" else 28)
    if case == "input needs its gradient":
        x.requires_grad_()
    if case == "switched off":
        monkeypatch.setenv(SWITCH_VARIABLE, "0")
    assert not kernel_applies(conv, x)
    out = ConvPoolReLU(conv)(x)
    assert torch.equal(out, F.relu(F.max_pool2d(conv(x), 2)))


def test_the_seed_cnn_trains_through_it_with_its_own_parameters():
    model = build_model("seed_cnn").to(memory_format=torch.channels_last)
    view = pool_before_relu(model)
    assert isinstance(view.conv1, ConvPoolReLU) and view.conv1.conv is model.conv1
    x = torch.rand(8, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(view(x), model(x), rtol=1e-5, atol=1e-5)
    view(x).square().sum().backward()
    assert model.conv1.weight.grad is not None and model.conv1.weight.grad.abs().sum() > 0
