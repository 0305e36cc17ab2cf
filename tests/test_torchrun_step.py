"""A training step as a torchrun job: two data-parallel processes under Dagster Pipes, one MLflow run."""

from __future__ import annotations

import dagster as dg
import pytest
import torch

from conftest import TINY_MNIST, TINY_TRAINING, experiment_runs

PARTITION = "seed_cnn.plain.s0"


@pytest.mark.slow
def test_two_process_training_step_matches_one_process_and_logs_one_run(convlab_home):
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("this torch has no gloo backend for CPU data parallelism")
    from pipelines.definitions import defs

    instance = dg.DagsterInstance.ephemeral()
    job = defs.resolve_job_def("full_pipeline")
    job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey("mnist")],
                           run_config={"ops": {"mnist": {"config": TINY_MNIST}}})

    def train(processes: int) -> tuple[dg.ExecuteInProcessResult, dict]:
        # fp32 and one epoch: the two runs then differ only by the order gradients are summed in.
        settings = {**TINY_TRAINING, "epochs": 1, "precision": "fp32", "processes": processes}
        result = job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey("trained_model")],
                                        partition_key=PARTITION,
                                        run_config={"ops": {"trained_model": {"config": settings}}})
        return result, defs.load_asset_value("trained_model", partition_key=PARTITION, instance=instance)

    parallel, two = train(2)
    assert parallel.success
    logged = [e.message for e in instance.all_logs(parallel.run_id) if e.message]
    # Rank 0's epoch lines reached the step's log through Pipes while it trained.
    assert any("epoch 1/1" in message for message in logged), logged[-20:]
    single, one = train(1)
    assert single.success

    assert len(two["history"]) == 1 and two["test_accuracy"] > 0.5
    difference = max(float((two["state_dict"][k] - one["state_dict"][k]).abs().max()) for k in one["state_dict"])
    print(f"2 processes vs 1: max |weight difference| = {difference:.2e}")
    assert difference < 1e-4, difference

    runs = {run.info.run_id: run for run in experiment_runs(convlab_home)}
    run = runs[two["mlflow_run_id"]]
    assert run.info.status == "FINISHED" and run.data.params["processes"] == "2"
    assert run.data.metrics["test_accuracy"] == pytest.approx(two["test_accuracy"])
    assert "validation_accuracy" in run.data.metrics  # rank 0's history, logged once by the step
    training_runs = [r for r in runs.values() if r.data.tags.get("convlab.kind") == "training"]
    assert len(training_runs) == 2  # one per materialisation, not one per process
