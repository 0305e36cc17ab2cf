"""conv_core.scenes and conv_core.segmentation: digit scenes, the FCN segmenter, IoU; the asset on tiny data."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from conv_core.evaluate import predict_logits
from conv_core.scenes import BACKGROUND_CLASS, SceneConfig, make_scenes, paste_digits
from conv_core.segmentation import (
    SegmentationConfig, confusion_matrix, fine_tune, iou_per_class, predict, predict_sliding_baseline, score,
    segmentation_scores, with_background,
)


@pytest.fixture(scope="module")
def model(briefly_trained_cnn):
    return copy.deepcopy(briefly_trained_cnn)


def test_scene_labels_follow_the_ink_of_each_digit():
    one = torch.zeros(28, 28)
    one[4:24, 13:15] = 1.0  # a vertical stroke
    one[4:24, 12] = 0.3  # a faint rim: ink below the threshold is background
    seven = torch.zeros(28, 28)
    seven[5:7, 6:22] = 0.8
    image, labels = paste_digits(torch.stack([one, seven]), [1, 7], [(0, 0), (20, 24)], size=52, ink_threshold=0.5)
    assert image.shape == labels.shape == (52, 52)
    assert torch.all(labels[4:24, 13:15] == 1)
    assert torch.all(labels[4:24, 12] == BACKGROUND_CLASS) and image[10, 12] == pytest.approx(0.3)
    assert torch.all(labels[25:27, 30:46] == 7) and image[25, 30] == pytest.approx(0.8)
    assert int((labels == 1).sum()) == 40 and int((labels == 7).sum()) == 32
    assert int((labels == BACKGROUND_CLASS).sum()) == 52 * 52 - 72


def test_where_boxes_overlap_the_brighter_ink_wins():
    dim, bright = torch.full((28, 28), 0.6), torch.zeros(28, 28)
    bright[:, :4] = 0.9
    image, labels = paste_digits(torch.stack([dim, bright]), [3, 8], [(0, 0), (0, 24)], size=52)
    assert torch.all(labels[:28, 24:28] == 8) and torch.all(image[:28, 24:28] == 0.9)
    assert torch.all(labels[:28, :24] == 3)
    assert torch.all(labels[28:] == BACKGROUND_CLASS) and torch.all(labels[:, 28:] == BACKGROUND_CLASS)


def test_scenes_are_seeded_and_use_only_the_given_split():
    images = torch.zeros(3, 28, 28, dtype=torch.uint8)
    for k in range(3):
        images[k, 10:18, 10:18] = 255
    labels = torch.tensor([2, 5, 9])
    config = SceneConfig(count=6, size=64, digits=3, seed=4)
    first, again = make_scenes(images, labels, config), make_scenes(images, labels, config)
    assert torch.equal(first.images, again.images) and first.boxes == again.boxes
    assert first.images.shape == first.labels.shape == (6, 64, 64)
    assert set(first.labels.unique().tolist()) <= {2, 5, 9, BACKGROUND_CLASS}
    for boxes, scene_labels in zip(first.boxes, first.labels):
        for digit, top, left in boxes:
            assert torch.all(scene_labels[top + 10:top + 18, left + 10:left + 18] == digit)


def test_iou_from_a_hand_made_confusion_matrix():
    # rows: truth, columns: prediction; three classes.
    confusion = torch.tensor([[5, 1, 0],
                              [2, 3, 0],
                              [0, 0, 0]])
    iou = iou_per_class(confusion)
    assert iou[0] == pytest.approx(5 / (5 + 1 + 2)) and iou[1] == pytest.approx(3 / (3 + 2 + 1))
    assert math.isnan(iou[2])  # never present, never predicted: left out of the mean
    predicted, target = torch.tensor([0, 0, 1, 1, 2]), torch.tensor([0, 1, 1, 1, 1])
    assert confusion_matrix(predicted, target, 3).tolist() == [[1, 0, 0], [1, 2, 1], [0, 0, 0]]
    scores = segmentation_scores(torch.eye(11, dtype=torch.long) * 7)
    assert scores["mean_iou"] == 1.0 and scores["pixel_accuracy"] == 1.0 and len(scores["per_class_iou"]) == 11


def test_background_extended_fcn_keeps_the_classifier_logits(model, sample_digits):
    segmenter = with_background(model)
    images = sample_digits.test_images[:32]
    with torch.no_grad():
        logits = segmenter.fcn(images[:, None].float() / 255)
    assert logits.shape == (32, 11, 1, 1)
    torch.testing.assert_close(logits[:, :10, 0, 0], predict_logits(model, images), rtol=1e-5, atol=1e-5)
    # On a blank window background starts at the baseline's threshold, 0.9.
    with torch.no_grad():
        blank = segmenter.fcn(torch.zeros(1, 1, 28, 28))[0, :, 0, 0].softmax(0)
    assert float(blank[BACKGROUND_CLASS]) == pytest.approx(0.9, abs=1e-5)


def test_the_coarse_map_is_aligned_and_moves_with_the_scene(model, sample_digits):
    segmenter = with_background(model).eval()
    scene = torch.zeros(1, 1, 64, 64)
    scene[0, 0, 16:44, 12:40] = sample_digits.test_images[0].float() / 255
    with torch.no_grad():
        coarse, output = segmenter.coarse(scene), segmenter(scene)
        moved = segmenter.coarse(torch.roll(scene, shifts=(4, 8), dims=(2, 3)))
    assert coarse.shape == (1, 11, 16, 16) and output.shape == (1, 11, 64, 64)
    # Shifting the scene by (1, 2) cells shifts the map by (1, 2) cells. Only cells whose receptive
    # field stays inside the padded scene are compared: beyond it the convs pad with zeros.
    torch.testing.assert_close(moved[..., 3:14, 4:14], coarse[..., 2:13, 2:12], rtol=1e-5, atol=1e-5)
    # Bilinear upsampling puts cell (i, j)'s value at the centre of its 4x4 block.
    before_skip = torch.nn.functional.interpolate(coarse, scale_factor=4, mode="bilinear", align_corners=False)
    torch.testing.assert_close(output, before_skip)  # the skip's scorer starts at zero
    assert predict_sliding_baseline(model, scene[:, 0]).shape == (1, 64, 64)


def test_a_short_fine_tune_beats_the_untrained_start(model, sample_digits):
    scenes = SceneConfig(count=64, size=48, digits=2, overlap=8, seed=0)
    train_scenes = make_scenes(sample_digits.train_images, sample_digits.train_labels, scenes)
    heldout = make_scenes(sample_digits.test_images, sample_digits.test_labels, SceneConfig(count=32, size=48, digits=2,
                                                                                            overlap=8, seed=1))
    segmenter = with_background(model)
    start = score(predict(segmenter, heldout.images), heldout)
    history = fine_tune(segmenter, train_scenes, SegmentationConfig(epochs=6, batch_size=4, seed=0))
    after = score(predict(segmenter, heldout.images), heldout)
    assert history[-1]["loss"] < history[0]["loss"]
    assert after["mean_iou"] > start["mean_iou"] + 0.1, (start, after)
    assert after["digit_mean_iou"] > start["digit_mean_iou"]


def test_the_asset_materialises_on_tiny_data(convlab_home, model, sample_digits):
    import dagster as dg

    from assets.segmentation import semantic_segmentation
    from conv_core.experiments import EXPLAINED
    from pipelines.resources.partitions import training_partitions
    from pipelines.resources.tracking import MlflowTracking

    tracking = MlflowTracking()
    with tracking.start_run("explained") as run:
        run_id = run.run_id
    trained = {EXPLAINED.key: {"model": "seed_cnn", "state_dict": model.state_dict(), "mlflow_run_id": run_id}}
    mnist = {"train_images": sample_digits.train_images[:200], "train_labels": sample_digits.train_labels[:200],
             "test_images": sample_digits.test_images[:100], "test_labels": sample_digits.test_labels[:100]}
    config = {"scenes": 16, "heldout_scenes": 8, "canvas_size": 56, "digits": 2, "epochs": 1}

    class Upstream(dg.IOManager):
        """Hands the asset its inputs as if trained_model and mnist had been materialised."""

        def handle_output(self, context, obj):
            self.value = obj

        def load_input(self, context):
            return trained if context.upstream_output.asset_key.path[-1] == "trained_model" else mnist

    upstream = Upstream()
    sources = [dg.AssetSpec("trained_model", partitions_def=training_partitions), dg.AssetSpec("mnist")]
    result = dg.materialize([semantic_segmentation, *sources], resources={"io_manager": upstream, "mlflow_tracking": tracking},
                            run_config={"ops": {"semantic_segmentation": {"config": config}}})
    assert result.success
    value = upstream.value
    assert value["scenes_train"] == 16 and value["scenes_heldout"] == 8
    assert set(value["per_class_iou"]) == set(value["baseline_per_class_iou"]) and len(value["per_class_iou"]) == 11
    for key in ("mean_iou", "baseline_mean_iou", "pixel_accuracy"):
        assert 0 <= value[key] <= 1, key
    assert value["explains"] == EXPLAINED.key and value["mlflow_run_id"] == run_id
    assert open(value["figures"]["semantic_segmentation"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
