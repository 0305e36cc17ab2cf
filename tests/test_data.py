"""conv_core.data: the offline sample, IDX reading and validation, downloads (from a
local HTTP server on 127.0.0.1, never the network) and the "auto" fallbacks."""

import gzip
import hashlib
import http.server
import json
import logging
import socket
import threading
from functools import partial
from pathlib import Path

import pytest
import torch

from conv_core import data
from conv_core.data import (
    BadCountError,
    BadGzipError,
    BadImageSizeError,
    BadMagicError,
    CountMismatchError,
    LabelRangeError,
    MnistConfig,
    MnistDownloadError,
    MnistFormatError,
    TruncatedFileError,
    load_mnist,
    read_idx_images,
    read_idx_labels,
    split_sample,
    write_idx,
)

NAMES = list(data.IDX_FILES.values())  # train images, train labels, test images, test labels


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def sample():
    return load_mnist(MnistConfig(source="sample"))


def write_splits(folder: Path, splits, suffix: str = ".gz", limit: int | None = None) -> dict[str, Path]:
    """Write the four IDX files of `splits` (optionally only the first `limit` of each)."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = [splits.train_images, splits.train_labels, splits.test_images, splits.test_labels]
    paths = {}
    for name, tensor in zip(NAMES, tensors):
        paths[name] = folder / f"{name}{suffix}"
        write_idx(paths[name], tensor[:limit])
    return paths


def write_bytes(path: Path, raw: bytes) -> None:
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def free_port() -> int:
    """A port with nothing listening (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class HalfHandler(QuietHandler):
    """Promises the whole file, sends half of it, hangs up: a download cut off midway."""

    def do_GET(self):
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            return self.send_error(404)
        body = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.close_connection = True


@pytest.fixture
def serve():
    """serve(folder, handler) -> (mirror url, stop function); every server is stopped at teardown."""
    servers = []

    def start(folder: Path, handler=QuietHandler):
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(folder)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)

        def stop():
            server.shutdown()
            server.server_close()

        return f"http://127.0.0.1:{server.server_address[1]}/", stop

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def mirror_files(tmp_path_factory, sample):
    """The sample as four .gz IDX files, with their md5s (written once: gzip takes a second)."""
    folder = tmp_path_factory.mktemp("mirror")
    paths = write_splits(folder, sample)
    return folder, paths, [(p.name, md5_of(p)) for p in paths.values()]


@pytest.fixture
def mirror(mirror_files, serve):
    """A local mirror serving mirror_files."""
    folder, paths, resources = mirror_files
    url, stop = serve(folder)
    return {"url": url, "stop": stop, "resources": resources, "paths": paths, "folder": folder}


def assert_same_data(a, b):
    assert torch.equal(a.train_images, b.train_images)
    assert torch.equal(a.train_labels, b.train_labels)
    assert torch.equal(a.test_images, b.test_images)
    assert torch.equal(a.test_labels, b.test_labels)


def cache_files(cache_dir: Path) -> list[str]:
    """Everything left under cache_dir, staging folders and partial files included."""
    return sorted(str(p.relative_to(cache_dir)) for p in cache_dir.rglob("*") if p.is_file())


# --------------------------------------------------------------------------- the offline sample


def test_sample_shapes_counts_and_provenance(sample):
    assert sample.train_images.shape == (4000, 28, 28) and sample.train_images.dtype == torch.uint8
    assert sample.test_images.shape == (1000, 28, 28) and sample.test_images.dtype == torch.uint8
    assert sample.train_labels.shape == (4000,) and sample.train_labels.dtype == torch.int64
    assert sample.test_labels.shape == (1000,) and sample.test_labels.dtype == torch.int64
    assert torch.bincount(sample.train_labels).tolist() == [400] * 10
    assert torch.bincount(sample.test_labels).tolist() == [100] * 10
    assert sample.train_images.max() > 200  # pixels are 0-255, not 0-1

    p = sample.provenance
    json.dumps(p)  # serialisable
    assert p["source"] == "sample" and p["is_sample"] is True
    assert "5,000-digit MNIST sample" in p["description"] and "NOT the full 70,000-digit MNIST" in p["description"]
    assert "4,000 train / 1,000 test" in p["description"]
    assert (p["train_size"], p["test_size"]) == (4000, 1000)
    assert p["train_counts_per_class"] == [400] * 10 and p["test_counts_per_class"] == [100] * 10
    assert set(p["sha256"]) >= {"images", "labels"}


