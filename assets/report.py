"""[report] The lecture walked through with this run's numbers and figures, as one HTML page.

A thin adapter: everything it shows comes through its inputs (the stored
values of the assets it declares, and the PNG files those values name), the
claims are decided by `conv_core.claims.REGISTRY` (the same code as the asset
checks), and `conv_core.report` renders the page. It is written atomically to
`<storage>/report/lecture_report.html` and logged to the MLflow run of the
explained seed CNN, as the artifact `report/lecture_report.html`.
"""

import os
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import pandas as pd

from conv_core.claims import decide_all
from conv_core.experiments import EXPLAINED
from conv_core.report import REPORT_FIGURES, claims_overview, lecture_report as render_lecture_report
from pipelines.resources.figures import artifact_url, figure_metadata
from pipelines.resources.metadata import table_metadata
from pipelines.resources.partitions import by_partition
from pipelines.resources.paths import file_url, report_file
from pipelines.resources.tracking import UI_VIEW_QUERY, MlflowTracking
from pipelines.resources.versions import git_commit

GROUP = "report"
ARTIFACT_PATH = "report"


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def report_figures(values: dict) -> tuple[dict[str, bytes], list[str]]:
    """The PNG bytes of every figure the report shows, from the files its inputs name; and the missing ones."""
    paths = {}
    for value in values.values():
        if isinstance(value, dict):
            paths.update(value.get("figures", {}))
    found = {name: Path(paths[name]).read_bytes() for name in REPORT_FIGURES
             if name in paths and Path(paths[name]).is_file()}
    return found, [name for name in REPORT_FIGURES if name not in found]


def report_values(inputs: dict, ui_url: str, experiment_id: str) -> dict:
    """What the report's sections show, from the asset values."""
    comparison, counts, trained = inputs["run_comparison"], inputs["parameter_counts"], inputs["trained_model"]
    spec, statistics = inputs["infinite_mnist"]["spec"], inputs["infinite_mnist"]["statistics"]
    gradients, top, sliding = inputs["input_gradients"], inputs["top_activations"], inputs["sliding_segmentation"]
    runs = [{**row, "run_id": row["mlflow_run_id"],
             "url": f"{ui_url}/#/experiments/{experiment_id}/runs/{row['mlflow_run_id']}{UI_VIEW_QUERY}"} for row in comparison["runs"]]
    return {
        "parameter_counts": counts["layers"],
        "connectivity": counts["connectivity"],
        "representations": inputs["representation_distances"]["table"],
        "triplet_rule": inputs["representation_distances"]["triplet_rule"],
        "accuracy": comparison["accuracy_by_variant"],
        "runs": runs,
        "shifts": {"source_count": inputs["shifted_mnist"]["source_count"],
                   "expanded_count": len(inputs["shifted_mnist"]["labels"])},
        "infinite": {"mode": spec.get("mode"), "index scheme": spec.get("scheme"),
                     "first deformed index": spec.get("first_deformed_index"), "note": spec.get("note"),
                     "mean absolute change per pixel (0-255)": statistics.get("mean_absolute_change_per_pixel"),
                     "fraction of pixels changed": statistics.get("fraction_of_pixels_changed"),
                     "ink ratio, deformed / source (median)": statistics.get("ink_ratio_median")},
        "gradients": {"test_index": gradients["test_index"],
                      "max_abs_difference": float(gradients["layer1"]["max_abs_difference"]),
                      "unit": tuple(int(v) for v in gradients["unit"]), "unit_value": float(gradients["unit_value"])},
        "top_activations": {name: top[name] for name in ("channels", "images_per_channel", "strongest_activation")},
        "hallucinations": {"norms": inputs["hallucinations"]["norms"],
                           "class_records": inputs["hallucinations"]["class_records"]},
        "sliding": {**{k: v for k, v in sliding.items() if isinstance(v, (int, float))},
                    "background_rule": sliding["background_rule"]},
        "semantic": {k: inputs["semantic_segmentation"][k] for k in
                     ("mean_iou", "baseline_mean_iou", "pixel_accuracy", "scenes_train", "scenes_heldout")},
        "training": {"test accuracy": trained["test_accuracy"], "epochs": trained["config"]["epochs"],
                     "training seconds": round(trained["training_seconds"], 2),
                     "images per second": round(trained["history"][-1]["images_per_second"]),
                     "device": trained["device"], "partition": trained["partition"],
                     "MLflow run": trained["mlflow_run_id"]},
    }


