"""Figures as Dagster metadata: the PNG file linked, a small thumbnail shown.

Dagster has no image metadata type, so the UI sees a base64 PNG inside
markdown; the full-size file is linked beside it.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import dagster as dg
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from pipelines.resources.paths import storage_dir

THUMBNAIL_DPI = 40


def figure_path(context: dg.AssetExecutionContext, name: str) -> Path:
    """Where a figure of this asset (and partition) lives, per Dagster run."""
    asset = "_".join(context.assets_def.key.path) if context.has_assets_def else context.op.name
    partitioned = context.has_assets_def and context.assets_def.partitions_def is not None
    partition = context.partition_key if partitioned else "all"
    return storage_dir() / "figures" / asset / partition / context.run.run_id[:8] / f"{name}.png"


def thumbnail_markdown(figure: Figure, alt: str) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=THUMBNAIL_DPI)
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return f"![{alt}](data:image/png;base64,{encoded})"


def figure_metadata(context: dg.AssetExecutionContext, figure: Figure, name: str, close: bool = True) -> dict:
    """Save `figure` as a PNG and return metadata: `<name>` (path) and `<name>_preview` (thumbnail)."""
    path = figure_path(context, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    preview = thumbnail_markdown(figure, name)
    if close:
        plt.close(figure)
    return {name: dg.MetadataValue.path(str(path)), f"{name}_preview": dg.MetadataValue.md(preview)}


def publish_figures(context: dg.AssetExecutionContext, figures: dict[str, Figure], run=None,
                    folder: str | None = None) -> dict:
    """Each figure as a PNG file with Dagster metadata, and to an MLflow run (as `<folder>/<name>.png`) if given."""
    metadata = {}
    for name, figure in figures.items():
        if run is not None:
            run.log_figure(figure, f"{folder}/{name}.png")
        metadata.update(figure_metadata(context, figure, name))
    return metadata


def figure_paths(metadata: dict) -> dict[str, str]:
    """{figure name: PNG path} from `figure_metadata` entries: what an asset's value hands downstream."""
    return {name: value.path for name, value in metadata.items()
            if isinstance(value, dg.PathMetadataValue) and str(value.path).endswith(".png")}
