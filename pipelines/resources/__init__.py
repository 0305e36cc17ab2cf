"""The bottom layer of the orchestration: MLflow tracking, the IO manager,
compute, paths, partitions and metadata helpers. Imports conv_core and
dagster, never `assets` or the top of `pipelines`."""
