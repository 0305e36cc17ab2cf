"""Data-parallel training over processes that torchrun starts (torch.distributed DDP).

    torchrun --standalone --nproc_per_node=2 -m conv_core.distributed --model seed_cnn --epochs 1

Every rank holds the whole training split on its device and draws the same
seeded permutation; each global batch of `batch_size` is cut into
world-size contiguous slices, one per rank, and DDP all-reduces the
gradients during backward. So the global batch, the steps per epoch, the
OneCycle schedule and the optimizer steps are those of one process, and in
fp32 the weights match a one-process run to float rounding (the gradient
sums are added in another order). Only rank 0 logs, calls `on_epoch` and
writes checkpoints; every rank reads one on resume.

Backends: `gloo` on CPU, `nccl` on CUDA (each rank on cuda:LOCAL_RANK).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class Sharding:
    """This process's place in the group: which slice of every global batch is its own."""

    rank: int
    size: int

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous slice of a global batch (sizes differ by at most one; may be empty)."""
        return batch.tensor_split(self.size)[self.rank]

    def slice_loss(self, logits: torch.Tensor, labels: torch.Tensor, global_batch: int,
                   label_smoothing: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss to backpropagate, this slice's summed loss) for one rank's slice.

        The slice's sum over the global batch size, times the world size because
        DDP averages gradients over ranks: the ranks' gradients then add up to
        the gradient of the global batch's mean loss, whatever the slice sizes.
        """
        summed = F.cross_entropy(logits, labels, label_smoothing=label_smoothing, reduction="sum")
        return summed * (self.size / global_batch), summed.detach()

    def wrap(self, module: nn.Module, device: torch.device) -> nn.Module:
        """`module` under DDP, which all-reduces (averages) its gradients during backward."""
        if device.type != "cuda":
            return DistributedDataParallel(module)
        index = device.index if device.index is not None else torch.cuda.current_device()
        return DistributedDataParallel(module, device_ids=[index])

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """`tensor` summed over all ranks (in place)."""
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def barrier(self) -> None:
        dist.barrier()

    def epoch_seed(self, seed: int, epoch: int) -> int:
        """A seed for the global RNG (dropout) of this rank in this epoch.

        Distinct per rank, so that ranks drop independent units rather than
        the same mask on different digits; a function of the epoch, so that a
        resumed run draws what an uninterrupted one draws.
        """
        return int(np.random.SeedSequence([seed, epoch, self.rank]).generate_state(1, dtype=np.uint64)[0] >> 1)


def setup(device: str = "auto") -> Sharding | None:
    """Join the process group torchrun describes in its environment; None when alone.

    With WORLD_SIZE unset or 1 nothing is initialised and training is the
    plain one-process loop. On CUDA each rank takes cuda:LOCAL_RANK before
    the group exists, so that nccl binds the right device.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return None
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch was built without torch.distributed")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")  # rank, size, address: from torchrun's env
    return Sharding(rank=dist.get_rank(), size=dist.get_world_size())


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# --- the command

def sample_subset(images: torch.Tensor, labels: torch.Tensor, count: int | None):
    """`count` digits in a seeded order (all of them for None): the sample is sorted by class."""
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))[:count]
    return images[order], labels[order]


def _arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="torchrun --standalone --nproc_per_node=N -m conv_core.distributed",
        description="Train on the offline MNIST sample, data-parallel over the ranks torchrun starts; "
                    "rank 0 prints the result. Unset options take TrainConfig's defaults.")
    parser.add_argument("--model")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int, help="the global batch, split over the ranks")
    parser.add_argument("--lr", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto")
    parser.add_argument("--shift-augment", action="store_true")
    parser.add_argument("--train-digits", type=int, help="train on this many sample digits, a seeded subset (default all)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per rank (default 1: a core each)")
    parser.add_argument("--checkpoint", help="checkpoint file (rank 0 writes it after every epoch)")
    parser.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    parser.add_argument("--out", help="folder for result.json (rank 0) and weights-rank<r>.pt (every rank)")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    from conv_core.data import MnistConfig, load_mnist
    from conv_core.evaluate import evaluate
    from conv_core.train import PRECISIONS, TrainConfig, train

    args = _arguments(argv)
    chosen = dict(model=args.model, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                  seed=args.seed, device=args.device)
    config = TrainConfig(**{k: v for k, v in chosen.items() if v is not None},
                         shift_augment=args.shift_augment, bf16=PRECISIONS[args.precision])
    world = setup(config.device)
    rank = world.rank if world else 0
    if rank != 0:
        logging.getLogger("conv_core").setLevel(logging.ERROR)  # rank 0 says it once (the sample's warning)
    try:
        mnist = load_mnist(MnistConfig(source="sample"), log=print if rank == 0 else lambda message: None)
        images, labels = sample_subset(mnist.train_images, mnist.train_labels, args.train_digits)
        result = train(config, images, labels, checkpoint_path=args.checkpoint, resume=args.resume,
                       threads=args.threads, world=world, log=print)
        if args.out:
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            torch.save(result.model.state_dict(), out / f"weights-rank{rank}.pt")
        if rank == 0:
            test = evaluate(result.model, mnist.test_images, mnist.test_labels, batch_size=2000)
            last = result.history[-1]
            summary = {"model": config.model, "ranks": world.size if world else 1, "device": result.device,
                       "precision": result.precision, "epochs": config.epochs, "batch_size": config.batch_size,
                       "train_digits": len(images), "train_loss": last.train_loss,
                       "test_accuracy": test.accuracy, "seconds": result.seconds,
                       "images_per_second": [s.images_per_second for s in result.history]}
            print(json.dumps(summary))
            if args.out:
                (Path(args.out) / "result.json").write_text(json.dumps(summary, indent=1))
    finally:
        teardown()


if __name__ == "__main__":
    main()
