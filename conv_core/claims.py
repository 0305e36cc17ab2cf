"""The lecture's claims, each checked against this run's measurements.

The functions near the top take plain numbers and return a `Claim`: what the
lecture says, what was measured, the tolerance, and whether it holds. The
registry at the bottom (`REGISTRY`) says, for every claim, which asset value
decides it and how: Dagster's asset checks and the report's claims table are
both generated from it, so a claim is written once.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable

from conv_core import lecture
from conv_core.counting import LayerCount, ModelCount

# Test accuracy can drop this much with augmentation and still count as "not
# lower": about one standard error on 1,000 test digits at 97%.
AUGMENTATION_TOLERANCE = 0.005
# A trained model must beat this test accuracy (chance is 0.1) to feed anything downstream.
ACCURACY_FLOOR = 0.5
# dh1/dx equals the filter up to float32 rounding.
GRADIENT_TOLERANCE = 1e-6
# The fully convolutional net equals the classifier (compared in float64).
FCN_TOLERANCE = 1e-5
# d||h||^2/dx against 2 h^T dh/dx, in float64, relative to the gradient's largest entry.
NORM_IDENTITY_TOLERANCE = 1e-9
# The layer the lecture's notebooks show the triplet's order flip at.
TRIPLET_LAYER = "conv2"


@dataclass(frozen=True)
class Claim:
    key: str             # a stable identifier (asset-check name)
    slide: str           # where in the lecture
    statement: str       # the claim, in the lecture's words where possible
    lecture_value: str
    measured_value: str
    tolerance: str
    passed: bool
    # The number the decision compares, where there is one (asset-check plots need numbers).
    measured_number: float | None = None
    lecture_number: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def _claim(key, slide, statement, lecture, measured, tolerance, passed, number=None, lecture_number=None) -> Claim:
    as_float = lambda v: None if v is None else float(v)
    return Claim(key, slide, statement, str(lecture), str(measured), str(tolerance), bool(passed),
                 as_float(number), as_float(lecture_number))


def _counts_claim(key: str, label: str, count: ModelCount, weights: list[int], signals: list[int]) -> Claim:
    measured = [layer.weights for layer in count.layers]
    lecture = f"weights {weights} = {sum(weights)}; signals {signals}"
    return _claim(key, "Convolutional vs. non-convolutional",
                  f"The {label} has {' + '.join(map(str, weights))} = {sum(weights)} weights and signals "
                  f"{', '.join(map(str, signals))}", lecture,
                  f"weights {measured} = {count.weights}; signals {count.signals}", "exact",
                  measured == weights and count.weights == sum(weights) and count.signals == signals,
                  count.weights, sum(weights))


def seed_cnn_counts(count: ModelCount) -> Claim:
    return _counts_claim("seed_cnn_counts", "CNN", count, list(lecture.WEIGHTS["seed_cnn"]),
                         list(lecture.SIGNALS["seed_cnn"]))


def mlp_counts(count: ModelCount) -> Claim:
    return _counts_claim("mlp_counts", "MLP", count, list(lecture.WEIGHTS["mlp"]), list(lecture.SIGNALS["mlp"]))


def more_signals_fewer_weights(cnn: ModelCount, mlp: ModelCount) -> Claim:
    return _claim("more_signals_fewer_weights", "Convolutional vs. non-convolutional",
                  "The convolutional network has more signals but fewer parameters",
                  f"signals {sum(lecture.SIGNALS['seed_cnn'])} > {sum(lecture.SIGNALS['mlp'])}; "
                  f"weights {sum(lecture.WEIGHTS['seed_cnn'])} < {sum(lecture.WEIGHTS['mlp'])}",
                  f"signals {sum(cnn.signals)} vs {sum(mlp.signals)}; weights {cnn.weights} vs {mlp.weights}",
                  "strict inequality", sum(cnn.signals) > sum(mlp.signals) and cnn.weights < mlp.weights,
                  mlp.weights / cnn.weights)


def local_connectivity(dense: int, local: int, shared: int) -> Claim:
    return _claim("local_connectivity_and_sharing", "Local connectivity / Parameter sharing",
                  "5 inputs to 5 outputs: 25 weights dense, 13 with local connectivity, 3 with sharing",
                  _connectivity_text(lecture.CONNECTIVITY_1D), f"{dense} -> {local} -> {shared}", "exact",
                  (dense, local, shared) == tuple(lecture.CONNECTIVITY_1D[k] for k in ("dense", "local", "shared")),
                  shared, lecture.CONNECTIVITY_1D["shared"])


def _connectivity_text(numbers: dict) -> str:
    return f"{numbers['dense']} -> {numbers['local']} -> {numbers['shared']}"


def nine_times_the_data(source_count: int, expanded_count: int) -> Claim:
    factor = expanded_count / source_count if source_count else float("nan")
    return _claim("nine_times_the_data", "Regularization by data augmentation",
                  "Cropping just 2 pixels gets you 9 times the data", f"{lecture.AUGMENTATION_FACTOR}x",
                  f"{source_count} -> {expanded_count} ({factor:g}x)", "exact",
                  expanded_count == lecture.AUGMENTATION_FACTOR * source_count > 0, factor, lecture.AUGMENTATION_FACTOR)


# The lecture's triplet classes, as the claims name them: (anchor, confusable).
LECTURE_PAIR = ("4", "9")


def _pair_note(pair: tuple[str, str]) -> str:
    """Names the classes behind 4A, 4B and 9A when they are not the lecture's digits."""
    anchor, confusable = pair
    return "" if tuple(pair) == LECTURE_PAIR else f" (4A, 4B: {anchor}; 9A: {confusable})"


