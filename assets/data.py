"""[data] MNIST (or Fashion-MNIST), the lecture's "crop 2 pixels, 9 times the data", and infinite deformed MNIST."""

from typing import Literal

import dagster as dg
import pandas as pd
import torch
from pydantic import Field

from conv_core import plots
from conv_core.augment import SHIFTS, expand_shifts
from conv_core.data import VALIDATION_FRACTION, MnistConfig, Source, load_mnist, random_subset, validation_split
from conv_core.datasets import DEFAULT_DATASET, DATASETS, get_dataset
from conv_core.infinite import InfiniteMnist, Mode
from assets.checks import MNIST_IS_SOUND, claim_results, claim_specs, mnist_soundness
from pipelines.resources.figures import figure_metadata, figure_paths
from pipelines.resources.metadata import table_metadata
from pipelines.resources.paths import data_cache_dir
from pipelines.resources.versions import content_hash, versioned_output

GROUP = "data"


# The data sets by name, as a type the launchpad offers as a choice: "mnist" | "fashion_mnist".
DatasetName = Literal[tuple(DATASETS)]


class MnistSettings(dg.Config):
    """Which data set, and where its images come from (defaults: conv_core.data.MnistConfig)."""

    dataset: DatasetName = Field(default=MnistConfig.dataset, description="mnist (handwritten digits) or "
                                 "fashion_mnist (Zalando's clothing images, same format); class names, mirrors, "
                                 "normalisation and the triplet's classes follow it (conv_core.datasets)")
    source: Source = Field(default=MnistConfig.source, description="auto (an IDX folder, the download cache, a "
                           "download, else the offline sample), download, idx_dir or sample (5,000 real digits)")
    idx_dir: str | None = Field(default=MnistConfig.idx_dir, description="folder with the four IDX files")
    sample_test_size: int = Field(default=MnistConfig.sample_test_size,
                                  description="test digits split off the 5,000-digit sample")
    seed: int = Field(default=MnistConfig.seed, description="seed of the sample split and of the subsets")
    train_limit: int | None = Field(default=None, description="keep a seeded random subset of this many training digits (quick runs)")
    test_limit: int | None = Field(default=None, description="the same for the test digits")
    validation_fraction: float = Field(default=VALIDATION_FRACTION, gt=0, lt=1,
                                       description="share of the training digits held out (stratified, seeded) "
                                                   "to choose on; the test digits decide nothing")


# The name stays `mnist` whichever data set it holds: stored history is kept by asset name.
@dg.asset(group_name=GROUP, code_version="2", check_specs=[MNIST_IS_SOUND],
          description="MNIST or Fashion-MNIST (the `dataset` setting): train, validation and test splits as "
                      "uint8 tensors, with their class names and provenance.")
def mnist(context: dg.AssetExecutionContext, config: MnistSettings):
    dataset = get_dataset(config.dataset)
    splits = load_mnist(MnistConfig(dataset=dataset.name, source=config.source, idx_dir=config.idx_dir,
                                    cache_dir=str(data_cache_dir()), sample_test_size=config.sample_test_size,
                                    seed=config.seed),
                        log=context.log.info)
    provenance = dict(splits.provenance)
    if provenance.get("is_sample"):
        context.log.warning(provenance["description"])
    train_images, train_labels = random_subset(splits.train_images, splits.train_labels, config.train_limit, config.seed)
    test_images, test_labels = random_subset(splits.test_images, splits.test_labels, config.test_limit, config.seed + 1)
    if config.train_limit or config.test_limit:
        provenance["subset"] = {"train": len(train_labels), "test": len(test_labels), "seed": config.seed}
    # The validation digits come out of the training digits, before anything trains on them.
    kept, held = validation_split(train_labels, config.validation_fraction, seed=config.seed)
    validation_images, validation_labels = train_images[held], train_labels[held]
    train_images, train_labels = train_images[kept], train_labels[kept]
    provenance["validation"] = {"fraction": config.validation_fraction, "seed": config.seed,
                                "count": len(held), "rule": "stratified: round(fraction x class count) per class, "
                                "by a seeded shuffle, out of the training digits"}
    # One value for "the same data": the bytes, the subset and the validation split taken of them.
    # Every run records it, and only runs with the same identity are compared.
    # MNIST's identity is computed as it was before there was a choice of data set, so runs
    # already recorded on MNIST still compare; any other data set is named in its identity.
    named = () if dataset.name == DEFAULT_DATASET else (dataset.name,)
    provenance["identity"] = content_hash(provenance["sha256_combined"], provenance.get("subset"),
                                          provenance["validation"], *named)
    train_counts = torch.bincount(train_labels, minlength=10).tolist()
    validation_counts = torch.bincount(validation_labels, minlength=10).tolist()
    test_counts = torch.bincount(test_labels, minlength=10).tolist()
    value = {"train_images": train_images, "train_labels": train_labels,
             "validation_images": validation_images, "validation_labels": validation_labels,
             "test_images": test_images, "test_labels": test_labels, "provenance": provenance,
             "dataset": dataset.name, "class_names": list(dataset.class_names),
             "normalization": list(dataset.normalization)}
    metadata = {
        "dataset": dataset.title,
        "source": provenance["source"],
        "description": provenance["description"],
        "is_5000_digit_sample": bool(provenance.get("is_sample")),
        "sha256": provenance["sha256_combined"],
        "data_identity": provenance["identity"],
        "train_size": len(train_labels),
        "validation_size": len(validation_labels),
        "test_size": len(test_labels),
        "validation_rule": f"{config.validation_fraction:.0%} of the training digits, stratified, seed {config.seed}",
        "counts_per_class": table_metadata(pd.DataFrame({"class": list(dataset.class_names), "train": train_counts,
                                                         "validation": validation_counts, "test": test_counts})),
        **figure_metadata(context, plots.digit_examples(train_images, train_labels, class_names=dataset.class_names),
                          "digit_examples"),
    }
    value["figures"] = figure_paths(metadata)
    yield versioned_output(value, provenance["identity"], metadata)
    yield mnist_soundness(value)


