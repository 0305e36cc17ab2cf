"""Which device training and analysis run on."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from conv_core.train import Device, resolve_device


class Compute(dg.ConfigurableResource):
    """`auto` takes CUDA when present, else the CPU."""

    device: Device = Field(default="auto", description="auto (CUDA when present, else the CPU), cpu or cuda")

    def torch_device(self):
        return resolve_device(self.device)