def triplet_pixel_order(pixel_ratio: float, pair: tuple[str, str] = LECTURE_PAIR) -> Claim:
    anchor, confusable = pair
    return _claim("triplet_pixels_nine_closer", "Good representation?",
                  f"In pixel space, {confusable}-{anchor} is closer: d(9A,4A) / d(4A,4B) < 1 for a typical "
                  f"triplet{_pair_note(pair)}",
                  f"{lecture.TRIPLET_RATIOS['pixels']} (Caffe notebooks' triplet)", f"{pixel_ratio:.3f}", "< 1",
                  pixel_ratio < 1, pixel_ratio, lecture.TRIPLET_RATIOS["pixels"])


def triplet_feature_order(layer_ratios: dict[str, float], layer: str = TRIPLET_LAYER,
                          pair: tuple[str, str] = LECTURE_PAIR) -> Claim:
    """The two 4s closer in the CNN's feature space, at the layer where the lecture's notebooks flip."""
    ratio = layer_ratios.get(layer, float("nan"))
    shown = ", ".join(f"{name} {value:.2f}" for name, value in layer_ratios.items())
    anchor, _ = pair
    return _claim("triplet_features_fours_closer", "Good representation?",
                  f"In feature space, {anchor}-{anchor} is closer: d(9A,4A) / d(4A,4B) > 1 from {layer} "
                  f"on{_pair_note(pair)}",
                  f"{lecture.TRIPLET_RATIOS[layer]:.2f} at {layer} (flips there; "
                  f"{lecture.TRIPLET_RATIOS['logits']:.2f} at the logits)", shown, f"> 1 at {layer}",
                  ratio > 1, ratio, lecture.TRIPLET_RATIOS[layer])


def aggregate_feature_order(pixel_rate: float, feature_rate: float, layer: str,
                            pair: tuple[str, str] = LECTURE_PAIR) -> Claim:
    anchor, confusable = pair
    # "4s and 9s", but "Shirt and T-shirt/top items": class names do not all take a plural s
    members = f"{anchor}s and {confusable}s" if tuple(pair) == LECTURE_PAIR else f"{anchor} and {confusable} items"
    return _claim("aggregate_features_order_better", "Good representation?",
                  f"Over the test split's {members}, same-class pairs are closer more often in the CNN's "
                  f"{layer} than in pixel space: P[d(a,p) < d(a,n)]",
                  "feature space better than pixel space", f"pixels {pixel_rate:.3f}, {layer} {feature_rate:.3f}",
                  "feature rate > pixel rate", feature_rate > pixel_rate, feature_rate - pixel_rate)


def gradient_is_filter(max_abs_difference: float) -> Claim:
    return _claim("dh1_dx_is_the_filter", "Gradients to inputs",
                  "dh1/dx is boring, gives just the filters W1 (gated by the ReLU)", "difference 0",
                  f"max |dh1/dx - W1| = {max_abs_difference:.2e}", f"< {GRADIENT_TOLERANCE:g}",
                  max_abs_difference < GRADIENT_TOLERANCE, max_abs_difference, 0)


def fcn_equals_classifier(max_abs_difference: float) -> Claim:
    return _claim("fcn_equals_classifier", "Semantic segmentation",
                  "Sliding the classifier as a fully convolutional net: on a 28x28 input it is the classifier",
                  "identical logits", f"max |difference| = {max_abs_difference:.2e} (float64)",
                  f"< {FCN_TOLERANCE:g}", max_abs_difference < FCN_TOLERANCE, max_abs_difference, 0)