def test_sample_is_deterministic_and_train_test_disjoint(sample):
    again = load_mnist(MnistConfig(source="sample"))
    assert_same_data(sample, again)
    assert again.provenance == sample.provenance

    # no test digit appears in train (the sample holds no duplicate images)
    train = {bytes(img.flatten().tolist()) for img in sample.train_images}
    test = {bytes(img.flatten().tolist()) for img in sample.test_images}
    assert len(train) == 4000 and len(test) == 1000 and not (train & test)


def test_sample_seed_changes_split_and_version(sample):
    other = load_mnist(MnistConfig(source="sample", seed=1))
    assert not torch.equal(other.test_images, sample.test_images)
    assert other.provenance["sha256_combined"] != sample.provenance["sha256_combined"]


def test_sample_warns_loudly(caplog):
    messages = []
    with caplog.at_level(logging.WARNING, logger="conv_core.data"):
        load_mnist(MnistConfig(source="sample"), log=messages.append)
    assert any("5,000-DIGIT" in r.message for r in caplog.records if r.levelno == logging.WARNING)
    assert any("5,000-DIGIT" in m for m in messages)


def test_split_sample_is_stratified_and_ordered():
    labels = torch.arange(10).repeat_interleave(7)
    images = torch.arange(70, dtype=torch.uint8).view(70, 1, 1).expand(70, 28, 28)
    tr_x, tr_y, te_x, te_y = split_sample(images, labels, test_size=20, seed=3)
    assert torch.bincount(te_y).tolist() == [2] * 10 and torch.bincount(tr_y).tolist() == [5] * 10
    test_ids, train_ids = te_x[:, 0, 0].long(), tr_x[:, 0, 0].long()
    assert torch.equal(test_ids, test_ids.sort().values) and torch.equal(train_ids, train_ids.sort().values)
    assert sorted(test_ids.tolist() + train_ids.tolist()) == list(range(70))
    with pytest.raises(ValueError, match="multiple of 10"):
        split_sample(images, labels, test_size=15, seed=0)


# --------------------------------------------------------------------------- IDX files


@pytest.mark.parametrize("suffix", [".gz", ""])
def test_idx_dir_round_trip(tmp_path, sample, suffix):
    write_splits(tmp_path / "idx", sample, suffix=suffix)
    loaded = load_mnist(MnistConfig(source="idx_dir", idx_dir=str(tmp_path / "idx")))
    assert_same_data(loaded, sample)
    p = loaded.provenance
    assert p["source"] == "idx_dir" and p["is_sample"] is False
    assert p["location"] == str((tmp_path / "idx").resolve())
    assert set(p["sha256"]) == set(NAMES)
    raw = (tmp_path / "idx" / f"{NAMES[0]}{suffix}").read_bytes()
    raw = gzip.decompress(raw) if suffix else raw
    assert p["sha256"][NAMES[0]] == hashlib.sha256(raw).hexdigest()
    assert p["train_counts_per_class"] == [400] * 10


def test_gz_and_plain_files_have_the_same_hashes(tmp_path, sample):
    write_splits(tmp_path / "gz", sample, limit=50)
    write_splits(tmp_path / "plain", sample, suffix="", limit=50)
    a = load_mnist(MnistConfig(source="idx_dir", idx_dir=str(tmp_path / "gz")))
    b = load_mnist(MnistConfig(source="idx_dir", idx_dir=str(tmp_path / "plain")))
    assert a.provenance["sha256_combined"] == b.provenance["sha256_combined"]


