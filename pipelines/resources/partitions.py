"""Training partitions: one per experiment (model x data variant x seed) of the lab's set.

A static list of experiment keys (`seed_cnn.shifted.s1`) rather than a
multi-partition grid: Dagster's multi-partitions are a full cartesian product,
and the lab trains 20 of the 36 (model x variant x seed) cells, so a grid would
show 16 partitions that nothing ever trains, "Missing" for ever. The list keeps
exactly the runs the lab makes, sorted by data variant, model and seed.
`CONVLAB_EXPERIMENTS` picks the set: `lecture` (the default), `quick`, or a
comma-separated list of experiment keys of one's own.
"""

from __future__ import annotations

import os

import dagster as dg

from conv_core.experiments import DEFAULT_SET, EXPERIMENT_SETS, EXPLAINED, REPRESENTED, Experiment

EXPERIMENTS_VARIABLE = "CONVLAB_EXPERIMENTS"


def experiments() -> tuple[Experiment, ...]:
    """The experiment set this code location serves (read when the definitions load)."""
    name = os.environ.get(EXPERIMENTS_VARIABLE) or DEFAULT_SET
    if name in EXPERIMENT_SETS:
        return EXPERIMENT_SETS[name]
    if "." not in name:
        raise ValueError(f"{EXPERIMENTS_VARIABLE}={name!r} is not an experiment set; known: "
                         f"{', '.join(EXPERIMENT_SETS)}, or a comma-separated list of keys like seed_cnn.plain.s0")
    chosen = tuple(dict.fromkeys(Experiment.parse(key.strip()) for key in name.split(",") if key.strip()))
    needed = [e.key for e in (EXPLAINED, *REPRESENTED) if e not in chosen]
    if needed:
        raise ValueError(f"{EXPERIMENTS_VARIABLE} must include {', '.join(needed)}: the figures explain "
                         f"{EXPLAINED.key} and the representations compare {' and '.join(e.key for e in REPRESENTED)}")
    return chosen


training_partitions = dg.StaticPartitionsDefinition([e.key for e in experiments()])


def experiment_of(context) -> Experiment:
    """The experiment of a partitioned asset's (or output's) partition."""
    return Experiment.parse(context.partition_key)


# Input metadata read by the IO manager: this input is a dict by partition key.
BY_PARTITION = "convlab/by_partition"


def by_partition(experiments_read: tuple[Experiment, ...] | None = None) -> dg.AssetIn:
    """An input of `trained_model` (or another partitioned asset) as {partition key: value}:
    the named experiments' partitions, or every partition when none are named."""
    mapping = (dg.AllPartitionMapping() if experiments_read is None
               else dg.SpecificPartitionsPartitionMapping([e.key for e in experiments_read]))
    return dg.AssetIn(partition_mapping=mapping, metadata={BY_PARTITION: True})
