"""[figures] Semantic segmentation as FCN does it: the classifier fine-tuned to label every pixel.

Beside `sliding_segmentation` (the classifier slid over a canvas, background by
a confidence threshold), this fine-tunes the explained seed CNN's fully
convolutional form with a background class on scenes of training digits, and
scores it and that sliding baseline on scenes of test digits.
"""

import dagster as dg
from pydantic import Field

from assets.checks import claim_results, claim_specs
from assets.figures import EXPLAINED_INPUT, GROUP, _explained, _explains
from conv_core.plots_segmentation import pixel_accuracies, segmentation_figure
from conv_core.scenes import SceneConfig
from conv_core.segmentation import SegmentationConfig, segment_scenes
from conv_core.experiments import EXPLAINED
from pipelines.resources.figures import figure_paths, publish_figures
from pipelines.resources.tracking import MlflowTracking

FIGURE = "semantic_segmentation"
SHOWN_SCENES = 4


class SemanticSegmentationSettings(dg.Config):
    scenes: int = Field(default=SceneConfig.count, description="training scenes (from training digits)")
    heldout_scenes: int = Field(default=200, description="held-out scenes (from test digits only)")
    canvas_size: int = Field(default=SceneConfig.size, description="side of a square scene, a multiple of 4")
    digits: int = Field(default=SceneConfig.digits, description="digits per scene")
    epochs: int = Field(default=SegmentationConfig.epochs, description="fine-tuning epochs")
    seed: int = Field(default=0, description="seed of the scenes and of the fine-tuning order")


@dg.asset(group_name=GROUP, code_version="1", ins=EXPLAINED_INPUT, check_specs=claim_specs("semantic_segmentation"),
          description="The seed CNN as an FCN with a background class, fine-tuned per pixel on digit scenes: "
                      "mean IoU on held-out scenes against the sliding classifier.")
def semantic_segmentation(context: dg.AssetExecutionContext, config: SemanticSegmentationSettings, trained_model: dict,
                          mnist: dict, mlflow_tracking: MlflowTracking):
    model, run, run_id = _explained(trained_model, mlflow_tracking)
    scenes = SceneConfig(count=config.scenes, size=config.canvas_size, digits=config.digits, seed=config.seed)
    tuning = SegmentationConfig(epochs=config.epochs, seed=config.seed)
    result = segment_scenes(model, (mnist["train_images"], mnist["train_labels"]),
                            (mnist["test_images"], mnist["test_labels"]), scenes, config.heldout_scenes, tuning)
    shown = slice(0, SHOWN_SCENES)
    heldout = result.heldout
    figure = segmentation_figure(
        heldout.images[shown], heldout.labels[shown], result.predicted[shown], result.baseline_predicted[shown],
        pixel_accuracies(heldout.labels[shown], result.predicted[shown]),
        f"Held-out scenes: fine-tuned FCN mean IoU {result.scores['mean_iou']:.2f}, "
        f"sliding baseline {result.baseline_scores['mean_iou']:.2f}")
    metadata = publish_figures(context, {FIGURE: figure}, run, "segmentation")
    summary = {
        "mean_iou": result.scores["mean_iou"],
        "digit_mean_iou": result.scores["digit_mean_iou"],
        "pixel_accuracy": result.scores["pixel_accuracy"],
        "baseline_mean_iou": result.baseline_scores["mean_iou"],
        "baseline_digit_mean_iou": result.baseline_scores["digit_mean_iou"],
        "baseline_pixel_accuracy": result.baseline_scores["pixel_accuracy"],
        "untrained_mean_iou": result.start_scores["mean_iou"],
        "scenes_train": len(result.train_scenes),
        "scenes_heldout": len(heldout),
        "final_loss": result.history[-1]["loss"],
        "fine_tune_seconds": sum(epoch["seconds"] for epoch in result.history),
    }
    run.log_metrics({"segmentation_mean_iou": summary["mean_iou"],
                     "segmentation_baseline_mean_iou": summary["baseline_mean_iou"]})
    iou_rows = {name: {"fcn": round(iou, 4), "baseline": round(result.baseline_scores["per_class_iou"][name], 4)}
                for name, iou in result.scores["per_class_iou"].items()}
    output = dg.Output({**summary, "per_class_iou": result.scores["per_class_iou"],
                      "baseline_per_class_iou": result.baseline_scores["per_class_iou"],
                      "history": result.history, "scene_size": config.canvas_size, "digits_per_scene": config.digits,
                      "figures": figure_paths(metadata), **_explains(run_id)},
                     metadata={
        **summary,
        "per_class_iou": dg.MetadataValue.json(iou_rows),
        "explains": EXPLAINED.key,
        "mlflow_run_id": run_id,
        **metadata,
    })
    yield output
    yield from claim_results("semantic_segmentation", output.value)
