"""The Definitions load (without a warning), every job resolves, the weekly
schedule asks for one backfill over the whole graph, and the `dagster` CLI
validates the workspace."""

from __future__ import annotations

import subprocess
import sys

import dagster as dg
import pytest

from conftest import REPO, subprocess_env
from pipelines.definitions import defs
from pipelines.resources.partitions import DATA_VARIANTS, training_partitions

JOBS = ("full_pipeline", "train_models")
# The graph of design.md section 2 as it stands; more assets may join.
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


def test_training_partitions_are_model_by_data_variant():
    from conv_core.models import MODEL_NAMES

    keys = training_partitions.get_partition_keys()
    assert len(keys) == len(MODEL_NAMES) * len(DATA_VARIANTS)
    assert "plain|seed_cnn" in keys and "shifted|mlp" in keys
    assert defs.resolve_assets_def("trained_model").partitions_def == training_partitions


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


def test_weekly_schedule_requests_one_backfill_of_everything_and_is_off_by_default(convlab_home):
    schedule = defs.resolve_schedule_def("weekly_full_pipeline")
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    assert schedule.cron_schedule == "0 3 * * 1"

    with dg.DagsterInstance.get() as instance:  # a temporary DAGSTER_HOME; ephemeral ones are refused
        context = dg.build_schedule_context(instance=instance, repository_def=defs.get_repository_def())
        data = schedule.evaluate_tick(context)
    assert data.skip_message is None
    (request,) = data.run_requests
    assert isinstance(request, dg.RunRequest)
    assert request.requires_backfill_daemon()
    assert request.tags["convlab/trigger"] == "weekly"

    subset = request.asset_graph_subset
    graph = defs.resolve_asset_graph()
    assert set(subset.asset_keys) == set(graph.materializable_asset_keys)
    every_partition = set(training_partitions.get_partition_keys())
    for key in graph.materializable_asset_keys:
        if graph.get(key).partitions_def is None:
            assert key in subset.non_partitioned_asset_keys
        else:
            assert set(subset.partitions_subsets_by_asset_key[key].get_partition_keys()) == every_partition


def test_run_failure_sensor_is_on_by_default():
    sensor = defs.resolve_sensor_def("report_failed_runs")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING


def test_training_settings_map_onto_the_core_config():
    import torch

    from assets.training import TrainSettings, _train_config

    cpu = torch.device("cpu")
    default = _train_config(TrainSettings(), "mlp", "shifted", cpu)
    assert default.bf16 is None and default.shift_augment and default.model == "mlp" and default.device == "cpu"
    assert _train_config(TrainSettings(precision="fp32"), "seed_cnn", "plain", cpu).bf16 is False
    assert _train_config(TrainSettings(precision="bf16", epochs=3), "seed_cnn", "plain", cpu).epochs == 3
    with pytest.raises(ValueError, match="precision must be one of auto, bf16, fp32"):
        _train_config(TrainSettings(precision="fp16"), "seed_cnn", "plain", cpu)
