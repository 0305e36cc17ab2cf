"""Training runs are partitioned over two dimensions: model x data variant."""

from __future__ import annotations

import dagster as dg

from conv_core.models import MODEL_NAMES

DATA_VARIANTS = ("plain", "shifted")

model_partitions = dg.StaticPartitionsDefinition(list(MODEL_NAMES))
variant_partitions = dg.StaticPartitionsDefinition(list(DATA_VARIANTS))
training_partitions = dg.MultiPartitionsDefinition({"model": model_partitions, "data": variant_partitions})


def training_key(model: str, data: str = "plain") -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"model": model, "data": data})