def test_read_idx_functions(tmp_path, sample):
    write_idx(tmp_path / "x.gz", sample.test_images[:5])
    write_idx(tmp_path / "y", sample.test_labels[:5])
    assert torch.equal(read_idx_images(tmp_path / "x.gz"), sample.test_images[:5])
    labels = read_idx_labels(tmp_path / "y")
    assert labels.dtype == torch.int64 and torch.equal(labels, sample.test_labels[:5])


def test_missing_files_are_listed(tmp_path, sample):
    paths = write_splits(tmp_path / "idx", sample, limit=10)
    paths[NAMES[2]].unlink()
    paths[NAMES[3]].unlink()
    with pytest.raises(FileNotFoundError) as info:
        load_mnist(MnistConfig(source="idx_dir", idx_dir=str(tmp_path / "idx")))
    message = str(info.value)
    assert NAMES[2] in message and NAMES[3] in message and NAMES[0] not in message
    assert str(tmp_path / "idx") in message


def corrupt_bad_magic(paths, splits):
    path = paths[NAMES[2]]
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[:4] = (2050).to_bytes(4, "big")
    write_bytes(path, bytes(raw))
    return BadMagicError, path.name, "magic number 2050, expected 2051"


def corrupt_image_size(paths, splits):
    write_idx(paths[NAMES[0]], torch.zeros(10, 27, 27, dtype=torch.uint8))
    return BadImageSizeError, paths[NAMES[0]].name, "27x27"


def corrupt_count(paths, splits):
    write_idx(paths[NAMES[1]], splits.train_labels[:9])
    return CountMismatchError, NAMES[1], "10 images"


def corrupt_label_range(paths, splits):
    labels = splits.test_labels[:10].clone()
    labels[4] = 10
    write_idx(paths[NAMES[3]], labels)
    return LabelRangeError, paths[NAMES[3]].name, "label 10"


def corrupt_truncated(paths, splits):
    path = paths[NAMES[0]]
    write_bytes(path, gzip.decompress(path.read_bytes())[:-100])
    return TruncatedFileError, path.name, "bytes"


def corrupt_gzip_garbage(paths, splits):
    paths[NAMES[3]].write_bytes(b"this is not a gzip stream")
    return BadGzipError, paths[NAMES[3]].name, "gzip"


def corrupt_gzip_cut(paths, splits):
    path = paths[NAMES[2]]
    path.write_bytes(path.read_bytes()[:-50])
    return BadGzipError, path.name, "gzip"


@pytest.mark.parametrize(
    "corrupt",
    [corrupt_bad_magic, corrupt_image_size, corrupt_count, corrupt_label_range,
     corrupt_truncated, corrupt_gzip_garbage, corrupt_gzip_cut],
)
def test_validation_errors_name_the_file(tmp_path, sample, corrupt):
    paths = write_splits(tmp_path / "idx", sample, limit=10)
    error, filename, problem = corrupt(paths, sample)
    with pytest.raises(error) as info:
        load_mnist(MnistConfig(source="idx_dir", idx_dir=str(tmp_path / "idx")))
    assert isinstance(info.value, MnistFormatError) and isinstance(info.value, ValueError)
    assert filename in str(info.value) and problem in str(info.value)


def test_errors_are_distinct_classes():
    classes = [BadMagicError, BadImageSizeError, CountMismatchError, BadCountError, LabelRangeError,
               TruncatedFileError, BadGzipError]
    for a in classes:
        assert issubclass(a, MnistFormatError)
        assert not any(issubclass(a, b) for b in classes if b is not a)


def write_header(path: Path, header: list[int], payload: bytes) -> None:
    """An uncompressed IDX file with any header (signed big-endian 32-bit fields) over any payload."""
    fields = b"".join(value.to_bytes(4, "big", signed=value < 0) for value in header)
    path.write_bytes(fields + payload)


def load_idx_dir(folder: Path):
    return load_mnist(MnistConfig(source="idx_dir", idx_dir=str(folder)))


