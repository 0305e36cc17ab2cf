"""Every registered claim can fail: each passes on a sound input and fails on a perturbed one.

The inputs are asset values in the shape the assets write (the parts each
decider reads), built small by hand; `perturb` changes one measured number the
way a run that does not reproduce the slide would.
"""

from __future__ import annotations

import copy

import pytest
import torch

from conv_core import claims
from assets.analysis import CONNECTIVITY_EXAMPLES
from conv_core.counting import connectivity_counts, count_parameters


def parameter_counts() -> dict:
    layers = []
    for model in ("seed_cnn", "mlp"):
        for layer in count_parameters(model).layers:
            row = layer.as_dict()
            layers.append({"model": model, **row, "output_shape": "x".join(map(str, row["output_shape"]))})
    connectivity = [{"example": label, **connectivity_counts(n_in, n_out, radius, c_in, c_out, dims).as_dict()}
                    for label, n_in, n_out, radius, c_in, c_out, dims in CONNECTIVITY_EXAMPLES]
    return {"layers": layers, "connectivity": connectivity}


def run_comparison(cnn=0.98, mlp=0.95, shifted=0.985, infinite=0.98) -> dict:
    accuracy = [("seed_cnn", "plain", cnn), ("mlp", "plain", mlp), ("seed_cnn", "shifted", shifted),
                ("seed_cnn", "infinite", infinite)]
    return {"accuracy_by_variant": [{"model": m, "data_variant": v, "accuracy_mean": a} for m, v, a in accuracy],
            "runs": [{"model": "seed_cnn", "weights": 11665}, {"model": "mlp", "weights": 210240}]}


def representation_distances(ratios=None, rates=None) -> dict:
    ratios = ratios or {"pixels": 0.8, "conv1": 0.7, "pool1": 0.85, "conv2": 1.1, "pool2": 1.5, "logits": 3.0}
    rates = rates or {"pixels": 0.80, "conv1": 0.82, "pool1": 0.85, "conv2": 0.90, "pool2": 0.93, "logits": 0.97}
    return {"table": [{"model": "seed_cnn", "layer": layer, "ratio": ratios[layer],
                       "triplet_order_rate_4_9": rates[layer]} for layer in ratios]}


def _set_weights(value: dict, model: str, index: int, weights: int) -> dict:
    rows = [r for r in value["layers"] if r["model"] == model]
    rows[index]["weights"] = weights
    return value


def _set_ratio(value: dict, layer: str, ratio: float) -> dict:
    next(r for r in value["table"] if r["layer"] == layer)["ratio"] = ratio
    return value


def _set_rate(value: dict, layer: str, rate: float) -> dict:
    next(r for r in value["table"] if r["layer"] == layer)["triplet_order_rate_4_9"] = rate
    return value


def _lecture_connectivity(value: dict, shared: int) -> dict:
    next(r for r in value["connectivity"] if r["example"].startswith("lecture 1-D"))["shared"] = shared
    return value


