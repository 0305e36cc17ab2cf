"""Stores asset values as files under `.convlab/storage/`.

Torch values (tensors, dicts of tensors, numbers, strings, state dicts) go to
`.pt` files and are read back with `weights_only=True`, so loading a stored
file can never run code. pandas DataFrames go to JSON in pandas' "table"
layout, which keeps column types. Every write goes to a temporary name first
and is renamed into place, so a crash never leaves a half file behind.

An input declared with `by_partition` (see `partitions.by_partition`) gets a
dict from partition key to value, whatever partition the run carries: a
non-partitioned asset that reads the seed CNN's partition in a run of the MLP's
partition still gets {"seed_cnn.plain.s0": ...}. Every other input of a
partitioned asset is the same partition's value. Partitions not in storage
fail the step with one message naming all of them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import torch
from pydantic import Field

from pipelines.resources.partitions import BY_PARTITION
from pipelines.resources.paths import storage_dir


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(temporary)
    os.replace(temporary, path)


class ConvlabIOManager(dg.ConfigurableIOManager):
    """Torch `.pt` files and pandas JSON tables, one file per asset partition."""

    base_dir: str | None = Field(default=None, description="default: .convlab/storage (or $CONVLAB_HOME/storage)")

    def _root(self) -> Path:
        return Path(self.base_dir) if self.base_dir else storage_dir()

    def _path(self, asset_key: dg.AssetKey, partition: str | None, suffix: str) -> Path:
        folder = self._root().joinpath(*asset_key.path)
        name = partition or "value"
        return folder / f"{name}{suffix}"

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is None:
            return
        # The asset's own partition: an unpartitioned asset in a partitioned run has none.
        partition = context.asset_partition_key if context.has_asset_partitions else None
        if isinstance(obj, pd.DataFrame):
            path = self._path(context.asset_key, partition, ".json")
            _atomic_write(path, lambda tmp: obj.to_json(tmp, orient="table", index=False))
        else:
            path = self._path(context.asset_key, partition, ".pt")
            _atomic_write(path, lambda tmp: torch.save(obj, tmp))
        context.add_output_metadata({"stored_at": dg.MetadataValue.path(str(path))})

    def _stored(self, asset_key: dg.AssetKey, partition: str | None) -> Path | None:
        for suffix in (".pt", ".json"):
            path = self._path(asset_key, partition, suffix)
            if path.exists():
                return path
        return None

    def has_stored(self, asset_key: dg.AssetKey, partition: str | None = None) -> bool:
        return self._stored(asset_key, partition) is not None

    def _load_one(self, asset_key: dg.AssetKey, partition: str | None) -> Any:
        path = self._stored(asset_key, partition)
        if path is None:
            raise _missing(asset_key, [partition] if partition else [], self._root())
        if path.suffix == ".json":
            return pd.read_json(path, orient="table")
        return torch.load(path, weights_only=True)

    def load_input(self, context: dg.InputContext) -> Any:
        if not context.has_asset_partitions:
            return self._load_one(context.asset_key, None)
        keys = context.asset_partition_keys
        if not context.definition_metadata.get(BY_PARTITION):
            (key,) = keys  # the same partition as the consumer's
            return self._load_one(context.asset_key, key)
        missing = [key for key in keys if self._stored(context.asset_key, key) is None]
        if missing:
            raise _missing(context.asset_key, missing, self._root())
        return {key: self._load_one(context.asset_key, key) for key in keys}


def _missing(asset_key: dg.AssetKey, partitions: list[str], root: Path) -> dg.Failure:
    name = asset_key.to_user_string()
    if not partitions:
        return dg.Failure(f"no stored value for {name} under {root}: materialise {name} first")
    shown = ", ".join(partitions)
    return dg.Failure(f"no stored value for {name} partition(s) {shown} under {root}: materialise "
                      f"{name} for {'them' if len(partitions) > 1 else 'it'} first "
                      f"(in the UI: the asset, Materialize, and pick {shown})",
                      metadata={"missing_partitions": shown})
