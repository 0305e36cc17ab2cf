"""[analysis] Counting, representations, and the comparison of every training partition."""

import dagster as dg
import pandas as pd
from pydantic import Field

from conv_core import plots
from conv_core.data import random_subset
from conv_core.datasets import DEFAULT_DATASET, get_dataset
from conv_core.counting import connectivity_counts, count_parameters
from conv_core import lecture
from conv_core.experiments import EXPLAINED, REPRESENTED
from conv_core.models import MODEL_NAMES
from conv_core.representations import (
    TRIPLET_RULE, choose_triplet, layer_features, pca_2d, representation_measures, triplet_distances,
    triplet_flip_rates,
)
from assets.checks import claim_results, claim_specs
from assets.training import load_trained
from pipelines.resources.figures import figure_metadata, figure_paths, publish_figures
from pipelines.resources.metadata import table_metadata
from pipelines.resources.partitions import by_partition
from pipelines.resources.tracking import MlflowTracking

GROUP = "analysis"

# The lecture's local-connectivity examples: (label, inputs, outputs, radius, in, out channels, dims).
CONNECTIVITY_EXAMPLES = [
    ("lecture 1-D example", 5, 5, 1, 1, 1, 1),
    ("seed_cnn conv1 on 28x28", 28, 28, 2, 1, 9, 2),
    ("seed_cnn conv2 on 14x14", 14, 14, 2, 9, 16, 2),
]


@dg.asset(check_specs=claim_specs("parameter_counts"), group_name=GROUP, code_version="2",
          description="Weights, biases and signal sizes per layer of every model, and the connectivity arithmetic.")
def parameter_counts(context: dg.AssetExecutionContext):
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
    metadata = figure_metadata(context, figure, "weights_vs_signals")
    value = {"layers": frame.to_dict(orient="records"), "models": summary.to_dict(orient="records"),
             "connectivity": connectivity.to_dict(orient="records"), "figures": figure_paths(metadata)}
    output = dg.Output(value, metadata={
        "layers": table_metadata(frame),
        "models": table_metadata(summary),
        "connectivity": table_metadata(connectivity),
        "seed_cnn_weights": totals["seed_cnn"].weights,
        "mlp_weights": totals["mlp"].weights,
        "seed_cnn_signals": str(totals["seed_cnn"].signals),
        "mlp_signals": str(totals["mlp"].signals),
        **metadata,
    })
    yield output
    yield from claim_results("parameter_counts", output.value)


class RepresentationSettings(dg.Config):
    knn_train_limit: int = Field(default=10000, description="training digits used as 1-NN references (memory bound)")
    measure_limit: int = Field(default=1000, description="test digits in the pairwise-distance measures")


@dg.asset(
    check_specs=claim_specs("representation_distances"),
    group_name=GROUP,
    code_version="3",
    ins={"trained_model": by_partition(REPRESENTED)},
    description="Pixel space vs feature space: the 9-4-4 triplet and per-layer representation measures "
                f"({', '.join(e.key for e in REPRESENTED)}).",
)
def representation_distances(context: dg.AssetExecutionContext, config: RepresentationSettings, mnist: dict,
                             trained_model: dict, mlflow_tracking: MlflowTracking):
    test_images, test_labels = mnist["test_images"], mnist["test_labels"]
    train_images, train_labels = random_subset(mnist["train_images"], mnist["train_labels"], config.knn_train_limit)
    # The data set's pair of classes: MNIST's 4 and 9, Fashion-MNIST's Shirt and T-shirt/top.
    dataset = get_dataset(mnist.get("dataset", DEFAULT_DATASET))
    anchor, confusable = dataset.triplet.classes
    triplet = choose_triplet(test_images, test_labels, anchor=anchor, confusable=confusable)
    triplet_rows, measure_rows, maps = [], [], {}
    for value in trained_model.values():
        name = value["model"]
        model = load_trained(value)
        test_features = layer_features(model, test_images)
        train_features = layer_features(model, train_images)
        for row in triplet_distances(test_features, triplet):
            lecture_ratio = lecture.TRIPLET_RATIOS.get(row["layer"]) if name == "seed_cnn" else None
            triplet_rows.append({"model": name, **row, "lecture_ratio": lecture_ratio})
        measures = representation_measures(train_features, train_labels, test_features, test_labels,
                                           measure_limit=config.measure_limit, pair=(anchor, confusable))
        flips = triplet_flip_rates(test_features, test_images, test_labels, anchor=anchor, confusable=confusable)
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
        "triplet": plots.image_grid(pictures, titles=[f"9A: {dataset.class_name(confusable)}",
                                                      f"4A: {dataset.class_name(anchor)}",
                                                      f"4B: {dataset.class_name(anchor)}"],
                                    columns=3, cell=1.6, suptitle=f"the triplet ({dataset.title} test split)"),
        "triplet_ratios": plots.layer_lines(
            {**{m: r.to_dict() for m, r in ratios.items()}, "lecture (Caffe notebooks)": lecture.TRIPLET_RATIOS},
            "d(9A,4A) / d(4A,4B)", "above 1: the two 4s are closer than the 9 and the 4", reference=1.0),
        "measures_by_layer": plots.measure_panels(measures),
        "pca_maps": plots.pca_maps({f"{m}: {layer}" if m != "pixels" else "pixels": points
                                    for m, (layer, points) in maps.items()}, test_labels),
    }
    run = mlflow_tracking.analysis_run(context.asset_key.to_user_string(),
                                       [value["mlflow_run_id"] for value in trained_model.values()], context.run.run_id)
    for name, figure in figures.items():
        run.log_figure(figure, f"representations/{name}.png")
    metadata = publish_figures(context, figures)
    seed_cnn = distances[distances.model == "seed_cnn"].set_index("layer")["ratio"]
    triplet_classes = {"dataset": dataset.name, "anchor": dataset.class_name(anchor),
                       "confusable": dataset.class_name(confusable)}
    value = {"table": frame.to_dict(orient="records"), "triplet": triplet.as_dict(), "triplet_rule": TRIPLET_RULE,
             "triplet_classes": triplet_classes,
             "runs": _runs_read(trained_model), "figures": figure_paths(metadata)}
    output = dg.Output(value, metadata={
        "runs_read": ", ".join(f"{r['partition']} ({r['mlflow_run_id']})" for r in value["runs"]),
        "triplet": triplet.as_dict(),
        "triplet_rule": TRIPLET_RULE,
        "triplet_classes": triplet_classes,
        "triplet_ratios": table_metadata(distances.fillna(-1)),
        "measures": table_metadata(measures),
        "seed_cnn_pixel_ratio": float(seed_cnn.get("pixels", float("nan"))),
        "seed_cnn_logit_ratio": float(seed_cnn.get("logits", float("nan"))),
        "seed_cnn_logits_put_wrong_pixel_triplets_right": float(
            measures[(measures.model == "seed_cnn") & (measures.layer == "logits")]["wrong_pixel_triplets_put_right"].max()),
        **metadata,
    })
    yield output
    yield from claim_results("representation_distances", output.value)