def cnn_beats_mlp(cnn_accuracy: float, mlp_accuracy: float, cnn_weights: int, mlp_weights: int) -> Claim:
    ratio = mlp_weights / cnn_weights
    cnn, mlp = sum(lecture.WEIGHTS["seed_cnn"]), sum(lecture.WEIGHTS["mlp"])
    return _claim("cnn_beats_mlp_with_fewer_weights", "Convolutional vs. non-convolutional",
                  f"The CNN beats the MLP's test accuracy with about {lecture.WEIGHT_RATIO} times fewer weights",
                  f"fewer weights ({mlp} / {cnn} = {mlp / cnn:.1f}x), better accuracy",
                  f"CNN {cnn_accuracy:.4f} vs MLP {mlp_accuracy:.4f}; {ratio:.1f}x fewer weights",
                  "CNN accuracy > MLP accuracy", cnn_accuracy > mlp_accuracy and round(ratio) == lecture.WEIGHT_RATIO,
                  cnn_accuracy - mlp_accuracy)


def augmentation_keeps_accuracy(plain: float, augmented: dict[str, float]) -> Claim:
    worst = min(augmented.values()) if augmented else float("nan")
    shown = ", ".join(f"{variant} {accuracy:.4f}" for variant, accuracy in augmented.items())
    return _claim("augmentation_does_not_hurt", "Regularization by data augmentation",
                  "Augmented data (shifts, infinite MNIST) does not lower the CNN's test accuracy at equal epochs",
                  "regularises: no loss", f"plain {plain:.4f}; {shown}", f"at most {AUGMENTATION_TOLERANCE} lower",
                  bool(augmented) and not math.isnan(worst) and worst >= plain - AUGMENTATION_TOLERANCE,
                  worst - plain)


def hallucination_grows(norms: list[dict]) -> Claim:
    growth = [row["norm_after"] / max(row["norm_before"], 1e-12) for row in norms]
    return _claim("hallucination_increases_norm", "What would activate the whole layer more?",
                  "Stepping the input along d||h||^2/dx = 2 h^T dh/dx increases ||h||^2", "grows",
                  f"||h|| grew {min(growth):.2f}x to {max(growth):.2f}x over {len(growth)} (layer, start) pairs",
                  "every growth > 1", bool(growth) and min(growth) > 1, min(growth) if growth else None)


def norm_gradient_identity(record: dict) -> Claim:
    relative = record["max_abs_difference"] / max(record["max_abs_gradient"], 1e-300)
    return _claim("norm_gradient_is_2_h_dh_dx", "What would activate the whole layer more?",
                  "d||h||^2/dx = 2 h^T dh/dx: autograd's gradient of the norm equals the Jacobian contracted with 2h",
                  "equal", f"{record['layer']}: max |difference| = {record['max_abs_difference']:.2e} "
                  f"({relative:.1e} of the largest entry, float64, {record['units']} units)",
                  f"< {NORM_IDENTITY_TOLERANCE:g} relative", relative < NORM_IDENTITY_TOLERANCE, relative, 0)


def layer2_unit_looks_at_upper_half(share: float, digit: int, unit: str) -> Claim:
    return _claim("layer2_unit_looks_at_upper_loop", "Gradients to inputs",
                  f"The most active layer-2 unit on an {digit} looks at its upper loop: most of its input "
                  "gradient lies in the upper half of the digit",
                  "the upper loop of an 8", f"{share:.0%} of |gradient| in the upper half ({unit})",
                  "share > 50%", share > 0.5, share)


def fcn_shares_computation(ratio: float, wall_time_speedup: float, canvas: int) -> Claim:
    return _claim("fcn_shares_computation", "Semantic segmentation",
                  "As a fully convolutional net, sliding the classifier shares the computation of overlapping windows",
                  "shared: fewer operations than explicit windows",
                  f"{ratio:.1f}x fewer multiply-adds, {wall_time_speedup:.1f}x faster on a {canvas}x{canvas} canvas",
                  "multiply-add ratio > 1", ratio > 1, ratio)


def segmentation_beats_sliding(mean_iou: float, baseline_mean_iou: float) -> Claim:
    return _claim("segmentation_beats_sliding", "Semantic segmentation",
                  "A fully convolutional net fine-tuned with a background class segments scenes of digits better "
                  "than the classifier slid over them",
                  "per-pixel labels (Long et al. 2015)",
                  f"mean IoU {mean_iou:.3f} fine-tuned vs {baseline_mean_iou:.3f} sliding",
                  "fine-tuned mean IoU > sliding mean IoU", mean_iou > baseline_mean_iou, mean_iou - baseline_mean_iou)



