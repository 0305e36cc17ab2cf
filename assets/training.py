"""[training] One trained model per (model, data variant) partition, each an MLflow run."""

from pathlib import Path

import dagster as dg
import pandas as pd
import torch
from pydantic import Field
from torch import nn

from conv_core import claims, plots
from conv_core.counting import count_parameters
from conv_core.data import load_test_split
from conv_core.evaluate import evaluate
from conv_core.export import portable_model
from conv_core.infinite import InfiniteMnist
from conv_core.models import build_model
from conv_core.train import TrainConfig, resolve_bf16, train
from pipelines.compute import Compute
from pipelines.figures import figure_metadata
from pipelines.metadata import table_metadata
from pipelines.partitions import training_partitions
from pipelines.paths import storage_dir
from pipelines.tracking import DAGSTER_RUN_TAG, MlflowTracking
from pipelines.versions import content_hash, git_commit, library_versions, versioned_output

GROUP = "training"

# What a Kubernetes deployment (dagster-k8s executor or run launcher) needs to
# put a training step on a node with a GPU.
GPU_OP_TAGS = {
    "dagster-k8s/config": {
        "container_config": {"resources": {"requests": {"nvidia.com/gpu": "1"}, "limits": {"nvidia.com/gpu": "1"}}},
    },
}


class TrainSettings(dg.Config):
    """Training hyperparameters (defaults: conv_core.train.TrainConfig). Model and data
    variant come from the partition, the device from the compute resource."""

    epochs: int = TrainConfig.epochs
    batch_size: int = TrainConfig.batch_size
    lr: float = TrainConfig.lr
    weight_decay: float = TrainConfig.weight_decay
    seed: int = TrainConfig.seed
    label_smoothing: float = TrainConfig.label_smoothing
    infinite_mode: str = Field(default="infimnist", description="deformations of the infinite variant: infimnist | elastic")
    precision: str = Field(default="auto", description="auto (bf16 autocast where the device has bf16 units, "
                                                       "else fp32) | bf16 | fp32")


PRECISIONS = {"auto": None, "bf16": True, "fp32": False}  # -> TrainConfig.bf16


def _train_config(settings: TrainSettings, model: str, variant: str, device: torch.device) -> TrainConfig:
    if settings.precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {settings.precision!r}")
    hyperparameters = settings.model_dump(exclude={"infinite_mode", "precision"})
    return TrainConfig(model=model, shift_augment=variant == "shifted", device=device.type,
                       bf16=PRECISIONS[settings.precision], **hyperparameters)


def _epoch_data(variant: str, mnist: dict, mode: str):
    """For the infinite variant: epoch e trains on deformed digits of index range e."""
    if variant != "infinite":
        return None
    stream = InfiniteMnist(mnist["train_images"], mnist["train_labels"], mnist["test_images"],
                           mnist["test_labels"], mode=mode)
    count = len(mnist["train_labels"])
    return lambda epoch: stream.images(stream.epoch_indices(epoch, count))


def _first_conv(model: nn.Module) -> nn.Conv2d | None:
    return next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)


def load_trained(value: dict) -> nn.Module:
    """The trained torch module from a `trained_model` value."""
    model = build_model(value["model"])
    model.load_state_dict(value["state_dict"])
    return model.eval()


def model_guards(state_dict: dict, accuracy: float) -> list[dg.AssetCheckResult]:
    """Blocking guards on a trained model: finite weights, accuracy above a floor."""
    bad = [name for name, tensor in state_dict.items() if tensor.is_floating_point() and not bool(tensor.isfinite().all())]
    return [
        dg.AssetCheckResult(check_name="finite_weights", passed=not bad,
                            metadata={"non_finite_tensors": ", ".join(bad) or "none"}),
        dg.AssetCheckResult(check_name="accuracy_floor", passed=accuracy > claims.ACCURACY_FLOOR,
                            metadata={"test_accuracy": accuracy, "floor": claims.ACCURACY_FLOOR}),
    ]


