"""[analysis] Counting, representations, and the comparison of every tracked run."""

import dagster as dg
import pandas as pd
from pydantic import Field

from conv_core import plots
from conv_core.data import random_subset
from conv_core.counting import connectivity_counts, count_parameters
from conv_core.models import MODEL_NAMES
from conv_core.representations import (
    TRIPLET_RULE, choose_triplet, layer_features, pca_2d, representation_measures, triplet_distances,
    triplet_flip_rates,
)
from assets.training import load_trained
from pipelines.figures import figure_metadata
from pipelines.metadata import table_metadata
from pipelines.partitions import training_key
from pipelines.tracking import MlflowTracking

GROUP = "analysis"

# The lecture's local-connectivity examples: (label, inputs, outputs, radius, in, out channels, dims).
CONNECTIVITY_EXAMPLES = [
    ("lecture 1-D example", 5, 5, 1, 1, 1, 1),
    ("seed_cnn conv1 on 28x28", 28, 28, 2, 1, 9, 2),
    ("seed_cnn conv2 on 14x14", 14, 14, 2, 9, 16, 2),
]

# The lecture's Caffe notebooks: d(9A,4A)/d(4A,4B) for their triplet.
LECTURE_TRIPLET_RATIOS = {"pixels": 0.79, "conv1": 0.69, "pool1": 0.82, "conv2": 1.10, "logits": 3.20}


@dg.asset(group_name=GROUP, code_version="1",
          description="Weights, biases and signal sizes per layer of every model, and the connectivity arithmetic.")
def parameter_counts(context: dg.AssetExecutionContext) -> dg.Output[pd.DataFrame]:
    rows = []
    for name in MODEL_NAMES:
        count = count_parameters(name)
        for layer in count.layers:
            row = layer.as_dict()
            row["output_shape"] = "x".join(map(str, row["output_shape"]))
            rows.append({"model": name, **row})
    frame = pd.DataFrame(rows)
    connectivity = pd.DataFrame([
        {"example": label, **connectivity_counts(n_in, n_out, radius, c_in, c_out, dims).as_dict()}
        for label, n_in, n_out, radius, c_in, c_out, dims in CONNECTIVITY_EXAMPLES])
    totals = {name: count_parameters(name) for name in MODEL_NAMES}
    summary = pd.DataFrame([{"model": n, "weights": c.weights, "biases": c.biases,
                             "signals": ", ".join(map(str, c.signals)), "total_signal": sum(c.signals)}
                            for n, c in totals.items()])
    figure = plots.scatter_labelled([c.weights for c in totals.values()], [sum(c.signals) for c in totals.values()],
                                    list(totals), "weights (no biases)", "signal size (input + hidden)",
                                    "more signals, fewer weights", log_x=True)
    return dg.Output(frame, metadata={
        "layers": table_metadata(frame),
        "models": table_metadata(summary),
        "connectivity": table_metadata(connectivity),
        "seed_cnn_weights": totals["seed_cnn"].weights,
        "mlp_weights": totals["mlp"].weights,
        "seed_cnn_signals": str(totals["seed_cnn"].signals),
        "mlp_signals": str(totals["mlp"].signals),
        "connectivity_table": connectivity.to_dict(orient="records"),
        **figure_metadata(context, figure, "weights_vs_signals"),
    })


class RepresentationSettings(dg.Config):
    knn_train_limit: int = Field(default=10000, description="training digits used as 1-NN references (memory bound)")
    measure_limit: int = Field(default=1000, description="test digits in the pairwise-distance measures")


REPRESENTATION_MODELS = ("seed_cnn", "mlp")