# --------------------------------------------------------------------------- claims from asset values
#
# Each decider takes the value of the asset its claim hangs on (the `parameter_counts`
# dict, the `run_comparison` dict, ...) as a keyword argument named after it.


def model_count(parameter_counts: dict, model: str) -> ModelCount:
    """A ModelCount rebuilt from the `parameter_counts` value's layer records."""
    layers = [LayerCount(r["layer"], r["kind"], int(r["weights"]), int(r["biases"]), int(r["input_signal"]),
                         int(r["output_signal"]), tuple(int(v) for v in str(r["output_shape"]).split("x")))
              for r in parameter_counts["layers"] if r["model"] == model]
    return ModelCount(model, layers)


def _seed_cnn_layers(representation_distances: dict) -> dict[str, dict]:
    return {r["layer"]: r for r in representation_distances["table"] if r["model"] == "seed_cnn"}


def _mean_accuracy(run_comparison: dict, model: str, variant: str = "plain") -> float | None:
    rows = [r for r in run_comparison["accuracy_by_variant"] if r["model"] == model and r["data_variant"] == variant]
    return float(rows[0]["accuracy_mean"]) if rows else None


def _lecture_connectivity(parameter_counts: dict) -> Claim:
    row = next(r for r in parameter_counts["connectivity"] if r["example"].startswith("lecture 1-D"))
    return local_connectivity(row["dense"], row["local"], row["shared"])


def _cnn_beats_mlp(run_comparison: dict) -> Claim:
    cnn, mlp = _mean_accuracy(run_comparison, "seed_cnn"), _mean_accuracy(run_comparison, "mlp")
    weights = {r["model"]: int(r["weights"]) for r in run_comparison["runs"]}
    if cnn is None or mlp is None:
        claim = cnn_beats_mlp(float("nan"), float("nan"), sum(lecture.WEIGHTS["seed_cnn"]), sum(lecture.WEIGHTS["mlp"]))
        return replace(claim, measured_value="seed_cnn or mlp has no plain run", passed=False)
    return cnn_beats_mlp(cnn, mlp, weights["seed_cnn"], weights["mlp"])


def _augmentation(run_comparison: dict) -> Claim:
    plain = _mean_accuracy(run_comparison, "seed_cnn")
    augmented = {v: _mean_accuracy(run_comparison, "seed_cnn", v) for v in ("shifted", "infinite")}
    augmented = {v: a for v, a in augmented.items() if a is not None}
    if plain is None or not augmented:
        claim = augmentation_keeps_accuracy(float("nan"), {})
        return replace(claim, measured_value="seed_cnn lacks a plain or an augmented run", passed=False)
    return augmentation_keeps_accuracy(plain, augmented)


def _triplet_pair(representation_distances: dict) -> tuple[str, str]:
    """(anchor, confusable) class names of the data set the triplet came from; the lecture's 4 and 9 by default."""
    classes = representation_distances.get("triplet_classes") or {}
    return (str(classes.get("anchor", LECTURE_PAIR[0])), str(classes.get("confusable", LECTURE_PAIR[1])))


def _aggregate(representation_distances: dict) -> Claim:
    layers = _seed_cnn_layers(representation_distances)
    return aggregate_feature_order(float(layers["pixels"]["triplet_order_rate_4_9"]),
                                   float(layers[TRIPLET_LAYER]["triplet_order_rate_4_9"]), TRIPLET_LAYER,
                                   _triplet_pair(representation_distances))


@dataclass(frozen=True)
class ClaimSpec:
    """A claim decided on the value of one asset (`asset`), in that asset's own step, and how."""

    key: str
    asset: str
    description: str
    decide: Callable[..., Claim]

    def __call__(self, values: dict[str, Any]) -> Claim:
        return self.decide(**{self.asset: values[self.asset]})


