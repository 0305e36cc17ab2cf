"""make run's total-time estimate from the make runs that finished before it."""

from __future__ import annotations

from dataclasses import replace

from pipelines.run_history import PastRun, estimate_total, history_path, past_runs, record

MACHINE = "Some CPU x2"
DEFAULT = ("mlp.plain.s0", "seed_cnn.plain.s0")
SAMPLE = {"source": "sample"}


def finished(settings=SAMPLE, experiments=DEFAULT, machine=MACHINE, training=60.0, wall=210.0, when="2026-12-04 21:40"):
    return PastRun(machine, experiments, settings, training, wall, when)


def test_nothing_finished_yet_says_when_it_will_be_known(tmp_path):
    estimate = estimate_total(tmp_path, MACHINE, DEFAULT, SAMPLE, 60.0)
    assert estimate.seconds is None
    assert "once one make run of these experiments has finished" in estimate.line


def test_the_same_make_run_gives_its_time_and_the_latest_one_counts(tmp_path):
    record(tmp_path, finished(wall=300.0, when="2026-12-01 10:00"))
    record(tmp_path, finished(wall=210.0))
    estimate = estimate_total(tmp_path, MACHINE, DEFAULT, SAMPLE, 60.0)
    assert estimate.seconds == 210.0
    assert "3.5 min, from the same make run here on 2026-12-04 21:40" in estimate.line
    # a start-up measurement on a busier machine scales it, within bounds
    assert estimate_total(tmp_path, MACHINE, DEFAULT, SAMPLE, 90.0).seconds == 315.0
    assert estimate_total(tmp_path, MACHINE, DEFAULT, SAMPLE, 600.0).seconds == 420.0


def test_other_settings_scale_the_training_part_by_the_training_estimates(tmp_path):
    fashion = {"dataset": "fashion_mnist"}
    record(tmp_path, finished(settings={"source": "sample", "batch_size": 64}))  # recorded without its training
    assert estimate_total(tmp_path, MACHINE, DEFAULT, fashion, 360.0).seconds == 210.0 * 6  # scaled whole
    record(tmp_path, replace(finished(), training_wall_s=150.0))  # 60 s of it not training
    estimate = estimate_total(tmp_path, MACHINE, DEFAULT, fashion, 360.0)
    assert estimate.seconds == 60.0 + 150.0 * 6
    assert "its training scaled by the training estimates" in estimate.line and "16.0 min" in estimate.line


def test_other_machines_and_other_experiments_are_not_used(tmp_path):
    record(tmp_path, finished(machine="Another CPU x16"))
    record(tmp_path, finished(experiments=("mlp.plain.s0",)))
    assert estimate_total(tmp_path, MACHINE, DEFAULT, SAMPLE, 60.0).seconds is None


def test_a_line_cut_short_is_skipped_and_the_rest_read(tmp_path):
    record(tmp_path, finished(wall=200.0))
    with history_path(tmp_path).open("a") as out:
        out.write('{"machine": "Some CPU x2", "experi')  # a make run killed while it wrote
    assert [run.wall_s for run in past_runs(tmp_path)] == [200.0]
    record(tmp_path, finished(wall=220.0))  # on a line of its own, not glued to the broken one
    assert [run.wall_s for run in past_runs(tmp_path)] == [200.0, 220.0]


def test_an_unreadable_history_gives_no_estimate_rather_than_an_error(tmp_path):
    history_path(tmp_path).parent.mkdir(parents=True)
    history_path(tmp_path).write_bytes(b"\xff\xfe not text")
    assert past_runs(tmp_path) == []
    assert estimate_total(tmp_path, MACHINE, DEFAULT, SAMPLE, 60.0).seconds is None
