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

What a reader of the MLflow UI finds: one training run per partition (named
`seed_cnn/plain/s0`), all with the same metric names so Compare lines them
up, the training data as a dataset input, the model as a LoggedModel with
its accuracies, and the best model of each family by validation accuracy as
`models:/<family>@champion`. Analyses that explain trained models get runs
of their own (`analysis_run`), nested under the run they explain.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from pipelines.resources.paths import mlflow_dir

DEFAULT_EXPERIMENT = "convlab"
DEFAULT_UI_URL = "http://127.0.0.1:5000"
MAX_PARAM_LENGTH = 6000
DAGSTER_RUN_TAG = "dagster.run_id"
# MLflow 3 sorts experiments into kinds; "custom_model_development" is its "Machine learning"
# kind (runs, metrics, models), as opposed to GenAI development (traces, prompts).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
# MLflow 3.17's UI takes the GenAI or the machine-learning view from a switch it keeps in the
# browser (GenAI until flipped), and from this query parameter before that: links carry it.
UI_VIEW_QUERY = "?workflowType=machine_learning"
RUN_KIND_TAG = "convlab.kind"  # "training" or "analysis": filter with tags.`convlab.kind` = 'training'
EXPLAINS_TAG = "convlab.explains"  # the training runs an analysis run explains (JSON list of run ids)
PARENT_RUN_TAG = "mlflow.parentRunId"  # the UI nests a run under the run this names
DATASET_CONTEXT_TAG = "mlflow.data.context"
MAX_DIGEST_LENGTH = 36  # the longest dataset digest MLflow stores
CHAMPION_ALIAS = "champion"


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


def model_id_of(model_uri: str) -> str:
    """The LoggedModel id in an MLflow 3 model URI (`models:/<id>`)."""
    return model_uri.removeprefix("models:/")


@dataclass(frozen=True)
class DatasetRef:
    """A dataset as MLflow names it: metrics measured on it point at it."""

    name: str
    digest: str


@dataclass(frozen=True)
class Champion:
    """The outcome of offering a model to the registry."""

    registered_model: str
    promoted: bool  # the model is now `models:/<registered_model>@champion`
    version: str | None  # its registry version when promoted
    champion_validation_accuracy: float  # of the champion after the offer

    @property
    def uri(self) -> str:
        return f"models:/{self.registered_model}@{CHAMPION_ALIAS}"