# In the lecture's order: the report lists them so.
REGISTRY: tuple[ClaimSpec, ...] = (
    ClaimSpec("local_connectivity_and_sharing", "parameter_counts",
              "1-D, 5 inputs and 5 outputs: 25 dense -> 13 local -> 3 shared weights.", _lecture_connectivity),
    ClaimSpec("seed_cnn_counts", "parameter_counts",
              "Seed CNN: 225 + 3600 + 7840 = 11665 weights; signals 784, 7056, 3136.",
              lambda parameter_counts: seed_cnn_counts(model_count(parameter_counts, "seed_cnn"))),
    ClaimSpec("mlp_counts", "parameter_counts",
              "MLP: 176400 + 32400 + 1440 = 210240 weights; signals 784, 225, 144.",
              lambda parameter_counts: mlp_counts(model_count(parameter_counts, "mlp"))),
    ClaimSpec("more_signals_fewer_weights", "parameter_counts",
              "The CNN has more signals but fewer weights than the MLP.",
              lambda parameter_counts: more_signals_fewer_weights(model_count(parameter_counts, "seed_cnn"),
                                                                  model_count(parameter_counts, "mlp"))),
    ClaimSpec("cnn_beats_mlp_with_fewer_weights", "run_comparison",
              "The CNN beats the MLP's test accuracy with about 18 times fewer weights.", _cnn_beats_mlp),
    ClaimSpec("triplet_pixels_nine_closer", "representation_distances",
              "In pixel space the 9 is closer to a 4 than the other 4 is.",
              lambda representation_distances: triplet_pixel_order(
                  float(_seed_cnn_layers(representation_distances)["pixels"]["ratio"]),
                  _triplet_pair(representation_distances))),
    ClaimSpec("triplet_features_fours_closer", "representation_distances",
              f"In the CNN's feature space ({TRIPLET_LAYER}, where the lecture's notebooks flip) the two 4s are closer.",
              lambda representation_distances: triplet_feature_order(
                  {layer: float(r["ratio"]) for layer, r in _seed_cnn_layers(representation_distances).items()},
                  pair=_triplet_pair(representation_distances))),
    ClaimSpec("aggregate_features_order_better", "representation_distances",
              f"Over all 4s and 9s, same-class pairs are closer more often in the CNN's {TRIPLET_LAYER} than in pixels.",
              _aggregate),
    ClaimSpec("nine_times_the_data", "shifted_mnist",
              "Cropping 2 pixels gives exactly 9 times the data.",
              lambda shifted_mnist: nine_times_the_data(int(shifted_mnist["source_count"]),
                                                        len(shifted_mnist["labels"]))),
    ClaimSpec("augmentation_does_not_hurt", "run_comparison",
              "Shifted or infinite data does not lower the CNN's test accuracy at equal epochs.", _augmentation),
    ClaimSpec("dh1_dx_is_the_filter", "input_gradients",
              "dh1/dx equals the layer-1 filter (max |difference| < 1e-6).",
              lambda input_gradients: gradient_is_filter(float(input_gradients["layer1"]["max_abs_difference"]))),
    ClaimSpec("layer2_unit_looks_at_upper_loop", "input_gradients",
              "The most active layer-2 unit on an 8 has most of its input gradient in the digit's upper half.",
              lambda input_gradients: layer2_unit_looks_at_upper_half(
                  float(input_gradients["unit_upper_half_share"]), int(input_gradients["digit"]),
                  "channel {} at ({}, {})".format(*input_gradients["unit"]))),
    ClaimSpec("norm_gradient_is_2_h_dh_dx", "hallucinations",
              "d||h||^2/dx equals 2 h^T dh/dx (autograd against the Jacobian, float64).",
              lambda hallucinations: norm_gradient_identity(hallucinations["norm_identity"])),
    ClaimSpec("hallucination_increases_norm", "hallucinations",
              "Gradient ascent on ||h||^2 increases ||h||^2, for every layer and start.",
              lambda hallucinations: hallucination_grows(hallucinations["norms"])),
    ClaimSpec("fcn_equals_classifier", "sliding_segmentation",
              "The fully convolutional net equals the classifier on 28x28 inputs.",
              lambda sliding_segmentation: fcn_equals_classifier(
                  float(sliding_segmentation["fcn_vs_classifier_max_abs_difference"]))),
    ClaimSpec("fcn_shares_computation", "sliding_segmentation",
              "The fully convolutional net needs fewer multiply-adds than explicit windows over the same canvas.",
              lambda sliding_segmentation: fcn_shares_computation(
                  float(sliding_segmentation["multiply_add_ratio"]), float(sliding_segmentation["wall_time_speedup"]),
                  int(sliding_segmentation["canvas"].shape[-1]))),
    ClaimSpec("segmentation_beats_sliding", "semantic_segmentation",
              "The fine-tuned fully convolutional net's mean IoU on held-out scenes beats the sliding classifier's.",
              lambda semantic_segmentation: segmentation_beats_sliding(
                  float(semantic_segmentation["mean_iou"]), float(semantic_segmentation["baseline_mean_iou"]))),
)


def decide_all(values: dict[str, Any]) -> list[Claim]:
    """Every registered claim, decided from the asset values by name, in the lecture's order."""
    return [spec(values) for spec in REGISTRY]
