"""Training runs are partitioned over two dimensions: model x data variant."""

from __future__ import annotations

import dagster as dg

from conv_core.models import MODEL_NAMES

# plain: the digits as they are; shifted: a random one of the 9 one-pixel shifts
# per digit and epoch (sampling the 9x set); infinite: fresh deformed digits of
# infinite MNIST every epoch (a new index range each time).
DATA_VARIANTS = ("plain", "shifted", "infinite")

model_partitions = dg.StaticPartitionsDefinition(list(MODEL_NAMES))
variant_partitions = dg.StaticPartitionsDefinition(list(DATA_VARIANTS))
training_partitions = dg.MultiPartitionsDefinition({"model": model_partitions, "data": variant_partitions})


def training_key(model: str, data: str = "plain") -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"model": model, "data": data})
