"""Jobs, the weekly rebuild, and the run-failure sensor.

The weekly rebuild is Dagster's declarative automation: every asset carries
`weekly_rebuild_condition()`, and the automation sensor `weekly_full_pipeline`
(stopped by default) evaluates it. After the cron tick the roots (`mnist`,
`parameter_counts`) are requested; every other asset, each training partition
included, once all of its upstream partitions have been rebuilt since the
tick. So the graph is rebuilt in dependency order, each asset once, with the
same runs as a backfill of everything (the sensor submits its requests as
backfills), and the analyses run only after every training partition is done.
"""

import os

import dagster as dg

from pipelines.dagster_api import exception_text
from pipelines.recovery import fail_dead_runs
from pipelines.resources.tracking import MlflowTracking

TRAINING = dg.AssetSelection.assets("trained_model")
# Monday 03:00; CONVLAB_REBUILD_CRON moves it (read when the definitions load).
DEFAULT_REBUILD_CRON = "0 3 * * 1"


def rebuild_cron() -> str:
    return os.environ.get("CONVLAB_REBUILD_CRON") or DEFAULT_REBUILD_CRON


def weekly_rebuild_condition(cron: str | None = None) -> dg.AutomationCondition:
    """Once per cron tick, after every upstream partition has been rebuilt since that tick."""
    cron = cron or rebuild_cron()
    condition = dg.AutomationCondition
    tick = condition.cron_tick_passed(cron)
    rebuilt_since_tick = condition.newly_updated().since(tick)
    # "All deps" as Dagster maps them holds when any one upstream partition does;
    # "no upstream partition not rebuilt" waits for every training partition.
    return (condition.in_latest_time_window() & tick.since_last_handled()
            & ~condition.any_deps_match(~rebuilt_since_tick)).with_label(f"weekly rebuild ({cron})")


full_pipeline = dg.define_asset_job(
    "full_pipeline", selection=dg.AssetSelection.all(),
    description="Every asset: data, the training partitions, analyses, figures and the report.")

# The training partitions and everything downstream of them.
train_models = dg.define_asset_job(
    "train_models", selection=TRAINING | TRAINING.downstream(),
    description="Training partitions and the assets that depend on them.")

weekly_full_pipeline = dg.AutomationConditionSensorDefinition(
    "weekly_full_pipeline", target=dg.AssetSelection.all(), default_status=dg.DefaultSensorStatus.STOPPED,
    run_tags={"convlab/trigger": "weekly"},
    description="Rebuilds the whole graph after each cron tick (default: Mondays 03:00 UTC), in dependency "
                "order, as backfills. Turn it on in Automation.")


def failure_reasons(step_failure_events) -> list[str]:
    """`step: ExceptionClass: message` for each failed step, from the error that caused it."""
    reasons = []
    for event in step_failure_events:
        error = event.event_specific_data.error if event.event_specific_data else None
        # Dagster wraps the asset's own exception: the cause chain ends at it.
        while error is not None and error.cause is not None:
            error = error.cause
        if error is not None:
            reasons.append(f"{event.step_key}: {exception_text(error.cls_name, error.message)}")
    return reasons


@dg.run_failure_sensor(name="report_failed_runs", default_status=dg.DefaultSensorStatus.RUNNING,
                       description="Logs why a run failed (each step's exception) and closes its MLflow runs left RUNNING.")
def report_failed_runs(context: dg.RunFailureSensorContext, mlflow_tracking: MlflowTracking):
    run = context.dagster_run
    reasons = failure_reasons(context.get_step_failure_events())
    context.log.error(f"run {run.run_id} of {run.job_name} failed: "
                      + ("; ".join(reasons) or context.failure_event.message or "no step error recorded"))
    closed = mlflow_tracking.close_orphaned_runs(run.run_id)
    if closed:
        context.log.info(f"marked MLflow runs FAILED: {', '.join(closed)}")


@dg.sensor(name="fail_dead_runs", default_status=dg.DefaultSensorStatus.RUNNING, minimum_interval_seconds=30,
           description="Ends FAILED (in Dagster and MLflow) every run whose process died, so its pool slot is freed.")
def fail_dead_runs_sensor(context: dg.SensorEvaluationContext, mlflow_tracking: MlflowTracking):
    ended = fail_dead_runs(context.instance, mlflow_tracking)
    for dead in ended:
        context.log.warning(dead.describe())
    return dg.SkipReason(f"ended {len(ended)} dead run(s)" if ended else "no dead run")
