"""Training with the whole split resident on the device (airbench style).

The training images live on the device as one uint8 tensor; an epoch is a
seeded permutation of indices, cut into batches; augmentation and the uint8
to float conversion happen per batch on the device. No DataLoader, no PIL,
no per-sample Python. Training never talks to a tracker: it returns its
history and calls an optional per-epoch callback.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import platform
import re
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from conv_core import native
from conv_core.augment import random_crop_batch, shift_batch
from conv_core.batch_split import BatchSplitStep, split_applies
from conv_core.evaluate import evaluate
from conv_core.models import build_model, pool_before_relu

if TYPE_CHECKING:
    from conv_core.distributed import Sharding

Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["auto", "bf16", "fp32"]  # auto: bf16 autocast where the device has bf16 units
DEVICES: tuple[str, ...] = get_args(Device)
PRECISIONS: dict[str, bool | None] = {"auto": None, "bf16": True, "fp32": False}  # -> TrainConfig.bf16
CHECKPOINT_FORMAT = 2  # 2: per-epoch validation (not test) metrics

logger = logging.getLogger("conv_core.train")


# Without an `epochs` override a training run sees about BUDGET_IMAGES images
# (epochs = BUDGET_IMAGES / training images, rounded, 1 to MAX_BUDGET_EPOCHS),
# so its cost stays put as the data grows, and a small split is not trained
# for hundreds of epochs. Both numbers were chosen on the validation split
# (`python -m conv_core.tuning --schedules ...`; the evidence is in the README).
BUDGET_IMAGES = 432_000
MAX_BUDGET_EPOCHS = 15


@dataclass(frozen=True)
class Recipe:
    """A model's own batch size and peak learning rate, where TrainConfig leaves them unset."""

    batch_size: int
    lr: float


# Chosen on the validation split (`python -m conv_core.tuning`; the tables are in the
# README, Validation): the grid's winner over the seed CNN and the MLP was batch 128 at
# 0.003. The seed CNN alone holds its validation accuracy at batch 256 with the peak
# learning rate scaled to 0.01 (on the sample and on Fashion-MNIST), and trains
# 1.15-1.4x faster per image there: a step's fixed costs (Python, operator set-up,
# Adam) are shared by twice the digits. The MLP and the VGG-style network lose
# accuracy at 256, so every other model keeps DEFAULT_RECIPE.
DEFAULT_RECIPE = Recipe(batch_size=128, lr=0.003)
RECIPES: dict[str, Recipe] = {"seed_cnn": Recipe(batch_size=256, lr=0.01)}


