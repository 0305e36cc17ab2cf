"""conv_core.datasets: the registry, and every place that takes a data set's names, files and constants from it."""

import dataclasses
import re
import time
from pathlib import Path

import pytest
import torch

from conv_core import claims, data, datasets, plots
from conv_core.data import IDX_FILES, MnistConfig, MnistDownloadError, load_mnist, write_idx
from conv_core.datasets import DATASETS, FASHION_MNIST, MNIST, get_dataset
from conv_core.export import portable_model
from conv_core.models import build_model, model_normalization
from conv_core.representations import choose_triplet, nearest_nine_triplets, triplet_flip_rates

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")
DEBIAN_FOLDER = Path("/usr/share/datasets/fashion-mnist")
# sha256 of the decompressed IDX files of Debian's dataset-fashion-mnist
DEBIAN_SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}


def write_tiny_idx_folder(folder: Path, per_class: int = 3, seed: int = 0) -> Path:
    """Four gzipped IDX files of random 28x28 images, `per_class` of each of the ten classes per split."""
    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(10).repeat(per_class)
    for split in ("train", "test"):
        images = torch.randint(0, 256, (len(labels), 28, 28), generator=generator, dtype=torch.uint8)
        write_idx(folder / f"{IDX_FILES[f'{split}_images']}.gz", images)
        write_idx(folder / f"{IDX_FILES[f'{split}_labels']}.gz", labels)
    return folder


# --------------------------------------------------------------------------- the registry


def test_the_registry_holds_mnist_and_fashion_mnist_with_ten_class_names_each():
    assert datasets.DATASET_NAMES == ("mnist", "fashion_mnist") and datasets.DEFAULT_DATASET == "mnist"
    assert MNIST.class_names == tuple("0123456789")
    assert FASHION_MNIST.class_names == FASHION_CLASSES
    for dataset in DATASETS.values():
        assert dataset.num_classes == 10 and len(set(dataset.class_names)) == 10
        assert get_dataset(dataset.name) is dataset


@pytest.mark.parametrize("dataset", DATASETS.values(), ids=DATASETS)
def test_every_dataset_names_its_four_files_with_an_md5_each(dataset):
    files = [name for name, _ in dataset.resources]
    assert sorted(name.removesuffix(".gz") for name in files) == sorted(IDX_FILES.values())
    assert all(re.fullmatch(r"[0-9a-f]{32}", md5) for _, md5 in dataset.resources)
    assert dataset.mirrors and all(m.startswith(("http://", "https://")) for m in dataset.mirrors)


def test_mirrors_and_md5s_are_torchvisions():
    torchvision_datasets = pytest.importorskip("torchvision.datasets")
    for ours, theirs in ((MNIST, torchvision_datasets.MNIST), (FASHION_MNIST, torchvision_datasets.FashionMNIST)):
        assert list(ours.mirrors) == list(theirs.mirrors)
        assert [tuple(r) for r in ours.resources] == [tuple(r) for r in theirs.resources]


def test_normalisation_constants_and_triplet_pairs():
    assert MNIST.normalization == (0.1307, 0.3081) == (data.MNIST_MEAN, data.MNIST_STD)
    assert FASHION_MNIST.normalization == (0.2860, 0.3530)
    assert MNIST.triplet.classes == (4, 9)
    assert [FASHION_MNIST.class_name(c) for c in FASHION_MNIST.triplet.classes] == ["Shirt", "T-shirt/top"]


def test_an_unknown_dataset_lists_the_known_ones():
    with pytest.raises(ValueError, match="known datasets: mnist, fashion_mnist"):
        get_dataset("cifar10")
    with pytest.raises(ValueError, match="unknown dataset 'kmnist'"):
        load_mnist(MnistConfig(dataset="kmnist", source="sample"))


# --------------------------------------------------------------------------- loading


