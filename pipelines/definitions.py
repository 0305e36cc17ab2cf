"""The one Definitions object: every asset, check, job, schedule, sensor and resource."""

import dagster as dg

from assets import analysis, checks, data, figures, report, training
from pipelines.compute import Compute
from pipelines.io_manager import ConvlabIOManager
from pipelines.jobs import full_pipeline, report_failed_runs, train_models, weekly_full_pipeline
from pipelines.tracking import MlflowTracking

ASSET_MODULES = (data, training, analysis, figures, report, checks)

defs = dg.Definitions(
    assets=dg.load_assets_from_modules(ASSET_MODULES),
    asset_checks=dg.load_asset_checks_from_modules(ASSET_MODULES),
    jobs=[full_pipeline, train_models],
    schedules=[weekly_full_pipeline],
    sensors=[report_failed_runs],
    resources={
        "io_manager": ConvlabIOManager(),
        "mlflow_tracking": MlflowTracking(),
        "compute": Compute(),
    },
)
