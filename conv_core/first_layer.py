"""A one-channel first layer for training on the CPU: convolution, 2x2 max pool and ReLU in one C pass.

The seed CNN's first convolution (1 -> 9 channels, 5x5) took as long in
torch's oneDNN kernels as its second one (9 -> 16), which does four times
the arithmetic: one input channel leaves its vectors mostly idle. The C
kernel (`kernels/conv1pool.c`, AVX-512 or AVX2) computes each pooled output's four
convolution outputs in registers, pools them and applies ReLU, and writes
only the pooled output; its backward gives the weight and bias gradients
from the winning cell of each window alone (the data needs no gradient).
With AVX2, a ninth or tenth channel (the seed CNN's 9) is computed apart
from the first eight rather than in a second vector of one or two live
lanes: forward eight windows per vector, backward from each winner alone.

Arithmetic: float32 throughout, the output rounded to bfloat16 under bf16
autocast (torch's autocast would round the convolution's inputs and weights
to bfloat16 first), so its values differ from torch's by rounding, not by
what is computed; `tests/test_first_layer.py` compares them. Where it does
not apply (a CPU without AVX-512 or AVX2, no compiler, an input that needs its
gradient, another layer shape, CONVLAB_FUSED_FIRST_LAYER=0) the same
modules run as before: torch's convolution, then `max_pool2x2`.
"""

from __future__ import annotations

import ctypes

import torch
import torch.nn.functional as F
from torch import nn

from conv_core import native
from conv_core.pooling import MaxPool2x2

SWITCH_VARIABLE = "CONVLAB_FUSED_FIRST_LAYER"
KERNEL_SIZES = (3, 5, 7)
MAX_CHANNELS = 16  # one AVX-512 vector of float32, two of AVX2


def fused_enabled() -> bool:
    return native.switched_on(SWITCH_VARIABLE)


def _library():
    return native.load_available("conv1pool")


def layer_fits(conv: nn.Module) -> bool:
    """Whether `conv` is a convolution the kernel computes: one input channel, at most 16 outputs, a square
    3, 5 or 7 kernel, stride 1, no dilation or groups, zero padding the same on every side, a bias."""
    return (isinstance(conv, nn.Conv2d) and conv.in_channels == 1 and conv.out_channels <= MAX_CHANNELS
            and conv.kernel_size[0] == conv.kernel_size[1] and conv.kernel_size[0] in KERNEL_SIZES
            and conv.stride == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1
            and isinstance(conv.padding, tuple) and conv.padding[0] == conv.padding[1]
            and conv.padding_mode == "zeros" and conv.bias is not None)


def kernel_applies(conv: nn.Conv2d, x: torch.Tensor) -> bool:
    """Whether the kernel computes relu(max_pool2d(conv(x), 2)) for this input: a CPU float32
    (N, 1, H, W) batch that needs no gradient, an even convolution output, AVX-512 or AVX2 here."""
    if not (layer_fits(conv) and x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4
            and x.shape[1] == 1 and not x.requires_grad and conv.weight.device.type == "cpu"):
        return False
    out_h, out_w = (side + 2 * conv.padding[0] - conv.kernel_size[0] + 1 for side in x.shape[2:])
    return out_h > 0 and out_h % 2 == 0 and out_w > 0 and out_w % 2 == 0 and fused_enabled() and \
        _library() is not None


def _pointer(tensor: torch.Tensor) -> ctypes.c_void_p:
    return native.pointer(tensor, tensor.dtype)


class _ConvPoolReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, padding: int,
                out_dtype: torch.dtype) -> torch.Tensor:
        k = weight.shape[-1]
        padded = F.pad(x.reshape(x.shape[0], x.shape[2], x.shape[3]), (padding,) * 4).contiguous()
        n, hp, wp = padded.shape
        oh, ow, c = (hp - k + 1) // 2, (wp - k + 1) // 2, weight.shape[0]
        w = weight.detach().float().contiguous()
        b = bias.detach().float().contiguous()
        out = torch.empty((n, oh, ow, c), dtype=out_dtype)
        argmax = torch.empty((n, oh, ow, c), dtype=torch.uint8)
        forward = _library().conv1pool_forward
        native.run_parts([(forward, _pointer(padded), _pointer(w), _pointer(b), _pointer(out),
                           ctypes.c_int64(out_dtype == torch.bfloat16), _pointer(argmax), ctypes.c_int64(hp),
                           ctypes.c_int64(wp), ctypes.c_int64(c), ctypes.c_int64(k), ctypes.c_int64(start),
                           ctypes.c_int64(stop)) for start, stop in native.split(n * oh, grain=512)])
        ctx.save_for_backward(padded, argmax)
        ctx.weight_shape, ctx.weight_dtype = weight.shape, weight.dtype
        return out.permute(0, 3, 1, 2)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        padded, argmax = ctx.saved_tensors
        n, hp, wp = padded.shape
        c, k = ctx.weight_shape[0], ctx.weight_shape[-1]
        grad = grad_out.permute(0, 2, 3, 1)
        if grad.dtype not in (torch.float32, torch.bfloat16):
            grad = grad.float()
        grad = grad.contiguous()
        parts = native.split(n * ((hp - k + 1) // 2), grain=512)
        # one weight and bias gradient per part, summed in part order: the same bits for the same threads
        dw, db = torch.zeros((len(parts), c, k, k)), torch.zeros((len(parts), c))
        backward = _library().conv1pool_backward
        native.run_parts([(backward, _pointer(padded), _pointer(grad), ctypes.c_int64(grad.dtype == torch.bfloat16),
                           _pointer(argmax), _pointer(dw[part]), _pointer(db[part]), ctypes.c_int64(hp),
                           ctypes.c_int64(wp), ctypes.c_int64(c), ctypes.c_int64(k), ctypes.c_int64(start),
                           ctypes.c_int64(stop)) for part, (start, stop) in enumerate(parts)])
        dw, db = dw.sum(0), db.sum(0)
        return None, dw.view(ctx.weight_shape).to(ctx.weight_dtype), db.to(ctx.weight_dtype), None, None


def _output_dtype(x: torch.Tensor) -> torch.dtype:
    if torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16:
        return torch.bfloat16
    return x.dtype


class ConvPoolReLU(nn.Module):
    """relu(max_pool2d(conv(x), 2)) for training: `conv`'s own parameters, one C pass where
    `kernel_applies`, else `conv` then `MaxPool2x2(relu=True)`."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv = conv
        self.pool = MaxPool2x2(relu=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if kernel_applies(self.conv, x):
            return _ConvPoolReLU.apply(x, self.conv.weight, self.conv.bias, self.conv.padding[0], _output_dtype(x))
        return self.pool(self.conv(x))
