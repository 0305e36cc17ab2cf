"""Figures as Dagster metadata: shown inline at a readable size, embedded, and linked.

Dagster has no image metadata type, and its UI shows markdown metadata inline
only when it is short (under 1,000 characters; longer markdown waits behind a
"[Show Markdown]" button). So each figure is published as
- `<name>`: the PNG file (a path; `figure_paths` hands these downstream),
- `<name>_inline`: a markdown image linking the file through `make ui`'s file
  route (pipelines.resources.paths.file_url), which the UI shows in place,
- `<name>_preview`: the same figure embedded as a base64 PNG at a readable
  width, self-contained (it needs no server, and survives the files),
- `<name>_mlflow`: the figure's MLflow artifact page, when it is logged to a run.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import dagster as dg
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from pipelines.resources.paths import file_url, storage_dir

FILE_DPI = 110
# Embedded copies at screen resolution: a 6-inch figure is 540 pixels wide, readable in the UI's dialog.
EMBEDDED_DPI = 90


def figure_path(context: dg.AssetExecutionContext, name: str) -> Path:
    """Where a figure of this asset (and partition) lives, per Dagster run."""
    asset = "_".join(context.assets_def.key.path) if context.has_assets_def else context.op.name
    partitioned = context.has_assets_def and context.assets_def.partitions_def is not None
    partition = context.partition_key if partitioned else "all"
    return storage_dir() / "figures" / asset / partition / context.run.run_id[:8] / f"{name}.png"


def embedded_markdown(figure: Figure, alt: str, dpi: int = EMBEDDED_DPI) -> str:
    """The figure as a markdown image with the PNG inside it (a data: URL)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return f"![{alt}](data:image/png;base64,{encoded})"


def figure_metadata(context: dg.AssetExecutionContext, figure: Figure, name: str, close: bool = True,
                    mlflow_url: str | None = None) -> dict:
    """Save `figure` as a PNG and return its metadata entries (see the module docstring)."""
    path = figure_path(context, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=FILE_DPI)
    embedded = embedded_markdown(figure, name)
    if close:
        plt.close(figure)
    metadata = {name: dg.MetadataValue.path(str(path))}
    link = file_url(path)
    if link:
        metadata[f"{name}_inline"] = dg.MetadataValue.md(f"![{name}]({link})")
    metadata[f"{name}_preview"] = dg.MetadataValue.md(embedded)
    if mlflow_url:
        metadata[f"{name}_mlflow"] = dg.MetadataValue.url(mlflow_url)
    return metadata


def publish_figures(context: dg.AssetExecutionContext, figures: dict[str, Figure], run=None,
                    folder: str | None = None) -> dict:
    """Each figure as a PNG file with Dagster metadata, and to an MLflow run (as `<folder>/<name>.png`) if given."""
    metadata = {}
    for name, figure in figures.items():
        artifact_page = artifact_url(run, f"{folder}/{name}.png") if run is not None else None
        entries = figure_metadata(context, figure, name, mlflow_url=artifact_page)
        if run is not None:  # the PNG just saved, as it is: the figure is rendered once for both stores
            run.log_artifact(entries[name].path, folder)
        metadata.update(entries)
    return metadata


def artifact_url(run, artifact: str) -> str:
    """The MLflow UI's page of one artifact of a run (it previews images and HTML)."""
    return (f"{run.tracking.resolved_ui_url()}/#/experiments/{run.experiment_id}/runs/{run.run_id}"
            f"/artifacts/{artifact}")


def figure_paths(metadata: dict) -> dict[str, str]:
    """{figure name: PNG path} from `figure_metadata` entries: what an asset's value hands downstream."""
    return {name: value.path for name, value in metadata.items()
            if isinstance(value, dg.PathMetadataValue) and str(value.path).endswith(".png")}
