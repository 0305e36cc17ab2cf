"""MLflow tracking as a Dagster resource: one complete MLflow run per training.

Design for concurrent steps (the multiprocess executor, several partitions at
once): the default store is one SQLite file, and SQLite lets one writer in at
a time; MLflow gives up with "database is locked" when a second one waits too
long. So every write to a SQLite store goes through an exclusive file lock
beside the database (`fcntl.flock`, released by the OS even when a process
is killed), plus a few retries for readers outside this project (the MLflow
UI). A remote tracking server needs neither and gets neither.

Runs are driven through `MlflowClient` with explicit run ids, never the
fluent API's global "active run", so a step's run cannot leak into another.
A run ends FINISHED when its block completes and FAILED on any exception,
interrupt included; runs of a process killed outright are closed by the
run-failure sensor (`close_orphaned_runs`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from pipelines.resources.paths import mlflow_dir

DEFAULT_EXPERIMENT = "convlab"
DEFAULT_UI_URL = "http://127.0.0.1:5000"
MAX_PARAM_LENGTH = 6000
DAGSTER_RUN_TAG = "dagster.run_id"


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, out)
    else:
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        out[prefix] = text[:MAX_PARAM_LENGTH]


def flatten_params(params: Mapping[str, Any]) -> dict[str, str]:
    """Nested dicts become dotted keys; values become strings MLflow accepts."""
    out: dict[str, str] = {}
    _flatten("", params, out)
    return out


class TrackedRun:
    """One MLflow run, written through the tracking resource's lock."""

    def __init__(self, tracking: "MlflowTracking", run_id: str, experiment_id: str):
        self.tracking = tracking
        self.run_id = run_id
        self.experiment_id = experiment_id
        self._logged_epochs: set[int] = set()

    @property
    def url(self) -> str:
        return f"{self.tracking.resolved_ui_url()}/#/experiments/{self.experiment_id}/runs/{self.run_id}"

    def _client(self):
        return self.tracking.client()

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        flat = flatten_params(params)
        items = [Param(k, v) for k, v in flat.items()]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 params a batch
            self.tracking.write(lambda chunk=items[start:start + 100]: self._client().log_batch(self.run_id, params=chunk))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step or 0) for k, v in metrics.items() if v is not None]
        if batch:
            self.tracking.write(lambda: self._client().log_batch(self.run_id, metrics=batch))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        batch = [RunTag(k, str(v)) for k, v in tags.items() if v is not None]
        if batch:
            self.tracking.write(lambda: self._client().log_batch(self.run_id, tags=batch))

    def epoch_logger(self):
        """A `train(on_epoch=...)` callback: each epoch's statistics as metrics at step = epoch."""
        def log_epoch(stats, _model=None):
            self.log_metrics({k: v for k, v in stats.as_dict().items() if k != "epoch" and v is not None},
                             step=stats.epoch)
            self._logged_epochs.add(stats.epoch)

        return log_epoch

    def log_history(self, history) -> None:
        """Epochs not logged yet (done before a resumed run started) belong to this run too."""
        log_epoch = self.epoch_logger()
        for stats in history:
            if stats.epoch not in self._logged_epochs:
                log_epoch(stats)

    def log_figure(self, figure, artifact_file: str) -> None:
        self.tracking.write(lambda: self._client().log_figure(self.run_id, figure, artifact_file))

    def log_artifact(self, local_path: str | Path, artifact_path: str | None = None) -> None:
        self.tracking.write(lambda: self._client().log_artifact(self.run_id, str(local_path), artifact_path))

    def log_text(self, text: str, artifact_file: str) -> None:
        self.tracking.write(lambda: self._client().log_text(self.run_id, text, artifact_file))

    def log_model(self, model, input_example, name: str = "model") -> str:
        """Log a torch module with its signature; returns the model URI (models:/<id>)."""
        import mlflow
        import numpy as np
        import torch
        from mlflow.models import infer_signature

        example = np.asarray(input_example, dtype=np.float32)
        with torch.no_grad():
            output = model(torch.from_numpy(example)).numpy()
        signature = infer_signature(example, output)

        def log():
            mlflow.set_tracking_uri(self.tracking.resolved_uri())
            # The logged model belongs to the fluent API's current experiment, not
            # the run's: without this it lands in "Default" (and ./mlruns).
            mlflow.set_experiment(experiment_id=self.experiment_id)
            # Naming the requirement skips MLflow's slow inference of it (a subprocess).
            info = mlflow.pytorch.log_model(model, name=name, run_id=self.run_id, signature=signature,
                                            input_example=example, pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"])
            return info.model_uri

        return self.tracking.write(log)


class MlflowTracking(dg.ConfigurableResource):
    """Where training runs are recorded. Unset fields fall back to MLflow's own
    environment variables, then to an embedded SQLite store under .convlab/mlflow."""

    tracking_uri: str | None = Field(default=None, description="MLflow tracking URI; default: $MLFLOW_TRACKING_URI, else sqlite under .convlab/mlflow")
    experiment_name: str | None = Field(default=None, description="default: $MLFLOW_EXPERIMENT_NAME, else 'convlab'")
    ui_url: str | None = Field(default=None, description="base URL of the MLflow UI for links; default: $CONVLAB_MLFLOW_UI_URL, else http://127.0.0.1:5000")

    def resolved_uri(self) -> str:
        if self.tracking_uri:
            return self.tracking_uri
        if os.environ.get("MLFLOW_TRACKING_URI"):
            return os.environ["MLFLOW_TRACKING_URI"]
        return f"sqlite:///{mlflow_dir() / 'mlflow.db'}"

    def resolved_experiment(self) -> str:
        return self.experiment_name or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT

    def resolved_ui_url(self) -> str:
        return (self.ui_url or os.environ.get("CONVLAB_MLFLOW_UI_URL") or DEFAULT_UI_URL).rstrip("/")

    def _sqlite_path(self) -> Path | None:
        uri = self.resolved_uri()
        return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None

    def artifact_location(self) -> str | None:
        """Artifacts beside an embedded SQLite store; a server decides for itself."""
        db = self._sqlite_path()
        return (db.parent / "artifacts").resolve().as_uri() if db else None

    def client(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.resolved_uri())

    @contextlib.contextmanager
    def _writer_lock(self) -> Iterator[None]:
        db = self._sqlite_path()
        if db is None:
            yield
            return
        db.parent.mkdir(parents=True, exist_ok=True)
        with open(f"{db}.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def write(self, action, attempts: int = 6):
        """Run one write to the store alone, retrying if a foreign reader holds it."""
        for attempt in range(attempts):
            try:
                with self._writer_lock():
                    return action()
            except Exception as error:  # MLflow wraps sqlite's OperationalError in several ways
                if "database is locked" not in str(error) or attempt == attempts - 1:
                    raise
                time.sleep(0.2 * 2 ** attempt + random.random() * 0.1)

    def experiment_id(self) -> str:
        name = self.resolved_experiment()

        def get_or_create() -> str:
            client = self.client()
            experiment = client.get_experiment_by_name(name)
            if experiment is not None:
                return experiment.experiment_id
            return client.create_experiment(name, artifact_location=self.artifact_location())

        return self.write(get_or_create)

    @contextlib.contextmanager
    def start_run(self, run_name: str, tags: Mapping[str, Any] | None = None) -> Iterator[TrackedRun]:
        """An MLflow run that ends FINISHED, or FAILED if the block raises (interrupts too)."""
        experiment_id = self.experiment_id()
        run = self.write(lambda: self.client().create_run(
            experiment_id, run_name=run_name, tags={k: str(v) for k, v in (tags or {}).items() if v is not None}))
        tracked = TrackedRun(self, run.info.run_id, experiment_id)
        try:
            yield tracked
        except BaseException:
            self.write(lambda: self.client().set_terminated(tracked.run_id, "FAILED"))
            raise
        self.write(lambda: self.client().set_terminated(tracked.run_id, "FINISHED"))

    @contextlib.contextmanager
    def training_run(self, experiment, dagster_run_id: str, params: Mapping[str, Any]) -> Iterator[TrackedRun]:
        """The MLflow run of one experiment (`seed_cnn/shifted/s1`), tagged with its partition and seed."""
        tags = {DAGSTER_RUN_TAG: dagster_run_id, "dagster.asset_key": "trained_model",
                "dagster.partition": experiment.key, "model": experiment.model,
                "data_variant": experiment.variant, "seed": experiment.seed}
        with self.start_run(run_name=experiment.run_name, tags=tags) as run:
            run.log_params(params)
            yield run

    def run(self, run_id: str) -> TrackedRun:
        """An existing run, to add artifacts to it (analyses log beside the training)."""
        return TrackedRun(self, run_id, self.client().get_run(run_id).info.experiment_id)

    def search_runs(self, filter_string: str = "", order_by: list[str] | None = None):
        """All runs of the experiment as a pandas DataFrame (mlflow.search_runs)."""
        import mlflow

        mlflow.set_tracking_uri(self.resolved_uri())
        return mlflow.search_runs(experiment_ids=[self.experiment_id()], filter_string=filter_string,
                                  order_by=order_by or ["attributes.start_time DESC"])

    def close_orphaned_runs(self, dagster_run_id: str) -> list[str]:
        """Mark FAILED every run of a Dagster run still RUNNING (its process died)."""
        client = self.client()
        runs = client.search_runs([self.experiment_id()],
                                  filter_string=f"tags.`{DAGSTER_RUN_TAG}` = '{dagster_run_id}' and attributes.status = 'RUNNING'")
        for run in runs:
            self.write(lambda run_id=run.info.run_id: client.set_terminated(run_id, "FAILED"))
        return [run.info.run_id for run in runs]

