"""[report] The lecture walked through with this run's numbers and figures, as one HTML page.

A thin adapter: it gathers the stored values, the figures' PNG files (found
through each asset's latest materialisation metadata) and the claims
(decided by the same functions as the asset checks), hands them to
`conv_core.report.lecture_report`, writes the page atomically to
`<storage>/report/lecture_report.html`, and logs it to the MLflow run of the
seed CNN on plain digits (the run every figure of the report explains), as
the artifact `report/lecture_report.html`.
"""


import os
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import pandas as pd

from pipelines.metadata import table_metadata
from assets.checks import accuracy_table, all_claims
from conv_core.report import claims_overview, lecture_report as render_lecture_report
from pipelines.figures import figure_metadata
from pipelines.partitions import training_key
from pipelines.report_path import report_file
from pipelines.tracking import MlflowTracking
from pipelines.versions import git_commit

GROUP = "report"
ARTIFACT_PATH = "report"
# Assets whose figures the report shows (every PNG in their latest metadata), besides its inputs.
FIGURE_ASSETS = ("mnist", "shifted_mnist", "infinite_mnist", "parameter_counts", "representation_distances",
                 "run_comparison", "filter_figures", "input_gradients", "top_activations", "hallucinations",
                 "sliding_segmentation")
SEED_CNN = str(training_key("seed_cnn"))


def _metadata(instance: dg.DagsterInstance, asset: str, partition: str | None = None) -> dict:
    """The metadata of an asset's (partition's) latest materialisation; empty if there is none."""
    key = dg.AssetKey(asset)
    if partition is None:
        event = instance.get_latest_materialization_event(key)
    else:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1).records
        event = records[0].event_log_entry if records else None
    return dict(event.asset_materialization.metadata) if event and event.asset_materialization else {}


def _pngs(metadata: dict, prefix: str) -> dict[str, bytes]:
    """Every figure file in a materialisation's metadata, keyed "<prefix>/<name>"."""
    found = {}
    for name, value in metadata.items():
        if isinstance(value, dg.PathMetadataValue) and str(value.path).endswith(".png") and Path(value.path).is_file():
            found[f"{prefix}/{name}"] = Path(value.path).read_bytes()
    return found


def _value(metadata: dict, name: str, default=None):
    entry = metadata.get(name)
    return default if entry is None else entry.value


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


