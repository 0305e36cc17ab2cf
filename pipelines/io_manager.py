"""Stores asset values as files under `.convlab/storage/`.

Torch values (tensors, dicts of tensors, numbers, strings, state dicts) go to
`.pt` files and are read back with `weights_only=True`, so loading a stored
file can never run code. pandas DataFrames go to JSON in pandas' "table"
layout, which keeps column types. Every write goes to a temporary name first
and is renamed into place, so a crash never leaves a half file behind.

A non-partitioned asset reading a partitioned one gets a dict from partition
key to value.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import torch
from pydantic import Field

from pipelines.paths import storage_dir


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
        name = partition.replace("|", "__") if partition else "value"
        return folder / f"{name}{suffix}"

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is None:
            return
        partition = context.partition_key if context.has_partition_key else None
        if isinstance(obj, pd.DataFrame):
            path = self._path(context.asset_key, partition, ".json")
            _atomic_write(path, lambda tmp: obj.to_json(tmp, orient="table", index=False))
        else:
            path = self._path(context.asset_key, partition, ".pt")
            _atomic_write(path, lambda tmp: torch.save(obj, tmp))
        context.add_output_metadata({"stored_at": dg.MetadataValue.path(str(path))})

    def _load_one(self, asset_key: dg.AssetKey, partition: str | None) -> Any:
        for suffix in (".pt", ".json"):
            path = self._path(asset_key, partition, suffix)
            if path.exists():
                if suffix == ".json":
                    return pd.read_json(path, orient="table")
                return torch.load(path, weights_only=True)
        raise FileNotFoundError(f"no stored value for {asset_key.to_user_string()}"
                                f"{f' partition {partition}' if partition else ''} under {self._root()}: "
                                "materialise it first")

    def load_input(self, context: dg.InputContext) -> Any:
        if not context.has_asset_partitions:
            return self._load_one(context.asset_key, None)
        keys = context.asset_partition_keys
        if context.has_partition_key and len(keys) == 1:  # partition to same partition
            return self._load_one(context.asset_key, keys[0])
        return {key: self._load_one(context.asset_key, key) for key in keys}
