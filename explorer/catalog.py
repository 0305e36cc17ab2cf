"""The lab's trained models: listed from MLflow's runs, loaded from the fastest place that has them.

A model is named by its MLflow run's name (`seed_cnn/plain/s0`, the newest
finished run of that name), its run id, or any MLflow model URI
(`models:/<id>`, `runs:/<run id>/model`). A run's weights are read from the
`trained_model` value the IO manager stored for its partition when that value
belongs to this very run (a plain state dict, no pickled code, a few
milliseconds); otherwise from the model the run logged in MLflow.

Listing only reads the tracking store: a lab that never trained has no store,
and the explorer says so instead of creating one.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from conv_core.models import MODEL_NAMES, LayerNet, build_model
from pipelines.resources.paths import storage_dir
from pipelines.resources.tracking import MlflowTracking

DEFAULT_MODEL = "seed_cnn/plain/s0"
COMPARISON_MODEL = "mlp/plain/s0"
URI_SCHEMES = ("models:/", "runs:/")
TRAINING_RUNS = "tags.`dagster.asset_key` = 'trained_model' and attributes.status = 'FINISHED'"


class ModelNotFoundError(LookupError):
    """No model answers to the name; the message says what there is."""


@dataclass(frozen=True)
class TrainingRun:
    """One finished training run of the lab, as the explorer lists it."""

    run_id: str
    name: str
    model: str
    data_variant: str
    seed: str
    partition: str
    test_accuracy: float | None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class LoadedModel:
    ref: str
    label: str  # what the page shows: the run's name, or the URI
    source: str  # where the weights came from, in words
    network: LayerNet


def _from_run(run) -> TrainingRun:
    tags, params = run.data.tags, run.data.params
    return TrainingRun(run_id=run.info.run_id, name=run.info.run_name or run.info.run_id,
                       model=tags.get("model") or params.get("model", "?"),
                       data_variant=tags.get("data_variant", "?"), seed=tags.get("seed", "?"),
                       partition=tags.get("dagster.partition", ""),
                       test_accuracy=run.data.metrics.get("test_accuracy"))


def layer_net_from_portable(portable: nn.Module, hint: str | None = None) -> LayerNet:
    """The lab's `LayerNet` holding the weights of a logged (portable) model, so conv_core can look inside.

    The portable form (conv_core.export) has the same stage names, with the input
    normalisation as a fixed 1x1 convolution; the architecture is the one whose
    weight shapes match, `hint` tried first.
    """
    weights = {k: v for k, v in portable.state_dict().items() if not k.startswith("normalize.")}
    shapes = {k: tuple(v.shape) for k, v in weights.items()}
    for name in sorted(MODEL_NAMES, key=lambda n: n != hint):
        network = build_model(name)
        expected = {k: tuple(v.shape) for k, v in network.state_dict().items() if not k.startswith("normalize.")}
        if expected != shapes:
            continue
        network.load_state_dict(weights, strict=False)  # the normalisation's buffers are set below
        affine = getattr(portable, "normalize", None)
        if isinstance(affine, nn.Conv2d):  # computes x / std - mean / std
            std = 1.0 / float(affine.weight.flatten()[0])
            with torch.no_grad():
                network.normalize.std.fill_(std)
                network.normalize.mean.fill_(-float(affine.bias[0]) * std)
        return network.eval()
    raise ModelNotFoundError(f"the model's layers match none of the lab's architectures ({', '.join(MODEL_NAMES)})")


class Catalog:
    """Finds and loads models; keeps the last few loaded."""

    def __init__(self, tracking: MlflowTracking | None = None, storage: Path | None = None, keep: int = 4):
        self.tracking = tracking or MlflowTracking()
        self.storage = storage or storage_dir()
        self.keep = keep
        self._loaded: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ listing

    def where(self) -> str:
        return self.tracking.resolved_uri()

    def _experiment_id(self) -> str | None:
        uri = self.tracking.resolved_uri()
        if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
            return None
        experiment = self.tracking.client().get_experiment_by_name(self.tracking.resolved_experiment())
        return experiment.experiment_id if experiment else None

    def runs(self) -> list[TrainingRun]:
        """The newest finished training run of each name, newest first."""
        experiment_id = self._experiment_id()
        if experiment_id is None:
            return []
        found = self.tracking.client().search_runs([experiment_id], filter_string=TRAINING_RUNS,
                                                   order_by=["attributes.start_time DESC"], max_results=1000)
        newest: dict[str, TrainingRun] = {}
        for run in found:
            newest.setdefault(run.info.run_name or run.info.run_id, _from_run(run))
        return list(newest.values())

    def _find_run(self, ref: str) -> TrainingRun:
        runs = self.runs()
        for run in runs:
            if ref in (run.name, run.run_id):
                return run
        # A run id of an older run with the same name is not in the list: ask the store.
        if self._experiment_id() is not None:
            try:
                run = self.tracking.client().get_run(ref)
            except Exception:  # MLflow raises its own exception classes for an unknown id
                run = None
            if run is not None and run.data.tags.get("dagster.asset_key") == "trained_model":
                return _from_run(run)
        known = ", ".join(run.name for run in runs) or "none: train one with `make run`"
        raise ModelNotFoundError(f"no trained model named {ref!r} in {self.where()}; "
                                 f"known: {known}; or give an MLflow model URI (models:/...)")

    # ------------------------------------------------------------------ loading

    def load(self, ref: str) -> LoadedModel:
        """The model named `ref` (run name, run id or model URI), loaded once and kept."""
        ref = (ref or "").strip()
        if not ref:
            raise ModelNotFoundError("no model named: choose a trained run or give a models:/ URI")
        with self._lock:
            if ref in self._loaded:
                self._loaded.move_to_end(ref)
                return self._loaded[ref]
            loaded = self._load_uri(ref) if ref.startswith(URI_SCHEMES) else self._load_run(ref)
            self._loaded[ref] = loaded
            while len(self._loaded) > self.keep:
                self._loaded.popitem(last=False)
            return loaded

    def _stored_value(self, run: TrainingRun) -> tuple[dict, Path] | None:
        path = self.storage / "trained_model" / f"{run.partition}.pt"
        if not run.partition or not path.exists():
            return None
        value = torch.load(path, weights_only=True)
        return (value, path) if value.get("mlflow_run_id") == run.run_id else None

    def _load_run(self, ref: str) -> LoadedModel:
        run = self._find_run(ref)
        stored = self._stored_value(run)
        if stored is not None:
            value, path = stored
            network = build_model(value["model"])
            network.load_state_dict(value["state_dict"])
            return LoadedModel(ref, run.name, f"weights stored by the IO manager at {path}", network.eval())
        uri = self._logged_model_uri(run)
        network = self._portable(uri, hint=run.model)
        return LoadedModel(ref, run.name, f"the MLflow model {uri}", network)

    def _logged_model_uri(self, run: TrainingRun) -> str:
        experiment_id = self._experiment_id()
        models = self.tracking.client().search_logged_models(
            [experiment_id], filter_string=f"source_run_id = '{run.run_id}'", max_results=1)
        if not models:
            raise ModelNotFoundError(f"run {run.name} ({run.run_id}) logged no model and its stored weights "
                                     "are gone or belong to a newer run: materialise it again")
        return f"models:/{models[0].model_id}"

    def _load_uri(self, uri: str) -> LoadedModel:
        return LoadedModel(uri, uri, f"the MLflow model {uri}", self._portable(uri))

    def _portable(self, uri: str, hint: str | None = None) -> LayerNet:
        import mlflow

        mlflow.set_tracking_uri(self.tracking.resolved_uri())
        try:
            portable = mlflow.pytorch.load_model(uri, map_location="cpu")
        except Exception as error:  # MLflow's errors for a missing model vary by URI scheme
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ModelNotFoundError(f"MLflow could not load {uri}: {first_line}") from error
        return layer_net_from_portable(portable, hint)
