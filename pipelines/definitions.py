"""The one Definitions object: every asset, check, job, automation, sensor and resource."""

import dagster as dg

from assets import analysis, checks, data, figures, report, segmentation, training
from pipelines.jobs import (fail_dead_runs_sensor, full_pipeline, report_failed_runs, train_models, weekly_full_pipeline,
                           weekly_rebuild_condition)
from pipelines.resources.compute import Compute
from pipelines.resources.io_manager import ConvlabIOManager
from pipelines.resources.tracking import MlflowTracking

ASSET_MODULES = (data, training, analysis, figures, segmentation, report, checks)

# Each step of a run in the run's own process: a step process costs about 6 s of
# imports (torch, mlflow) here, more than most steps take. Work overlaps across
# runs instead (the run queue's limit in dagster.yaml), one run per partition.

defs = dg.Definitions(
    assets=dg.load_assets_from_modules(ASSET_MODULES, automation_condition=weekly_rebuild_condition()),
    asset_checks=dg.load_asset_checks_from_modules(ASSET_MODULES),
    jobs=[full_pipeline, train_models],
    sensors=[weekly_full_pipeline, report_failed_runs, fail_dead_runs_sensor],
    executor=dg.in_process_executor,
    resources={
        "io_manager": ConvlabIOManager(),
        "mlflow_tracking": MlflowTracking(),
        "compute": Compute(),
    },
)
