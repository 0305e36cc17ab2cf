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


# One step at a time in each concurrency pool: training steps sit in the "gpu"
# pool, so one local GPU is never shared by two steps.
DAGSTER_YAML = """\
concurrency:
  pools:
    default_limit: 1
"""


def ensure_dagster_home() -> Path:
    """DAGSTER_HOME (default .convlab/dagster), created with its dagster.yaml if missing."""
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(convlab_home() / "dagster")))
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(DAGSTER_YAML)
    return home


def report_file() -> Path:
    """Where the `lecture_report` asset writes its HTML page (the newest one; MLflow keeps every one)."""
    return storage_dir() / "report" / "lecture_report.html"
