"""Data-parallel throughput: one process against two gloo ranks (torchrun), same global batch.

    python benchmarks/ddp_throughput.py [--model seed_cnn] [--epochs 3] [--batch-size 256]
        [--precision fp32] [--train-digits 4000] [--repeats 2]

Each row is one `torchrun --standalone -m conv_core.distributed` launch on the
offline sample's training digits: 1 process with 1 thread, 1 process with 2
threads (the same two cores used by intra-op threads instead), 2 processes
with 1 thread each. Images/s is the fastest epoch (the first pays for oneDNN's
kernel set-up) over --repeats launches, taken in turns so that a busy spell on a
shared machine hits every row alike; counted over the global batch (all ranks
together). The weight
difference is each run's final weights against the 1-thread single process
(fp32: float rounding only, which Adam enlarges where a gradient is near
zero: two threads in one process differ as much; bf16 autocast rounds
slices differently).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from conv_core.train import TrainConfig

REPO = Path(__file__).resolve().parents[1]


def launch(processes: int, threads: int, args: argparse.Namespace, out: Path) -> dict:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               "-m", "conv_core.distributed", "--model", args.model, "--epochs", str(args.epochs),
               "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--precision", args.precision,
               "--device", "cpu", "--threads", str(threads), "--train-digits", str(args.train_digits),
               "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    subprocess.run(command, cwd=REPO, env=env, check=True, capture_output=True, text=True)
    result = json.loads((out / "result.json").read_text())
    result["weights"] = torch.load(out / "weights-rank0.pt", weights_only=True)
    return result


def max_abs_difference(a: dict, b: dict) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in a)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="seed_cnn")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float,
                        help="default: the model's recipe (TrainConfig), read once so every launch gets the same")
    parser.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="fp32")
    parser.add_argument("--train-digits", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    args.lr = args.lr or TrainConfig(model=args.model).lr

    setups = [("1 process, 1 thread", 1, 1), ("1 process, 2 threads", 1, 2),
              ("2 processes (gloo), 1 thread each", 2, 1)]
    speeds = [[] for _ in setups]
    with tempfile.TemporaryDirectory() as folder:
        for repeat in range(args.repeats):
            results = [launch(processes, threads, args, Path(folder) / f"p{processes}t{threads}r{repeat}")
                       for _, processes, threads in setups]
            for speed, result in zip(speeds, results):
                speed.extend(result["images_per_second"])

    baseline = results[0]  # the weights are the same in every repeat
    print(f"{args.model}, {args.train_digits:,} digits, global batch {args.batch_size}, lr {args.lr}, "
          f"{args.epochs} epochs, "
          f"{args.precision}, {os.cpu_count()} CPUs")
    print(f"{'run':<36} {'images/s':>10} {'vs 1 process':>13} {'max |w - w_1|':>14} {'train loss':>11}")
    for (name, _, _), result, speed in zip(setups, results, map(max, speeds)):
        print(f"{name:<36} {speed:>10,.0f} {speed / max(speeds[0]):>12.2f}x "
              f"{max_abs_difference(result['weights'], baseline['weights']):>14.3g} {result['train_loss']:>11.4f}")


if __name__ == "__main__":
    main()
