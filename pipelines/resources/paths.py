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


# Which stores the lab uses: `sqlite` (the default: Dagster's and MLflow's
# embedded SQLite files under CONVLAB_HOME) or `server` (PostgreSQL for
# Dagster's run, event and schedule storage, an MLflow tracking server; started
# by `make services`, see pipelines/server_profile.py).
PROFILE_VARIABLE = "CONVLAB_PROFILE"
PROFILES = ("sqlite", "server")
MAX_RUNS_VARIABLE = "CONVLAB_MAX_CONCURRENT_RUNS"
DEFAULT_MAX_CONCURRENT_RUNS = 4
# Where the server profile's Dagster finds its database (dagster-postgres reads them when the instance loads).
POSTGRES_VARIABLES = {"username": "CONVLAB_PG_USER", "password": "CONVLAB_PG_PASSWORD",
                      "hostname": "CONVLAB_PG_HOST", "port": "CONVLAB_PG_PORT", "db_name": "CONVLAB_PG_DB"}


def profile() -> str:
    name = os.environ.get(PROFILE_VARIABLE) or "sqlite"
    if name not in PROFILES:
        raise ValueError(f"{PROFILE_VARIABLE}={name!r}: choose one of {', '.join(PROFILES)}")
    return name


def max_concurrent_runs() -> int:
    """How many runs Dagster's run queue lets go at once (CONVLAB_MAX_CONCURRENT_RUNS, default 4)."""
    value = os.environ.get(MAX_RUNS_VARIABLE) or str(DEFAULT_MAX_CONCURRENT_RUNS)
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{MAX_RUNS_VARIABLE}={value!r}: a whole number of runs, at least 1")
    return int(value)


def training_pool_limit(concurrent_runs: int) -> int:
    """Steps at once in the `gpu` pool: one per GPU where CUDA is, else one fewer than the run queue lets
    run (CPU training steps may overlap, they share the cores, not a device; the run slot left over takes
    the analyses as soon as their models are trained, instead of after every training queued before them)."""
    import torch  # here, not at the top: every process imports this module, few need torch's CUDA probe

    return torch.cuda.device_count() if torch.cuda.is_available() else max(1, concurrent_runs - 1)


def dagster_storage_yaml() -> str:
    """The `storage:` block of dagster.yaml: none for SQLite (Dagster's default, files in DAGSTER_HOME);
    PostgreSQL for the server profile, every credential read from the environment when Dagster starts."""
    if profile() != "server":
        return ""
    fields = "".join(f"      {field}: {{env: {variable}}}\n" for field, variable in POSTGRES_VARIABLES.items())
    # psycopg2 named: SQLAlchemy 2.1 would pick psycopg 3 for a plain postgresql:// URL, and
    # dagster-postgres is built on psycopg2 (its retries and its LISTEN/NOTIFY watcher).
    return f"storage:\n  postgres:\n    postgres_db:\n{fields}      scheme: postgresql+psycopg2\n"


# The instance settings of this lab. Pools: training steps sit in pool "gpu";
# its limit keeps one step per GPU, or lets CPU steps overlap up to one less
# than the run queue's limit (`training_pool_limit`). Enforced when runs are dequeued
# (granularity run): a run whose step waits inside it for a slot polls
# without pause and took a core from the training it waited for (12.3 minutes
# for make run, against 8.3 with this setting). Runs: a few at once
# (CONVLAB_MAX_CONCURRENT_RUNS), queued beyond that (each run is a process
# holding torch); the queue is looked at every second (at Dagster's 5 s, a
# core sat idle 2.5 s on average after each of 20 training runs). Run
# monitoring: the daemon frees the pool slots of a run that ended without
# freeing them (one whose process died: pipelines.recovery ends those
# FAILED). Telemetry off: no opt-out banner on the console; nux off: no
# "Join the Dagster community" dialog over the UI's first page.
DAGSTER_YAML_MARK = "# Written by convlab"


def dagster_yaml() -> str:
    runs = max_concurrent_runs()
    return f"""\
{DAGSTER_YAML_MARK}: rewritten when convlab changes it; delete this line to keep your own edits.
{dagster_storage_yaml()}concurrency:
  pools:
    default_limit: {training_pool_limit(runs)}
    granularity: run
  runs:
    max_concurrent_runs: {runs}
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    dequeue_interval_seconds: 1
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  cancel_timeout_seconds: 60
  poll_interval_seconds: 15
  free_slots_after_run_end_seconds: 10
telemetry:
  enabled: false
nux:
  enabled: false
"""


def ensure_dagster_home() -> Path:
    """DAGSTER_HOME (default .convlab/dagster), created with the dagster.yaml of the profile and concurrency
    asked for (rewritten when those change, unless its first line, the mark, was deleted)."""
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(convlab_home() / "dagster")))
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    wanted = dagster_yaml()
    if not config.exists() or (config.read_text().startswith(DAGSTER_YAML_MARK) and config.read_text() != wanted):
        config.write_text(wanted)
    return home


# Where `make ui` serves the storage folder over http (figures, the report): the Dagster UI shows a figure
# inline only through a short link (it folds longer markdown, an embedded PNG, behind a button), and
# Chromium opens no file:// link from an http page. Runs write these links into their metadata, so the
# address is fixed, not chosen per start; CONVLAB_FILES_URL moves it (make ui passes its own to Dagster).
DEFAULT_FILES_URL = "http://127.0.0.1:3001"


def files_url() -> str:
    return os.environ.get("CONVLAB_FILES_URL", DEFAULT_FILES_URL).rstrip("/")


def file_url(path: Path | str) -> str | None:
    """The http address of a file of the storage folder under `make ui`'s file route; None outside it."""
    from urllib.parse import quote

    try:
        relative = Path(path).resolve().relative_to(storage_dir())
    except ValueError:
        return None
    return f"{files_url()}/{quote(relative.as_posix())}"


def report_file() -> Path:
    """Where the `lecture_report` asset writes its HTML page (the newest one; MLflow keeps every one)."""
    return storage_dir() / "report" / "lecture_report.html"
