"""How the training defaults are chosen: on the validation split, never on the test digits.

`python -m conv_core.tuning` trains every model of `MODELS` with every
candidate of a small grid on the training digits minus the validation split
(the same split the `mnist` asset carves: `VALIDATION_FRACTION`, seed 0),
scores each on the validation digits only, and prints the table with the
winner: the candidate with the best validation accuracy averaged over the
models and seeds. `TrainConfig`'s defaults are that winner; the README shows
the table. The test digits are not loaded at all.
"""

from __future__ import annotations

import argparse
import itertools
import time
from dataclasses import dataclass, replace

from conv_core.data import VALIDATION_FRACTION, MnistConfig, load_mnist, random_subset, validation_split
from conv_core.datasets import DATASET_NAMES
from conv_core.evaluate import evaluate
from conv_core.train import DEFAULT_RECIPE, TrainConfig, train

MODELS = ("seed_cnn", "mlp")
# The knobs that moved when the defaults were last chosen, around their values.
GRID = {"lr": (0.003, 0.01, 0.03), "batch_size": (128, 256), "label_smoothing": (0.0, 0.1)}


@dataclass(frozen=True)
class Trial:
    model: str
    seed: int
    settings: tuple[tuple[str, object], ...]
    validation_accuracy: float
    seconds: float


def candidates(grid: dict[str, tuple]) -> list[tuple[tuple[str, object], ...]]:
    """Every combination of the grid's values, as sorted (name, value) pairs."""
    names = sorted(grid)
    return [tuple(zip(names, values)) for values in itertools.product(*(grid[name] for name in names))]


def grid_axis(text: str) -> tuple[str, tuple]:
    """"batch_size=128,256" -> ("batch_size", (128, 256)): a TrainConfig field and its candidate values,
    each read as that field's default is typed (int or float)."""
    name, _, values = text.partition("=")
    fields = TrainConfig.__dataclass_fields__
    if name not in fields or not values:
        raise argparse.ArgumentTypeError(f"{text!r}: expected FIELD=V1,V2,... with FIELD one of {', '.join(fields)}")
    default = getattr(DEFAULT_RECIPE, name, fields[name].default)  # batch_size and lr: None, the model's recipe
    kind = type(default) if isinstance(default, (int, float)) else float
    try:
        return name, tuple(kind(value) for value in values.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: {name} takes {kind.__name__} values") from None


def run_trial(base: TrainConfig, settings, train_split, validation, threads: int | None = None) -> Trial:
    started = time.perf_counter()
    config = replace(base, **dict(settings))
    result = train(config, *train_split, log=lambda line: None, threads=threads)
    accuracy = evaluate(result.model, *validation).accuracy
    return Trial(config.model, config.seed, settings, accuracy, time.perf_counter() - started)


def best(trials: list[Trial]):
    """The settings with the highest validation accuracy averaged over models and seeds (ties: first)."""
    scores = mean_scores(trials)
    return max(scores, key=scores.get)


def mean_scores(trials: list[Trial]) -> dict:
    by_settings: dict = {}
    for trial in trials:
        by_settings.setdefault(trial.settings, []).append(trial.validation_accuracy)
    return {settings: sum(values) / len(values) for settings, values in by_settings.items()}


def table(trials: list[Trial]) -> str:
    """A markdown table: one row per candidate, one column per model, best first."""
    scores = mean_scores(trials)
    models = list(dict.fromkeys(t.model for t in trials))
    names = [name for name, _ in next(iter(scores))]
    lines = ["| " + " | ".join(names + models + ["mean"]) + " |", "|" + "---|" * (len(names) + len(models) + 1)]
    for settings in sorted(scores, key=scores.get, reverse=True):
        per_model = []
        for model in models:
            values = [t.validation_accuracy for t in trials if t.settings == settings and t.model == model]
            per_model.append(f"{sum(values) / len(values):.2%}")
        lines.append("| " + " | ".join([str(v) for _, v in settings] + per_model + [f"{scores[settings]:.2%}"]) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--epochs", type=int, default=None,
                        help="fixed epochs for every trial (default: TrainConfig's budget)")
    parser.add_argument("--schedules", nargs="+", type=int, default=None, metavar="EPOCHS",
                        help="compare training lengths instead of the grid: one candidate per epoch count, "
                             "the other settings at their defaults")
    parser.add_argument("--grid", nargs="+", type=grid_axis, default=None, metavar="NAME=V1,V2",
                        help="the grid to search instead of GRID, e.g. batch_size=128,256 lr=0.003,0.006 "
                             "(any TrainConfig field; the others at their defaults)")
    parser.add_argument("--dataset", choices=DATASET_NAMES, default="mnist")
    parser.add_argument("--source", default=None, help="data source (default: the offline sample for MNIST, "
                                                       "else auto)")
    parser.add_argument("--train-limit", type=int, default=None, help="a seeded subset of the training images")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per training (default 1: see TrainConfig on shared CPUs)")
    args = parser.parse_args(argv)

    source = args.source or ("sample" if args.dataset == "mnist" else "auto")
    splits = load_mnist(MnistConfig(dataset=args.dataset, source=source))
    images, labels = random_subset(splits.train_images, splits.train_labels, args.train_limit)
    splits = replace(splits, train_images=images, train_labels=labels)
    kept, held = validation_split(splits.train_labels, VALIDATION_FRACTION, seed=0)
    train_split = (splits.train_images[kept], splits.train_labels[kept])
    validation = (splits.train_images[held], splits.train_labels[held])
    print(f"{len(kept):,} training and {len(held):,} validation digits "
          f"({splits.provenance['description'].split(';')[0]}); the test digits are not used")
    grid = {"epochs": tuple(args.schedules)} if args.schedules else (dict(args.grid) if args.grid else GRID)
    trials = []
    for settings in candidates(grid):
        for model, seed in itertools.product(args.models, args.seeds):
            base = TrainConfig(model=model, seed=seed, epochs=args.epochs, device="cpu")
            trial = run_trial(base, settings, train_split, validation, args.threads)
            trials.append(trial)
            shown = ", ".join(f"{k}={v}" for k, v in settings)
            print(f"{model} seed {seed} {shown}: validation {trial.validation_accuracy:.2%} ({trial.seconds:.0f} s)",
                  flush=True)
    print(table(trials))
    print("chosen:", ", ".join(f"{k}={v}" for k, v in best(trials)))


if __name__ == "__main__":
    main()
