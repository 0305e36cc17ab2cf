"""[training] One trained model per experiment partition (model x data variant x seed), each an MLflow run."""

from dataclasses import replace
from pathlib import Path

import dagster as dg
import pandas as pd
import torch
from pydantic import Field
from torch import nn

from assets.torchrun_training import train_data_parallel
from conv_core import claims, plots
from conv_core.counting import count_parameters
from conv_core.data import load_test_split
from conv_core.evaluate import evaluate
from conv_core.export import portable_model
from conv_core.infinite import InfiniteMnist
from conv_core.datasets import DEFAULT_DATASET, MNIST, get_dataset
from conv_core.models import build_model, model_normalization
from conv_core.experiments import Experiment
from conv_core.infinite import Mode
from conv_core.train import (DEFAULT_RECIPE, MAX_BUDGET_EPOCHS, PRECISIONS, RECIPES, Precision, TrainConfig,
                             planned_epochs, resolve_bf16, train)
from pipelines.resources.compute import Compute
from pipelines.resources.figures import figure_paths, publish_figures
from pipelines.resources.metadata import table_metadata
from pipelines.resources.partitions import experiment_of, training_partitions
from pipelines.resources.paths import storage_dir
from pipelines.resources.tracking import MlflowTracking
from pipelines.resources.versions import content_hash, git_commit, library_versions, versioned_output

GROUP = "training"
# Set on the MLflow run of a model that failed its blocking checks (its run ends FAILED).
REJECTED_TAG = "convlab.failed_checks"

# What a Kubernetes deployment (dagster-k8s executor or run launcher) needs to
# put a training step on a node with a GPU.
GPU_OP_TAGS = {
    "dagster-k8s/config": {
        "container_config": {"resources": {"requests": {"nvidia.com/gpu": "1"}, "limits": {"nvidia.com/gpu": "1"}}},
    },
}


def _recipes_text(field: str) -> str:
    """"seed_cnn 256, others 128": each model's own value of a recipe field, for a config description."""
    own = ", ".join(f"{model} {getattr(recipe, field)}" for model, recipe in RECIPES.items())
    return f"{own}, others {getattr(DEFAULT_RECIPE, field)}"


class TrainSettings(dg.Config):
    """Training hyperparameters (defaults: conv_core.train.TrainConfig). Model, data
    variant and seed come from the partition, the device from the compute resource."""

    epochs: int | None = Field(default=None, description="passes over the training images; unset: as many as "
                               f"budget_images buys (budget / training images, 1 to {MAX_BUDGET_EPOCHS})")
    budget_images: int = Field(default=TrainConfig.budget_images,
                               description="images a training run sees when epochs is unset (chosen on the "
                                           "validation split)")
    batch_size: int | None = Field(default=None, description="digits per optimiser step; unset: the model's own "
                                   f"({_recipes_text('batch_size')})")
    lr: float | None = Field(default=None, description="peak learning rate of the one-cycle schedule (Adam); "
                             f"unset: the model's own ({_recipes_text('lr')})")
    weight_decay: float = Field(default=TrainConfig.weight_decay, description="Adam's L2 penalty")
    label_smoothing: float = Field(default=TrainConfig.label_smoothing,
                                   description="share of each target spread over the other classes")
    infinite_mode: Mode = Field(default="infimnist", description="deformations of the infinite variant: "
                                "infimnist (tangent vectors and fields) or elastic (Simard)")
    precision: Precision = Field(default="auto", description="auto (bf16 autocast where the device has bf16 "
                                 "units, else fp32), bf16 or fp32")
    processes: int = Field(default=1, ge=1, description="data-parallel processes: above 1 the step runs a torchrun "
                           "job (gloo on CPU, one GPU per process with nccl); the global batch stays batch_size")


