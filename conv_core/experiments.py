"""The lab's experiments: which model trains on which data variant with which seed.

One experiment is one training run, and one partition of the `trained_model`
asset. The sets are data, defined here once; everything that trains, compares
or explains models reads them from here.
"""

from __future__ import annotations

from dataclasses import dataclass

from conv_core.models import MODEL_NAMES

# plain: the digits as they are; shifted: a random one of the 9 one-pixel shifts
# per digit and epoch (sampling the "crop 2 pixels, 9 times the data" set);
# infinite: fresh deformed digits of infinite MNIST every epoch.
DATA_VARIANTS = ("plain", "shifted", "infinite")
# The lecture's two networks are compared across data variants and seeds; the
# other members of the family train once, on plain digits.
COMPARED_MODELS = ("seed_cnn", "mlp")
SEPARATOR = "."


@dataclass(frozen=True, order=True)
class Experiment:
    model: str
    variant: str = "plain"
    seed: int = 0

    def __post_init__(self):
        if self.model not in MODEL_NAMES:
            raise ValueError(f"unknown model {self.model!r}; known models: {', '.join(MODEL_NAMES)}")
        if self.variant not in DATA_VARIANTS:
            raise ValueError(f"unknown data variant {self.variant!r}; known: {', '.join(DATA_VARIANTS)}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")

    @property
    def key(self) -> str:
        """`seed_cnn.shifted.s1`: a partition key (no `|,[]`), a file name and a readable label."""
        return SEPARATOR.join((self.model, self.variant, f"s{self.seed}"))

    @property
    def run_name(self) -> str:
        """`seed_cnn/shifted/s1`, the MLflow run name."""
        return f"{self.model}/{self.variant}/s{self.seed}"

    @classmethod
    def parse(cls, key: str) -> "Experiment":
        parts = key.split(SEPARATOR)
        if len(parts) != 3 or not parts[2].startswith("s") or not parts[2][1:].isdigit():
            raise ValueError(f"not an experiment key: {key!r} (expected model.variant.sN, e.g. seed_cnn.plain.s0)")
        return cls(parts[0], parts[1], int(parts[2][1:]))


def experiment_set(seeds: tuple[int, ...] = (0, 1, 2)) -> tuple[Experiment, ...]:
    """Every model on plain digits with the first seed; the compared models on every
    variant with every seed (their comparison reports mean and spread over seeds)."""
    chosen = [Experiment(model, "plain", seeds[0]) for model in MODEL_NAMES]
    chosen += [Experiment(model, variant, seed) for variant in DATA_VARIANTS for model in COMPARED_MODELS
               for seed in seeds]
    return tuple(sorted(set(chosen), key=lambda e: (DATA_VARIANTS.index(e.variant), MODEL_NAMES.index(e.model), e.seed)))


# Named sets: `lecture` is the default (20 runs); `quick` keeps one seed (8 runs)
# for a first look or a small machine.
EXPERIMENT_SETS = {"lecture": experiment_set((0, 1, 2)), "quick": experiment_set((0,))}
DEFAULT_SET = "lecture"

# The run the figures explain and the pair whose representations are compared:
# the lecture's CNN and MLP on plain digits, first seed (in every set).
EXPLAINED = Experiment("seed_cnn", "plain", 0)
REPRESENTED = (Experiment("seed_cnn", "plain", 0), Experiment("mlp", "plain", 0))
