"""Semantic segmentation of digit scenes: the fine-tuned FCN against the sliding classifier.

    python benchmarks/segmentation.py [--epochs 30] [--scenes 400] [--heldout 200] [--size 64] [--digits 3]

Trains the seed CNN on the offline 5,000-digit sample (4,000 training digits,
`TrainConfig` defaults), builds training scenes from training digits and
held-out scenes from test digits, fine-tunes the segmenter with and without
its stride-1 skip, and prints mean and per-class IoU on the held-out scenes
for each and for the untrained sliding baseline (threshold 0.9).
"""

from __future__ import annotations

import argparse
import time

from conv_core.data import MnistConfig, load_mnist
from conv_core.scenes import CLASS_NAMES, SceneConfig
from conv_core.segmentation import SKIP_LAYER, SegmentationConfig, segment_scenes
from conv_core.train import TrainConfig, train


def row(name: str, scores: dict) -> str:
    classes = " ".join(f"{scores['per_class_iou'][c]:5.2f}" for c in CLASS_NAMES)
    return f"{name:<24} {scores['mean_iou']:5.3f} {scores['pixel_accuracy']:6.3f}  {classes}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs, help="classifier training epochs")
    parser.add_argument("--scenes", type=int, default=SceneConfig.count)
    parser.add_argument("--heldout", type=int, default=200)
    parser.add_argument("--size", type=int, default=SceneConfig.size)
    parser.add_argument("--digits", type=int, default=SceneConfig.digits)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    data = load_mnist(MnistConfig(source="sample"))
    started = time.perf_counter()
    model = train(TrainConfig(model="seed_cnn", epochs=args.epochs, seed=args.seed),
                  data.train_images, data.train_labels).model.cpu().eval()
    print(f"seed CNN: {args.epochs} epochs on {len(data.train_labels)} sample digits, "
          f"{time.perf_counter() - started:.0f} s")
    scenes = SceneConfig(count=args.scenes, size=args.size, digits=args.digits, seed=args.seed)
    config = SegmentationConfig(seed=args.seed)
    print(f"{args.scenes} training scenes, {args.heldout} held-out scenes, {args.size}x{args.size}, "
          f"{args.digits} digits each; fine-tune {config.epochs} epochs, lr {config.lr}, batch {config.batch_size}")
    header = f"{'held-out scenes':<24} {'mIoU':>5} {'pixacc':>6}  " + " ".join(f"{c[:5]:>5}" for c in CLASS_NAMES)
    lines = [header, "-" * len(header)]
    for skip in (SKIP_LAYER, None):
        started = time.perf_counter()
        result = segment_scenes(model, (data.train_images, data.train_labels), (data.test_images, data.test_labels),
                                scenes, args.heldout, config, skip=skip)
        seconds = time.perf_counter() - started
        if skip == SKIP_LAYER:
            lines.append(row("sliding baseline (0.9)", result.baseline_scores))
            lines.append(row("segmenter, untrained", result.start_scores))
        lines.append(row(f"FCN, skip {skip} ({seconds:.0f} s)", result.scores))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
