"""The Definitions load (without a warning), every job resolves, the partitions
are exactly the experiment set, the weekly rebuild requests the graph in
dependency order, and the `dagster` CLI validates the workspace."""

from __future__ import annotations

import subprocess
import sys

import dagster as dg
import pytest

from conftest import REPO, TEST_EXPERIMENTS, subprocess_env
from pipelines.definitions import defs
from conv_core.experiments import EXPERIMENT_SETS, Experiment
from pipelines.resources.partitions import experiments, training_partitions

JOBS = ("full_pipeline", "train_models")
# The core of the asset graph; more assets may join.
CORE_ASSETS = {"mnist", "shifted_mnist", "trained_model", "model_evaluation", "parameter_counts",
               "representation_distances", "run_comparison", "filter_figures"}

# Warnings are errors from the first import on, so a deprecated or beta API
# used at definition time fails here and not silently in the UI's logs.
STRICT_LOAD = """
import warnings
warnings.simplefilter("error")
import dagster as dg
from pipelines.definitions import defs
dg.Definitions.validate_loadable(defs)
for name in {jobs!r}:
    defs.resolve_job_def(name)
defs.resolve_asset_graph()
defs.get_repository_def().load_all_definitions()
print("loaded", len(list(defs.resolve_asset_graph().get_all_asset_keys())))
"""


def _asset_names() -> set[str]:
    return {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}


def test_definitions_are_loadable_and_every_job_resolves():
    dg.Definitions.validate_loadable(defs)
    assert CORE_ASSETS <= _asset_names()
    for name in JOBS:
        job = defs.resolve_job_def(name)
        assert job.name == name
    full = {k.to_user_string() for k in defs.resolve_job_def("full_pipeline").asset_layer.selected_asset_keys}
    assert full == _asset_names()
    train = {k.to_user_string() for k in defs.resolve_job_def("train_models").asset_layer.selected_asset_keys}
    assert {"trained_model", "model_evaluation", "run_comparison"} <= train
    assert not {"mnist", "parameter_counts"} & train


def test_training_partitions_are_exactly_the_experiment_set():
    keys = training_partitions.get_partition_keys()
    assert keys == [e.key for e in experiments()] == list(TEST_EXPERIMENTS)  # the tests' list (conftest.py)
    assert "seed_cnn.plain.s0" in keys and "seed_cnn.shifted.s0" in keys
    assert defs.resolve_assets_def("trained_model").partitions_def == training_partitions
    assert defs.resolve_assets_def("model_evaluation").partitions_def == training_partitions


def test_the_lecture_set_trains_every_model_and_compares_the_two_over_three_seeds():
    lecture = EXPERIMENT_SETS["lecture"]
    assert len(lecture) == 20 and len(set(lecture)) == 20
    by_model = {m: sorted((e.variant, e.seed) for e in lecture if e.model == m) for m in ("vgg_small", "caffe_notebook")}
    assert by_model == {"vgg_small": [("plain", 0)], "caffe_notebook": [("plain", 0)]}
    for model in ("seed_cnn", "mlp"):
        assert sorted((e.variant, e.seed) for e in lecture if e.model == model) == sorted(
            (v, s) for v in ("plain", "shifted", "infinite") for s in (0, 1, 2))
    for experiment in lecture:
        assert Experiment.parse(experiment.key) == experiment
        assert not set("|,[]") & set(experiment.key)


def test_experiment_sets_by_name_or_as_a_list_of_keys(monkeypatch):
    monkeypatch.setenv("CONVLAB_EXPERIMENTS", "quick")
    assert experiments() == EXPERIMENT_SETS["quick"] and len(experiments()) == 8
    monkeypatch.setenv("CONVLAB_EXPERIMENTS", "mlp.plain.s0, seed_cnn.plain.s0,mlp.plain.s0")
    assert [e.key for e in experiments()] == ["mlp.plain.s0", "seed_cnn.plain.s0"]


def test_an_unknown_experiment_set_or_key_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("CONVLAB_EXPERIMENTS", "everything")
    with pytest.raises(ValueError, match="not an experiment set; known: lecture, quick"):
        experiments()
    monkeypatch.setenv("CONVLAB_EXPERIMENTS", "seed_cnn.plain.s0,vgg_small.plain.s0")
    with pytest.raises(ValueError, match="must include mlp.plain.s0"):
        experiments()
    with pytest.raises(ValueError, match="not an experiment key"):
        Experiment.parse("plain|seed_cnn")
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        Experiment.parse("resnet.plain.s0")


