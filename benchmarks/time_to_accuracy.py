"""Time to accuracy: seconds until the seed CNN's test accuracy first reaches a target,
for conv_core.train's default schedule (the budget), its former fixed 30 epochs,
and PyTorch's examples/mnist loop (PIL image per sample, DataLoader, batch 64,
Adadelta lr 1.0, StepLR gamma 0.7, 14 epochs), over several seeds, in one run.

    python benchmarks/time_to_accuracy.py [--data sample|mnist|fashion_mnist] [--seeds 10]
        [--target 0.98] [--idx-dir DIR] [--device auto] [--threads N]

The clock starts before the data is read (IDX/gzip parsing or the sample's
arrays, moving it to the device, building the model: all included) and runs
while the loop trains. Once per epoch the test accuracy is looked at, with the
clock paused, only to stop it: no setting, epoch or model is chosen on it, and
a loop keeps its own schedule (an early stop just ends the timing). A loop that
never reaches the target in its schedule counts as not reached. Targets by
default: 98% on the sample's 1,000 test digits, 99% on MNIST's 10,000, 90% on
Fashion-MNIST's 10,000. On a GPU the data lives on the GPU (conv_core.train
does that by itself; the examples/mnist loop copies each batch, as it does).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import examples_mnist_loader, examples_mnist_pass  # noqa: E402  (the same baseline loop)

from conv_core.data import MnistConfig, load_mnist  # noqa: E402
from conv_core.datasets import get_dataset  # noqa: E402
from conv_core.evaluate import evaluate  # noqa: E402
from conv_core.models import build_model  # noqa: E402
from conv_core.train import TrainConfig, default_threads, resolve_device, train  # noqa: E402

TARGETS = {"sample": 0.98, "mnist": 0.99, "fashion_mnist": 0.90}


class Reached(Exception):
    """The target accuracy was reached: the timing ends here."""


class Stopwatch:
    """Wall seconds with pauses (the once-per-epoch test look is not the loop's time)."""

    def __init__(self):
        self.started, self.paused = time.perf_counter(), 0.0

    def elapsed(self) -> float:
        return time.perf_counter() - self.started - self.paused

    def look(self, model: nn.Module, images, labels, target: float, device=None) -> float:
        """The test accuracy, measured with the clock stopped; raises Reached at the target."""
        looked = time.perf_counter()
        accuracy = evaluate(model, images, labels, device=device).accuracy
        self.paused += time.perf_counter() - looked
        if accuracy >= target:
            raise Reached(accuracy)
        return accuracy


def load(data: str, idx_dir: str | None):
    """(train images, train labels, test images, test labels): all training images (nothing is chosen here)."""
    if data == "sample":
        config = MnistConfig(source="sample")
    else:
        config = MnistConfig(dataset=data, source="idx_dir" if idx_dir else "auto", idx_dir=idx_dir)
    splits = load_mnist(config, log=lambda line: None)
    if data != "sample" and splits.provenance.get("is_sample"):
        raise SystemExit(f"{data}: only the offline sample is here; give --idx-dir with the full IDX files")
    return splits.train_images, splits.train_labels, splits.test_images, splits.test_labels


def convlab_run(config: TrainConfig, data: str, idx_dir, target: float, threads: int | None):
    """(seconds to the target or None, epochs run, last accuracy)."""
    clock = Stopwatch()
    train_images, train_labels, test_images, test_labels = load(data, idx_dir)
    seen = {"epochs": 0, "accuracy": 0.0}

    def look(stats, model):
        seen["epochs"] = stats.epoch
        seen["accuracy"] = clock.look(model, test_images, test_labels, target)

    try:
        train(config, train_images, train_labels, on_epoch=look, log=lambda line: None, threads=threads)
    except Reached as reached:
        return clock.elapsed(), seen["epochs"], reached.args[0]
    return None, seen["epochs"], seen["accuracy"]


def examples_mnist_run(seed: int, data: str, idx_dir, target: float, device: torch.device, epochs: int = 14):
    """examples/mnist's main(): Adadelta(lr=1.0), StepLR(step_size=1, gamma=0.7), batch 64, 14 epochs."""
    clock = Stopwatch()
    train_images, train_labels, test_images, test_labels = load(data, idx_dir)
    torch.manual_seed(seed)
    mean, std = get_dataset("fashion_mnist" if data == "fashion_mnist" else "mnist").normalization
    model = build_model("seed_cnn", normalization=(mean, std))
    normalize, model.normalize = model.normalize, nn.Identity()  # the transform normalises, as in the example
    model = model.to(device)
    loader = examples_mnist_loader(train_images, train_labels, mean, std, device)
    optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    accuracy = 0.0
    for epoch in range(1, epochs + 1):
        examples_mnist_pass(model, loader, optimizer, device)
        scheduler.step()
        try:  # evaluated on raw pixels: the normalisation goes back in front for the look
            accuracy = clock.look(nn.Sequential(normalize.to(device), model), test_images, test_labels, target,
                                  device=device)
        except Reached as reached:
            return clock.elapsed(), epoch, reached.args[0]
    return None, epochs, accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", choices=list(TARGETS), default="sample")
    parser.add_argument("--idx-dir", default=None, help="IDX folder of the full data set (mnist, fashion_mnist)")
    parser.add_argument("--target", type=float, default=None, help="test accuracy to reach (default per data)")
    parser.add_argument("--seeds", type=int, default=10, help="seeds 0..N-1 per loop (fewer: a quick run)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for every loop (default: conv_core.train's default_threads())")
    parser.add_argument("--loops", nargs="+", default=["default", "30 epochs", "examples/mnist"],
                        choices=["default", "30 epochs", "examples/mnist"])
    args = parser.parse_args()

    device = resolve_device(args.device)
    target = args.target or TARGETS[args.data]
    thread_count = args.threads or (default_threads() if device.type == "cpu" else None)
    if thread_count:
        torch.set_num_threads(thread_count)
    load_before = os.getloadavg()[0]
    print(f"seed CNN to {target:.1%} test accuracy on {args.data}, {device}"
          + (f", {thread_count} thread(s)" if thread_count else "")
          + f", seeds 0-{args.seeds - 1}; data loading included, the per-epoch test look excluded; "
            f"load average {load_before:.1f}", flush=True)
    loops = {
        "default": lambda seed: convlab_run(TrainConfig(seed=seed, device=str(device)), args.data, args.idx_dir,
                                            target, thread_count),
        "30 epochs": lambda seed: convlab_run(TrainConfig(seed=seed, epochs=30, device=str(device)), args.data,
                                              args.idx_dir, target, thread_count),
        "examples/mnist": lambda seed: examples_mnist_run(seed, args.data, args.idx_dir, target, device),
    }
    names = {"default": "conv_core.train default (budget)", "30 epochs": "conv_core.train, 30 epochs",
             "examples/mnist": "examples/mnist loop (14 epochs)"}
    results = {name: [] for name in args.loops}
    for seed in range(args.seeds):  # loops alternate, so load swings hit them alike
        for name in args.loops:
            seconds, epochs, accuracy = loops[name](seed)
            results[name].append((seconds, epochs, accuracy))
            shown = f"{seconds:.1f} s" if seconds is not None else "not reached"
            print(f"  seed {seed} {names[name]}: {shown} (epoch {epochs}, accuracy {accuracy:.2%})", flush=True)

    print(f"\n| loop | reached | seconds to {target:.1%} (mean ± std) | median | epochs (median) |")
    print("|---|---|---|---|---|")
    for name, runs in results.items():
        times = [seconds for seconds, _, _ in runs if seconds is not None]
        epochs = statistics.median(e for seconds, e, _ in runs if seconds is not None) if times else float("nan")
        spread = f"{statistics.mean(times):.1f} ± {statistics.stdev(times) if len(times) > 1 else 0:.1f}" \
            if times else "-"
        median = f"{statistics.median(times):.1f}" if times else "-"
        print(f"| {names[name]} | {len(times)}/{len(runs)} | {spread} | {median} | {epochs} |")
    print(f"\nload average {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
