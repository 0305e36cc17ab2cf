"""run_comparison sets side by side only runs on the same data (same bytes and the same subset)."""

from assets.analysis import accuracy_by_variant, comparison_rows


def _value(model: str, variant: str, seed: int, accuracy: float, identity: str) -> dict:
    return {"model": model, "data_variant": variant, "seed": seed, "test_accuracy": accuracy, "weights": 1,
            "training_seconds": 1.0, "mlflow_run_id": f"run-{model}-{variant}-{seed}", "data_identity": identity,
            "config": {"epochs": 3}}


def test_runs_on_other_data_are_left_out_and_named():
    trained = {"seed_cnn.plain.s0": _value("seed_cnn", "plain", 0, 0.98, "2000 digits"),
               "seed_cnn.plain.s1": _value("seed_cnn", "plain", 1, 0.97, "2000 digits"),
               "mlp.plain.s0": _value("mlp", "plain", 0, 0.99, "1000 digits")}
    rows, left_out = comparison_rows(trained)
    assert left_out == ["mlp.plain.s0"]
    assert sorted(rows["partition"]) == ["seed_cnn.plain.s0", "seed_cnn.plain.s1"]
    table = accuracy_by_variant(rows)
    assert list(table["model"]) == ["seed_cnn"]  # no MLP of another subset to beat or lose to
    assert table["accuracy_mean"].iloc[0] == (0.98 + 0.97) / 2 and table["seeds"].iloc[0] == 2


def test_runs_on_the_same_data_are_all_compared():
    trained = {"seed_cnn.plain.s0": _value("seed_cnn", "plain", 0, 0.98, "same"),
               "mlp.plain.s0": _value("mlp", "plain", 0, 0.96, "same")}
    rows, left_out = comparison_rows(trained)
    assert left_out == [] and sorted(rows["partition"]) == ["mlp.plain.s0", "seed_cnn.plain.s0"]
