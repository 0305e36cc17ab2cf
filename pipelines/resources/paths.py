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


# The instance settings of this lab. Pools: one step at a time in each, so
# training steps (pool "gpu") never share one local GPU. Enforced when runs are
# dequeued (granularity run): a run whose step waits inside it for a slot polls
# without pause and took a core from the training it waited for (12.3 minutes
# for make run, against 8.3 with this setting). Runs: a few at once,
# queued beyond that (each run is a process holding torch). Run monitoring:
# the daemon frees the pool slots of a run that ended without freeing them
# (one whose process died: pipelines.recovery ends those FAILED).
DAGSTER_YAML_MARK = "# Written by convlab"
DAGSTER_YAML = f"""\
{DAGSTER_YAML_MARK}: rewritten when convlab changes it; delete this line to keep your own edits.
concurrency:
  pools:
    default_limit: 1
    granularity: run
  runs:
    max_concurrent_runs: 4
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  cancel_timeout_seconds: 60
  poll_interval_seconds: 15
  free_slots_after_run_end_seconds: 10
telemetry:
  enabled: false
"""


def ensure_dagster_home() -> Path:
    """DAGSTER_HOME (default .convlab/dagster), created with its dagster.yaml if missing."""
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(convlab_home() / "dagster")))
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists() or (config.read_text().startswith(DAGSTER_YAML_MARK) and config.read_text() != DAGSTER_YAML):
        config.write_text(DAGSTER_YAML)
    return home


def report_file() -> Path:
    """Where the `lecture_report` asset writes its HTML page (the newest one; MLflow keeps every one)."""
    return storage_dir() / "report" / "lecture_report.html"
