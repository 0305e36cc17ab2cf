"""2x2 max pooling for training on the CPU: torch's function, in one C pass each way.

On the seed CNN's channels-last activations (9 and 16 channels) torch's CPU
max_pool2d took about 40% of a bf16 training step: its vectors run along the
few channels, and its backward zero-fills the whole input gradient before
scattering into it. `kernels/maxpool2x2.c` gives the same output and the same
gradient, bit for bit (ties and NaN decided as torch decides them), in one
pass each, and can apply the ReLU that follows the pool in training in the
same pass (torch's relu and its gradient, bit for bit too). Anything it does
not cover (NCHW tensors, odd sides, other dtypes and devices, no C compiler)
goes to `F.max_pool2d` itself, and so does everything when
CONVLAB_NATIVE_POOL=0 (to compare, or to rule the kernel out).
"""

from __future__ import annotations

import ctypes

import torch
import torch.nn.functional as F
from torch import nn

from conv_core import native

_SUFFIX = {torch.float32: "f32", torch.bfloat16: "bf16"}
SWITCH_VARIABLE = "CONVLAB_NATIVE_POOL"


def native_pool_enabled() -> bool:
    return native.switched_on(SWITCH_VARIABLE)


def _kernel(name: str, dtype: torch.dtype):
    """A kernel entry point; only asked for once `kernel_applies` found the library built."""
    return getattr(native.load("maxpool2x2"), f"maxpool2x2_{name}_{_SUFFIX[dtype]}")


def kernel_applies(x: torch.Tensor) -> bool:
    """Whether the C kernel takes `x`: a channels-last CPU float32/bfloat16 (N, C, H, W) tensor, even sides."""
    return (x.device.type == "cpu" and x.dim() == 4 and x.dtype in _SUFFIX and x.shape[2] % 2 == 0
            and x.shape[3] % 2 == 0 and x.numel() > 0 and x.is_contiguous(memory_format=torch.channels_last)
            and native_pool_enabled() and native.load("maxpool2x2") is not None)


def _nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1)  # a contiguous view of a channels-last tensor


def _run(function, rows: int, *tensors_and_sizes) -> None:
    arguments = [native.pointer(t, t.dtype) if isinstance(t, torch.Tensor) else ctypes.c_int64(t)
                 for t in tensors_and_sizes]
    # One thread for the rows of a batch of 128 (about 1,800): handing half of them to a second thread
    # cost more than it saved there; larger batches split.
    native.run_split(function, rows, *arguments, grain=1024)


class _MaxPool2x2(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, relu: bool) -> torch.Tensor:
        n, c, h, w = x.shape
        out = torch.empty((n, h // 2, w // 2, c), dtype=x.dtype)
        argmax = torch.empty((n, h // 2, w // 2, c), dtype=torch.uint8)
        _run(_kernel("forward", x.dtype), n * (h // 2), _nhwc(x), out, argmax, h, w, c, int(relu))
        ctx.save_for_backward(argmax)
        ctx.input_shape = (n, c, h, w)
        return out.permute(0, 3, 1, 2)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor, None]:
        (argmax,) = ctx.saved_tensors
        n, c, h, w = ctx.input_shape
        grad_out = _nhwc(grad_out.contiguous(memory_format=torch.channels_last))
        grad_in = torch.empty((n, h, w, c), dtype=grad_out.dtype)
        _run(_kernel("backward", grad_out.dtype), n * (h // 2), grad_out, argmax, grad_in, h, w, c)
        return grad_in.permute(0, 3, 1, 2), None


def max_pool2x2(x: torch.Tensor, relu: bool = False) -> torch.Tensor:
    """`F.max_pool2d(x, 2)`, then `F.relu` if asked, by the C kernel where it applies."""
    if kernel_applies(x):
        return _MaxPool2x2.apply(x, relu)
    pooled = F.max_pool2d(x, 2)
    return F.relu(pooled) if relu else pooled


class MaxPool2x2(nn.Module):
    """nn.MaxPool2d(2), and the ReLU after it when `relu`, computed by `max_pool2x2`."""

    def __init__(self, relu: bool = False):
        super().__init__()
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return max_pool2x2(x, self.relu)

    def extra_repr(self) -> str:
        return "relu=True" if self.relu else ""


def is_plain_2x2(module: nn.Module) -> bool:
    """Whether `module` is an nn.MaxPool2d that `MaxPool2x2` computes exactly: 2x2 windows, stride 2,
    no padding, no dilation, floor sizes, no indices returned."""
    if not isinstance(module, nn.MaxPool2d):
        return False
    pair = nn.modules.utils._pair
    return (pair(module.kernel_size) == (2, 2) and pair(module.stride or module.kernel_size) == (2, 2)
            and pair(module.padding) == (0, 0) and pair(module.dilation) == (1, 1)
            and not module.ceil_mode and not module.return_indices)
