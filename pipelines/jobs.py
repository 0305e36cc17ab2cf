"""Jobs, the weekly schedule, and the run-failure sensor."""

import dagster as dg

from pipelines.tracking import MlflowTracking

TRAINING = dg.AssetSelection.assets("trained_model")

# Everything. Run once per training partition it would rebuild the unpartitioned
# assets each time, so the schedule below asks for one backfill instead.
full_pipeline = dg.define_asset_job(
    "full_pipeline", selection=dg.AssetSelection.all(),
    description="Every asset: data, all training partitions, analyses and figures.")

# The training partitions and everything downstream of them.
train_models = dg.define_asset_job(
    "train_models", selection=TRAINING | TRAINING.downstream(),
    description="Training partitions and the assets that depend on them.")


@dg.schedule(cron_schedule="0 3 * * 1", job=full_pipeline, name="weekly_full_pipeline",
             default_status=dg.DefaultScheduleStatus.STOPPED,
             description="Every Monday at 03:00, rebuild the whole graph (one backfill over all partitions).")
def weekly_full_pipeline(context: dg.ScheduleEvaluationContext):
    from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset

    graph = context.repository_def.asset_graph
    subset = AssetGraphSubset.all(graph)
    return dg.RunRequest.for_asset_graph_subset(subset, tags={"convlab/trigger": "weekly"})


@dg.run_failure_sensor(name="report_failed_runs", default_status=dg.DefaultSensorStatus.RUNNING,
                       description="Logs why a run failed and closes its MLflow runs left RUNNING.")
def report_failed_runs(context: dg.RunFailureSensorContext, mlflow_tracking: MlflowTracking):
    run = context.dagster_run
    reasons = [f"{event.step_key}: {event.event_specific_data.error.message.strip()}"
               for event in context.get_step_failure_events()
               if event.event_specific_data and event.event_specific_data.error]
    context.log.error(f"run {run.run_id} of {run.job_name} failed: {context.failure_event.message}; "
                      + ("; ".join(reasons) or "no step error recorded"))
    closed = mlflow_tracking.close_orphaned_runs(run.run_id)
    if closed:
        context.log.info(f"marked MLflow runs FAILED: {', '.join(closed)}")