@dg.asset(group_name=GROUP, code_version="1",
          check_specs=claim_specs("shifted_mnist"),
          description='All 9 one-pixel shifts of every training digit: "crop 2 pixels, 9 times the data".')
def shifted_mnist(context: dg.AssetExecutionContext, mnist: dict):
    images, labels, shift_index = expand_shifts(mnist["train_images"], mnist["train_labels"])
    source_count = len(mnist["train_labels"])
    example = torch.stack([images[k * source_count] for k in range(len(SHIFTS))])
    figure = plots.image_grid(example, titles=[f"dy={dy:+d} dx={dx:+d}" for dy, dx in SHIFTS], columns=3, cell=1.2,
                              suptitle="one digit, 9 shifted versions")
    metadata = figure_metadata(context, figure, "nine_shifts")
    value = {"images": images, "labels": labels, "shift_index": shift_index, "shifts": list(SHIFTS),
             "source_count": source_count, "figures": figure_paths(metadata)}
    yield dg.Output(value, metadata={
        "source_count": source_count,
        "expanded_count": len(labels),
        "factor": len(labels) / source_count,
        **metadata,
    })
    yield from claim_results("shifted_mnist", value)


class InfiniteMnistSettings(dg.Config):
    """The deformed-digit stream (defaults: conv_core.infinite.InfiniteMnist)."""

    mode: Mode = Field(default="infimnist", description="infimnist (tangent-vector deformations) or elastic (Simard)")
    seed: int = Field(default=0, description="seed of the deformation fields")
    statistics_count: int = Field(default=10000, description="deformed digits measured for the statistics")


@dg.asset(group_name=GROUP, code_version="1",
          description="Infinite MNIST (infimnist's index scheme, our own fields): the scheme's spec, a preview per class and deformation statistics.")
def infinite_mnist(context: dg.AssetExecutionContext, config: InfiniteMnistSettings, mnist: dict) -> dg.Output[dict]:
    stream = InfiniteMnist(mnist["train_images"], mnist["train_labels"], mnist["test_images"], mnist["test_labels"],
                           mode=config.mode, seed=config.seed)
    train_count, first = stream.train_count, stream.first_deformed_index
    # Index first + p + k*N deforms training digit p, for every k: the preview
    # shows the first digit of each class and 8 of its deformations.
    firsts = [int(torch.nonzero(mnist["train_labels"] == digit).flatten()[0]) for digit in range(10)]
    indices = torch.tensor([stream.test_count + p + k * train_count for p in firsts for k in range(9)])
    indices[::9] = torch.tensor([stream.test_count + p for p in firsts])  # the untouched originals
    preview, labels = stream.images(indices)
    figure = plots.image_grid(preview, columns=9, cell=0.8,
                              titles=["original" if k == 0 else f"#{int(i)}" for i, k in
                                      zip(indices, list(range(9)) * 10)],
                              suptitle=f"infinite MNIST ({config.mode}): originals and 8 deformations each")
    deformed, _ = stream.batch(first, config.statistics_count)
    sources = mnist["train_images"][torch.arange(config.statistics_count) % train_count]
    change = (deformed.float() - sources.float()).abs()
    ink_ratio = deformed.float().sum(dim=(1, 2)) / sources.float().sum(dim=(1, 2)).clamp(min=1)
    statistics = {
        "mean_absolute_change_per_pixel": float(change.mean()),
        "fraction_of_pixels_changed": float((change > 0).float().mean()),
        "fraction_saturated_255_deformed": float((deformed == 255).float().mean()),
        "fraction_saturated_255_source": float((sources == 255).float().mean()),
        "ink_ratio_median": float(ink_ratio.median()),
        "ink_ratio_p05": float(ink_ratio.quantile(0.05)),
        "ink_ratio_p95": float(ink_ratio.quantile(0.95)),
    }
    spec = stream.spec()
    metadata = figure_metadata(context, figure, "infinite_digits")
    return dg.Output({"spec": spec, "statistics": statistics, "preview": preview, "preview_indices": indices,
                      "preview_labels": labels, "figures": figure_paths(metadata)}, metadata={
        "mode": config.mode,
        "first_deformed_index": first,
        "index_scheme": spec["scheme"],
        "note": spec["note"],
        "spec": dg.MetadataValue.json(spec),
        **statistics,
        **metadata,
    })
