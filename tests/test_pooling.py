"""The C 2x2 max pooling used in training: torch's max_pool2d, bit for bit, both ways."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conv_core import native
from conv_core.models import build_model, pool_before_relu
from conv_core.pooling import SWITCH_VARIABLE, MaxPool2x2, kernel_applies, max_pool2x2

pytestmark = pytest.mark.skipif(native.load("maxpool2x2") is None, reason="no C compiler: the kernel is not built")


def _activations(shape, dtype, seed=0) -> torch.Tensor:
    """Channels-last values with many ties (whole numbers), NaNs, and windows holding two NaNs."""
    generator = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=generator) * 2).round().to(dtype)
    x = x.contiguous(memory_format=torch.channels_last)
    flat = x.permute(0, 2, 3, 1).reshape(-1)  # a view: the same memory
    flat[::101] = float("nan")
    x[0, 0, 0, :2] = float("nan")  # two NaNs in one window: torch keeps the last
    assert x.isnan().sum() > 2
    return x


def _both_ways(pool, x, grad_seed=1):
    leaf = x.clone().requires_grad_()
    out = pool(leaf)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(grad_seed)).to(x.dtype)
    out.backward(grad)
    return out.detach(), leaf.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(5, 9, 28, 28), (5, 16, 14, 14), (3, 5, 6, 8),  # 5: not a constant of the kernel
                                   (3, 20, 6, 8),  # more channels than one AVX-512 vector holds
                                   (160, 9, 28, 28)])  # rows enough to split between threads
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("relu", [False, True])
def test_the_kernel_gives_torchs_values_and_gradients(dtype, shape, threads, relu):
    x = _activations(shape, dtype)
    x.permute(0, 2, 3, 1).view(-1)[1::7] = -0.0  # zeros of both signs: ReLU keeps -0 and passes no gradient at either
    assert kernel_applies(x)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        ours, our_grad = _both_ways(lambda t: max_pool2x2(t, relu), x)
    finally:
        torch.set_num_threads(before)
    theirs, their_grad = _both_ways(lambda t: F.relu(F.max_pool2d(t, 2)) if relu else F.max_pool2d(t, 2), x)
    assert ours.dtype == theirs.dtype and ours.stride() == theirs.stride()
    assert torch.equal(ours.isnan(), theirs.isnan()) and torch.equal(ours.nan_to_num(), theirs.nan_to_num())
    numbers = ~ours.isnan()  # a NaN's sign is whatever the arithmetic made; a zero's is ReLU's rule
    assert torch.equal(ours.signbit()[numbers], theirs.signbit()[numbers])
    assert torch.equal(our_grad, their_grad)
    assert our_grad.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("case", ["nchw", "odd", "float64"])
def test_what_the_kernel_does_not_take_goes_to_torch(case):
    x = _activations((2, 3, 8, 8), torch.float32)
    x = {"nchw": x.contiguous(), "odd": _activations((2, 3, 7, 9), torch.float32),
         "float64": x.double()}[case]
    assert not kernel_applies(x)
    ours, our_grad = _both_ways(max_pool2x2, x)
    theirs, their_grad = _both_ways(lambda t: F.max_pool2d(t, 2), x)
    assert torch.equal(ours.nan_to_num(), theirs.nan_to_num()) and torch.equal(our_grad, their_grad)


def test_the_switch_turns_the_kernel_off(monkeypatch):
    x = _activations((2, 9, 8, 8), torch.bfloat16)
    monkeypatch.setenv(SWITCH_VARIABLE, "0")
    assert not kernel_applies(x)
    monkeypatch.setenv(SWITCH_VARIABLE, "1")
    assert kernel_applies(x)


@pytest.mark.parametrize("bf16", [False, True])
def test_the_training_order_of_a_channels_last_seed_cnn_matches_the_model(bf16, monkeypatch):
    monkeypatch.setenv("CONVLAB_FUSED_FIRST_LAYER", "0")  # its own arithmetic: tests/test_first_layer.py
    monkeypatch.setenv("CONVLAB_CONV_BACKWARD", "0")  # and tests/test_conv_backward.py
    torch.manual_seed(0)
    model = build_model("seed_cnn").train().to(memory_format=torch.channels_last)
    view = pool_before_relu(model)
    assert sum(isinstance(m, MaxPool2x2) and m.relu for m in view.modules()) == 2  # each pool with its ReLU
    assert not any(isinstance(m, torch.nn.ReLU) for m in view.modules())
    x = torch.rand(16, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    x[:8, :, :10] = 0  # blank rows: windows of tied maxima
    results = []
    for net in (model, view):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = net(x)
        out.float().square().sum().backward()
        results.append((out.detach(), [p.grad.clone() for p in model.parameters()]))
    (out_a, grads_a), (out_b, grads_b) = results
    assert torch.equal(out_a, out_b)
    assert all(torch.equal(a, b) for a, b in zip(grads_a, grads_b))
