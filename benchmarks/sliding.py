"""Sliding the classifier over a canvas: the fully convolutional net against explicit windows.

    python benchmarks/sliding.py [--sizes 112 224] [--strides 4 1] [--repeats 5] [--threads 1]

Both produce the same grid of per-window logits (stride 4 is the FCN's own
output stride; stride 1 is shift-and-stitch, 16 FCN passes). The explicit
baseline crops every 28x28 window and classifies the crops in batches.
Multiply-adds are counted from the layers; wall time is the median of
--repeats runs after one warm-up. Speed does not depend on the weights, so the
seed CNN is random. conv_core runs these on one thread (see
conv_core.gradients.one_thread); --threads N > 1 times them on N threads instead.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from conv_core.data import MnistConfig, load_mnist
from conv_core.models import build_model
from conv_core.segment import dense_logits, fully_convolutional, make_canvas, sliding_costs, sliding_window_logits


def median_seconds(function, repeats: int) -> float:
    function()  # warm-up: allocator, kernels
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[112, 224])
    parser.add_argument("--strides", type=int, nargs="+", default=[4, 1])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    fcn_run, explicit_run = dense_logits, sliding_window_logits
    if args.threads > 1:
        # Skip the one-thread wrappers and use the threads asked for.
        fcn_run, explicit_run = dense_logits.__wrapped__, sliding_window_logits.__wrapped__
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    model = build_model("seed_cnn").eval()
    fcn = fully_convolutional(model)
    data = load_mnist(MnistConfig(source="sample"))

    header = (f"{'canvas':>7} {'stride':>6} {'windows':>7} {'explicit MMAC':>13} {'FCN MMAC':>9} {'MAC ratio':>9} "
              f"{'explicit ms':>11} {'FCN ms':>8} {'speedup':>7} {'max|dlogit|':>11}")
    print(f"torch {torch.__version__}, {args.threads} thread(s), random seed_cnn, median of {args.repeats}")
    print(header)
    print("-" * len(header))
    for size in args.sizes:
        canvas, _ = make_canvas(data.test_images, data.test_labels, size=size, count=max(2, (size // 40) ** 2),
                                seed=0)
        for stride in args.strides:
            costs = sliding_costs(model, fcn, size=size, stride=stride)
            explicit_s = median_seconds(lambda: explicit_run(model, canvas, stride=stride), args.repeats)
            fcn_s = median_seconds(lambda: fcn_run(fcn, canvas, stride=stride), args.repeats)
            difference = (fcn_run(fcn, canvas, stride=stride) - explicit_run(model, canvas, stride=stride)).abs().max()
            print(f"{size:>4}^2  {stride:>6} {costs['windows']:>7} {costs['explicit_multiply_adds'] / 1e6:>13.1f} "
                  f"{costs['fcn_multiply_adds'] / 1e6:>9.1f} {costs['ratio']:>8.1f}x {explicit_s * 1e3:>11.1f} "
                  f"{fcn_s * 1e3:>8.1f} {explicit_s / fcn_s:>6.1f}x {float(difference):>11.3f}")
    print("max|dlogit|: the FCN sees real neighbours where a crop sees padding, so windows differ (random weights).")


if __name__ == "__main__":
    main()
