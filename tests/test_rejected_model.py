"""A model that fails a blocking check is never stored: what downstream reads stays the last good one."""

from __future__ import annotations

import dagster as dg
import pytest

from conftest import TINY_MNIST, TINY_TRAINING, experiment_runs

PARTITION = "mlp.plain.s0"


@pytest.mark.slow
def test_a_diverged_model_leaves_the_stored_value_and_fails_its_mlflow_run(convlab_home):
    from assets.training import REJECTED_TAG
    from pipelines.definitions import defs

    instance = dg.DagsterInstance.ephemeral()
    job = defs.resolve_job_def("full_pipeline")

    def train(lr: float) -> dg.ExecuteInProcessResult:
        config = {"ops": {"mnist": {"config": TINY_MNIST}, "trained_model": {"config": {**TINY_TRAINING, "lr": lr}}}}
        return job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey("trained_model")],
                                      partition_key=PARTITION, run_config=config, raise_on_error=False)

    job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey("mnist")],
                           run_config={"ops": {"mnist": {"config": TINY_MNIST}}})
    good = train(TINY_TRAINING["lr"])
    assert good.success
    stored = defs.load_asset_value("trained_model", partition_key=PARTITION, instance=instance)

    diverged = train(1e6)
    assert not diverged.success
    failures = [e.step_failure_data.error for e in diverged.all_events if e.is_step_failure]
    assert "failed its blocking checks (accuracy_floor" in failures[0].message
    floor = {e.asset_check_key.name: e.passed for e in diverged.get_asset_check_evaluations()}
    assert floor["accuracy_floor"] is False
    assert not diverged.asset_materializations_for_node("trained_model")

    after = defs.load_asset_value("trained_model", partition_key=PARTITION, instance=instance)
    assert after["mlflow_run_id"] == stored["mlflow_run_id"]  # the good model is still what downstream reads
    runs = {run.info.run_id: run for run in experiment_runs(convlab_home)}
    assert runs[stored["mlflow_run_id"]].info.status == "FINISHED"
    (rejected,) = [run for run_id, run in runs.items() if run_id != stored["mlflow_run_id"]]
    assert rejected.info.status == "FAILED"
    assert rejected.data.tags[REJECTED_TAG] == "accuracy_floor"