def test_definitions_import_without_warnings(tmp_path):
    done = subprocess.run([sys.executable, "-W", "error", "-c", STRICT_LOAD.format(jobs=JOBS)], cwd=REPO,
                          env=subprocess_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.startswith("loaded")


@pytest.mark.slow
def test_dagster_cli_validates_the_workspace(tmp_path):
    done = subprocess.run([str(REPO / ".venv" / "bin" / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
                          cwd=REPO, env=subprocess_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "All code locations passed validation" in done.stdout + done.stderr


def test_weekly_rebuild_requests_the_graph_in_dependency_order_once_per_tick(convlab_home):
    """The weekly rebuild's conditions, tick by tick: roots after the cron tick; each asset once all of its
    upstream partitions were rebuilt since; nothing before the tick, nothing twice."""
    from datetime import datetime, timedelta, timezone

    sensor = defs.resolve_sensor_def("weekly_full_pipeline")
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED
    graph = defs.resolve_asset_graph()
    partitioned = {k for k in graph.materializable_asset_keys if graph.get(k).partitions_def is not None}
    before_tick = datetime(2026, 12, 7, 2, 59, tzinfo=timezone.utc)  # a Monday, before 03:00
    with dg.DagsterInstance.get() as instance:
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, evaluation_time=before_tick)
        assert result.total_requested == 0
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor,
                                                   evaluation_time=before_tick + timedelta(minutes=2))
        requested = {r.key.to_user_string() for r in result.results if r.true_subset.size}
        assert requested == {"mnist", "parameter_counts"}
        # Pretend the roots ran: their children (every training partition among them) come next.
        for key in ("mnist", "parameter_counts"):
            instance.report_runless_asset_event(dg.AssetMaterialization(key))
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor,
                                                   evaluation_time=before_tick + timedelta(minutes=3))
        sizes = {r.key: r.true_subset.size for r in result.results if r.true_subset.size}
        assert {k.to_user_string() for k in sizes} == {"shifted_mnist", "infinite_mnist", "trained_model"}
        assert sizes[dg.AssetKey("trained_model")] == len(training_partitions.get_partition_keys())
        assert not partitioned - {dg.AssetKey("trained_model"), dg.AssetKey("model_evaluation")}


def test_run_failure_sensor_is_on_by_default():
    sensor = defs.resolve_sensor_def("report_failed_runs")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING


def test_training_settings_map_onto_the_core_config():
    import pydantic
    import torch

    from assets.training import TrainSettings, _train_config, training_version
    from conv_core.train import recipe

    cpu = torch.device("cpu")
    default = _train_config(TrainSettings(), Experiment("mlp", "shifted", 2), cpu)
    assert default.bf16 is None and default.shift_augment and default.model == "mlp" and default.device == "cpu"
    assert default.seed == 2  # from the partition
    assert _train_config(TrainSettings(precision="fp32"), Experiment("seed_cnn"), cpu).bf16 is False
    assert _train_config(TrainSettings(precision="bf16", epochs=3), Experiment("seed_cnn"), cpu).epochs == 3
    # unset batch size and learning rate: each model's own recipe, spelled out the same run
    for model in ("seed_cnn", "mlp"):
        own = recipe(model)
        unset = _train_config(TrainSettings(), Experiment(model), cpu)
        assert (unset.batch_size, unset.lr) == (own.batch_size, own.lr)
        spelled = _train_config(TrainSettings(batch_size=own.batch_size, lr=own.lr), Experiment(model), cpu)
        assert training_version(spelled, None, "data", cpu) == training_version(unset, None, "data", cpu)
    with pytest.raises(pydantic.ValidationError, match="auto.*bf16.*fp32"):
        TrainSettings(precision="fp16")


def test_the_launchpad_rejects_a_typo_and_describes_every_field():
    """Closed choices are Literal types (the launchpad's config schema is an enum), and every field says what it is."""
    from assets.data import InfiniteMnistSettings, MnistSettings
    from assets.training import TrainSettings

    for settings in (TrainSettings, MnistSettings, InfiniteMnistSettings):
        undocumented = [name for name, field in settings.model_fields.items() if not field.description]
        assert not undocumented, (settings.__name__, undocumented)
    job = defs.resolve_job_def("full_pipeline")
    bad = {"ops": {"trained_model": {"config": {"precision": "fp16"}}, "mnist": {"config": {"source": "web"}}}}
    with pytest.raises(dg.DagsterInvalidConfigError) as raised:
        dg.validate_run_config(job, bad)
    assert "fp16" in str(raised.value) and "web" in str(raised.value)


def test_the_training_version_follows_the_arithmetic_actually_used():
    """Same weights, same version: `auto` equals whichever of bf16 and fp32 this machine's CPU computes in."""
    import torch

    from assets.training import TrainSettings, _train_config, training_version
    from conv_core.train import resolve_bf16

    cpu = torch.device("cpu")
    configs = {precision: _train_config(TrainSettings(precision=precision), Experiment("seed_cnn"), cpu)
               for precision in ("auto", "fp32", "bf16")}
    versions = {precision: training_version(config, None, "data", cpu) for precision, config in configs.items()}
    assert versions["fp32"] != versions["bf16"]
    # auto is whichever arithmetic the start-up measurement chose on this machine
    assert versions["auto"] == versions["bf16" if resolve_bf16(configs["auto"], cpu) else "fp32"]
    assert training_version(_train_config(TrainSettings(), Experiment("seed_cnn", seed=1), cpu), None, "data", cpu) \
        != versions["auto"]  # the seed (from the partition) is part of it