def recipe(model: str) -> Recipe:
    """The batch size and peak learning rate `model` trains with unless told otherwise."""
    return RECIPES.get(model, DEFAULT_RECIPE)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run's result (the data aside).

    `epochs`: None means as many as `budget_images` buys (`planned_epochs`).

    `channels_last` and `bf16` (autocast): None means measured. On CPU a short
    start-up measurement on this machine times a few training steps of each
    candidate (NHWC / NCHW, and bf16 where the CPU has bf16 units: AVX-512
    BF16 or AMX) and keeps the fastest, cached per process and per machine
    (`measured_layout`): NHWC measured 1.5-2x faster than NCHW for the seed
    CNN here, bf16 1.4-1.9x faster than fp32 on an AVX-512 BF16 CPU, while
    emulated bf16 (AVX2 only) measured 4-10x slower. CUDA: NHWC, and bf16
    where the GPU has it.
    """

    model: str = "seed_cnn"
    epochs: int | None = None
    budget_images: int = BUDGET_IMAGES
    # batch_size, lr and label_smoothing were chosen on the validation split
    # (`python -m conv_core.tuning`: the best mean validation accuracy of the
    # seed CNN and the MLP over 3 seeds; the table is in the README). The test
    # digits played no part. batch_size and lr: None means the model's recipe,
    # filled in at construction (so `replace(config, model=...)` keeps the old
    # model's numbers: build a new TrainConfig for another model).
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float = 0.0
    label_smoothing: float = 0.1
    seed: int = 0
    device: str = "auto"
    shift_augment: bool = False
    channels_last: bool | None = None
    bf16: bool | None = None

    def __post_init__(self):
        own = recipe(self.model)
        if self.batch_size is None:
            object.__setattr__(self, "batch_size", own.batch_size)
        if self.lr is None:
            object.__setattr__(self, "lr", own.lr)
        rules = [
            ("epochs", self.epochs is None or (isinstance(self.epochs, int) and self.epochs > 0),
             "a positive integer or None (the budget decides)"),
            ("budget_images", isinstance(self.budget_images, int) and self.budget_images > 0, "a positive integer"),
            ("batch_size", isinstance(self.batch_size, int) and self.batch_size > 0, "a positive integer"),
            ("lr", isinstance(self.lr, (int, float)) and self.lr > 0 and math.isfinite(self.lr), "positive"),
            ("weight_decay", self.weight_decay >= 0 and math.isfinite(self.weight_decay), ">= 0"),
            ("label_smoothing", 0 <= self.label_smoothing < 1, "in [0, 1)"),
            ("device", self.device in DEVICES, f"one of {DEVICES}"),
        ]
        for name, ok, expected in rules:
            if not ok:
                raise ValueError(f"TrainConfig.{name} must be {expected}, got {getattr(self, name)!r}")

    def as_dict(self) -> dict:
        return asdict(self)


def planned_epochs(config: TrainConfig, n: int) -> int:
    """config.epochs, or the epochs `config.budget_images` buys on `n` training images:
    budget / n rounded, at least 1, at most MAX_BUDGET_EPOCHS."""
    if config.epochs is not None:
        return config.epochs
    return max(1, min(MAX_BUDGET_EPOCHS, round(config.budget_images / n)))


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Full batches only: the n % batch_size images a permutation leaves over sit that epoch out.

    A different few each epoch (the permutation is fresh), so every image is
    trained on, 1 - (n % batch_size) / n of the epochs on average; every step
    has the same batch shape, so no step pays for new kernels or skews the
    mean loss with a tiny batch. Fewer images than one batch: one batch of all.
    """
    return max(1, n // batch_size)


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, which a container or `taskset` may narrow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_threads() -> int:
    """torch threads per training process on CPU: CONVLAB_THREADS, else this process's CPUs
    shared among the trainings that may run at once (CONVLAB_MAX_CONCURRENT_RUNS, default 4).

    Small convolutions gain little from a second thread on an idle machine
    (about 1.3x here) and lose 5-20x when a thread's CPU is busy with another
    process: every parallel op waits for its slowest thread. Several
    single-thread trainings side by side use the cores better.
    """
    if os.environ.get("CONVLAB_THREADS"):
        return max(1, int(os.environ["CONVLAB_THREADS"]))
    cpus = usable_cpus()
    return max(1, cpus // max(1, int(os.environ.get("CONVLAB_MAX_CONCURRENT_RUNS") or 4)))


def resolve_device(name: str | torch.device) -> torch.device:
    """"auto" -> cuda when available, else cpu. Asking for an absent cuda raises RuntimeError."""
    if isinstance(name, torch.device):
        name = name.type if name.index is None else str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or (isinstance(name, str) and name.startswith("cuda:")):
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {name!r} was asked for but CUDA is not available")
        return torch.device(name)
    raise ValueError(f"unknown device {name!r}; expected one of {DEVICES}")


def native_bf16(device: torch.device) -> bool:
    """Whether `device` has bf16 arithmetic units, so that bf16 autocast pays.

    On CPU that means AVX-512 BF16 or AMX, by torch's own CPU feature probes
    (private ones: a probe that is missing counts as no).
    """
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


@dataclass(frozen=True)
class Layout:
    """How a training step computes: memory format and precision."""

    channels_last: bool
    bf16: bool

    @property
    def label(self) -> str:
        return f"{'NHWC' if self.channels_last else 'NCHW'} {'bf16' if self.bf16 else 'fp32'}"


def layout_candidates(config: "TrainConfig", device: torch.device) -> list[Layout]:
    """The layouts config allows: its fixed fields fixed, None ones open (bf16 only where native)."""
    formats = (True, False) if config.channels_last is None else (config.channels_last,)
    precisions = ((True, False) if native_bf16(device) else (False,)) if config.bf16 is None else (config.bf16,)
    return [Layout(channels_last, bf16) for bf16 in precisions for channels_last in formats]


def step_seconds(model_name: str, layout: Layout, batch_size: int, device: torch.device, steps: int = 8) -> float:
    """Median seconds of one training step (forward, backward, Adam) on random images of one batch."""
    with torch.random.fork_rng(devices=[]):
        model = build_model(model_name).to(device)
        memory_format = torch.channels_last if layout.channels_last else torch.contiguous_format
        model = model.to(memory_format=memory_format)
        forward = pool_before_relu(model)
        optimizer = torch.optim.Adam(model.parameters(), fused=device.type in ("cpu", "cuda"))
        size = model.input_size
        x = torch.rand(batch_size, 1, size, size, device=device).contiguous(memory_format=memory_format)
        y = torch.randint(0, 10, (batch_size,), device=device)
        times = []
        for step in range(steps + 3):  # the first steps set up kernels
            started = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=layout.bf16):
                logits = forward(x)
            loss = F.cross_entropy(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if step >= 3:
                times.append(time.perf_counter() - started)
    return statistics.median(times)


def pick_fastest(candidates: list, seconds_of: Callable) -> tuple:
    """(the candidate with the fewest seconds, {candidate: seconds}); ties: the first."""
    timings = {candidate: seconds_of(candidate) for candidate in candidates}
    return min(timings, key=timings.get), timings


def layout_cache_path() -> Path:
    """$CONVLAB_HOME/cache/train_layout.json, else ~/.cache/convlab/train_layout.json."""
    home = os.environ.get("CONVLAB_HOME")
    base = Path(home) / "cache" if home else Path.home() / ".cache" / "convlab"
    return base / "train_layout.json"


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


_measured_layouts: dict[tuple[str, str], tuple[Layout, float]] = {}  # (cache file, key) -> (choice, s/step)


def measured_layout(model_name: str, batch_size: int, device: torch.device, candidates: list[Layout], *,
                    seconds_of: Callable[[Layout], float] | None = None, path: Path | None = None) -> Layout:
    """The fastest of `candidates` for this model and batch on this machine, measured once.

    Remembered for the process and in a small JSON file (`layout_cache_path`)
    keyed by the CPU, its count, torch's version, the C kernels' sources,
    model, batch size and the candidates, with every candidate's measured
    milliseconds per step, so the same machine keeps the same choice (and so
    the same arithmetic) across runs.
    """
    return _measure_layout(model_name, batch_size, device, candidates, seconds_of, path)[0]


def _measure_layout(model_name, batch_size, device, candidates, seconds_of=None, path=None) -> tuple[Layout, float]:
    """measured_layout's (choice, its seconds per step); one candidate: None seconds, nothing measured."""
    if len(candidates) == 1:
        return candidates[0], None
    path = path or layout_cache_path()
    machine = _cpu_name() if device.type == "cpu" else torch.cuda.get_device_name(device)
    # the kernels' sources too: a changed kernel changes which layout is faster (a stale choice measured
    # before the second convolution's backward kernel kept NHWC where NCHW had become faster)
    key = (f"{machine} | {os.cpu_count()} cpus | torch {torch.__version__} | kernels {native.sources_digest()} | "
           f"{model_name} | batch {batch_size} | " + ", ".join(c.label for c in candidates))
    if (str(path), key) in _measured_layouts:
        return _measured_layouts[str(path), key]
    cache = {}
    with contextlib.suppress(OSError, ValueError):
        cache = json.loads(path.read_text())
    if key in cache and cache[key].get("choice") in [c.label for c in candidates]:
        choice = next(c for c in candidates if c.label == cache[key]["choice"])
        seconds = cache[key]["ms_per_step"][choice.label] / 1e3
    else:
        threads = default_threads() if device.type == "cpu" else None
        with _thread_count(threads):  # measured at the thread count training uses by default
            seconds_of = seconds_of or (lambda layout: step_seconds(model_name, layout, batch_size, device))
            choice, timings = pick_fastest(candidates, seconds_of)
        seconds = timings[choice]
        cache[key] = {"choice": choice.label, "ms_per_step": {c.label: round(t * 1e3, 3) for c, t in timings.items()},
                      "threads": threads, "load_average": round(os.getloadavg()[0], 2),
                      "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        with contextlib.suppress(OSError):  # a read-only home still trains, measuring once per process
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                json.dump(cache, f, indent=1, sort_keys=True)
            os.replace(tmp, path)
    _measured_layouts[str(path), key] = choice, seconds
    return choice, seconds


def resolve_layout(config: "TrainConfig", device: torch.device) -> Layout:
    """config's memory format and precision, the None ones chosen: measured on CPU
    (`measured_layout`); NHWC and native bf16 on CUDA."""
    if device.type != "cpu":
        return Layout(config.channels_last if config.channels_last is not None else True,
                      config.bf16 if config.bf16 is not None else native_bf16(device))
    return measured_layout(config.model, config.batch_size, device, layout_candidates(config, device))


def training_step_seconds(config: "TrainConfig", device: torch.device) -> float:
    """Seconds per training step of `config` on this machine, as the start-up measurement found
    (measuring now if it has not run); for estimates of a run's length."""
    candidates = layout_candidates(config, device) if device.type == "cpu" else [resolve_layout(config, device)]
    choice, seconds = _measure_layout(config.model, config.batch_size, device, candidates)
    if seconds is None:
        with _thread_count(default_threads() if device.type == "cpu" else None):
            seconds = step_seconds(config.model, choice, config.batch_size, device)
    return seconds


def trainings_at_once(device: torch.device) -> int:
    """How many trainings share this machine at once under the lab's run queue: one per GPU on CUDA;
    on CPU the queue's limit (CONVLAB_MAX_CONCURRENT_RUNS, default 4), at most CPUs / threads each."""
    if device.type == "cuda":
        return torch.cuda.device_count()
    cpus = usable_cpus()
    queue = int(os.environ.get("CONVLAB_MAX_CONCURRENT_RUNS") or 4)
    return max(1, min(queue, cpus // default_threads()))


def estimate_training_seconds(configs: list["TrainConfig"], train_images: int, device: torch.device) -> float:
    """Wall seconds the trainings of `configs` on `train_images` images each take here: planned steps times
    the measured seconds per step, shared among `trainings_at_once` (evaluation and set-up not counted)."""
    busy = sum(planned_epochs(config, train_images) * steps_per_epoch(train_images, config.batch_size)
               * training_step_seconds(config, device) for config in configs)
    return busy / min(len(configs), trainings_at_once(device)) if configs else 0.0


def resolve_bf16(config: "TrainConfig", device: torch.device) -> bool:
    """Whether training with `config` on `device` runs in bf16 autocast (see resolve_layout)."""
    return resolve_layout(config, device).bf16


@dataclass
class EpochStats:
    """One epoch. `seconds` is the whole epoch (training and validation); `images_per_second` training only.

    `train_loss` includes the label smoothing; `validation_loss` is plain
    cross-entropy on the validation digits (None without them). The test split
    never appears here: it is measured once, after training, by the caller.
    """

    epoch: int
    train_loss: float
    train_accuracy: float
    validation_loss: float | None
    validation_accuracy: float | None
    seconds: float
    images_per_second: float
    lr: float

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainResult:
    model: nn.Module  # on the CPU, in eval mode
    history: list[EpochStats]
    config: TrainConfig
    device: str
    seconds: float
    precision: str = "fp32"  # "bf16" when autocast was on (weights are always fp32)


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; raised before the optimizer step."""

    def __init__(self, epoch: int, step: int, lr: float, loss: float):
        self.epoch, self.step, self.lr, self.loss = epoch, step, lr, loss
        super().__init__(f"non-finite training loss ({loss}) at epoch {epoch}, step {step} "
                         f"(learning rate {lr:.6g}); try a lower lr")


# --- checkpoints

def _atomic_save(obj, path: Path) -> None:
    """torch.save to a temporary file beside `path`, fsync, then rename over it.

    A crash at any moment leaves either the old checkpoint or the new one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable where the OS allows
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def load_checkpoint(path) -> dict:
    """A checkpoint written by `train` (tensors on the CPU)."""
    return torch.load(path, map_location="cpu", weights_only=True)


# what train() writes: key -> accepted types
_CHECKPOINT_FIELDS = {
    "format": int, "epoch": int, "config": dict, "model": dict, "optimizer": dict, "scheduler": dict,
    "data_generator": torch.Tensor, "cpu_rng": torch.Tensor, "cuda_rng": (torch.Tensor, type(None)),
    "history": list, "seconds": (int, float),
}


def _foreign_contents(checkpoint) -> str | None:
    """Why `checkpoint` (safely loaded) is not something train() wrote; None if it could be."""
    if not isinstance(checkpoint, dict):
        return f"it holds a {type(checkpoint).__name__}, not a checkpoint dict"
    missing = sorted(set(_CHECKPOINT_FIELDS) - set(checkpoint))
    if missing:
        return f"not a checkpoint written by train(): missing {', '.join(missing)}"
    wrong = [f"{key} is a {type(checkpoint[key]).__name__}" for key, types in _CHECKPOINT_FIELDS.items()
             if not isinstance(checkpoint[key], types)]
    if wrong:
        return f"not a checkpoint written by train(): {', '.join(wrong)}"
    if checkpoint["format"] != CHECKPOINT_FORMAT:
        return f"checkpoint format {checkpoint['format']!r}, this code reads format {CHECKPOINT_FORMAT}"
    if checkpoint["epoch"] < 1 or len(checkpoint["history"]) != checkpoint["epoch"]:
        return f"epoch {checkpoint['epoch']} with {len(checkpoint['history'])} epochs of history"
    return None


def _short_reason(error: BaseException) -> str:
    """`error` as "Class: first sentence", without torch's advice to load unsafely."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))  # torch colours part of its message
    # torch's weights_only refusal: the unpickler's own finding follows this tag
    text = text.split("WeightsUnpickler error:", 1)[-1]
    sentences = [part.strip() for part in re.split(r"(?<=[.!?])\s+|\n+", text) if part.strip()]
    unsafe = re.compile(r"weights_only|safe_globals|trusted source|trust the source", re.IGNORECASE)
    sentences = [part for part in sentences if not unsafe.search(part)]
    reason = " ".join(sentences[:2]) if sentences[:1] and sentences[0].endswith(":") else " ".join(sentences[:1])
    reason = reason.rstrip(".") or "no message"
    if len(reason) > 200:
        reason = reason[:197] + "..."
    return f"{type(error).__name__}: {reason}"


def _move_aside(path: Path, reason: str, log: Callable[[str], None]) -> Path:
    """Rename a checkpoint that cannot be used to <name>.damaged-<UTC time> beside it; never delete it."""
    size = path.stat().st_size
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    target, n = path.with_name(f"{path.name}.damaged-{stamp}"), 1
    while target.exists():  # two in one second: keep both
        target, n = path.with_name(f"{path.name}.damaged-{stamp}-{n}"), n + 1
    try:
        os.rename(path, target)
    except OSError as e:
        # training on would overwrite the damaged file with the first new checkpoint
        raise RuntimeError(f"checkpoint {path} cannot be used ({reason}) and could not be moved "
                           f"aside to {target}: {e}") from e
    log(f"WARNING: checkpoint {path} ({size:,} bytes) cannot be used ({reason}); moved it to {target} "
        f"and training starts afresh")
    return target


def _load_for_resume(path: Path, config: TrainConfig, log: Callable[[str], None]) -> dict | None:
    """The checkpoint at `path` to resume from, or None after moving aside a damaged one.

    Damaged: the safe (tensors and plain data only) load fails, or what it gives
    is not what train() writes. A checkpoint of another config is not damaged:
    that raises ValueError and the file stays.
    """
    try:
        state = load_checkpoint(path)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise  # the path, not the file's contents: nothing to move aside
    except Exception as e:  # truncated, corrupt, or holding objects the safe loader refuses
        _move_aside(path, _short_reason(e), log)
        return None
    problem = _foreign_contents(state)
    if problem is not None:
        _move_aside(path, problem, log)
        return None
    _check_resumable(state, config, path)
    return state


def _check_resumable(checkpoint: dict, config: TrainConfig, path: Path) -> None:
    saved = checkpoint.get("config", {})
    wanted = config.as_dict()
    differing = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
    if differing or checkpoint.get("format") != CHECKPOINT_FORMAT:
        details = ", ".join(f"{k}: checkpoint {saved.get(k)!r} vs config {wanted.get(k)!r}" for k in differing)
        raise ValueError(f"cannot resume from {path}: its config differs ({details or 'format'})")


# --- the loop

@contextlib.contextmanager
def _deterministic(device: torch.device):
    """Deterministic kernels on CPU for the duration, restoring the global flag afterwards."""
    if device.type != "cpu":
        yield
        return
    before = torch.are_deterministic_algorithms_enabled()
    warn_before = torch.is_deterministic_algorithms_warn_only_enabled()
    # The flag itself, not torch.use_deterministic_algorithms: that one also imports all of
    # torch._inductor to set inductor's copy of the flag (3-6 s in every training process
    # here), and training compiles nothing.
    torch._C._set_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch._C._set_deterministic_algorithms(before, warn_only=warn_before)


@contextlib.contextmanager
def _thread_count(threads: int | None):
    """torch's intra-op thread count for the duration, restored afterwards."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if threads:
            torch.set_num_threads(before)


def _agreed_layout(config: TrainConfig, device: torch.device, world: "Sharding | None") -> Layout:
    """resolve_layout; data-parallel, rank 0's choice for every rank (timings differ between processes)."""
    if world is None:
        return resolve_layout(config, device)
    candidates = layout_candidates(config, device)
    vote = torch.zeros(len(candidates), device=device)
    if world.rank == 0:
        vote[candidates.index(resolve_layout(config, device))] = 1
    return candidates[int(world.sum(vote).argmax())]


def _as_device_tensor(array, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(array).to(device=device, dtype=dtype).contiguous()


def _epoch_split(epoch_data, epoch: int, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = epoch_data(epoch)
    if len(images) != n or len(labels) != n:
        raise ValueError(f"epoch_data({epoch}) gave {len(images)} images and {len(labels)} labels; "
                         f"every epoch needs {n}, as many as train_images")
    images = _as_device_tensor(images, torch.uint8, device)
    return (images.unsqueeze(1) if images.dim() == 3 else images), _as_device_tensor(labels, torch.long, device)


def train(
    config: TrainConfig,
    train_images,
    train_labels,
    validation_images=None,
    validation_labels=None,
    *,
    on_epoch: Callable[[EpochStats, nn.Module], None] | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    resume: bool = False,
    log: Callable[[str], None] | None = None,
    epoch_data: Callable[[int], tuple[torch.Tensor, torch.Tensor]] | None = None,
    threads: int | None = None,
    world: "Sharding | None" = None,
    normalization: tuple[float, float] | None = None,
) -> TrainResult:
    """Train `config.model` on (N, 28, 28) images with pixel values 0-255 (uint8) and int labels.

    Adam with a per-step OneCycle schedule (peak lr = config.lr). If validation
    digits are given each epoch is evaluated on them (never pass the test split:
    what is watched during training is what choices are made on). With `checkpoint_path` the full
    state is saved atomically after every epoch; `resume=True` continues from
    it, giving bitwise the same weights as an uninterrupted run on CPU. A
    checkpoint that cannot be loaded safely (truncated, corrupt, holding objects
    other than tensors and plain data) or is not what train() writes is renamed
    to `<name>.damaged-<UTC time>`, logged, and training starts afresh; one of
    another config raises ValueError and stays.

    `epoch_data(epoch)` (1-based), if given, supplies that epoch's images and
    labels in place of `train_images` (same count each epoch; the schedule
    is fixed up front): fresh deformed digits every epoch, for example.

    Each epoch trains on full batches only (`steps_per_epoch`); the run lasts
    `planned_epochs(config, n)` epochs.

    `threads`: CPU threads for this call only (bitwise reproducibility
    assumes the same count); None: `default_threads()`. More than one cuts
    every batch into that many slices, one per thread, each computed with
    one torch thread (conv_core.batch_split); a model with dropout uses
    torch's threads inside each operation instead. On a CPU shared with
    other busy processes 1 thread of torch's measured 5-20x faster than 2
    here: every parallel op waits for its slowest thread.

    `world` (conv_core.distributed.setup() under torchrun) trains data-parallel:
    each rank takes its slice of every global batch and DDP averages the
    gradients; only rank 0 logs, calls `on_epoch` and writes the checkpoint.
    """
    log = log or logger.info
    rank0 = world is None or world.rank == 0
    if not rank0:
        log, on_epoch = (lambda message: None), None  # one voice, one tracker run: rank 0's
    device = resolve_device(config.device)
    if threads is None and device.type == "cpu":
        threads = default_threads()
    checkpoint_path = Path(checkpoint_path) if checkpoint_path is not None else None
    if len(train_images) != len(train_labels):
        raise ValueError(f"{len(train_images)} training images but {len(train_labels)} labels")
    if len(train_images) == 0:
        raise ValueError("no training images")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if resume and checkpoint_path is None:
        raise ValueError("resume=True needs a checkpoint_path")
    if (validation_images is None) != (validation_labels is None):
        raise ValueError("give both validation_images and validation_labels, or neither")

    images = _as_device_tensor(train_images, torch.uint8, device)
    if images.dim() == 3:
        images = images.unsqueeze(1)
    labels = _as_device_tensor(train_labels, torch.long, device)
    if validation_images is not None:
        validation_images = _as_device_tensor(validation_images, torch.uint8, device)
        validation_labels = torch.as_tensor(validation_labels).long()
    n = len(images)
    epochs, steps = planned_epochs(config, n), steps_per_epoch(n, config.batch_size)
    batch_size = min(config.batch_size, n)
    trained_per_epoch = steps * batch_size

    cuda_devices = []
    if device.type == "cuda":
        cuda_devices = [device.index if device.index is not None else torch.cuda.current_device()]
    # fork_rng: seeding for init and dropout must not leak into the caller's global RNG.
    with torch.random.fork_rng(devices=cuda_devices), _deterministic(device), _thread_count(threads), \
            contextlib.ExitStack() as cleanup:
        layout = _agreed_layout(config, device, world)
        channels_last, use_bf16 = layout.channels_last, layout.bf16

        def fresh_start():
            """Model, optimizer, schedule and data generator as a run without checkpoint starts them."""
            torch.manual_seed(config.seed)
            # The data set's (mean, std) for the model's normalize stage; MNIST's when not given.
            model = build_model(config.model, **({"normalization": tuple(normalization)} if normalization else {}))
            model = model.to(device)
            if channels_last:
                model = model.to(memory_format=torch.channels_last)
            # fused: one kernel for all parameters; a quarter of the MLP's step was Adam's many small ops.
            optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                         fused=device.type in ("cpu", "cuda"))
            scheduler = torch.optim.lr_scheduler.OneCycleLR(
                optimizer, max_lr=config.lr, total_steps=epochs * steps)
            generator = torch.Generator(device=device)
            generator.manual_seed(config.seed)
            return model, optimizer, scheduler, generator

        if resume and not rank0:
            world.barrier()  # rank 0 reads first and may move a damaged checkpoint aside; then the others read
        state = None
        if resume and checkpoint_path is not None and checkpoint_path.exists():
            state = _load_for_resume(checkpoint_path, config, log)
        model, optimizer, scheduler, generator = fresh_start()
        history: list[EpochStats] = []
        start_epoch, seconds_before = 0, 0.0

        if state is not None:
            try:
                model.load_state_dict(state["model"])
                optimizer.load_state_dict(state["optimizer"])
                scheduler.load_state_dict(state["scheduler"])
                generator.set_state(state["data_generator"])
                torch.set_rng_state(state["cpu_rng"])
                if cuda_devices and state.get("cuda_rng") is not None:
                    torch.cuda.set_rng_state(state["cuda_rng"], device)
                history = [EpochStats(**stats) for stats in state["history"]]
                start_epoch, seconds_before = state["epoch"], float(state["seconds"])
            except torch.cuda.OutOfMemoryError:
                raise  # the device, not the checkpoint
            except (RuntimeError, ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
                # the right keys and types, but contents this config's model and optimizer cannot take
                _move_aside(checkpoint_path, _short_reason(e), log)
                model, optimizer, scheduler, generator = fresh_start()  # undo what was half loaded
                history, start_epoch, seconds_before = [], 0, 0.0
            else:
                log(f"resuming {config.model} from {checkpoint_path} after epoch {start_epoch}")
        if resume and world is not None and rank0:
            world.barrier()
        size = model.input_size
        forward = pool_before_relu(model)  # the same function and gradients, less ReLU work
        if world is not None:
            forward = world.wrap(forward, device)  # same parameters; backward all-reduces their gradients

        split = None
        if world is None and split_applies(model, device, threads):
            # each thread one slice of every batch, one torch thread inside it (conv_core.batch_split)
            split = cleanup.enter_context(BatchSplitStep(
                forward, model.parameters(), threads, bf16=use_bf16, loss_sum=lambda logits, y:
                F.cross_entropy(logits, y, label_smoothing=config.label_smoothing, reduction="sum")))
            torch.set_num_threads(1)  # _thread_count restores the caller's count on the way out
        threads_note = (f", {threads} threads, batch split" if split else
                        f", {torch.get_num_threads()} threads" if device.type == "cpu" else "")
        log(f"training {config.model} on {n:,} images, {device} ({'bf16 autocast' if use_bf16 else 'fp32'}, "
            f"{'NHWC' if channels_last else 'NCHW'}{threads_note}), epochs {start_epoch + 1}-{epochs}"
            + ("" if config.epochs else f" (budget {config.budget_images:,} images)"))
        run_started = time.perf_counter()
        for epoch in range(start_epoch + 1, epochs + 1):
            epoch_started = time.perf_counter()
            if epoch_data is not None:
                images, labels = _epoch_split(epoch_data, epoch, n, device)
            if world is not None:  # dropout: independent masks per rank, the same ones after a resume
                torch.manual_seed(world.epoch_seed(config.seed, epoch))
            model.train()
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.long)
            order = torch.randperm(n, device=device, generator=generator)[:trained_per_epoch]
            for step, batch_index in enumerate(order.split(batch_size), start=1):
                x = images[batch_index]
                if config.shift_augment:
                    x = shift_batch(x, generator)
                if size < x.shape[-1]:
                    x = random_crop_batch(x, size, generator)
                y = labels[batch_index]
                if world is not None:
                    # this rank's slice, cut after augmenting the whole batch so the generator draws as one process does
                    x, y = world.shard(x), world.shard(y)
                x = x.float().div_(255)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                if split is not None:  # forward and backward; the gradients are in .grad
                    loss, logits = split(x, y)
                    slice_loss_sum = loss * len(y)
                else:
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                        logits = forward(x)
                    if world is None:
                        loss = F.cross_entropy(logits.float(), y, label_smoothing=config.label_smoothing)
                        slice_loss_sum = loss.detach() * len(y)
                    else:
                        loss, slice_loss_sum = world.slice_loss(logits.float(), y, len(batch_index),
                                                                config.label_smoothing)
                if not torch.isfinite(loss):
                    raise NonFiniteLossError(epoch, step, scheduler.get_last_lr()[0], loss.item())
                if split is None:
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                lr = scheduler.get_last_lr()[0]
                optimizer.step()
                scheduler.step()
                loss_sum += slice_loss_sum
                correct += (logits.argmax(dim=1) == y).sum()
            if world is not None:  # every rank saw its slices only; the epoch's numbers are the group's
                loss_sum, correct = world.sum(loss_sum), world.sum(correct)
            train_loss, train_accuracy = loss_sum.item() / trained_per_epoch, correct.item() / trained_per_epoch
            train_seconds = time.perf_counter() - epoch_started

            validation_loss = validation_accuracy = None
            if validation_images is not None:
                with _thread_count(threads if split else None):  # large batches: torch's threads serve them
                    result = evaluate(model, validation_images, validation_labels, batch_size=2000)
                validation_loss, validation_accuracy = result.loss, result.accuracy
            stats = EpochStats(
                epoch=epoch, train_loss=train_loss, train_accuracy=train_accuracy,
                validation_loss=validation_loss, validation_accuracy=validation_accuracy,
                seconds=time.perf_counter() - epoch_started,
                images_per_second=trained_per_epoch / train_seconds, lr=lr)
            history.append(stats)

            if checkpoint_path is not None and rank0:
                _atomic_save({
                    "format": CHECKPOINT_FORMAT,
                    "epoch": epoch,
                    "config": config.as_dict(),
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "data_generator": generator.get_state(),
                    "cpu_rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state(device) if cuda_devices else None,
                    "history": [s.as_dict() for s in history],
                    "seconds": seconds_before + time.perf_counter() - run_started,
                }, checkpoint_path)
            if checkpoint_path is not None and world is not None:
                world.barrier()  # no rank runs ahead of a checkpoint that is not yet on disk
            log(_describe(stats, epochs))
            if on_epoch is not None:
                on_epoch(stats, model)

    model = model.to("cpu", memory_format=torch.contiguous_format).eval()
    return TrainResult(model=model, history=history, config=config, device=str(device),
                       seconds=seconds_before + time.perf_counter() - run_started,
                       precision="bf16" if use_bf16 else "fp32")


def _describe(stats: EpochStats, epochs: int) -> str:
    line = (f"epoch {stats.epoch}/{epochs}  train loss {stats.train_loss:.4f} "
            f"acc {stats.train_accuracy:.2%}")
    if stats.validation_accuracy is not None:
        line += f"  validation loss {stats.validation_loss:.4f} acc {stats.validation_accuracy:.2%}"
    return line + f"  lr {stats.lr:.2e}  {stats.seconds:.1f}s ({stats.images_per_second:,.0f} img/s)"
