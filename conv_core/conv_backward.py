"""A 16-channel convolution for training on an AVX2 CPU: torch's forward, its backward in C.

On an AVX2-only CPU (AMD Zen 3) oneDNN took 8-9 ms for the backward of the
seed CNN's second convolution (9 -> 16 channels, 5x5, channels-last, 128
digits), against 2.3-2.6 ms for its forward: the input gradient ran at half
the forward's rate, its vectors along the 9 input channels. `kernels/convgrad.c`
runs every vector along the 16 output channels instead: for the input
gradient that is the sum's own axis (5-7 ms -> about 2 ms); the weight
gradient holds a tap's sums for a few input channels in registers over a
whole image (3.3-3.6 -> 2.1-2.8 ms, the same bits as oneDNN's here). The
forward stays torch's.

Arithmetic: float32. The input gradient sums in another order than oneDNN,
so it differs from torch's by rounding (`tests/test_conv_backward.py`
compares both with float64). Where it does not apply (a CPU with AVX-512,
where oneDNN's 16-lane vectors were never measured against it, or without
AVX2, no compiler, bf16 autocast, a tensor that is not a channels-last
float32 CPU batch, another layer shape, CONVLAB_CONV_BACKWARD=0) the layer is
torch's own convolution.
"""

from __future__ import annotations

import ctypes

import torch
import torch.nn.functional as F
from torch import nn

from conv_core import native

SWITCH_VARIABLE = "CONVLAB_CONV_BACKWARD"
KERNEL_SIZES = (3, 5, 7)
OUT_CHANNELS = 16  # two AVX2 vectors: the kernel's sums run along them
MAX_IN_CHANNELS = 24  # the input gradient's sums: two groups of 12 held in registers


def enabled() -> bool:
    return native.switched_on(SWITCH_VARIABLE)


def _library():
    return native.load_available("convgrad")


def layer_fits(conv: nn.Module) -> bool:
    """Whether `conv`'s backward is the kernel's: 16 outputs, 2-24 inputs, a square 3, 5 or 7 kernel,
    stride 1, zero padding of half the kernel on every side (output size = input size), no dilation or groups."""
    return (isinstance(conv, nn.Conv2d) and conv.out_channels == OUT_CHANNELS
            and 1 < conv.in_channels <= MAX_IN_CHANNELS and conv.kernel_size[0] == conv.kernel_size[1]
            and conv.kernel_size[0] in KERNEL_SIZES and conv.stride == (1, 1) and conv.dilation == (1, 1)
            and conv.groups == 1 and isinstance(conv.padding, tuple)
            and conv.padding == (conv.kernel_size[0] // 2,) * 2 and conv.padding_mode == "zeros")


def kernel_applies(conv: nn.Conv2d, x: torch.Tensor) -> bool:
    """Whether this call's backward is the kernel's: a channels-last float32 CPU batch that needs its
    gradient (inside a network, not its data), float32 weights, no autocast, the kernel built for this CPU."""
    return (layer_fits(conv) and x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4
            and x.requires_grad and x.is_contiguous(memory_format=torch.channels_last) and x.numel() > 0
            and conv.weight.dtype == torch.float32 and conv.weight.device.type == "cpu"
            and not torch.is_autocast_enabled("cpu") and enabled() and _library() is not None)


def input_gradient(grad_out: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The input gradient of a 'same' stride-1 convolution with `weight` (16, CI, K, K), as a channels-last
    (N, CI, H, W) tensor, from `grad_out` (N, 16, H, W); the rows split among torch's threads."""
    n, _, h, w = grad_out.shape
    in_channels, k = weight.shape[1], weight.shape[-1]
    nhwc = grad_out.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1)
    taps = weight.detach().permute(1, 2, 3, 0).contiguous()  # (CI, K, K, 16): a tap's 16 outputs side by side
    grad_in = torch.empty((n, h, w, in_channels))
    arguments = [native.pointer(t, torch.float32) for t in (nhwc, taps, grad_in)]
    native.run_split(_library().convgrad_input, n * h, *arguments, *map(ctypes.c_int64, (h, w, in_channels, k)),
                     grain=512)
    return grad_in.permute(0, 3, 1, 2)


def weight_gradients(x: torch.Tensor, grad_out: torch.Tensor, kernel: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The weight (16, CI, K, K) and bias (16) gradients of a 'same' stride-1 convolution of `x` (N, CI, H, W),
    from `grad_out` (N, 16, H, W). One part of the batch per torch thread, each summing into buffers of its
    own, added up in part order (the same thread count: the same bits)."""
    n, in_channels, h, w = x.shape
    x_nhwc = x.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1)
    grad_nhwc = grad_out.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1)
    parts = native.split(n, grain=32)
    dw = torch.zeros((len(parts), in_channels, kernel, kernel, OUT_CHANNELS))
    db = torch.zeros((len(parts), OUT_CHANNELS))
    sizes = [ctypes.c_int64(v) for v in (h, w, in_channels, kernel)]
    native.run_parts([(_library().convgrad_weight, native.pointer(x_nhwc, torch.float32),
                       native.pointer(grad_nhwc, torch.float32), native.pointer(dw[part], torch.float32),
                       native.pointer(db[part], torch.float32), *sizes, ctypes.c_int64(start), ctypes.c_int64(stop))
                      for part, (start, stop) in enumerate(parts)])
    return dw.sum(0).permute(3, 0, 1, 2), db.sum(0)


class _Conv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int):
        ctx.save_for_backward(x, weight)
        ctx.padding, ctx.has_bias = padding, bias is not None
        return F.conv2d(x, weight, bias, padding=padding)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad_in = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_in = input_gradient(grad_out, weight)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            grad_weight, grad_bias = weight_gradients(x, grad_out, weight.shape[-1])
            # in the weight's own memory format, as torch's convolution backward gives it
            grad_weight = torch.empty_like(weight).copy_(grad_weight)
        return (grad_in, grad_weight if ctx.needs_input_grad[1] else None,
                grad_bias if ctx.has_bias and ctx.needs_input_grad[2] else None, None)


class KernelBackwardConv(nn.Module):
    """`conv` for training: the same parameters and forward, the backward from the C kernel where
    `kernel_applies`, else `conv` itself."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if kernel_applies(self.conv, x):
            return _Conv2d.apply(x, self.conv.weight, self.conv.bias, self.conv.padding[0])
        return self.conv(x)