@dg.asset(
    partitions_def=training_partitions,
    group_name=GROUP,
    code_version="1",
    pool="gpu",
    op_tags=GPU_OP_TAGS,
    check_specs=[dg.AssetCheckSpec("finite_weights", asset="trained_model", blocking=True,
                                   description="Every weight and bias is finite."),
                 dg.AssetCheckSpec("accuracy_floor", asset="trained_model", blocking=True,
                                   description=f"Test accuracy above {claims.ACCURACY_FLOOR} (chance is 0.1).")],
    description="A model of the family trained on one data variant; one MLflow run per materialisation.",
)
def trained_model(context: dg.AssetExecutionContext, config: TrainSettings, mnist: dict,
                  mlflow_tracking: MlflowTracking, compute: Compute):
    keys = context.partition_key.keys_by_dimension
    model_name, variant = keys["model"], keys["data"]
    device = compute.torch_device()
    train_config = _train_config(config, model_name, variant, device)
    provenance = mnist["provenance"]
    # The version a user sees change in the UI: every setting that shapes the
    # weights, and the exact data (device excluded: CPU and GPU runs are peers).
    settings = {k: v for k, v in train_config.as_dict().items() if k != "device"}
    if variant == "infinite":
        settings["infinite_mode"] = config.infinite_mode
    version = content_hash(settings, provenance["sha256_combined"], provenance.get("subset"))
    checkpoint = storage_dir() / "checkpoints" / f"{model_name}__{variant}" / f"{version}.pt"
    counts = count_parameters(model_name)
    tags = {DAGSTER_RUN_TAG: context.run.run_id, "dagster.asset_key": context.asset_key.to_user_string(),
            "dagster.partition": context.partition_key, "model": model_name, "data_variant": variant}

    with mlflow_tracking.start_run(run_name=f"{model_name}/{variant}", tags=tags) as run:
        run.log_params({
            "config": train_config.as_dict(), "model": model_name, "data_variant": variant,
            "infinite_mode": config.infinite_mode if variant == "infinite" else "none",
            "data_source": provenance["source"], "data_sha256": provenance["sha256_combined"],
            "data_is_5000_digit_sample": provenance.get("is_sample", False),
            "train_size": len(mnist["train_labels"]), "test_size": len(mnist["test_labels"]),
            "seed": train_config.seed, "device": str(device),
            "precision": "bf16" if resolve_bf16(train_config, device) else "fp32", "weights": counts.weights,
            "parameters": counts.parameters, "versions": library_versions(),
            "git_commit": git_commit() or "unknown", "config_hash": version,
        })

        logged_epochs = set()

        def log_epoch(stats, _model=None):
            run.log_metrics({k: v for k, v in stats.as_dict().items() if k != "epoch"}, step=stats.epoch)
            logged_epochs.add(stats.epoch)

        # A checkpoint is left only by an interrupted materialisation of this
        # exact version: continue it rather than start over.
        result = train(train_config, mnist["train_images"], mnist["train_labels"], mnist["test_images"],
                       mnist["test_labels"], on_epoch=log_epoch, checkpoint_path=checkpoint, resume=True,
                       log=context.log.info, epoch_data=_epoch_data(variant, mnist, config.infinite_mode))
        for stats in result.history:  # epochs done before a resume belong to this run too
            if stats.epoch not in logged_epochs:
                log_epoch(stats)
        evaluation = evaluate(result.model, mnist["test_images"], mnist["test_labels"])
        history = [stats.as_dict() for stats in result.history]
        run.log_metrics({"test_accuracy": evaluation.accuracy, "test_loss": evaluation.loss,
                         "training_seconds": result.seconds}, step=train_config.epochs)

        figures = {"training_curves": plots.training_curves(history, f"{model_name} / {variant}"),
                   "confusion_matrix": plots.confusion_matrix(evaluation.confusion, f"{model_name} / {variant}")}
        conv = _first_conv(result.model)
        if conv is not None:
            figures["first_layer_filters"] = plots.conv_filters(conv.weight, f"{model_name}: first-layer filters")
        metadata = {}
        for name, figure in figures.items():
            run.log_figure(figure, f"figures/{name}.png")
            metadata.update(figure_metadata(context, figure, name))
        example = (mnist["test_images"][:4].float() / 255).unsqueeze(1).numpy()
        model_uri = run.log_model(portable_model(result.model), input_example=example)
    checkpoint.unlink(missing_ok=True)  # finished and recorded: nothing left to resume

    value = {
        "model": model_name, "data_variant": variant, "state_dict": result.model.state_dict(),
        "config": train_config.as_dict(), "history": history, "test_accuracy": evaluation.accuracy,
        "training_seconds": result.seconds, "device": result.device, "precision": result.precision,
        "mlflow_run_id": run.run_id,
        "mlflow_model_uri": model_uri, "data_sha256": provenance["sha256_combined"], "version": version,
    }
    context.log.info(f"{model_name}/{variant}: test accuracy {evaluation.accuracy:.4f} in {result.seconds:.1f} s")
    yield versioned_output(value, version, metadata={
        "test_accuracy": evaluation.accuracy,
        "final_train_loss": history[-1]["train_loss"],
        "epochs": train_config.epochs,
        "training_seconds": round(result.seconds, 2),
        "images_per_second": round(history[-1]["images_per_second"]),
        "weights": counts.weights,
        "device": result.device,
        "precision": result.precision,
        "config_hash": version,
        "mlflow_run_id": run.run_id,
        "mlflow_run": dg.MetadataValue.url(run.url),
        "mlflow_model_uri": model_uri,
        **metadata,
    })
    yield from model_guards(value["state_dict"], evaluation.accuracy)


