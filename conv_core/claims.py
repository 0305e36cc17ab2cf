"""The lecture's claims, each checked against this run's measurements.

Every function takes plain values (numbers, lists, dicts, DataFrames) that
the pipeline produced and returns a `Claim`: what the lecture says, what was
measured, the tolerance, and whether it holds. Dagster asset checks and the
report both call these, so a claim is decided in one place.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from conv_core.counting import ModelCount

# Test accuracy can drop this much with augmentation and still count as "not
# lower": about one standard error on 1,000 test digits at 97%.
AUGMENTATION_TOLERANCE = 0.005
# A trained model must beat this test accuracy (chance is 0.1) to feed anything downstream.
ACCURACY_FLOOR = 0.5
# dh1/dx equals the filter up to float32 rounding.
GRADIENT_TOLERANCE = 1e-6
# The fully convolutional net equals the classifier (compared in float64).
FCN_TOLERANCE = 1e-5


@dataclass(frozen=True)
class Claim:
    key: str             # a stable identifier (asset-check name)
    slide: str           # where in the lecture
    statement: str       # the claim, in the lecture's words where possible
    lecture_value: str
    measured_value: str
    tolerance: str
    passed: bool

    def as_dict(self) -> dict:
        return asdict(self)


def _claim(key, slide, statement, lecture, measured, tolerance, passed) -> Claim:
    return Claim(key, slide, statement, str(lecture), str(measured), str(tolerance), bool(passed))


def _counts_claim(key: str, label: str, count: ModelCount, weights: list[int], signals: list[int]) -> Claim:
    measured = [layer.weights for layer in count.layers]
    lecture = f"weights {weights} = {sum(weights)}; signals {signals}"
    return _claim(key, "Convolutional vs. non-convolutional",
                  f"The {label} has {' + '.join(map(str, weights))} = {sum(weights)} weights and signals "
                  f"{', '.join(map(str, signals))}", lecture,
                  f"weights {measured} = {count.weights}; signals {count.signals}", "exact",
                  measured == weights and count.weights == sum(weights) and count.signals == signals)


def seed_cnn_counts(count: ModelCount) -> Claim:
    return _counts_claim("seed_cnn_counts", "CNN", count, [225, 3600, 7840], [784, 7056, 3136])


def mlp_counts(count: ModelCount) -> Claim:
    return _counts_claim("mlp_counts", "MLP", count, [176400, 32400, 1440], [784, 225, 144])


def more_signals_fewer_weights(cnn: ModelCount, mlp: ModelCount) -> Claim:
    return _claim("more_signals_fewer_weights", "Convolutional vs. non-convolutional",
                  "The convolutional network has more signals but fewer parameters",
                  "signals 10976 > 1153; weights 11665 < 210240",
                  f"signals {sum(cnn.signals)} vs {sum(mlp.signals)}; weights {cnn.weights} vs {mlp.weights}",
                  "strict inequality", sum(cnn.signals) > sum(mlp.signals) and cnn.weights < mlp.weights)


def local_connectivity(dense: int, local: int, shared: int) -> Claim:
    return _claim("local_connectivity_and_sharing", "Local connectivity / Parameter sharing",
                  "5 inputs to 5 outputs: 25 weights dense, 13 with local connectivity, 3 with sharing",
                  "25 -> 13 -> 3", f"{dense} -> {local} -> {shared}", "exact", (dense, local, shared) == (25, 13, 3))


def nine_times_the_data(source_count: int, expanded_count: int) -> Claim:
    factor = expanded_count / source_count if source_count else float("nan")
    return _claim("nine_times_the_data", "Regularization by data augmentation",
                  "Cropping just 2 pixels gets you 9 times the data", "9x",
                  f"{source_count} -> {expanded_count} ({factor:g}x)", "exact", expanded_count == 9 * source_count > 0)


def triplet_pixel_order(pixel_ratio: float) -> Claim:
    return _claim("triplet_pixels_nine_closer", "Good representation?",
                  "In pixel space, 9-4 is closer: d(9A,4A) / d(4A,4B) < 1",
                  "0.79 (Caffe notebooks' triplet)", f"{pixel_ratio:.3f}", "< 1", pixel_ratio < 1)


def triplet_feature_order(layer_ratios: dict[str, float]) -> Claim:
    """The two 4s closer in the CNN's feature space: at the logits, for the chosen triplet."""
    logits = layer_ratios.get("logits", float("nan"))
    shown = ", ".join(f"{layer} {ratio:.2f}" for layer, ratio in layer_ratios.items())
    return _claim("triplet_features_fours_closer", "Good representation?",
                  "In feature space, 4-4 is closer: d(9A,4A) / d(4A,4B) > 1 at the CNN's output",
                  "3.20 at the logits (flips at conv2)", shown, "> 1 at the logits", logits > 1)