class TrackedRun:
    """One MLflow run, written through the tracking resource's lock.

    `ends_after_each_write`: the run is marked FINISHED after every write, its end
    time moving with the last one. For runs with no block around their work (the
    analysis runs): none is left RUNNING if the step dies, and a failed write marks it FAILED.
    """

    def __init__(self, tracking: "MlflowTracking", run_id: str, experiment_id: str,
                 ends_after_each_write: bool = False):
        self.tracking = tracking
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.ends_after_each_write = ends_after_each_write
        self._logged_epochs: set[int] = set()

    @property
    def url(self) -> str:
        return f"{self.tracking.resolved_ui_url()}/#/experiments/{self.experiment_id}/runs/{self.run_id}{UI_VIEW_QUERY}"

    def _client(self):
        return self.tracking.client()

    def _write(self, action):
        if not self.ends_after_each_write:
            return self.tracking.write(action)
        try:
            result = self.tracking.write(action)
        except BaseException:
            self.tracking.write(lambda: self._client().set_terminated(self.run_id, "FAILED"))
            raise
        self.tracking.write(lambda: self._client().set_terminated(self.run_id, "FINISHED"))
        return result

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        flat = flatten_params(params)
        items = [Param(k, v) for k, v in flat.items()]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 params a batch
            self._write(lambda chunk=items[start:start + 100]: self._client().log_batch(self.run_id, params=chunk))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step or 0) for k, v in metrics.items() if v is not None]
        if batch:
            self._write(lambda: self._client().log_batch(self.run_id, metrics=batch))

    def link_metrics_to_model(self, model_uri: str, keys: Sequence[str], dataset: DatasetRef | None = None) -> None:
        """Show the run's latest value of each metric on the LoggedModel too (its "Metrics" table),
        measured on `dataset`. The same point is logged again with the model's id, so the
        run's own history gains nothing (MLflow drops a repeated point)."""
        from mlflow.entities import Metric

        client = self._client()
        batch = []
        for key in keys:
            history = client.get_metric_history(self.run_id, key)
            if not history:
                continue
            last = max(history, key=lambda m: (m.step, m.timestamp))
            batch.append(Metric(key, last.value, last.timestamp, last.step, model_id=model_id_of(model_uri),
                                dataset_name=dataset.name if dataset else None,
                                dataset_digest=dataset.digest if dataset else None))
        if batch:
            self._write(lambda: self._client().log_batch(self.run_id, metrics=batch))

    def log_dataset(self, name: str, sha256: str, source: Mapping[str, Any], profile: Mapping[str, Any],
                    context: str = "training") -> DatasetRef:
        """The run's input data (the runs table's Dataset column): digest = the data's sha256,
        cut to what MLflow stores; `profile` (split sizes and the like) shows beside it."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        ref = DatasetRef(name, sha256[:MAX_DIGEST_LENGTH])
        dataset = Dataset(name=ref.name, digest=ref.digest, source_type="local",
                          source=json.dumps(dict(source), default=str), profile=json.dumps(dict(profile), default=str))
        inputs = [DatasetInput(dataset, tags=[InputTag(DATASET_CONTEXT_TAG, context)])]
        self._write(lambda: self._client().log_inputs(self.run_id, datasets=inputs))
        return ref

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        batch = [RunTag(k, str(v)) for k, v in tags.items() if v is not None]
        if batch:
            self._write(lambda: self._client().log_batch(self.run_id, tags=batch))

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
        self._write(lambda: self._client().log_figure(self.run_id, figure, artifact_file))

    def log_artifact(self, local_path: str | Path, artifact_path: str | None = None) -> None:
        self._write(lambda: self._client().log_artifact(self.run_id, str(local_path), artifact_path))

    def log_text(self, text: str, artifact_file: str) -> None:
        self._write(lambda: self._client().log_text(self.run_id, text, artifact_file))

    def log_model(self, model, input_example, name: str = "model") -> str:
        """Log a torch module with its signature; returns the model URI (models:/<id>).

        Pickled, not MLflow's default torch.export program: an exported program loads as a
        module that refuses `.eval()` and accepts only the traced input shape. The module
        defining the model's class is pickled by value (cloudpickle), so loading needs torch
        and MLflow, not this project; its classes must refer to nothing but torch."""
        import cloudpickle
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
                                            input_example=example, serialization_format="pickle",
                                            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}",
                                                              f"cloudpickle=={cloudpickle.__version__}"])
            return info.model_uri

        defining = sys.modules[type(model).__module__]
        by_value = defining.__name__.split(".")[0] != "torch"
        if by_value:
            cloudpickle.register_pickle_by_value(defining)
        try:
            with _requirements_as_given():
                return self._write(log)
        finally:
            if by_value:
                cloudpickle.unregister_pickle_by_value(defining)


@contextlib.contextmanager
def _requirements_as_given() -> Iterator[None]:
    """MLflow's check of a logged model's requirements against the installed packages, skipped.

    The requirements `log_model` names are this interpreter's own versions, read from the modules
    themselves, so they are satisfied by construction; checking them maps every file of every
    installed distribution to its package first (2-3 s in each training process here, once when
    the model is saved and once when MLflow loads it back to try the input example). Without the
    hook (another MLflow), MLflow checks as usual."""
    from mlflow.utils import requirements_utils

    check = getattr(requirements_utils, "_check_requirement_satisfied", None)
    if check is None:
        yield
        return
    requirements_utils._check_requirement_satisfied = lambda requirement: None  # None: satisfied
    try:
        yield
    finally:
        requirements_utils._check_requirement_satisfied = check


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
            from mlflow.exceptions import MlflowException

            client = self.client()
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                try:
                    return client.create_experiment(name, artifact_location=self.artifact_location(),
                                                    tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
                except MlflowException as error:
                    # Another process created it between our read and our write (a tracking
                    # server has no file lock to serialise the two): use theirs.
                    if error.error_code != "RESOURCE_ALREADY_EXISTS":
                        raise
                    experiment = client.get_experiment_by_name(name)
            if experiment.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:  # made before the kind was set
                client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
            return experiment.experiment_id

        return self.write(get_or_create)

    def experiment_url(self) -> str:
        """The experiment's runs table in the MLflow UI, in its machine-learning view."""
        return f"{self.resolved_ui_url()}/#/experiments/{self.experiment_id()}/runs{UI_VIEW_QUERY}"

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
                "data_variant": experiment.variant, "seed": experiment.seed, RUN_KIND_TAG: "training"}
        with self.start_run(run_name=experiment.run_name, tags=tags) as run:
            run.log_params(params)
            yield run

    def run(self, run_id: str) -> TrackedRun:
        """An existing run, to add to it what belongs to that run (its model's own evaluation)."""
        return TrackedRun(self, run_id, self.client().get_run(run_id).info.experiment_id)

    def analysis_run(self, name: str, explains: Sequence[str], dagster_run_id: str | None = None) -> TrackedRun:
        """A run of its own for an analysis (figures, measures) of trained models: the training
        runs keep only what every training run has, so Compare lines them up. Nested in the
        UI under the run it explains when it explains one; tagged with all it explains.
        It ends FINISHED after each write (see `TrackedRun`)."""
        client = self.client()
        explained = {run_id: client.get_run(run_id) for run_id in explains}
        names = [run.info.run_name or run_id for run_id, run in explained.items()]
        tags = {RUN_KIND_TAG: "analysis", "dagster.asset_key": name, DAGSTER_RUN_TAG: dagster_run_id,
                EXPLAINS_TAG: json.dumps(list(explained)), "convlab.explains_runs": ", ".join(names)}
        if len(explained) == 1:
            tags[PARENT_RUN_TAG] = next(iter(explained))
        experiment_id = self.experiment_id()
        run = self.write(lambda: client.create_run(
            experiment_id, run_name=f"{name} of {', '.join(names)}",
            tags={k: str(v) for k, v in tags.items() if v is not None}))
        tracked = TrackedRun(self, run.info.run_id, experiment_id, ends_after_each_write=True)
        self.write(lambda: client.set_terminated(tracked.run_id, "FINISHED"))
        return tracked

    def offer_champion(self, registered_model: str, model_uri: str, run_id: str, validation_accuracy: float,
                       data_identity: str) -> Champion:
        """Register the model as `models:/<registered_model>@champion` if it beats the champion's
        validation accuracy (never test accuracy: the test digits decide nothing). A champion
        trained on other data (another data identity) is not comparable: the newer model
        takes its place. Compare-and-set under the store's writer lock, so partitions
        finishing together cannot both win (with a remote server, the last one wins)."""
        import mlflow
        from mlflow.exceptions import MlflowException

        def offer() -> Champion:
            client = self.client()
            try:
                current = client.get_model_version_by_alias(registered_model, CHAMPION_ALIAS)
            except MlflowException:  # no such model or no champion yet
                current = None
            if current is not None and current.tags.get("data_identity") == data_identity:
                best = float(current.tags.get("validation_accuracy", "nan"))
                if not validation_accuracy > best:
                    return Champion(registered_model, False, None, best)
            mlflow.set_tracking_uri(self.resolved_uri())
            version = mlflow.register_model(model_uri, registered_model, tags={
                "validation_accuracy": repr(float(validation_accuracy)), "data_identity": data_identity,
                "mlflow_run_id": run_id})
            client.set_registered_model_alias(registered_model, CHAMPION_ALIAS, version.version)
            return Champion(registered_model, True, str(version.version), float(validation_accuracy))

        return self.write(offer)

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