def _train_config(settings: TrainSettings, experiment: Experiment, device: torch.device,
                  train_count: int | None = None) -> TrainConfig:
    """The run's TrainConfig; with `train_count`, its epochs settled (the budget's, unless given)."""
    hyperparameters = settings.model_dump(exclude={"infinite_mode", "precision", "processes"})
    config = TrainConfig(model=experiment.model, seed=experiment.seed, shift_augment=experiment.variant == "shifted",
                         device=device.type, bf16=PRECISIONS[settings.precision], **hyperparameters)
    return config if train_count is None else replace(config, epochs=planned_epochs(config, train_count))


def training_version(train_config: TrainConfig, infinite_mode: str | None, data_identity: str,
                     device: torch.device) -> str:
    """The version a user sees change in the UI: every setting that shapes the weights (seed included),
    the arithmetic actually used and the exact data; not the device: CPU and GPU runs are peers."""
    settings = {k: v for k, v in train_config.as_dict().items() if k != "device"}
    # `auto` and `fp32` give the same weights on a CPU without bf16 units; `auto` on one with them does not.
    settings["bf16"] = resolve_bf16(train_config, device)
    if infinite_mode is not None:
        settings["infinite_mode"] = infinite_mode
    return content_hash(settings, data_identity)


# Linked to the logged model, so its page lists them (test: measured once, after training).
MODEL_METRICS = ("validation_accuracy", "validation_loss", "test_accuracy", "test_loss")
# In the MLflow params under names of their own, or implied by the data variant (shift_augment).
NOT_LOGGED_FROM_CONFIG = ("model", "seed", "device", "shift_augment", "bf16")


def _mlflow_params(train_config: TrainConfig, experiment: Experiment, settings: TrainSettings, provenance: dict,
                   split_sizes: dict, counts, device: torch.device, version: str) -> dict:
    """One name per fact: the data variant is the one switch for augmentation, and `precision`
    is the arithmetic used (the bf16 setting resolved on this device)."""
    hyperparameters = {k: v for k, v in train_config.as_dict().items() if k not in NOT_LOGGED_FROM_CONFIG}
    return {
        "model": experiment.model, "data_variant": experiment.variant, "seed": experiment.seed,
        **hyperparameters,
        "infinite_mode": settings.infinite_mode if experiment.variant == "infinite" else "none",
        "precision": "bf16" if resolve_bf16(train_config, device) else "fp32", "device": str(device),
        "weights_without_biases": counts.weights, "parameters_with_biases": counts.parameters,
        "data_source": provenance["source"], "data_sha256": provenance["sha256_combined"],
        "data_identity": provenance["identity"], "data_is_5000_digit_sample": provenance.get("is_sample", False),
        **{f"{split}_size": size for split, size in split_sizes.items()},
        "versions": library_versions(), "git_commit": git_commit() or "unknown", "config_hash": version,
    }


def _champion_note(champion) -> str:
    if champion is None:
        return "not offered: no validation digits"
    if champion.promoted:
        return f"{champion.uri}: this model (version {champion.version})"
    return f"{champion.uri} stays (validation accuracy {champion.champion_validation_accuracy:.4f})"


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
    """The trained torch module from a `trained_model` value, normalising as it was trained to.

    Values stored before they recorded a normalisation were all MNIST's (the default).
    """
    model = build_model(value["model"], normalization=tuple(value.get("normalization") or MNIST.normalization))
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


def _training_figures(result, experiment: Experiment) -> dict:
    title = experiment.run_name
    figures = {"training_curves": plots.training_curves([s.as_dict() for s in result.history], title)}
    conv = _first_conv(result.model)
    if conv is not None:
        figures["first_layer_filters"] = plots.conv_filters(conv.weight, f"{title}: first-layer filters")
    return figures


