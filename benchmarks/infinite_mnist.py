"""Infinite MNIST speed and memory: conv_core.infinite's batched generator against
the baseline a user tries first, torchvision's v2.ElasticTransform(alpha=34,
sigma=4) applied image by image, in one run.

    python benchmarks/infinite_mnist.py [--sizes 1024 4096 16384 65536]
        [--modes infimnist elastic] [--threads 2] [--devices auto|cpu|cuda ...]
        [--seconds 2] [--baseline-images 500] [--implementations kernel tensors]

Every configuration runs in a fresh subprocess, so its peak memory is its own:
on CPU the process's peak RSS from building the generator to the last batch
(the high-water mark is reset first) less its RSS before, output included; on
CUDA torch.cuda.max_memory_allocated. Rates are given per wall-clock second
and per CPU-second of the process (less disturbed on a shared machine). The
digits are the offline sample; every batch is a fresh index range. For scale:
infimnist's C library (Loosli, Canu and Bottou) made 0.41-0.51 M digits/s
on a 2-core machine of this kind and needs 1.6 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import torch


def load_digits(path: str):
    splits = torch.load(path)
    return splits["train_images"], splits["train_labels"], splits["test_images"], splits["test_labels"]


def memory_mb(field: str) -> float:
    """VmRSS (resident now) or VmHWM (peak resident) of this process, from /proc."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(field)


def reset_peak_rss() -> bool:
    """Restart the peak-RSS high-water mark here (Linux >= 4.0), so it sees only what follows."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def measure_generator(path: str, mode: str, device: str, size: int, threads: int, seconds: float,
                      kernel: bool | None = None) -> dict:
    """Runs inside a fresh process: deformed digits per second and peak memory for one batch size."""
    from conv_core.infinite import InfiniteMnist

    torch.set_num_threads(threads)
    digits = load_digits(path)
    if device == "cuda":
        digits = [tensor.cuda() for tensor in digits]
        torch.cuda.reset_peak_memory_stats()
        allocated_before = torch.cuda.memory_allocated()
    peak_is_fresh = reset_peak_rss()
    rss_before = memory_mb("VmRSS")
    gen = InfiniteMnist(*digits, mode=mode, device=device, kernel=kernel)  # its bank and canvases count too
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    epoch = 0
    images, _ = gen.images(gen.epoch_indices(epoch, size))  # warm-up, and the first-touch cost of memory
    del images
    sync()
    batches, start, cpu_start = 0, time.perf_counter(), time.process_time()
    while batches < 3 or time.perf_counter() - start < seconds:
        epoch += 1
        images, _ = gen.images(gen.epoch_indices(epoch, size))
        del images
        sync()
        batches += 1
    elapsed, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    if device == "cuda":
        peak_mb = (torch.cuda.max_memory_allocated() - allocated_before) / 2**20
    else:
        # Without a reset the high-water mark may still be the import's; ru_maxrss is the same number.
        peak_mb = (memory_mb("VmHWM") if peak_is_fresh else
                   resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024) - rss_before
    return {"rate": batches * size / elapsed, "cpu_rate": batches * size / cpu_seconds, "peak_mb": peak_mb,
            "implementation": gen.spec()["implementation"]}


def measure_baseline(path: str, count: int, threads: int) -> dict:
    """Runs inside a fresh process: torchvision's ElasticTransform, one image per call."""
    from torchvision.transforms import v2

    torch.set_num_threads(threads)
    train_images = load_digits(path)[0]
    transform = v2.ElasticTransform(alpha=34.0, sigma=4.0)
    digits = train_images[:count, None]  # (count, 1, 28, 28): one call per image, as a Dataset would
    for image in digits[:20]:
        transform(image)
    start, cpu_start = time.perf_counter(), time.process_time()
    for image in digits:
        transform(image)
    return {"rate": count / (time.perf_counter() - start), "cpu_rate": count / (time.process_time() - cpu_start)}


def in_fresh_process(function: str, **kwargs) -> dict:
    code = (f"import json, sys; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); "
            f"import infinite_mnist as bench; "
            f"print(json.dumps(bench.{function}(**json.loads(sys.argv[1]))))")
    done = subprocess.run([sys.executable, "-c", code, json.dumps(kwargs)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{function}({kwargs}) failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096, 16384, 65536])
    parser.add_argument("--modes", nargs="+", default=["infimnist", "elastic"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--devices", nargs="+", default=["auto"])
    parser.add_argument("--seconds", type=float, default=2.0, help="least timed seconds per configuration")
    parser.add_argument("--baseline-images", type=int, default=500)
    parser.add_argument("--implementations", nargs="+", default=["kernel", "tensors"],
                        choices=["kernel", "tensors"],
                        help="infimnist mode on CPU: the C kernel and/or the tensor operations it replaces")
    args = parser.parse_args()
    devices = args.devices
    if devices == ["auto"]:
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

    from conv_core.data import MnistConfig, load_mnist

    splits = load_mnist(MnistConfig(source="sample"))
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "digits.pt")
        torch.save({"train_images": splits.train_images, "train_labels": splits.train_labels,
                    "test_images": splits.test_images, "test_labels": splits.test_labels}, path)
        print(f"digits: {splits.provenance.get('source', 'sample')} ({len(splits.train_images)} train, "
              f"{len(splits.test_images)} test); torch {torch.__version__}, {args.threads} threads, "
              f"{os.cpu_count()} CPUs")
        baseline = in_fresh_process("measure_baseline", path=path, count=args.baseline_images,
                                    threads=args.threads)
        print(f"baseline: torchvision v2.ElasticTransform(alpha=34, sigma=4), one image per call, CPU: "
              f"{baseline['rate']:,.0f} digits/s, {baseline['cpu_rate']:,.0f} per CPU-second "
              f"({args.baseline_images} images)\n")
        print(f"{'device':6s} {'mode':9s} {'implementation':17s} {'batch':>6s} {'digits/s':>10s} {'x baseline':>10s} "
              f"{'per CPU-s':>10s} {'x baseline':>10s} {'peak MB':>8s}")
        for device in devices:
            for mode in args.modes:
                kernels = [None]
                if mode == "infimnist" and device == "cpu":
                    kernels = [{"kernel": True, "tensors": False}[name] for name in args.implementations]
                for kernel in kernels:
                    for size in args.sizes:
                        result = in_fresh_process("measure_generator", path=path, mode=mode, device=device,
                                                  size=size, threads=args.threads, seconds=args.seconds,
                                                  kernel=kernel)
                        print(f"{device:6s} {mode:9s} {result['implementation']:17s} {size:6d} "
                              f"{result['rate']:10,.0f} {result['rate'] / baseline['rate']:9,.0f}x "
                              f"{result['cpu_rate']:10,.0f} {result['cpu_rate'] / baseline['cpu_rate']:9,.0f}x "
                              f"{result['peak_mb']:8.1f}", flush=True)
    print("\ndigits/s: wall clock. per CPU-s: digits per second of this process's CPU time, which a\n"
          "machine shared with other work disturbs less (threads spinning at a barrier still count).\n"
          "peak MB: peak RSS from building the generator to the end of the last batch, less the RSS\n"
          "before building it: field bank, digit canvases, workspace and output (CPU); on CUDA\n"
          "torch.cuda.max_memory_allocated beyond the digits.\n"
          "infimnist's C library, for scale: 0.41-0.51 M digits/s on this 2-core machine, 1.6 GB.")


if __name__ == "__main__":
    main()