def test_fashion_mnist_from_an_idx_folder_carries_its_class_names(tmp_path):
    folder = write_tiny_idx_folder(tmp_path / "fashion")
    splits = load_mnist(MnistConfig(dataset="fashion_mnist", source="idx_dir", idx_dir=str(folder)))
    provenance = splits.provenance
    assert provenance["dataset"] == "fashion_mnist" and provenance["dataset_title"] == "Fashion-MNIST"
    assert provenance["class_names"] == list(FASHION_CLASSES)
    assert provenance["source"] == "idx_dir" and not provenance["is_sample"]
    assert provenance["description"].startswith("Fashion-MNIST-format data from IDX files in ")
    assert provenance["train_counts_per_class"] == [3] * 10 and provenance["test_size"] == 30
    # the same bytes named as MNIST are MNIST: only the setting decides
    as_mnist = load_mnist(MnistConfig(source="idx_dir", idx_dir=str(folder))).provenance
    assert as_mnist["dataset"] == "mnist" and as_mnist["class_names"] == list("0123456789")
    assert as_mnist["sha256_combined"] == provenance["sha256_combined"]


def test_fashion_mnist_downloads_are_cached_in_torchvisions_folder(tmp_path):
    # a cache torchvision.datasets.FashionMNIST(root) would also find
    write_tiny_idx_folder(tmp_path / "cache" / "FashionMNIST" / "raw")
    write_tiny_idx_folder(tmp_path / "cache" / "MNIST" / "raw", seed=1)
    config = MnistConfig(dataset="fashion_mnist", source="download", cache_dir=str(tmp_path / "cache"))
    provenance = load_mnist(config).provenance
    assert Path(provenance["location"]) == (tmp_path / "cache" / "FashionMNIST" / "raw").resolve()
    assert provenance["dataset"] == "fashion_mnist"
    mnist = load_mnist(dataclasses.replace(config, dataset="mnist")).provenance
    assert Path(mnist["location"]) == (tmp_path / "cache" / "MNIST" / "raw").resolve()


def test_the_offline_sample_is_mnist_only():
    with pytest.raises(ValueError, match='"sample" is the 5,000-digit MNIST sample.*not for Fashion-MNIST'):
        load_mnist(MnistConfig(dataset="fashion_mnist", source="sample"))


def test_auto_without_the_system_folder_or_a_download_is_an_error_not_the_sample(tmp_path, monkeypatch):
    elsewhere = dataclasses.replace(FASHION_MNIST, system_folder=str(tmp_path / "not-installed"))
    monkeypatch.setitem(DATASETS, "fashion_mnist", elsewhere)
    config = MnistConfig(dataset="fashion_mnist", cache_dir=str(tmp_path / "cache"))
    with pytest.raises(MnistDownloadError, match="Fashion-MNIST is not in the download cache nor in .*not-installed"):
        load_mnist(config, mirrors=["http://127.0.0.1:9/"])  # port 9 (discard): refused at once


def test_auto_prefers_the_system_folder_to_the_cache(tmp_path, monkeypatch):
    installed = write_tiny_idx_folder(tmp_path / "installed")
    write_tiny_idx_folder(tmp_path / "cache" / "FashionMNIST" / "raw", seed=1)
    monkeypatch.setitem(DATASETS, "fashion_mnist", dataclasses.replace(FASHION_MNIST, system_folder=str(installed)))
    provenance = load_mnist(MnistConfig(dataset="fashion_mnist", cache_dir=str(tmp_path / "cache"))).provenance
    assert Path(provenance["location"]) == installed.resolve()
    assert "the system's IDX files" in provenance["description"]


