"""A 16-channel convolution's backward in C (conv_core.conv_backward): torch's forward, the gradients of
kernels/convgrad.c on AVX2 CPUs.

Its sums are float32 in another order than oneDNN's, so its gradients are
held to a float64 reference within float32 rounding, no further from it
than torch's own float32 result is by more than a small factor. Where it
does not apply, the layer is torch's convolution and gives torch's bits.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conv_core.conv_backward import SWITCH_VARIABLE, KernelBackwardConv, kernel_applies, layer_fits
from conv_core.models import build_model, pool_before_relu


def _batch(conv: torch.nn.Conv2d, side: int, count: int = 6) -> torch.Tensor:
    x = torch.randn(count, conv.in_channels, side, side, generator=torch.Generator().manual_seed(0))
    return x.contiguous(memory_format=torch.channels_last).requires_grad_()


APPLIES = kernel_applies(torch.nn.Conv2d(9, 16, 5, padding=2), _batch(torch.nn.Conv2d(9, 16, 5, padding=2), 14))
needs_kernel = pytest.mark.skipif(
    not APPLIES, reason="a CPU with AVX-512 or without AVX2, or no C compiler: oneDNN computes this backward here")

LAYERS = [(9, 5, 14), (9, 5, 3), (8, 3, 14), (16, 3, 7), (13, 5, 6), (24, 7, 9), (2, 3, 4)]  # inputs, kernel, side


def _gradients(module, conv, x, grad):
    out = module(x)
    out.backward(grad)
    return out, x.grad, conv.weight.grad, conv.bias.grad


def _torch_gradients(conv, x, grad, dtype):
    """torch's convolution in `dtype`: (output, input, weight and bias gradients)."""
    x = x.detach().to(dtype).requires_grad_()
    weight = conv.weight.detach().to(dtype).requires_grad_()
    bias = conv.bias.detach().to(dtype).requires_grad_()
    out = F.conv2d(x, weight, bias, padding=conv.padding)
    out.backward(grad.to(dtype))
    return out, x.grad, weight.grad, bias.grad


@needs_kernel
@pytest.mark.parametrize("in_channels, kernel, side", LAYERS)
@pytest.mark.parametrize("threads", [1, 2])
def test_gradients_are_torchs_within_float32_rounding(in_channels, kernel, side, threads):
    torch.manual_seed(1)
    conv = torch.nn.Conv2d(in_channels, 16, kernel, padding=kernel // 2).to(memory_format=torch.channels_last)
    x = _batch(conv, side, count=70)  # 70 images: at 2 threads the weight gradient comes in two parts
    assert kernel_applies(conv, x)
    grad = torch.randn(70, 16, side, side, generator=torch.Generator().manual_seed(2))
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        ours = _gradients(KernelBackwardConv(conv), conv, x, grad)
    finally:
        torch.set_num_threads(before)
    exact = _torch_gradients(conv, x, grad, torch.float64)
    single = _torch_gradients(conv, x, grad, torch.float32)
    assert ours[1].is_contiguous(memory_format=torch.channels_last)
    assert ours[2].is_contiguous(memory_format=torch.channels_last)  # the weight's own format
    torch.testing.assert_close(ours[0], single[0], rtol=0, atol=0)  # the forward is torch's
    for name, mine, theirs, reference in zip(["input", "weight", "bias"], ours[1:], single[1:], exact[1:]):
        error, torch_error = (mine.double() - reference).abs().max(), (theirs.double() - reference).abs().max()
        scale = reference.abs().max()
        assert error <= 4 * torch_error + 1e-6 * scale, (name, error.item(), torch_error.item())


@needs_kernel
def test_the_same_thread_count_gives_the_same_bits():
    conv = torch.nn.Conv2d(9, 16, 5, padding=2).to(memory_format=torch.channels_last)
    grad = torch.randn(128, 16, 14, 14)
    runs = []
    for _ in range(2):
        x = _batch(conv, 14, count=128)
        conv.zero_grad()
        runs.append([g.clone() for g in _gradients(KernelBackwardConv(conv), conv, x, grad)])
    for first, second in zip(*runs):
        assert torch.equal(first, second)


def test_where_it_does_not_apply_the_layer_is_torchs_convolution(monkeypatch):
    torch.manual_seed(1)
    conv = torch.nn.Conv2d(9, 16, 5, padding=2)
    assert not kernel_applies(conv, torch.randn(4, 9, 14, 14).requires_grad_())  # NCHW
    assert not kernel_applies(conv, _batch(conv, 14, 4).detach())  # no input gradient: the data
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not kernel_applies(conv, _batch(conv, 14, 4))
    monkeypatch.setenv(SWITCH_VARIABLE, "0")
    x, grad = _batch(conv, 14, 4), torch.randn(4, 16, 14, 14)
    assert not kernel_applies(conv, x)
    ours = [g.clone() for g in _gradients(KernelBackwardConv(conv), conv, x, grad)]
    conv.zero_grad()
    theirs = _gradients(conv, conv, x.detach().requires_grad_(), grad)
    for mine, torchs in zip(ours, theirs):
        assert torch.equal(mine, torchs)


def test_which_layers_fit():
    assert layer_fits(torch.nn.Conv2d(9, 16, 5, padding=2))
    assert layer_fits(torch.nn.Conv2d(16, 16, 3, padding=1, bias=False))
    for conv in [torch.nn.Conv2d(1, 16, 5, padding=2),  # the data's channel: conv_core.first_layer's
                 torch.nn.Conv2d(9, 32, 5, padding=2), torch.nn.Conv2d(25, 16, 3, padding=1),
                 torch.nn.Conv2d(9, 16, 5), torch.nn.Conv2d(9, 16, 5, padding=2, stride=2),
                 torch.nn.Conv2d(9, 16, 4, padding=2), torch.nn.Conv2d(9, 16, 5, padding="same"),
                 torch.nn.Conv2d(8, 16, 3, padding=1, groups=2), torch.nn.Conv2d(9, 16, 5, padding=4, dilation=2)]:
        assert not layer_fits(conv), conv


@needs_kernel
def test_the_training_forward_of_the_seed_cnn_has_the_lecture_models_gradients():
    """pool_before_relu puts the kernel in the seed CNN's second convolution: same loss, gradients within
    float32 rounding of the model in the lecture's order."""
    torch.manual_seed(0)
    model = build_model("seed_cnn").to(memory_format=torch.channels_last)
    training = pool_before_relu(model)
    assert isinstance(training.conv2, KernelBackwardConv) and training.conv2.conv is model.conv2
    x = torch.rand(32, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (32,))
    ours = torch.autograd.grad(F.cross_entropy(training(x), y), list(model.parameters()))
    theirs = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))
    for mine, torchs in zip(ours, theirs):
        torch.testing.assert_close(mine, torchs, rtol=1e-4, atol=1e-5)
