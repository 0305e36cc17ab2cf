"""Where local state lives: everything under one folder, `.convlab/` by default.

`CONVLAB_HOME` moves it (tests point it at a temporary folder). Read at call
time, not import time, so a changed environment takes effect.
"""

from __future__ import annotations

import os
from pathlib import Path


def convlab_home() -> Path:
    return Path(os.environ.get("CONVLAB_HOME", ".convlab")).resolve()


def storage_dir() -> Path:
    """The IO manager's files and the figures of every run."""
    return convlab_home() / "storage"


def data_cache_dir() -> Path:
    return convlab_home() / "data"


def mlflow_dir() -> Path:
    return convlab_home() / "mlflow"