def test_image_size_is_checked_before_the_payload_length(tmp_path, sample):
    """A 32x32 header over 28x28 pixels is a wrong image size, not a truncated file."""
    paths = write_splits(tmp_path / "idx", sample, suffix="", limit=10)
    path = paths[NAMES[0]]
    write_header(path, [2051, 10, 32, 32], bytes(10 * 28 * 28))
    with pytest.raises(BadImageSizeError) as info:
        load_idx_dir(tmp_path / "idx")
    message = str(info.value)
    assert str(path) in message and "images are 32x32, expected 28x28" in message


@pytest.mark.parametrize("name, header, payload", [
    (NAMES[2], [2051, -1, 28, 28], bytes(10 * 28 * 28)),  # the field is 0xFFFFFFFF
    (NAMES[3], [2049, -1], bytes(10)),
], ids=["images", "labels"])
def test_a_negative_count_is_reported_as_invalid(tmp_path, sample, name, header, payload):
    paths = write_splits(tmp_path / "idx", sample, suffix="", limit=10)
    write_header(paths[name], header, payload)
    with pytest.raises(BadCountError) as info:
        load_idx_dir(tmp_path / "idx")
    message = str(info.value)
    assert str(paths[name]) in message
    assert "count -1 (0xFFFFFFFF)" in message and "negative" in message
    assert "unexpected bytes" not in message


def test_huge_dimensions_report_the_real_promise_or_the_bad_field(tmp_path, sample):
    """No overflow: huge rows/cols are a bad image size; a huge count promises its exact size."""
    paths = write_splits(tmp_path / "idx", sample, suffix="", limit=10)
    path = paths[NAMES[0]]
    huge = 2**31 - 1
    write_header(path, [2051, huge, huge, huge], bytes(10 * 28 * 28))
    with pytest.raises(BadImageSizeError) as info:
        load_idx_dir(tmp_path / "idx")
    assert str(path) in str(info.value) and f"images are {huge}x{huge}, expected 28x28" in str(info.value)

    write_header(path, [2051, huge, 28, 28], bytes(10 * 28 * 28))
    with pytest.raises(TruncatedFileError) as info:
        load_idx_dir(tmp_path / "idx")
    promise = 16 + huge * 28 * 28  # Python ints: exact
    assert str(path) in str(info.value)
    assert f"promises {promise:,} bytes" in str(info.value) and f"the file has {16 + 10 * 28 * 28:,}" in str(info.value)


def test_a_directory_in_place_of_a_file_is_named(tmp_path, sample):
    paths = write_splits(tmp_path / "idx", sample, limit=10)
    paths[NAMES[0]].unlink()
    folder = tmp_path / "idx" / NAMES[0]
    folder.mkdir()
    with pytest.raises(IsADirectoryError) as info:
        load_idx_dir(tmp_path / "idx")
    message = str(info.value)
    assert f"{folder} is a directory, not a file" in message and "missing" not in message


def test_unknown_source_lists_the_valid_ones():
    with pytest.raises(ValueError, match="auto.*download.*idx_dir.*sample"):
        load_mnist(MnistConfig(source="internet"))


# --------------------------------------------------------------------------- download


def test_download_verifies_caches_and_reuses(tmp_path, sample, mirror):
    cache = tmp_path / "cache"
    config = MnistConfig(source="download", cache_dir=str(cache))
    got = load_mnist(config, mirrors=[mirror["url"]], resources=mirror["resources"])
    assert_same_data(got, sample)
    p = got.provenance
    assert p["source"] == "download" and p["is_sample"] is False
    for name, path in mirror["paths"].items():
        assert p["sha256"][name] == hashlib.sha256(gzip.decompress(path.read_bytes())).hexdigest()
    # the cache holds exactly the four decompressed files, in torchvision's layout
    assert cache_files(cache) == sorted(f"MNIST/raw/{n}" for n in NAMES)

    mirror["stop"]()  # the second load must not need the server
    again = load_mnist(config, mirrors=[mirror["url"]], resources=mirror["resources"])
    assert_same_data(again, sample)
    assert again.provenance["sha256"] == p["sha256"]
    assert again.provenance["sha256_combined"] == p["sha256_combined"]