class EvaluationSettings(dg.Config):
    heldout_idx_dir: str | None = Field(
        default=None, description="an IDX folder whose t10k-* test files are evaluated too "
                                  "(e.g. the official 10,000 test digits beside a run on the offline sample)")


@dg.asset(
    partitions_def=training_partitions,
    group_name=GROUP,
    code_version="2",
    description="Test accuracy, per-class accuracy and confusion matrix of a trained model.",
)
def model_evaluation(context: dg.AssetExecutionContext, config: EvaluationSettings, trained_model: dict,
                     mnist: dict, mlflow_tracking: MlflowTracking) -> dg.Output[dict]:
    model = load_trained(trained_model)
    evaluation = evaluate(model, mnist["test_images"], mnist["test_labels"])
    title = f"{trained_model['model']} / {trained_model['data_variant']}: accuracy {evaluation.accuracy:.2%}"
    per_class = table_metadata(pd.DataFrame({"digit": range(10), "accuracy": evaluation.per_class_accuracy}).round(4))
    value = {**evaluation.as_dict(), "model": trained_model["model"], "data_variant": trained_model["data_variant"],
             "mlflow_run_id": trained_model["mlflow_run_id"]}
    metadata = {}
    if config.heldout_idx_dir:
        heldout = evaluate(model, *load_test_split(config.heldout_idx_dir))
        value["heldout"] = {**heldout.as_dict(), "idx_dir": str(Path(config.heldout_idx_dir).resolve())}
        metadata = {"heldout_accuracy": heldout.accuracy, "heldout_count": heldout.count,
                    "heldout_idx_dir": str(Path(config.heldout_idx_dir).resolve())}
        mlflow_tracking.run(trained_model["mlflow_run_id"]).log_metrics(
            {"heldout_accuracy": heldout.accuracy, "heldout_loss": heldout.loss})
    return dg.Output(value, metadata={
        "test_accuracy": evaluation.accuracy,
        "test_loss": evaluation.loss,
        "test_count": evaluation.count,
        "per_class_accuracy": per_class,
        "mlflow_run_id": trained_model["mlflow_run_id"],
        **metadata,
        **figure_metadata(context, plots.confusion_matrix(evaluation.confusion, title), "confusion_matrix"),
    })
