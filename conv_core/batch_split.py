"""A CPU training step with its batch cut across threads: one slice of the batch per thread.

The lab's convolutions are small (9 and 16 channels on 14x14 and 28x28
pixels), and torch's intra-op threads split each operation of a step
between them: an operation that short gains little from a second thread
(a seed CNN step went 1.2-1.3x faster with 2), since every one ends at a
barrier where the threads wait for each other. Here each thread instead
takes a contiguous slice of the batch and runs the whole forward and
backward of that slice on one thread, torch's thread count 1 inside it:
no barrier inside an operation, one per step (the gradients' sum). torch's
operations and the lab's C kernels let go of the GIL while they compute,
and autograd runs a CPU backward on the thread that asks for it, so the
slices run side by side.

What it computes is the one-thread step's: every slice's loss is its share
of the whole batch's mean (its sum over the batch size), so the summed
gradient is the batch's gradient. Only float rounding differs (the batch's
sums are taken slice by slice), and the slices' gradients are added in
slice order, so a thread count gives the same bits every time. Models that
draw random numbers in training (dropout) keep torch's intra-op threads:
slices drawing from the one global generator at once would draw in no fixed
order.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor, wait
from typing import Callable

import torch
from torch import nn

from conv_core import native

SWITCH_VARIABLE = "CONVLAB_BATCH_SPLIT"


def batch_split_enabled() -> bool:
    return native.switched_on(SWITCH_VARIABLE)


def draws_random_numbers(model: nn.Module) -> bool:
    """Whether `model`'s training forward draws random numbers (a dropout layer with p > 0)."""
    return any(isinstance(module, nn.modules.dropout._DropoutNd) and module.p > 0 for module in model.modules())


def split_applies(model: nn.Module, device: torch.device, threads: int | None) -> bool:
    """Whether training `model` on `device` with `threads` threads cuts its batches across them."""
    return (device.type == "cpu" and threads is not None and threads > 1 and batch_split_enabled()
            and not draws_random_numbers(model))


class BatchSplitStep:
    """Forward and backward of one batch, `threads` slices at once; the gradients land in `.grad`.

    Use as a context manager (it owns `threads - 1` worker threads; the
    calling thread computes the first slice). torch's intra-op thread count
    must be 1 while it runs: the caller sets it, and worker threads take it
    up when they first run a torch operation.

    `loss_sum(logits, labels)` gives a slice's summed (not averaged) loss.
    """

    def __init__(self, forward: Callable[[torch.Tensor], torch.Tensor], parameters, threads: int, *,
                 loss_sum: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], bf16: bool = False):
        if threads < 2:
            raise ValueError(f"a batch split needs at least 2 threads, got {threads}")
        self.forward, self.threads, self.loss_sum, self.bf16 = forward, threads, loss_sum, bf16
        self.parameters = [p for p in parameters if p.requires_grad]
        self._workers = ThreadPoolExecutor(threads - 1, thread_name_prefix="convlab-slice")

    def __enter__(self) -> "BatchSplitStep":
        return self

    def __exit__(self, *exc) -> None:
        self._workers.shutdown(wait=True)

    def _slice(self, x: torch.Tensor, y: torch.Tensor, batch: int):
        """(its share of the batch's mean loss, its logits, its gradients) for one slice."""
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):  # autocast is per thread
            logits = self.forward(x)
        loss = self.loss_sum(logits.float(), y) / batch
        gradients = torch.autograd.grad(loss, self.parameters, allow_unused=True)
        return loss.detach(), logits.detach(), gradients

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the batch's mean loss, its logits), the batch's gradient written to each parameter's `.grad`."""
        slices = list(zip(x.tensor_split(self.threads), y.tensor_split(self.threads)))
        slices = [(xs, ys) for xs, ys in slices if len(ys)]  # a batch smaller than the thread count
        others = [self._workers.submit(self._slice, xs, ys, len(y)) for xs, ys in slices[1:]]
        try:
            first = self._slice(*slices[0], len(y))
        finally:  # never leave a slice running into the next step, even when this one failed
            wait(others)
        results = [first] + [other.result() for other in others]
        for parameter, *gradients in zip(self.parameters, *(result[2] for result in results)):
            total = None
            for gradient in gradients:  # slice order: the same bits every time
                if gradient is not None:
                    total = gradient if total is None else total + gradient
            parameter.grad = total
        loss = results[0][0]
        for result in results[1:]:
            loss = loss + result[0]
        return loss, torch.cat([result[1] for result in results])
