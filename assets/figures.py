"""[figures] What the trained networks look like from the inside."""

import dagster as dg

from conv_core import plots
from assets.training import load_trained
from pipelines.figures import figure_metadata
from pipelines.partitions import training_key
from pipelines.tracking import MlflowTracking

GROUP = "figures"
SEED_CNN = str(training_key("seed_cnn"))


@dg.asset(
    group_name=GROUP,
    code_version="1",
    ins={"trained_model": dg.AssetIn(partition_mapping=dg.SpecificPartitionsPartitionMapping([SEED_CNN]))},
    description="The first-layer (9 of 5x5) and second-layer (16 x 9 of 5x5) filters of the trained seed CNN.",
)
def filter_figures(context: dg.AssetExecutionContext, trained_model: dict,
                   mlflow_tracking: MlflowTracking) -> dg.Output[dict]:
    value = trained_model[SEED_CNN]
    model = load_trained(value)
    first = plots.conv_filters(model.conv1.weight, "seed CNN layer 1: 9 filters of 5x5")
    second = plots.conv_filters(model.conv2.weight, "seed CNN layer 2: 16 filters (rows) x 9 input channels")
    run = mlflow_tracking.run(value["mlflow_run_id"])
    run.log_figure(first, "figures/filters_layer1.png")
    run.log_figure(second, "figures/filters_layer2.png")
    metadata = {**figure_metadata(context, first, "layer1_filters"), **figure_metadata(context, second, "layer2_filters")}
    return dg.Output({"layer1": model.conv1.weight.detach().clone(), "layer2": model.conv2.weight.detach().clone()},
                     metadata={"mlflow_run_id": value["mlflow_run_id"], **metadata})