@dg.asset(
    group_name=GROUP,
    code_version="2",
    ins={"trained_model": by_partition((EXPLAINED,)), "model_evaluation": by_partition((EXPLAINED,))},
    description="The lecture, slide by slide, with this run's numbers, figures and claims: one self-contained HTML page.",
)
def lecture_report(context: dg.AssetExecutionContext, mnist: dict, shifted_mnist: dict, infinite_mnist: dict,
                   parameter_counts: dict, representation_distances: dict, run_comparison: dict,
                   filter_figures: dict, input_gradients: dict, top_activations: dict, hallucinations: dict,
                   sliding_segmentation: dict, semantic_segmentation: dict, trained_model: dict,
                   model_evaluation: dict,
                   mlflow_tracking: MlflowTracking) -> dg.Output[dict]:
    inputs = {name: value for name, value in locals().items() if name not in ("context", "mlflow_tracking")}
    inputs["trained_model"], inputs["model_evaluation"] = trained_model[EXPLAINED.key], model_evaluation[EXPLAINED.key]
    figures, missing = report_figures(inputs)
    if missing:
        context.log.warning(f"figures missing from the report: {', '.join(missing)}")
    claims = decide_all(inputs)
    ui_url, experiment_id = mlflow_tracking.resolved_ui_url(), mlflow_tracking.experiment_id()
    values = report_values(inputs, ui_url, experiment_id)

    run_id = inputs["trained_model"]["mlflow_run_id"]
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    subtitle = (f"Dagster run {context.run.run_id[:8]} \u00b7 MLflow experiment '{mlflow_tracking.resolved_experiment()}' "
                f"\u00b7 git {(git_commit() or 'unknown')[:12]}")
    note = (f"This page is also stored as the artifact {ARTIFACT_PATH}/lecture_report.html of the explained run "
            f"{EXPLAINED.run_name} ({run_id}).")
    html = render_lecture_report(values, figures, claims, mnist["provenance"], generated=generated,
                                 subtitle=subtitle, mlflow_note=note)
    path = report_file()
    _write_atomically(path, html)
    run = mlflow_tracking.run(run_id)
    run.log_artifact(path, ARTIFACT_PATH)

    passed = sum(c.passed for c in claims)
    context.log.info(f"lecture report: {path} ({passed} of {len(claims)} claims hold)")
    runs_used = [{k: row[k] for k in ("partition", "seed", "mlflow_run_id")} for row in run_comparison["runs"]]
    figure = figure_metadata(context, claims_overview(claims), "claims_overview")
    return dg.Output({"path": str(path), "claims": [c.as_dict() for c in claims], "claims_passed": passed,
                      "claims_total": len(claims), "mlflow_run_id": run_id, "runs": runs_used,
                      "explains": EXPLAINED.key, "figures_missing": missing}, metadata={
        "report": dg.MetadataValue.path(str(path)),
        # http, not file://: browsers open no file link from an http page. Served by `make ui`.
        "report_url": dg.MetadataValue.url(file_url(path) or path.as_uri()),
        "report_in_mlflow": dg.MetadataValue.url(artifact_url(run, f"{ARTIFACT_PATH}/{path.name}")),
        "report_kib": round(len(html.encode()) / 1024),
        "claims_passed": passed,
        "claims_total": len(claims),
        "claims": table_metadata(pd.DataFrame([c.as_dict() for c in claims])),
        "runs_used": table_metadata(pd.DataFrame(runs_used)),
        "figures_embedded": html.count("data:image/png;base64,"),
        "figures_missing": ", ".join(missing) or "none",
        "mlflow_run_id": run_id,
        "mlflow_run": dg.MetadataValue.url(run.url),
        "mlflow_artifact": f"{ARTIFACT_PATH}/{path.name}",
        **figure,
    })
