"""MLflow runs end FINISHED or FAILED, never stay RUNNING: the resource, a failing
training step materialised through Dagster, and the run-failure sensor."""

from __future__ import annotations

import dagster as dg
import pytest

from conftest import TINY_MNIST, experiment_runs, tracking_client
from pipelines.resources.tracking import DAGSTER_RUN_TAG, MlflowTracking, flatten_params


def test_flatten_params_dots_nested_keys_and_stringifies_values():
    flat = flatten_params({"config": {"lr": 0.004, "bf16": None, "model": "mlp"}, "versions": {"torch": "2"},
                           "seed": 0, "shape": [1, 28, 28]})
    assert flat == {"config.lr": "0.004", "config.bf16": "null", "config.model": "mlp", "versions.torch": "2",
                    "seed": "0", "shape": "[1, 28, 28]"}


def test_default_store_is_sqlite_under_convlab_home(convlab_home):
    tracking = MlflowTracking()
    assert tracking.resolved_uri() == f"sqlite:///{convlab_home / 'mlflow' / 'mlflow.db'}"
    assert tracking.artifact_location() == (convlab_home / "mlflow" / "artifacts").as_uri()


def test_start_run_ends_finished_or_failed(convlab_home):
    tracking = MlflowTracking()
    with tracking.start_run("ok", tags={"model": "mlp"}) as ok:
        ok.log_params({"config": {"epochs": 1}})
        ok.log_metrics({"train_loss": 1.0}, step=1)
    with pytest.raises(ValueError), tracking.start_run("broken") as broken:
        raise ValueError("training diverged")
    with pytest.raises(KeyboardInterrupt), tracking.start_run("interrupted") as interrupted:
        raise KeyboardInterrupt

    client = tracking_client(convlab_home)
    assert client.get_run(ok.run_id).info.status == "FINISHED"
    assert client.get_run(ok.run_id).data.params == {"config.epochs": "1"}
    assert client.get_run(broken.run_id).info.status == "FAILED"
    assert client.get_run(interrupted.run_id).info.status == "FAILED"
    experiment = client.get_experiment_by_name("convlab")
    assert experiment.artifact_location == (convlab_home / "mlflow" / "artifacts").as_uri()


def test_close_orphaned_runs_fails_only_the_dagster_runs_own(convlab_home):
    tracking = MlflowTracking()
    client = tracking.client()
    experiment = tracking.experiment_id()
    orphan = client.create_run(experiment, tags={DAGSTER_RUN_TAG: "dead-run"}).info.run_id
    finished = client.create_run(experiment, tags={DAGSTER_RUN_TAG: "dead-run"}).info.run_id
    client.set_terminated(finished, "FINISHED")
    other = client.create_run(experiment, tags={DAGSTER_RUN_TAG: "live-run"}).info.run_id

    assert tracking.close_orphaned_runs("dead-run") == [orphan]
    assert client.get_run(orphan).info.status == "FAILED"
    assert client.get_run(finished).info.status == "FINISHED"
    assert client.get_run(other).info.status == "RUNNING"
    assert tracking.close_orphaned_runs("dead-run") == []


@pytest.mark.slow
def test_failing_training_step_leaves_its_mlflow_run_failed_and_the_sensor_closes_orphans(convlab_home):
    from pipelines.definitions import defs

    instance = dg.DagsterInstance.ephemeral()
    job = defs.resolve_job_def("full_pipeline")
    data = job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey("mnist")],
                                  run_config={"ops": {"mnist": {"config": TINY_MNIST}}})
    assert data.success

    # A learning rate this large makes the loss NaN at the second step (lr is
    # only checked to be positive and finite): conv_core raises
    # NonFiniteLossError inside the MLflow run.
    partition = "mlp.plain.s0"
    failed = job.execute_in_process(
        instance=instance, asset_selection=[dg.AssetKey("trained_model")], partition_key=partition,
        run_config={"ops": {"trained_model": {"config": {"epochs": 1, "lr": 1e30}}}}, raise_on_error=False)
    assert not failed.success
    failures = [e for e in failed.all_events if e.is_step_failure]
    assert "NonFiniteLossError" in failures[0].step_failure_data.error.to_string()

    runs = experiment_runs(convlab_home)
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FAILED"
    assert run.data.tags[DAGSTER_RUN_TAG] == failed.run_id
    assert run.data.tags["dagster.partition"] == partition
    assert run.data.params["config.lr"] == "1e+30"

    # A step process killed outright cannot end its run: the run-failure
    # sensor closes what the failed Dagster run left RUNNING.
    tracking = MlflowTracking()
    orphan = tracking.client().create_run(tracking.experiment_id(), tags={DAGSTER_RUN_TAG: failed.run_id})
    sensor = defs.resolve_sensor_def("report_failed_runs")
    context = dg.build_run_status_sensor_context(
        sensor_name=sensor.name, dagster_event=failed.get_run_failure_event(), dagster_instance=instance,
        dagster_run=failed.dagster_run, resources={"mlflow_tracking": tracking},
    ).for_run_failure()
    sensor(context)
    assert tracking.client().get_run(orphan.info.run_id).info.status == "FAILED"
