"""The test digits the explorer shows, compares with and ranks.

First choice: the value of the lab's `mnist` asset as the IO manager stored it,
the very split the models were evaluated on. Without one (a lab that never
ran), the digits are loaded the way the `mnist` asset loads them, from the
same cache; offline that is the 5,000-digit sample, and the page says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from conv_core.data import MnistConfig, load_mnist
from pipelines.resources.paths import data_cache_dir, storage_dir

SOURCES = ("auto", "sample")


@dataclass(frozen=True)
class Digits:
    images: torch.Tensor  # uint8 (N, 28, 28)
    labels: torch.Tensor  # int64 (N,)
    description: str

    def __len__(self) -> int:
        return len(self.labels)

    def first(self, count: int) -> "Digits":
        """The first `count` digits (neighbours and top activations search these)."""
        return Digits(self.images[:count], self.labels[:count], self.description)

    def strip(self, per_class: int = 2) -> list[int]:
        """Indices of the first `per_class` digits of each class, as 0, 1, ..., 9, 0, 1, ..."""
        by_class = [(self.labels == digit).nonzero().flatten()[:per_class].tolist() for digit in range(10)]
        return [column[i] for i in range(per_class) for column in by_class if i < len(column)]


def load_test_digits(source: str = "auto") -> Digits:
    """`auto`: the stored `mnist` value, else as the `mnist` asset loads; `sample`: the offline sample."""
    if source not in SOURCES:
        raise ValueError(f"unknown digit source {source!r}; choose one of {', '.join(SOURCES)}")
    stored = storage_dir() / "mnist" / "value.pt"
    if source == "auto" and stored.exists():
        value = torch.load(stored, weights_only=True)
        return Digits(value["test_images"], value["test_labels"],
                          f"the test split of the lab's mnist asset: {value['provenance']['description']}")
    splits = load_mnist(MnistConfig(source=source, cache_dir=str(data_cache_dir())))
    return Digits(splits.test_images, splits.test_labels,
                      f"the test split of {splits.provenance['description']}")
