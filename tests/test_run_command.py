"""`make run`'s choices, made before anything trains: which partitions, which config, what must exist."""

from __future__ import annotations

import pytest

from conftest import TEST_EXPERIMENTS
from pipelines.run import check_the_rest_is_stored, parse_args, run_config, selected_experiments


def _keys(argv: list[str]) -> list[str]:
    return [e.key for e in selected_experiments(parse_args(argv))]


def test_the_filters_pick_partitions_of_the_experiment_set():
    assert _keys([]) == list(TEST_EXPERIMENTS)  # every partition by default
    assert _keys(["--models", "seed_cnn", "--variants", "plain", "shifted"]) == ["seed_cnn.plain.s0",
                                                                                   "seed_cnn.shifted.s0"]
    with pytest.raises(SystemExit, match="seed\\(s\\) \\[4\\] are not in the experiment set"):
        _keys(["--seeds", "4"])
    with pytest.raises(SystemExit, match="no experiment matches"):
        _keys(["--models", "mlp", "--variants", "shifted"])


def test_only_the_options_given_become_run_config():
    assert run_config(parse_args([])) == {"ops": {}}
    config = run_config(parse_args(["--source", "sample", "--train-limit", "400", "--epochs", "3", "--lr", "0.002"]))
    assert config == {"ops": {"mnist": {"config": {"source": "sample", "train_limit": 400}},
                              "trained_model": {"config": {"epochs": 3, "lr": 0.002}}}}


def test_a_partial_selection_on_a_fresh_folder_fails_before_training(convlab_home):
    chosen = selected_experiments(parse_args(["--models", "seed_cnn"]))
    with pytest.raises(SystemExit, match="these, not selected, have never been trained here: mlp.plain.s0. Run"):
        check_the_rest_is_stored(chosen)
    check_the_rest_is_stored(selected_experiments(parse_args([])))  # everything chosen: nothing to load


def test_the_dagster_of_a_killed_make_run_is_stopped_by_the_next(tmp_path):
    """`make run` killed outright leaves its Dagster running (a session of its own); the next one stops it."""
    import json
    import os
    import subprocess

    from pipelines.services import RUN_STATE, start, stop_orphaned_run_dagster

    webserver, daemon = start(["sleep", "300"]), start(["sleep", "300"])
    groups = [webserver.pid, daemon.pid]
    dead_owner = subprocess.Popen(["true"])  # a pid that existed and exited: the killed make run
    dead_owner.wait()
    (tmp_path / RUN_STATE).write_text(json.dumps({"pid": os.getpid(), "dagster_groups": groups}))
    assert stop_orphaned_run_dagster(tmp_path) is None  # its make run is alive: left alone
    assert webserver.poll() is None and daemon.poll() is None
    (tmp_path / RUN_STATE).write_text(json.dumps({"pid": dead_owner.pid, "dagster_groups": groups}))
    assert stop_orphaned_run_dagster(tmp_path) == groups
    assert webserver.wait(timeout=10) == -9 and daemon.wait(timeout=10) == -9
    assert not (tmp_path / RUN_STATE).exists()


def test_training_progress_is_read_from_the_epoch_lines():
    """The live line of a training run: its bar, loss, accuracy and the time the rest of the run will take."""
    from pipelines.run import RunProgress

    progress = RunProgress()
    assert progress.line() == "preparing"
    progress.read("training seed_cnn on 359 images, cpu (bf16 autocast, NHWC, 2 threads), epochs 1-4", 100.0)
    progress.read("epoch 1/4  train loss 2.2918 acc 18.94%  validation loss 2.1059 acc 17.07%  lr 8.12e-03  "
                  "1.5s (243 img/s)", 110.0)
    assert (progress.epoch, progress.epochs, progress.loss, progress.accuracy) == (1, 4, 2.2918, 0.1707)
    assert progress.eta_seconds() == 30.0
    assert progress.line() == "[###.........] epoch 1/4 loss 2.292 acc 17.1% ETA 0:30"
    # A rerun resuming after epoch 2 is paced by its own epochs only.
    resumed = RunProgress()
    resumed.read("resuming mlp from /x/checkpoint.pt after epoch 2", 200.0)
    resumed.read("epoch 3/4  train loss 0.5000 acc 85.00%  lr 1e-03  1.0s (300 img/s)", 205.0)
    assert (resumed.accuracy, resumed.eta_seconds()) == (0.85, 5.0)


def test_off_a_terminal_no_live_line_is_drawn(tmp_path):
    from pipelines.run import Console

    with open(tmp_path / "out.txt", "w") as stream:
        console = Console(stream)
        console.status("busy: [seed_cnn.plain.s0] epoch 1/3")
        console.say(" success: mnist in 3 s (run 12345678)")
    assert not console.live
    assert (tmp_path / "out.txt").read_text() == " success: mnist in 3 s (run 12345678)\n"


def test_quick_analyses_shrink_the_analyses_and_leave_the_rest_to_its_defaults():
    from pipelines.definitions import defs
    from pipelines.run import QUICK_ANALYSES, parse_args, run_config

    assert run_config(parse_args([])) == {"ops": {}}
    ops = run_config(parse_args(["--quick-analyses", "--epochs", "2"]))["ops"]
    assert ops == {"trained_model": {"config": {"epochs": 2}}, **{k: {"config": v} for k, v in QUICK_ANALYSES.items()}}
    # Every quick setting names a real field of its asset, so the launchpad accepts the run.
    for asset, settings in QUICK_ANALYSES.items():
        fields = defs.resolve_assets_def(asset).op.config_schema.config_type.fields
        assert set(settings) <= set(fields), (asset, settings)


def test_a_backfill_is_settled_once_everything_is_launched_and_every_run_ended():
    """make run does not wait for the daemon's next look to learn what its runs already say."""
    from pipelines.dagster_api import BackfillProgress, RunSummary
    from pipelines.run import settled_status

    def runs(*statuses):
        return [RunSummary(f"run{i}", status, None, ("mnist",), 1.0, 2.0) for i, status in enumerate(statuses)]

    assert settled_status(BackfillProgress("REQUESTED", 0), runs("SUCCESS", "SUCCESS")) == "COMPLETED_SUCCESS"
    assert settled_status(BackfillProgress("REQUESTED", 0), runs("SUCCESS", "FAILURE")) == "COMPLETED_FAILED"
    assert settled_status(BackfillProgress("REQUESTED", 3), runs("SUCCESS")) is None  # a level still to launch
    assert settled_status(BackfillProgress("REQUESTED", 0), []) is None  # nothing launched yet
    assert settled_status(BackfillProgress("CANCELED", 2), runs("CANCELED")) == "CANCELED"  # Dagster's own word