def aggregate_feature_order(pixel_rate: float, feature_rate: float, layer: str) -> Claim:
    return _claim("aggregate_features_order_better", "Good representation?",
                  "Over the test split's 4s and 9s, same-class pairs are closer more often in the CNN's "
                  "feature space than in pixel space: P[d(a,p) < d(a,n)]",
                  "feature space better than pixel space", f"pixels {pixel_rate:.3f}, {layer} {feature_rate:.3f}",
                  "feature rate > pixel rate", feature_rate > pixel_rate)


def gradient_is_filter(max_abs_difference: float) -> Claim:
    return _claim("dh1_dx_is_the_filter", "Gradients to inputs",
                  "dh1/dx is boring, gives just the filters W1 (gated by the ReLU)", "difference 0",
                  f"max |dh1/dx - W1| = {max_abs_difference:.2e}", f"< {GRADIENT_TOLERANCE:g}",
                  max_abs_difference < GRADIENT_TOLERANCE)


def fcn_equals_classifier(max_abs_difference: float) -> Claim:
    return _claim("fcn_equals_classifier", "Semantic segmentation",
                  "Sliding the classifier as a fully convolutional net: on a 28x28 input it is the classifier",
                  "identical logits", f"max |difference| = {max_abs_difference:.2e} (float64)",
                  f"< {FCN_TOLERANCE:g}", max_abs_difference < FCN_TOLERANCE)


def cnn_beats_mlp(cnn_accuracy: float, mlp_accuracy: float, cnn_weights: int, mlp_weights: int) -> Claim:
    ratio = mlp_weights / cnn_weights
    return _claim("cnn_beats_mlp_with_fewer_weights", "Convolutional vs. non-convolutional",
                  "The CNN beats the MLP's test accuracy with about 18 times fewer weights",
                  "fewer weights (210240 / 11665 = 18.0x), better accuracy",
                  f"CNN {cnn_accuracy:.4f} vs MLP {mlp_accuracy:.4f}; {ratio:.1f}x fewer weights",
                  "CNN accuracy > MLP accuracy", cnn_accuracy > mlp_accuracy and round(ratio) == 18)


def augmentation_keeps_accuracy(plain: float, augmented: dict[str, float]) -> Claim:
    worst = min(augmented.values()) if augmented else float("nan")
    shown = ", ".join(f"{variant} {accuracy:.4f}" for variant, accuracy in augmented.items())
    return _claim("augmentation_does_not_hurt", "Regularization by data augmentation",
                  "Augmented data (shifts, infinite MNIST) does not lower the CNN's test accuracy at equal epochs",
                  "regularises: no loss", f"plain {plain:.4f}; {shown}", f"at most {AUGMENTATION_TOLERANCE} lower",
                  bool(augmented) and not math.isnan(worst) and worst >= plain - AUGMENTATION_TOLERANCE)


def hallucination_grows(norms: list[dict]) -> Claim:
    growth = [row["norm_after"] / max(row["norm_before"], 1e-12) for row in norms]
    return _claim("hallucination_increases_norm", "What would activate the whole layer more?",
                  "Stepping the input along d||h||^2/dx = 2 h^T dh/dx increases ||h||^2", "grows",
                  f"||h|| grew {min(growth):.2f}x to {max(growth):.2f}x over {len(growth)} (layer, start) pairs",
                  "every growth > 1", bool(growth) and min(growth) > 1)