# key -> (sound values, a perturbation of them that must fail)
CASES = {
    "local_connectivity_and_sharing": (
        {"parameter_counts": parameter_counts()}, lambda v: {"parameter_counts": _lecture_connectivity(v["parameter_counts"], 5)}),
    "seed_cnn_counts": (
        {"parameter_counts": parameter_counts()}, lambda v: {"parameter_counts": _set_weights(v["parameter_counts"], "seed_cnn", 0, 250)}),
    "mlp_counts": (
        {"parameter_counts": parameter_counts()}, lambda v: {"parameter_counts": _set_weights(v["parameter_counts"], "mlp", 2, 1450)}),
    "more_signals_fewer_weights": (
        {"parameter_counts": parameter_counts()},
        lambda v: {"parameter_counts": _set_weights(v["parameter_counts"], "seed_cnn", 2, 7840 * 100)}),
    "cnn_beats_mlp_with_fewer_weights": (
        {"run_comparison": run_comparison()}, lambda v: {"run_comparison": run_comparison(cnn=0.94)}),
    "triplet_pixels_nine_closer": (
        {"representation_distances": representation_distances()},
        lambda v: {"representation_distances": _set_ratio(v["representation_distances"], "pixels", 1.05)}),
    "triplet_features_fours_closer": (
        {"representation_distances": representation_distances()},
        # The audit's finding: conv2 at 0.77 fails even with the logits far above 1.
        lambda v: {"representation_distances": _set_ratio(v["representation_distances"], "conv2", 0.77)}),
    "aggregate_features_order_better": (
        {"representation_distances": representation_distances()},
        lambda v: {"representation_distances": _set_rate(v["representation_distances"], "conv2", 0.75)}),
    "nine_times_the_data": (
        {"shifted_mnist": {"source_count": 10, "labels": torch.zeros(90)}},
        lambda v: {"shifted_mnist": {"source_count": 10, "labels": torch.zeros(89)}}),
    "augmentation_does_not_hurt": (
        {"run_comparison": run_comparison()}, lambda v: {"run_comparison": run_comparison(infinite=0.97)}),
    "dh1_dx_is_the_filter": (
        {"input_gradients": {"layer1": {"max_abs_difference": 1e-8}}},
        lambda v: {"input_gradients": {"layer1": {"max_abs_difference": 1e-3}}}),
    "layer2_unit_looks_at_upper_loop": (
        {"input_gradients": {"unit_upper_half_share": 0.7, "digit": 8, "unit": (3, 4, 5)}},
        lambda v: {"input_gradients": {**v["input_gradients"], "unit_upper_half_share": 0.4}}),
    "norm_gradient_is_2_h_dh_dx": (
        {"hallucinations": {"norm_identity": {"layer": "relu2", "max_abs_gradient": 5.0, "max_abs_difference": 4e-15,
                                              "units": 3136}}},
        lambda v: {"hallucinations": {"norm_identity": {**v["hallucinations"]["norm_identity"],
                                                        "max_abs_difference": 0.01}}}),
    "hallucination_increases_norm": (
        {"hallucinations": {"norms": [{"norm_before": 1.0, "norm_after": 2.0}, {"norm_before": 1.0, "norm_after": 1.5}]}},
        lambda v: {"hallucinations": {"norms": [{"norm_before": 1.0, "norm_after": 2.0},
                                                {"norm_before": 1.0, "norm_after": 0.9}]}}),
    "fcn_equals_classifier": (
        {"sliding_segmentation": {"fcn_vs_classifier_max_abs_difference": 1e-12}},
        lambda v: {"sliding_segmentation": {"fcn_vs_classifier_max_abs_difference": 1e-2}}),
    "fcn_shares_computation": (
        {"sliding_segmentation": {"multiply_add_ratio": 24.0, "wall_time_speedup": 9.0, "canvas": torch.zeros(112, 112)}},
        lambda v: {"sliding_segmentation": {**v["sliding_segmentation"], "multiply_add_ratio": 0.9}}),
    "segmentation_beats_sliding": (
        {"semantic_segmentation": {"mean_iou": 0.6, "baseline_mean_iou": 0.2}},
        lambda v: {"semantic_segmentation": {"mean_iou": 0.15, "baseline_mean_iou": 0.2}}),
}


def test_every_registered_claim_has_a_case():
    assert sorted(CASES) == sorted(spec.key for spec in claims.REGISTRY)


@pytest.mark.parametrize("spec", claims.REGISTRY, ids=lambda spec: spec.key)
def test_a_claim_passes_on_sound_values_and_fails_on_perturbed_ones(spec):
    sound, perturb = CASES[spec.key]
    passed = spec(copy.deepcopy(sound))
    assert passed.passed, passed
    assert passed.key == spec.key and passed.lecture_value and passed.measured_value
    failed = spec(perturb(copy.deepcopy(sound)))
    assert not failed.passed, failed


def test_every_claim_measures_a_number_for_plots():
    for spec in claims.REGISTRY:
        sound, _ = CASES[spec.key]
        assert isinstance(spec(copy.deepcopy(sound)).measured_number, float), spec.key


def test_the_feature_claim_reads_conv2_not_the_logits():
    """A classifier whose logits order the triplet but whose conv2 does not (the audit's MLP-like case) fails."""
    value = representation_distances(ratios={"pixels": 0.8, "conv1": 0.7, "pool1": 0.8, "conv2": 0.77,
                                             "pool2": 0.9, "logits": 3.2})
    claim = claims.triplet_feature_order({r["layer"]: r["ratio"] for r in value["table"]})
    assert not claim.passed and claim.measured_number == pytest.approx(0.77) and claim.lecture_number == 1.10
    assert "conv2 0.77" in claim.measured_value and "logits 3.20" in claim.measured_value