RUN_FIELDS = ("partition", "model", "data_variant", "seed", "test_accuracy", "weights", "training_seconds",
              "mlflow_run_id", "data_identity")


def _runs_read(trained_model: dict) -> list[dict]:
    """The training runs an analysis read: partition, seed and MLflow run of each."""
    return [{"partition": key, "seed": value["seed"], "mlflow_run_id": value["mlflow_run_id"]}
            for key, value in sorted(trained_model.items())]


def comparison_rows(trained_model: dict) -> tuple[pd.DataFrame, list[str]]:
    """One row per training partition on the explained run's data (same data identity: bytes and subset);
    the partitions left out (trained on other data)."""
    rows = [{**{k: value.get(k) for k in RUN_FIELDS if k != "partition"}, "partition": key,
             "epochs": value["config"]["epochs"]} for key, value in trained_model.items()]
    reference = trained_model[EXPLAINED.key] if EXPLAINED.key in trained_model else next(iter(trained_model.values()))
    kept = [r for r in rows if r["data_identity"] == reference.get("data_identity")]
    left_out = sorted(r["partition"] for r in rows if r["data_identity"] != reference.get("data_identity"))
    frame = pd.DataFrame(kept)[["partition", *RUN_FIELDS[1:], "epochs"]]
    return frame.sort_values(["data_variant", "weights", "model", "seed"]).reset_index(drop=True), left_out


@dg.asset(check_specs=claim_specs("run_comparison"), group_name=GROUP, code_version="3", ins={"trained_model": by_partition()},
          description="Every training partition side by side, and test accuracy by model and data variant "
                      "(mean and spread over seeds).")
def run_comparison(context: dg.AssetExecutionContext, trained_model: dict):
    runs, left_out = comparison_rows(trained_model)
    if left_out:
        context.log.warning(f"left out of the comparison, trained on other data than {EXPLAINED.key}: "
                            f"{', '.join(left_out)}")
    by_variant = accuracy_by_variant(runs)
    first_seed = runs.groupby(["model", "data_variant"], as_index=False).first()
    figures = {
        "accuracy_vs_weights": plots.scatter_labelled(
            first_seed["weights"], first_seed["test_accuracy"],
            [f"{m}/{v}" for m, v in zip(first_seed.model, first_seed.data_variant)],
            "weights (no biases)", "test accuracy", "accuracy against weights", log_x=True),
        "accuracy_by_variant": plots.accuracy_by_variant(by_variant),
    }
    metadata = publish_figures(context, figures)
    value = {"runs": runs.to_dict(orient="records"), "accuracy_by_variant": by_variant.to_dict(orient="records"),
             "left_out": left_out, "figures": figure_paths(metadata)}
    output = dg.Output(value, metadata={
        "runs": table_metadata(runs),
        "accuracy_by_variant": table_metadata(by_variant),
        "left_out": ", ".join(left_out) or "none",
        **metadata,
    })
    yield output
    yield from claim_results("run_comparison", output.value)


def accuracy_by_variant(latest: pd.DataFrame) -> pd.DataFrame:
    """Model x data variant: mean, spread (sample std) and count of test accuracy over seeds (a frame of runs)."""
    table = latest.groupby(["model", "data_variant"], as_index=False)["test_accuracy"].agg(["mean", "std", "count"])
    return table.rename(columns={"mean": "accuracy_mean", "std": "accuracy_std", "count": "seeds"}).fillna(0.0)