@pytest.mark.skipif(not DEBIAN_FOLDER.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_auto_loads_fashion_mnist_from_the_debian_package(tmp_path):
    started = time.perf_counter()
    splits = load_mnist(MnistConfig(dataset="fashion_mnist", cache_dir=str(tmp_path / "cache")))
    seconds = time.perf_counter() - started
    provenance = splits.provenance
    assert (provenance["train_size"], provenance["test_size"]) == (60_000, 10_000)
    assert provenance["description"].startswith("full Fashion-MNIST from the system's IDX files in ")
    assert provenance["sha256"] == DEBIAN_SHA256
    assert provenance["train_counts_per_class"] == [6000] * 10 and provenance["test_counts_per_class"] == [1000] * 10
    assert not (tmp_path / "cache").exists()  # read in place, never copied into the cache
    # the constants in the registry are these images' statistics, to the digits written down
    pixels = splits.train_images.double() / 255
    assert round(float(pixels.mean()), 4) == FASHION_MNIST.mean
    assert round(float(pixels.std()), 4) == FASHION_MNIST.std
    print(f"\nFashion-MNIST from {DEBIAN_FOLDER}: loaded in {seconds:.1f} s")


# --------------------------------------------------------------------------- downstream


def test_choose_triplet_takes_the_datasets_pair():
    # three classes of images at distinct grey levels: 6s (anchor), 0s (confusable) and 2s
    labels = torch.tensor([2, 6, 0, 6, 2, 6, 0, 6])
    images = (torch.arange(len(labels)) * 20 + 40).to(torch.uint8).view(-1, 1, 1).expand(-1, 28, 28).contiguous()
    anchor, confusable = FASHION_MNIST.triplet.classes
    triplet = choose_triplet(images, labels, anchor=anchor, confusable=confusable)
    assert {int(labels[triplet.four_a]), int(labels[triplet.four_b])} == {anchor}
    assert int(labels[triplet.nine]) == confusable and triplet.four_a != triplet.four_b
    triplets, _ = nearest_nine_triplets(images, labels, anchor=anchor, confusable=confusable)
    assert len(triplets) == 4 and all(int(labels[t.nine]) == confusable for t in triplets)
    features = {"pixels": images.flatten(1).float()}
    assert set(triplet_flip_rates(features, images, labels, anchor=anchor, confusable=confusable)) == {"pixels"}
    with pytest.raises(ValueError, match="at least two of class 4 and one of class 9"):
        choose_triplet(images, labels)  # no 4s and 9s here: the default stays the lecture's pair


def test_a_model_built_with_fashion_normalisation_normalises_with_it():
    mean, std = FASHION_MNIST.normalization
    model = build_model("seed_cnn", normalization=(mean, std)).eval()
    x = torch.rand(2, 1, 28, 28)
    assert torch.allclose(model.normalize(x), (x - mean) / std)
    assert model_normalization(model) == pytest.approx((mean, std))
    assert model_normalization(build_model("seed_cnn")) == pytest.approx(MNIST.normalization)
    # the exported model keeps the constants: same logits as the model itself
    assert torch.allclose(portable_model(model)(x), model(x), atol=1e-5)


def test_load_trained_restores_the_recorded_normalisation():
    from assets.training import load_trained

    trained = build_model("mlp", normalization=FASHION_MNIST.normalization)
    value = {"model": "mlp", "state_dict": trained.state_dict(), "normalization": list(FASHION_MNIST.normalization)}
    assert model_normalization(load_trained(value)) == pytest.approx(FASHION_MNIST.normalization)
    # a value stored before the field existed was trained on MNIST
    older = {"model": "mlp", "state_dict": build_model("mlp").state_dict()}
    assert model_normalization(load_trained(older)) == pytest.approx(MNIST.normalization)


def test_figures_label_classes_by_name():
    confusion = torch.eye(10, dtype=torch.long) * 5
    figure = plots.confusion_matrix(confusion, "fashion", class_names=FASHION_MNIST.class_names)
    axes = figure.axes[0]
    assert [t.get_text() for t in axes.get_xticklabels()] == list(FASHION_CLASSES)
    assert [t.get_text() for t in axes.get_yticklabels()] == list(FASHION_CLASSES)
    default = plots.confusion_matrix(confusion)
    assert [t.get_text() for t in default.axes[0].get_yticklabels()] == list("0123456789")
    examples = plots.digit_examples(torch.zeros(20, 28, 28, dtype=torch.uint8), torch.arange(10).repeat(2),
                                    per_class=2, class_names=FASHION_MNIST.class_names)
    assert [t.get_text() for t in examples.axes[0].get_yticklabels()] == list(FASHION_CLASSES)


def test_triplet_claims_name_the_datasets_classes():
    pair = ("Shirt", "T-shirt/top")
    assert claims.triplet_pixel_order(0.8).statement.startswith("In pixel space, 9-4 is closer")
    pixel = claims.triplet_pixel_order(0.8, pair)
    assert pixel.key == "triplet_pixels_nine_closer"
    assert pixel.statement.startswith("In pixel space, T-shirt/top-Shirt is closer")
    assert "4A, 4B: Shirt; 9A: T-shirt/top" in pixel.statement
    feature = claims.triplet_feature_order({"conv2": 1.3}, pair=pair)
    assert feature.key == "triplet_features_fours_closer" and "Shirt-Shirt is closer" in feature.statement
    table = [{"model": "seed_cnn", "layer": layer, "ratio": 0.9, "triplet_order_rate_4_9": rate}
             for layer, rate in (("pixels", 0.6), ("conv2", 0.7))]
    aggregate = next(spec for spec in claims.REGISTRY if spec.key == "aggregate_features_order_better")
    decided = aggregate({"representation_distances": {"table": table, "triplet_classes": {
        "dataset": "fashion_mnist", "anchor": "Shirt", "confusable": "T-shirt/top"}}})
    assert "Shirt and T-shirt/top items" in decided.statement and decided.passed


def test_the_report_names_the_dataset_and_its_classes():
    from conv_core.report.html import provenance_blocks
    from conv_core.report.blocks import Facts, Table

    provenance = {"dataset": "fashion_mnist", "dataset_title": "Fashion-MNIST", "source": "idx_dir",
                  "class_names": list(FASHION_CLASSES), "train_counts_per_class": [1] * 10,
                  "test_counts_per_class": [2] * 10}
    blocks = provenance_blocks(provenance)
    facts = next(b for b in blocks if isinstance(b, Facts))
    assert ("dataset", "Fashion-MNIST") in facts.items
    counts = next(b for b in blocks if isinstance(b, Table) and b.caption.startswith("images per class"))
    assert counts.columns == ["split", *FASHION_CLASSES]


# --------------------------------------------------------------------------- the asset and the command


def test_the_mnist_asset_holds_fashion_mnist_with_its_class_names(tmp_path, monkeypatch):
    import dagster as dg

    from assets.data import mnist

    monkeypatch.setenv("CONVLAB_HOME", str(tmp_path / "home"))
    folder = write_tiny_idx_folder(tmp_path / "fashion")

    def materialize(dataset: str) -> dict:
        result = dg.materialize([mnist], run_config={"ops": {"mnist": {"config": {
            "dataset": dataset, "source": "idx_dir", "idx_dir": str(folder)}}}})
        assert result.success
        return result.output_for_node("mnist")

    fashion = materialize("fashion_mnist")
    assert fashion["dataset"] == "fashion_mnist" and fashion["class_names"] == list(FASHION_CLASSES)
    assert fashion["normalization"] == list(FASHION_MNIST.normalization)
    assert fashion["provenance"]["dataset"] == "fashion_mnist"
    # the same bytes as MNIST are other data: the data set is part of the identity
    as_mnist = materialize("mnist")
    assert as_mnist["class_names"] == list("0123456789")
    assert as_mnist["provenance"]["identity"] != fashion["provenance"]["identity"]


def test_make_run_passes_the_dataset_to_the_mnist_asset():
    from pipelines.run import parse_args, run_config

    config = run_config(parse_args(["--dataset", "fashion_mnist", "--source", "idx_dir", "--idx-dir", "/data"]))
    assert config["ops"]["mnist"]["config"] == {"dataset": "fashion_mnist", "source": "idx_dir", "idx_dir": "/data"}
    assert "dataset" not in run_config(parse_args([])).get("ops", {}).get("mnist", {}).get("config", {})
    with pytest.raises(SystemExit):
        parse_args(["--dataset", "cifar10"])


def test_training_normalises_with_the_data_sets_constants():
    from conv_core.datasets import FASHION_MNIST
    from conv_core.models import model_normalization
    from conv_core.train import TrainConfig, train

    images, labels = torch.randint(0, 256, (64, 28, 28), dtype=torch.uint8), torch.arange(64) % 10
    config = TrainConfig(model="mlp", epochs=1, batch_size=32, device="cpu")
    fashion = train(config, images, labels, normalization=FASHION_MNIST.normalization, log=lambda line: None)
    default = train(config, images, labels, log=lambda line: None)
    assert model_normalization(fashion.model) == pytest.approx(FASHION_MNIST.normalization, abs=1e-6)
    assert model_normalization(default.model) == pytest.approx((0.1307, 0.3081), abs=1e-6)
