"""conv_core.tuning: defaults are chosen by validation accuracy, averaged over models and seeds."""

from conv_core import tuning
from conv_core.train import TrainConfig


def _trial(model, settings, accuracy, seed=0):
    return tuning.Trial(model, seed, settings, accuracy, 1.0)


def test_candidates_cover_the_grid():
    got = tuning.candidates({"lr": (0.1, 0.2), "batch_size": (8, 16, 32)})
    assert len(got) == 6 and (("batch_size", 16), ("lr", 0.2)) in got


def test_a_grid_axis_reads_values_as_the_field_is_typed():
    # batch_size and lr default to None (the model's recipe): their type comes from the recipe
    assert tuning.grid_axis("batch_size=128,256") == ("batch_size", (128, 256))
    assert all(isinstance(v, int) for v in tuning.grid_axis("batch_size=128,256")[1])
    assert tuning.grid_axis("lr=0.003,1") == ("lr", (0.003, 1.0))
    assert tuning.grid_axis("label_smoothing=0,0.1") == ("label_smoothing", (0.0, 0.1))


def test_best_is_the_highest_mean_over_models_not_one_models_peak():
    steady, spiky = (("lr", 0.01),), (("lr", 0.03),)
    trials = [_trial("seed_cnn", steady, 0.96), _trial("mlp", steady, 0.94),
              _trial("seed_cnn", spiky, 0.97), _trial("mlp", spiky, 0.90)]
    assert tuning.best(trials) == steady
    rows = tuning.table(trials).splitlines()
    assert rows[0] == "| lr | seed_cnn | mlp | mean |" and rows[2].startswith("| 0.01 | 96.00% | 94.00% | 95.00%")


def test_a_trial_scores_on_the_validation_digits_it_is_given(sample_digits):
    # The sample is sorted by class: every 10th digit mixes them.
    images, labels = sample_digits.train_images[::10], sample_digits.train_labels[::10]
    base = TrainConfig(model="mlp", epochs=2, batch_size=32, device="cpu")
    trial = tuning.run_trial(base, (("lr", 0.01),), (images[:256], labels[:256]), (images[256:320], labels[256:320]),
                             threads=1)
    assert trial.model == "mlp" and 0.1 < trial.validation_accuracy <= 1
    # Scored on what it was given: all-wrong labels give no correct answer.
    wrong = tuning.run_trial(base, (("lr", 0.01),), (images[:256], labels[:256]),
                             (images[256:320], (labels[256:320] + 1) % 10),
                             threads=1)
    assert wrong.validation_accuracy < trial.validation_accuracy
