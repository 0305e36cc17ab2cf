"""Asset checks: the lecture's claims on the assets that measure them, and guards on data.

A claim check passes or fails with the lecture's value, the measured value
and the tolerance in its metadata, so a failure in the UI says by how much.
The data guards are blocking: a broken MNIST stops everything downstream.
(Guards on each trained model run inside `trained_model` itself, since
checks there must see the partition being materialised.)
"""

from dataclasses import replace

import dagster as dg
import pandas as pd
import torch

from conv_core import claims
from conv_core.counting import LayerCount, ModelCount

# Share of each class allowed in a split: MNIST's rarest digit (5) is 9.0% of
# the test set and its commonest (1) 11.4%.
CLASS_SHARE_RANGE = (0.05, 0.15)


def claim_result(claim: claims.Claim, severity=dg.AssetCheckSeverity.ERROR) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=claim.passed, severity=severity, description=claim.statement,
                               metadata={"lecture_value": claim.lecture_value, "measured_value": claim.measured_value,
                                         "tolerance": claim.tolerance, "slide": claim.slide})


# --------------------------------------------------------------------------- data guards (blocking)


def data_problems(mnist: dict) -> dict[str, str]:
    """Everything wrong with an `mnist` value, by check name (empty when it is sound)."""
    problems = {}
    for split in ("train", "test"):
        images, labels = mnist[f"{split}_images"], mnist[f"{split}_labels"]
        if len(images) == 0 or len(images) != len(labels):
            problems[f"{split}_counts"] = f"{len(images)} images, {len(labels)} labels"
        if images.dtype != torch.uint8 or tuple(images.shape[1:]) != (28, 28) or int(images.max()) == 0:
            problems[f"{split}_pixels"] = f"{images.dtype} {tuple(images.shape)}, max {int(images.max())}"
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) > 9):
            problems[f"{split}_labels"] = f"labels span {int(labels.min())}..{int(labels.max())}"
        shares = torch.bincount(labels.clamp(0, 9), minlength=10).float() / max(1, len(labels))
        low, high = CLASS_SHARE_RANGE
        if len(labels) and (float(shares.min()) < low or float(shares.max()) > high):
            problems[f"{split}_balance"] = f"class shares {float(shares.min()):.3f}..{float(shares.max()):.3f}"
    return problems


@dg.asset_check(asset="mnist", blocking=True,
                description="Counts agree, labels are 0-9, pixels are uint8 28x28, every class is 5-15% of each split.")
def mnist_is_sound(mnist: dict) -> dg.AssetCheckResult:
    problems = data_problems(mnist)
    shares = torch.bincount(mnist["train_labels"].clamp(0, 9), minlength=10).float() / max(1, len(mnist["train_labels"]))
    return dg.AssetCheckResult(passed=not problems, metadata={
        "problems": dg.MetadataValue.json(problems),
        "train_size": len(mnist["train_labels"]), "test_size": len(mnist["test_labels"]),
        "train_class_share_min": float(shares.min()), "train_class_share_max": float(shares.max()),
        "train_pixel_max": int(mnist["train_images"].max()),
    })


# --------------------------------------------------------------------------- counting


def model_count(frame: pd.DataFrame, model: str) -> ModelCount:
    """A ModelCount rebuilt from the `parameter_counts` table (what the asset measured)."""
    rows = frame[frame["model"] == model].to_dict(orient="records")
    layers = [LayerCount(r["layer"], r["kind"], int(r["weights"]), int(r["biases"]), int(r["input_signal"]),
                         int(r["output_signal"]), tuple(int(v) for v in str(r["output_shape"]).split("x")))
              for r in rows]
    return ModelCount(model, layers)


@dg.asset_check(asset="parameter_counts", description="Seed CNN: 225 + 3600 + 7840 = 11665 weights; signals 784, 7056, 3136.")
def seed_cnn_counts(parameter_counts: pd.DataFrame) -> dg.AssetCheckResult:
    return claim_result(claims.seed_cnn_counts(model_count(parameter_counts, "seed_cnn")))


@dg.asset_check(asset="parameter_counts", description="MLP: 176400 + 32400 + 1440 = 210240 weights; signals 784, 225, 144.")
def mlp_counts(parameter_counts: pd.DataFrame) -> dg.AssetCheckResult:
    return claim_result(claims.mlp_counts(model_count(parameter_counts, "mlp")))