@dg.asset(
    partitions_def=training_partitions,
    group_name=GROUP,
    code_version="2",
    pool="gpu",
    op_tags=GPU_OP_TAGS,
    output_required=False,  # a model failing its blocking checks is not stored
    check_specs=[dg.AssetCheckSpec("finite_weights", asset="trained_model", blocking=True,
                                   description="Every weight and bias is finite."),
                 dg.AssetCheckSpec("accuracy_floor", asset="trained_model", blocking=True,
                                   description=f"Test accuracy above {claims.ACCURACY_FLOOR} (chance is 0.1).")],
    description="One experiment of the lab (model x data variant x seed) trained; one MLflow run per materialisation.",
)
def trained_model(context: dg.AssetExecutionContext, config: TrainSettings, mnist: dict,
                  mlflow_tracking: MlflowTracking, compute: Compute):
    experiment = experiment_of(context)
    device = compute.torch_device()
    train_config = _train_config(config, experiment, device, len(mnist["train_labels"]))
    provenance = mnist["provenance"]
    version = training_version(train_config, config.infinite_mode if experiment.variant == "infinite" else None,
                               provenance["identity"], device)
    checkpoint = storage_dir() / "checkpoints" / experiment.key / f"{version}.pt"
    counts = count_parameters(experiment.model)
    split_sizes = {"train": len(mnist["train_labels"]), "validation": len(mnist["validation_labels"]),
                   "test": len(mnist["test_labels"])}
    params = _mlflow_params(train_config, experiment, config, provenance, split_sizes, counts, device, version)
    params["processes"] = config.processes

    with mlflow_tracking.training_run(experiment, context.run.run_id, params) as run:
        dataset = run.log_dataset(
            f"mnist-{provenance['source']}", provenance["sha256_combined"],
            source={"source": provenance["source"], "description": provenance.get("description")},
            profile={"splits": split_sizes, "sha256": provenance["sha256_combined"],
                     "data_identity": provenance["identity"], "subset": provenance.get("subset"),
                     "validation_split": provenance.get("validation")})
        # A checkpoint is left only by an interrupted materialisation of this
        # exact version: continue it rather than start over.
        # Each epoch is watched on the validation digits; the test digits are measured once, after training.
        if config.processes > 1:
            # The same training over torchrun ranks; its epochs reach MLflow from the history below.
            result = train_data_parallel(context, config.processes, train_config, mnist, checkpoint,
                                         config.infinite_mode if experiment.variant == "infinite" else None)
        else:
            result = train(train_config, mnist["train_images"], mnist["train_labels"], mnist["validation_images"],
                           mnist["validation_labels"], on_epoch=run.epoch_logger(), checkpoint_path=checkpoint,
                           resume=True, log=context.log.info, normalization=mnist.get("normalization"),
                           epoch_data=_epoch_data(experiment.variant, mnist, config.infinite_mode))
        run.log_history(result.history)
        test = evaluate(result.model, mnist["test_images"], mnist["test_labels"])
        accuracy, validation_accuracy = test.accuracy, result.history[-1].validation_accuracy
        run.log_metrics({"test_accuracy": accuracy, "test_loss": test.loss, "training_seconds": result.seconds},
                        step=train_config.epochs)
        figures = _training_figures(result, experiment)
        metadata = publish_figures(context, figures, run, "figures")
        guards = model_guards(result.model.state_dict(), accuracy)
        failed = [guard.check_name for guard in guards if not guard.passed]
        if failed:
            # Rejected: no output, so the last good stored value stays what downstream reads;
            # the MLflow run ends FAILED and says why.
            run.set_tags({REJECTED_TAG: ", ".join(failed)})
            checkpoint.unlink(missing_ok=True)
            yield from guards
            raise dg.Failure(f"{experiment.key} failed its blocking checks ({', '.join(failed)}: test accuracy "
                             f"{accuracy:.4f}); not stored, the previous value of this partition stays in use")
        example = (mnist["test_images"][:4].float() / 255).unsqueeze(1).numpy()
        model_uri = run.log_model(portable_model(result.model), input_example=example)
        run.link_metrics_to_model(model_uri, MODEL_METRICS, dataset)
        # Offered here, as each model is done: the champion is current without waiting for the other
        # partitions, and a model failing its checks never gets this far. No validation digits, no offer.
        champion = None if validation_accuracy is None else mlflow_tracking.offer_champion(
            experiment.model, model_uri, run.run_id, validation_accuracy, provenance["identity"])
    checkpoint.unlink(missing_ok=True)  # finished and recorded: nothing left to resume

    history = [stats.as_dict() for stats in result.history]
    value = {
        "partition": experiment.key, "model": experiment.model, "data_variant": experiment.variant,
        "seed": experiment.seed, "state_dict": result.model.state_dict(), "config": train_config.as_dict(),
        "history": history, "test_accuracy": accuracy, "test_loss": test.loss,
        "validation_accuracy": validation_accuracy, "training_seconds": result.seconds,
        "weights": counts.weights, "device": result.device, "precision": result.precision,
        "mlflow_run_id": run.run_id, "mlflow_run_name": experiment.run_name, "mlflow_model_uri": model_uri,
        "data_sha256": provenance["sha256_combined"], "data_identity": provenance["identity"], "version": version,
        # what the trained network's normalize stage holds, read back from it: (mean, std) of its inputs
        "normalization": list(model_normalization(result.model)),
        "dataset": mnist.get("dataset", DEFAULT_DATASET),
        "figures": figure_paths(metadata),
    }
    context.log.info(f"{experiment.run_name}: test accuracy {accuracy:.4f} in {result.seconds:.1f} s")
    yield versioned_output(value, version, metadata={
        "experiment": experiment.key,
        "model": experiment.model,
        "data_variant": experiment.variant,
        "seed": experiment.seed,
        "test_accuracy": accuracy,
        "validation_accuracy": validation_accuracy,
        "final_train_loss": history[-1]["train_loss"],
        "epochs": train_config.epochs,
        "training_seconds": round(result.seconds, 2),
        "images_per_second": round(history[-1]["images_per_second"]),
        "weights": counts.weights,
        "device": result.device,
        "precision": result.precision,
        "config_hash": version,
        "mlflow_run_id": run.run_id,
        "mlflow_run_name": experiment.run_name,
        "mlflow_run": dg.MetadataValue.url(run.url),
        "mlflow_model_uri": model_uri,
        "mlflow_champion": _champion_note(champion),
        **metadata,
    })
    yield from guards


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
    title = f"{trained_model['mlflow_run_name']}: accuracy {evaluation.accuracy:.2%}"
    class_names = mnist.get("class_names") or list(get_dataset(DEFAULT_DATASET).class_names)
    per_class = table_metadata(pd.DataFrame({"class": class_names,
                                             "accuracy": evaluation.per_class_accuracy}).round(4))
    value = {**evaluation.as_dict(), **{k: trained_model[k] for k in ("partition", "model", "data_variant", "seed",
                                                                        "mlflow_run_id")}}
    value["class_names"] = class_names
    metadata = {}
    if config.heldout_idx_dir:
        heldout = evaluate(model, *load_test_split(config.heldout_idx_dir))
        value["heldout"] = {**heldout.as_dict(), "idx_dir": str(Path(config.heldout_idx_dir).resolve())}
        metadata = {"heldout_accuracy": heldout.accuracy, "heldout_count": heldout.count,
                    "heldout_idx_dir": str(Path(config.heldout_idx_dir).resolve())}
        training = mlflow_tracking.run(trained_model["mlflow_run_id"])
        training.log_metrics({"heldout_accuracy": heldout.accuracy, "heldout_loss": heldout.loss})
        training.link_metrics_to_model(trained_model["mlflow_model_uri"], ("heldout_accuracy", "heldout_loss"))
    run = mlflow_tracking.run(trained_model["mlflow_run_id"])
    figure = plots.confusion_matrix(evaluation.confusion, title, class_names=class_names)
    metadata.update(publish_figures(context, {"confusion_matrix": figure}, run, "figures"))
    value["figures"] = figure_paths(metadata)
    return dg.Output(value, metadata={
        "experiment": trained_model["partition"],
        "seed": trained_model["seed"],
        "test_accuracy": evaluation.accuracy,
        "test_loss": evaluation.loss,
        "test_count": evaluation.count,
        "per_class_accuracy": per_class,
        "mlflow_run_id": trained_model["mlflow_run_id"],
        **metadata,
    })