@pytest.mark.parametrize("dead_mirror", ["closed_port", "missing_path"])
def test_download_falls_back_to_the_next_mirror(tmp_path, sample, mirror, dead_mirror):
    dead = f"http://127.0.0.1:{free_port()}/" if dead_mirror == "closed_port" else mirror["url"] + "nothing-here/"
    got = load_mnist(
        MnistConfig(source="download", cache_dir=str(tmp_path / "cache")),
        mirrors=[dead, mirror["url"]], resources=mirror["resources"],
    )
    assert_same_data(got, sample)


def test_wrong_md5_raises_and_caches_nothing(tmp_path, mirror):
    cache = tmp_path / "cache"
    resources = list(mirror["resources"])
    resources[2] = (resources[2][0], "0" * 32)
    with pytest.raises(MnistDownloadError, match=resources[2][0]):
        load_mnist(MnistConfig(source="download", cache_dir=str(cache)), mirrors=[mirror["url"]], resources=resources)
    assert cache_files(cache) == []  # nothing in MNIST/raw, no staging leftovers


def test_cut_off_download_caches_nothing(tmp_path, mirror, serve):
    cache = tmp_path / "cache"
    half_url, _ = serve(mirror["folder"], HalfHandler)
    with pytest.raises(MnistDownloadError):
        load_mnist(MnistConfig(source="download", cache_dir=str(cache)), mirrors=[half_url], resources=mirror["resources"])
    assert cache_files(cache) == []


def test_interrupted_download_caches_nothing(tmp_path, mirror, monkeypatch):
    """Ctrl-C halfway through the third file: no half file, no staging folder."""
    import torchvision.datasets.utils as tv_utils

    real_download_url = tv_utils.download_url
    calls = []

    def interrupted(url, root, filename=None, md5=None, **kwargs):
        calls.append(filename)
        if len(calls) == 3:
            (Path(root) / filename).write_bytes(b"\x1f\x8b half a file")
            raise KeyboardInterrupt
        return real_download_url(url, root, filename=filename, md5=md5, **kwargs)

    monkeypatch.setattr(tv_utils, "download_url", interrupted)
    cache = tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt):
        load_mnist(MnistConfig(source="download", cache_dir=str(cache)), mirrors=[mirror["url"]], resources=mirror["resources"])
    assert cache_files(cache) == []


def test_interrupted_caching_is_not_taken_for_a_cache(tmp_path, sample, mirror, monkeypatch):
    """Dying between the renames leaves whole files only, and too few to count as a cache."""
    real_replace = data.os.replace
    renames = []

    def dies_on_third(src, dst):
        renames.append(dst)
        if len(renames) == 3:
            raise OSError("disk pulled out")
        real_replace(src, dst)

    cache = tmp_path / "cache"
    config = MnistConfig(source="download", cache_dir=str(cache))
    monkeypatch.setattr(data.os, "replace", dies_on_third)
    with pytest.raises(OSError, match="disk pulled out"):
        load_mnist(config, mirrors=[mirror["url"]], resources=mirror["resources"])
    monkeypatch.undo()
    assert cache_files(cache) == sorted(f"MNIST/raw/{n}" for n in NAMES[:2])  # no partial names

    got = load_mnist(config, mirrors=[mirror["url"]], resources=mirror["resources"])  # downloads again
    assert_same_data(got, sample)


# --------------------------------------------------------------------------- auto


def test_auto_prefers_idx_dir(tmp_path, sample):
    write_splits(tmp_path / "idx", sample, limit=20)
    got = load_mnist(MnistConfig(idx_dir=str(tmp_path / "idx"), cache_dir=str(tmp_path / "cache")),
                     mirrors=[f"http://127.0.0.1:{free_port()}/"])
    assert got.provenance["source"] == "idx_dir" and got.provenance["train_size"] == 20