@dg.asset_check(asset="parameter_counts", description="The CNN has more signals but fewer weights than the MLP.")
def more_signals_fewer_weights(parameter_counts: pd.DataFrame) -> dg.AssetCheckResult:
    return claim_result(claims.more_signals_fewer_weights(model_count(parameter_counts, "seed_cnn"),
                                                          model_count(parameter_counts, "mlp")))


@dg.asset_check(asset="parameter_counts", description="1-D, 5 inputs and 5 outputs: 25 dense -> 13 local -> 3 shared weights.")
def local_connectivity_and_sharing(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    event = context.instance.get_latest_materialization_event(dg.AssetKey("parameter_counts"))
    table = event.asset_materialization.metadata["connectivity_table"].value
    row = next(r for r in table if r["example"].startswith("lecture 1-D"))
    return claim_result(claims.local_connectivity(row["dense"], row["local"], row["shared"]))


# --------------------------------------------------------------------------- augmentation


@dg.asset_check(asset="shifted_mnist", additional_ins={"mnist": dg.AssetIn("mnist")},
                description="Cropping 2 pixels gives exactly 9 times the data.")
def nine_times_the_data(shifted_mnist: dict, mnist: dict) -> dg.AssetCheckResult:
    return claim_result(claims.nine_times_the_data(len(mnist["train_labels"]), len(shifted_mnist["labels"])))


# --------------------------------------------------------------------------- representations


def _seed_cnn_rows(representation_distances: pd.DataFrame) -> pd.DataFrame:
    return representation_distances[representation_distances["model"] == "seed_cnn"].set_index("layer")


@dg.asset_check(asset="representation_distances", description="In pixel space the 9 is closer to a 4 than the other 4 is.")
def triplet_pixels_nine_closer(representation_distances: pd.DataFrame) -> dg.AssetCheckResult:
    return claim_result(claims.triplet_pixel_order(float(_seed_cnn_rows(representation_distances).loc["pixels", "ratio"])))


@dg.asset_check(asset="representation_distances", description="In the CNN's feature space the two 4s are closer.")
def triplet_features_fours_closer(representation_distances: pd.DataFrame) -> dg.AssetCheckResult:
    rows = _seed_cnn_rows(representation_distances)
    return claim_result(claims.triplet_feature_order({layer: float(r) for layer, r in rows["ratio"].items()}))


@dg.asset_check(asset="representation_distances",
                description="Over all 4s and 9s, same-class pairs are closer more often in the CNN's last hidden layer than in pixels.")
def aggregate_features_order_better(representation_distances: pd.DataFrame) -> dg.AssetCheckResult:
    rows = _seed_cnn_rows(representation_distances)
    hidden = [layer for layer in rows.index if layer not in ("pixels", "logits")][-1]
    return claim_result(claims.aggregate_feature_order(float(rows.loc["pixels", "triplet_order_rate_4_9"]),
                                                       float(rows.loc[hidden, "triplet_order_rate_4_9"]), hidden))


# --------------------------------------------------------------------------- inside the network


@dg.asset_check(asset="input_gradients", description="dh1/dx equals the layer-1 filter (max |difference| < 1e-6).")
def dh1_dx_is_the_filter(input_gradients: dict) -> dg.AssetCheckResult:
    return claim_result(claims.gradient_is_filter(float(input_gradients["layer1"]["max_abs_difference"])))


@dg.asset_check(asset="sliding_segmentation", description="The fully convolutional net equals the classifier on 28x28 inputs.")
def fcn_equals_classifier(sliding_segmentation: dict) -> dg.AssetCheckResult:
    return claim_result(claims.fcn_equals_classifier(float(sliding_segmentation["fcn_vs_classifier_max_abs_difference"])))


@dg.asset_check(asset="hallucinations", description="Gradient ascent on ||h||^2 increases ||h||^2, for every layer and start.")
def hallucination_increases_norm(hallucinations: dict) -> dg.AssetCheckResult:
    return claim_result(claims.hallucination_grows(hallucinations["norms"]))


# --------------------------------------------------------------------------- across runs


def plain_accuracy(table: pd.DataFrame, model: str, variant: str = "plain") -> float | None:
    rows = table[(table["model"] == model) & (table["data_variant"] == variant)]
    return float(rows["accuracy_mean"].iloc[0]) if len(rows) else None


def accuracy_table(run_comparison: pd.DataFrame) -> pd.DataFrame:
    from assets.analysis import accuracy_by_variant

    return accuracy_by_variant(run_comparison)


# --------------------------------------------------------------------------- every claim at once (the report)


def cnn_mlp_claim(run_comparison: pd.DataFrame) -> claims.Claim:
    """cnn_beats_mlp_with_fewer_weights as a Claim; a failing one when a plain run is missing."""
    table = accuracy_table(run_comparison)
    cnn, mlp = plain_accuracy(table, "seed_cnn"), plain_accuracy(table, "mlp")
    weights = run_comparison.groupby("model")["weights"].first()
    if cnn is None or mlp is None:
        claim = claims.cnn_beats_mlp(float("nan"), float("nan"), int(weights.get("seed_cnn", 11665)),
                                     int(weights.get("mlp", 210240)))
        return replace(claim, measured_value="seed_cnn or mlp has no plain run", passed=False)
    return claims.cnn_beats_mlp(cnn, mlp, int(weights["seed_cnn"]), int(weights["mlp"]))


def augmentation_claim(run_comparison: pd.DataFrame) -> claims.Claim:
    """augmentation_does_not_hurt as a Claim (at equal epochs); a failing one when runs are missing."""
    cnn = run_comparison[run_comparison["model"] == "seed_cnn"]
    plain_epochs = cnn[cnn["data_variant"] == "plain"]["epochs"]
    if len(plain_epochs):
        cnn = cnn[cnn["epochs"] == plain_epochs.iloc[0]]
    table = accuracy_table(cnn)
    plain = plain_accuracy(table, "seed_cnn")
    augmented = {v: plain_accuracy(table, "seed_cnn", v) for v in ("shifted", "infinite")}
    augmented = {v: a for v, a in augmented.items() if a is not None}
    if plain is None or not augmented:
        claim = claims.augmentation_keeps_accuracy(float("nan"), {})
        return replace(claim, measured_value="seed_cnn lacks a plain or an augmented run", passed=False)
    return claims.augmentation_keeps_accuracy(plain, augmented)


def all_claims(parameter_counts: pd.DataFrame, connectivity_table: list[dict], source_count: int,
               expanded_count: int, representation_distances: pd.DataFrame, input_gradients: dict,
               sliding_segmentation: dict, hallucinations: dict, run_comparison: pd.DataFrame) -> list[claims.Claim]:
    """Every claim the asset checks above decide, in the lecture's order, from the same values."""
    cnn, mlp = model_count(parameter_counts, "seed_cnn"), model_count(parameter_counts, "mlp")
    row = next(r for r in connectivity_table if r["example"].startswith("lecture 1-D"))
    rows = _seed_cnn_rows(representation_distances)
    hidden = [layer for layer in rows.index if layer not in ("pixels", "logits")][-1]
    return [
        claims.local_connectivity(row["dense"], row["local"], row["shared"]),
        claims.seed_cnn_counts(cnn),
        claims.mlp_counts(mlp),
        claims.more_signals_fewer_weights(cnn, mlp),
        cnn_mlp_claim(run_comparison),
        claims.triplet_pixel_order(float(rows.loc["pixels", "ratio"])),
        claims.triplet_feature_order({layer: float(r) for layer, r in rows["ratio"].items()}),
        claims.aggregate_feature_order(float(rows.loc["pixels", "triplet_order_rate_4_9"]),
                                       float(rows.loc[hidden, "triplet_order_rate_4_9"]), hidden),
        claims.nine_times_the_data(source_count, expanded_count),
        augmentation_claim(run_comparison),
        claims.fcn_equals_classifier(float(sliding_segmentation["fcn_vs_classifier_max_abs_difference"])),
        claims.gradient_is_filter(float(input_gradients["layer1"]["max_abs_difference"])),
        claims.hallucination_grows(hallucinations["norms"]),
    ]


@dg.asset_check(asset="run_comparison", description="The CNN beats the MLP's test accuracy with about 18 times fewer weights.")
def cnn_beats_mlp_with_fewer_weights(run_comparison: pd.DataFrame) -> dg.AssetCheckResult:
    return claim_result(cnn_mlp_claim(run_comparison))


@dg.asset_check(asset="run_comparison", description="Shifted or infinite data does not lower the CNN's test accuracy at equal epochs.")
def augmentation_does_not_hurt(run_comparison: pd.DataFrame) -> dg.AssetCheckResult:
    return claim_result(augmentation_claim(run_comparison))