@dg.asset(
    group_name=GROUP,
    code_version="2",
    ins={"trained_model": dg.AssetIn(partition_mapping=dg.SpecificPartitionsPartitionMapping(
        [str(training_key(m)) for m in REPRESENTATION_MODELS]))},
    description="Pixel space vs feature space: the 9-4-4 triplet and per-layer representation measures.",
)
def representation_distances(context: dg.AssetExecutionContext, config: RepresentationSettings, mnist: dict,
                             trained_model: dict, mlflow_tracking: MlflowTracking) -> dg.Output[pd.DataFrame]:
    test_images, test_labels = mnist["test_images"], mnist["test_labels"]
    train_images, train_labels = random_subset(mnist["train_images"], mnist["train_labels"], config.knn_train_limit)
    triplet = choose_triplet(test_images, test_labels)
    triplet_rows, measure_rows, maps = [], [], {}
    for value in trained_model.values():
        name = value["model"]
        model = load_trained(value)
        test_features = layer_features(model, test_images)
        train_features = layer_features(model, train_images)
        for row in triplet_distances(test_features, triplet):
            lecture = LECTURE_TRIPLET_RATIOS.get(row["layer"]) if name == "seed_cnn" else None
            triplet_rows.append({"model": name, **row, "lecture_ratio": lecture})
        measures = representation_measures(train_features, train_labels, test_features, test_labels,
                                           measure_limit=config.measure_limit)
        flips = triplet_flip_rates(test_features, test_images, test_labels)
        measure_rows += [{"model": name, **row, "wrong_pixel_triplets_put_right": flips[row["layer"]]}
                         for row in measures]
        hidden = [layer for layer in test_features if layer not in ("pixels", "logits")][-1]
        maps[name] = (hidden, pca_2d(test_features[hidden]))
        maps.setdefault("pixels", ("pixels", pca_2d(test_features["pixels"])))
    distances = pd.DataFrame(triplet_rows)
    measures = pd.DataFrame(measure_rows)
    frame = distances.merge(measures, on=["model", "layer"])

    pictures = test_images[[triplet.nine, triplet.four_a, triplet.four_b]]
    ratios = {m: distances[distances.model == m].set_index("layer")["ratio"] for m in distances.model.unique()}
    figures = {
        "triplet": plots.image_grid(pictures, titles=["9A", "4A", "4B"], columns=3, cell=1.6,
                                    suptitle="the triplet (test split)"),
        "triplet_ratios": plots.layer_lines(
            {**{m: r.to_dict() for m, r in ratios.items()}, "lecture (Caffe notebooks)": LECTURE_TRIPLET_RATIOS},
            "d(9A,4A) / d(4A,4B)", "above 1: the two 4s are closer than the 9 and the 4", reference=1.0),
        "measures_by_layer": plots.measure_panels(measures),
        "pca_maps": plots.pca_maps({f"{m}: {layer}" if m != "pixels" else "pixels": points
                                    for m, (layer, points) in maps.items()}, test_labels),
    }
    metadata = {}
    runs = [mlflow_tracking.run(value["mlflow_run_id"]) for value in trained_model.values()]
    for name, figure in figures.items():
        for run in runs:
            run.log_figure(figure, f"representations/{name}.png")
        metadata.update(figure_metadata(context, figure, name))
    seed_cnn = distances[distances.model == "seed_cnn"].set_index("layer")["ratio"]
    return dg.Output(frame, metadata={
        "triplet": triplet.as_dict(),
        "triplet_rule": TRIPLET_RULE,
        "triplet_ratios": table_metadata(distances.fillna(-1)),
        "measures": table_metadata(measures),
        "seed_cnn_pixel_ratio": float(seed_cnn.get("pixels", float("nan"))),
        "seed_cnn_logit_ratio": float(seed_cnn.get("logits", float("nan"))),
        "seed_cnn_logits_put_wrong_pixel_triplets_right": float(
            measures[(measures.model == "seed_cnn") & (measures.layer == "logits")]["wrong_pixel_triplets_put_right"].max()),
        **metadata,
    })


@dg.asset(group_name=GROUP, code_version="2", deps=["trained_model"],
          description="Every model's latest MLflow runs side by side, and test accuracy by model and data variant.")
def run_comparison(context: dg.AssetExecutionContext, mlflow_tracking: MlflowTracking) -> dg.Output[pd.DataFrame]:
    runs = mlflow_tracking.search_runs(filter_string="attributes.status = 'FINISHED'")
    if runs.empty or "tags.model" not in runs:
        raise dg.Failure("no finished training runs in MLflow yet: materialise trained_model first")
    latest = latest_runs(runs)
    by_variant = accuracy_by_variant(latest)
    newest = latest.groupby(["model", "data_variant"], as_index=False).first()
    figures = {
        "accuracy_vs_weights": plots.scatter_labelled(
            newest["weights"], newest["test_accuracy"], [f"{m}/{v}" for m, v in zip(newest.model, newest.data_variant)],
            "weights (no biases)", "test accuracy", "accuracy against weights", log_x=True),
        "accuracy_by_variant": plots.accuracy_by_variant(by_variant),
    }
    metadata = {}
    for name, figure in figures.items():
        metadata.update(figure_metadata(context, figure, name))
    return dg.Output(latest, metadata={
        "runs": table_metadata(latest),
        "accuracy_by_variant": table_metadata(by_variant),
        "experiment": mlflow_tracking.resolved_experiment(),
        **metadata,
    })


RUN_COLUMNS = {"tags.model": "model", "tags.data_variant": "data_variant", "params.seed": "seed", "run_id": "run_id",
               "metrics.test_accuracy": "test_accuracy", "params.weights": "weights",
               "metrics.training_seconds": "training_seconds", "params.config.epochs": "epochs",
               "params.config.lr": "lr", "params.config.batch_size": "batch_size", "params.device": "device",
               "params.data_source": "data_source", "params.data_sha256": "data_sha256", "start_time": "start_time"}


def latest_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The newest finished run of each (model, data variant, seed), from mlflow.search_runs' frame.

    Only runs on the newest data (by sha256) count, so a switch of data source
    does not mix, say, sample and full-MNIST accuracies.
    """
    runs = runs[[c for c in RUN_COLUMNS if c in runs.columns]].rename(columns=RUN_COLUMNS)
    runs = runs.dropna(subset=["model", "test_accuracy"]).sort_values("start_time", ascending=False)
    if "data_sha256" in runs:
        runs = runs[runs["data_sha256"] == runs["data_sha256"].iloc[0]]
    latest = runs.groupby(["model", "data_variant", "seed"], as_index=False).first()
    latest["weights"] = latest["weights"].astype(int)
    latest["start_time"] = latest["start_time"].astype(str)
    return latest.sort_values(["data_variant", "weights", "seed"]).reset_index(drop=True)


def accuracy_by_variant(latest: pd.DataFrame) -> pd.DataFrame:
    """Model x data variant: mean, spread (sample std) and count of test accuracy over seeds."""
    table = latest.groupby(["model", "data_variant"], as_index=False)["test_accuracy"].agg(["mean", "std", "count"])
    return table.rename(columns={"mean": "accuracy_mean", "std": "accuracy_std", "count": "seeds"}).fillna(0.0)