def test_auto_uses_the_cache(tmp_path, sample, mirror):
    cache = tmp_path / "cache"
    load_mnist(MnistConfig(source="download", cache_dir=str(cache)), mirrors=[mirror["url"]], resources=mirror["resources"])
    mirror["stop"]()
    got = load_mnist(MnistConfig(cache_dir=str(cache)), mirrors=[f"http://127.0.0.1:{free_port()}/"])
    assert got.provenance["source"] == "download" and "cache" in got.provenance["description"]
    assert_same_data(got, sample)


def test_auto_falls_back_to_the_sample_with_a_warning(tmp_path, sample, caplog):
    messages = []
    closed = f"http://127.0.0.1:{free_port()}/"  # never the real network
    with caplog.at_level(logging.WARNING, logger="conv_core.data"):
        got = load_mnist(MnistConfig(cache_dir=str(tmp_path / "cache")), mirrors=[closed], log=messages.append)
    assert_same_data(got, sample)
    p = got.provenance
    assert p["source"] == "sample" and p["is_sample"] is True
    assert "download failed:" in p["description"] and "NOT the full 70,000-digit MNIST" in p["description"]
    warnings = [r.message for r in caplog.records if r.levelno == logging.WARNING]
    assert any("5,000-DIGIT" in w and "download failed" in w for w in warnings)
    assert any(m.startswith("WARNING:") for m in messages)
    assert cache_files(tmp_path / "cache") == []


def test_a_download_sweeps_the_staging_folders_of_killed_downloads(tmp_path, sample, mirror):
    """A download killed mid-way leaves `.download-*`; the next one removes the stale ones, not a live one's."""
    import os
    import time

    cache = tmp_path / "cache"
    stale, live = cache / ".download-killed", cache / ".download-running"
    for folder in (stale, live):
        folder.mkdir(parents=True)
        (folder / "train-images-idx3-ubyte.gz").write_bytes(b"half a file")
    old = time.time() - 2 * 3600
    for path in (stale / "train-images-idx3-ubyte.gz", stale):
        os.utime(path, (old, old))
    messages = []
    load_mnist(MnistConfig(source="download", cache_dir=str(cache)), mirrors=[mirror["url"]],
               resources=mirror["resources"], log=messages.append)
    assert not stale.exists() and live.is_dir()
    assert any(f"removed {stale}, left by an interrupted download" in m for m in messages)
    assert sorted(p.name for p in cache.glob(".download-*")) == [".download-running"]


# --------------------------------------------------------------------------- the validation split


def test_validation_split_is_stratified_seeded_and_disjoint():
    # Unbalanced like full MNIST: class c has 50 + 10c digits.
    labels = torch.cat([torch.full((50 + 10 * c,), c) for c in range(10)])[torch.randperm(950, generator=torch.Generator().manual_seed(3))]
    train_index, validation_index = data.validation_split(labels, 0.1, seed=7)
    assert len(set(train_index.tolist()) | set(validation_index.tolist())) == len(labels)
    assert not set(train_index.tolist()) & set(validation_index.tolist())
    assert torch.bincount(labels[validation_index], minlength=10).tolist() == [round(0.1 * (50 + 10 * c)) for c in range(10)]
    assert train_index.tolist() == sorted(train_index.tolist())
    again, _ = data.validation_split(labels, 0.1, seed=7)
    other, _ = data.validation_split(labels, 0.1, seed=8)
    assert torch.equal(again, train_index) and not torch.equal(other, train_index)


@pytest.mark.parametrize("fraction", [0, 1, -0.1, 1.5])
def test_validation_split_rejects_a_fraction_outside_0_1(fraction):
    with pytest.raises(ValueError, match="validation fraction"):
        data.validation_split(torch.arange(20) % 10, fraction)


def test_validation_split_needs_two_digits_of_a_class():
    with pytest.raises(ValueError, match="class 3 has 1 training digit"):
        data.validation_split(torch.tensor([0, 0, 3, 1, 1]), 0.5)