@dg.asset(
    group_name=GROUP,
    code_version="1",
    deps=["shifted_mnist", "filter_figures", "top_activations", "trained_model", "model_evaluation"],
    description="The lecture, slide by slide, with this run's numbers, figures and claims: one self-contained HTML page.",
)
def lecture_report(context: dg.AssetExecutionContext, mnist: dict, infinite_mnist: dict,
                   parameter_counts: pd.DataFrame, representation_distances: pd.DataFrame,
                   run_comparison: pd.DataFrame, input_gradients: dict, hallucinations: dict,
                   sliding_segmentation: dict, mlflow_tracking: MlflowTracking) -> dg.Output[dict]:
    instance = context.instance
    metadata = {asset: _metadata(instance, asset) for asset in FIGURE_ASSETS}
    figures: dict[str, bytes] = {}
    for asset, entries in metadata.items():
        figures.update(_pngs(entries, asset))
    for model, variant in zip(run_comparison["model"], run_comparison["data_variant"]):
        partition = str(training_key(model, variant))
        for asset in ("trained_model", "model_evaluation"):
            figures.update(_pngs(_metadata(instance, asset, partition), f"{asset}/{partition}"))

    shifted = metadata["shifted_mnist"]
    connectivity = _value(metadata["parameter_counts"], "connectivity_table", [])
    claims = all_claims(parameter_counts, connectivity, int(_value(shifted, "source_count", 0)),
                        int(_value(shifted, "expanded_count", 0)), representation_distances, input_gradients,
                        sliding_segmentation, hallucinations, run_comparison)

    ui_url, experiment_id = mlflow_tracking.resolved_ui_url(), mlflow_tracking.experiment_id()
    runs = [{**row, "url": f"{ui_url}/#/experiments/{experiment_id}/runs/{row['run_id']}"}
            for row in run_comparison.to_dict(orient="records")]
    trained = _metadata(instance, "trained_model", SEED_CNN)
    top = metadata["top_activations"]
    spec, statistics = infinite_mnist["spec"], infinite_mnist["statistics"]
    values = {
        "parameter_counts": parameter_counts.to_dict(orient="records"),
        "connectivity": connectivity,
        "representations": representation_distances.to_dict(orient="records"),
        "triplet_rule": _value(metadata["representation_distances"], "triplet_rule", ""),
        "accuracy": accuracy_table(run_comparison).to_dict(orient="records"),
        "runs": runs,
        "shifts": {"source_count": _value(shifted, "source_count"), "expanded_count": _value(shifted, "expanded_count")},
        "infinite": {"mode": spec.get("mode"), "index scheme": spec.get("scheme"),
                     "first deformed index": spec.get("first_deformed_index"), "note": spec.get("note"),
                     "mean absolute change per pixel (0-255)": statistics.get("mean_absolute_change_per_pixel"),
                     "fraction of pixels changed": statistics.get("fraction_of_pixels_changed"),
                     "ink ratio, deformed / source (median)": statistics.get("ink_ratio_median")},
        "gradients": {"test_index": input_gradients["test_index"],
                      "max_abs_difference": float(input_gradients["layer1"]["max_abs_difference"]),
                      "unit": tuple(int(v) for v in input_gradients["unit"]),
                      "unit_value": float(input_gradients["unit_value"])},
        "top_activations": {name: _value(top, name) for name in ("channels", "images_per_channel", "strongest_activation")},
        "hallucinations": {"norms": hallucinations["norms"], "class_records": hallucinations["class_records"]},
        "sliding": {**{k: v for k, v in sliding_segmentation.items() if isinstance(v, (int, float))},
                    "background_rule": _value(metadata["sliding_segmentation"], "background_rule")},
        "training": {name.replace("_", " "): _value(trained, name) for name in
                     ("test_accuracy", "epochs", "training_seconds", "images_per_second", "device")
                     if name in trained},
    }

    # The report explains the seed CNN on plain digits: it goes beside that model's run.
    run_id = _value(metadata["filter_figures"], "mlflow_run_id") or next(
        (r["run_id"] for r in runs if r["model"] == "seed_cnn" and r["data_variant"] == "plain"), None)
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    subtitle = (f"Dagster run {context.run.run_id[:8]} \u00b7 MLflow experiment '{mlflow_tracking.resolved_experiment()}' "
                f"\u00b7 git {(git_commit() or 'unknown')[:12]}")
    note = (f"This page is also stored as the artifact {ARTIFACT_PATH}/lecture_report.html of the seed CNN's run "
            f"{run_id}." if run_id else "")
    html = render_lecture_report(values, figures, claims, mnist["provenance"], generated=generated,
                                 subtitle=subtitle, mlflow_note=note)
    path = report_file()
    _write_atomically(path, html)

    extra = {}
    if run_id:
        run = mlflow_tracking.run(run_id)
        run.log_artifact(path, ARTIFACT_PATH)
        extra = {"mlflow_run_id": run_id, "mlflow_run": dg.MetadataValue.url(run.url),
                 "mlflow_artifact": f"{ARTIFACT_PATH}/{path.name}"}
    passed = sum(c.passed for c in claims)
    context.log.info(f"lecture report: {path} ({passed} of {len(claims)} claims hold)")
    figure = figure_metadata(context, claims_overview(claims), "claims_overview")
    return dg.Output({"path": str(path), "claims": [c.as_dict() for c in claims], "claims_passed": passed,
                      "claims_total": len(claims), "mlflow_run_id": run_id or ""}, metadata={
        "report": dg.MetadataValue.path(str(path)),
        "report_url": dg.MetadataValue.url(path.as_uri()),
        "report_kib": round(len(html.encode()) / 1024),
        "claims_passed": passed,
        "claims_total": len(claims),
        "claims": table_metadata(pd.DataFrame([c.as_dict() for c in claims])),
        "figures_embedded": html.count("data:image/png;base64,"),
        **extra,
        **figure,
    })
