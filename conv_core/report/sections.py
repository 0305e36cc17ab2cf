"""The lecture, walked through section by section: each slide's claim, then this run's numbers and figures.

One builder per section, each taking the same two arguments: `values` (plain
values: lists of dicts, dicts, numbers) and `figures` (PNG bytes by the names
in `REPORT_FIGURES`). The lecture's own numbers come from `conv_core.lecture`.
"""

from __future__ import annotations

from collections.abc import Sequence

from conv_core import lecture
from conv_core.claims import Claim
from conv_core.datasets import DEFAULT_DATASET, Dataset, get_dataset
from conv_core.models import ARCHITECTURES
from conv_core.report.blocks import Facts, Image, Link, Note, Row, Section, Table, Text
from conv_core.report.figures import claims_overview, figure_png
from conv_core.report.html import format_accuracy, format_spread, render_report

# Every figure the report shows, in the order the page shows them. The caller
# passes PNG bytes under these names; training_curves and confusion_matrix are
# those of the seed CNN on plain digits, the run the report explains.
REPORT_FIGURES = (
    "digit_examples", "weights_vs_signals", "layer1_filters", "layer2_filters", "training_curves",
    "confusion_matrix", "triplet", "triplet_ratios", "measures_by_layer", "pca_maps", "accuracy_vs_weights",
    "nine_shifts", "infinite_digits", "accuracy_by_variant", "class_map", "layer1_gradients_vs_filters",
    "layer2_unit_projections", "top_activations", "hallucinations", "class_hallucinations", "semantic_segmentation",
)


# --------------------------------------------------------------------------- helpers


def _records(rows, **equal) -> list[dict]:
    return [r for r in rows if all(r.get(k) == v for k, v in equal.items())]


def _figure(figures: dict[str, bytes], name: str, caption: str, size: str = "medium") -> object:
    """The figure, or a note naming it: a figure the run did not make should be seen to be missing."""
    png = figures.get(name)
    if png:
        return Image(png, caption, size)
    return Note(f"Figure not available in this run: {caption} ({name}).", "warning")


def _signals(rows: list[dict]) -> list[int]:
    """The lecture's "sizes of signals h": the input, then every hidden layer's output (as ModelCount.signals)."""
    return [int(rows[0]["input_signal"])] + [int(r["output_signal"]) for r in rows[:-1]] if rows else []


def _weights(rows: list[dict]) -> int:
    return sum(int(r["weights"]) for r in rows)


def _row_accuracy(row: dict, runs: list[dict]) -> str:
    """A row of accuracy by variant, labelled as one run (with its seed, from the runs) or a mean over seeds."""
    seeds = int(row.get("seeds") or 1)
    seed = next((run.get("seed") for run in _records(runs, model=row["model"], data_variant=row["data_variant"])),
                None)
    return format_accuracy(row["accuracy_mean"], seeds, row.get("accuracy_std"), seed)


def _variant_accuracy(values: dict, model: str, variant: str = "plain") -> str:
    rows = _records(values.get("accuracy", []), model=model, data_variant=variant)
    return _row_accuracy(rows[0], values.get("runs", [])) if rows else format_accuracy(None)


def _dataset(values: dict) -> Dataset:
    """The data set the run was on (`values["dataset"]`, set from the provenance); MNIST when not said."""
    return get_dataset(values.get("dataset") or DEFAULT_DATASET)


def _triplet_names(values: dict) -> tuple[str, str]:
    """(anchor, confusable) class names of the triplet: the lecture's 4 and 9 on MNIST."""
    dataset = _dataset(values)
    return dataset.class_name(dataset.triplet.anchor), dataset.class_name(dataset.triplet.confusable)


def _sum_text(numbers: Sequence[int]) -> str:
    """225 + 3600 + 7840 = 11665"""
    return f"{' + '.join(map(str, numbers))} = {sum(numbers)}"


# --------------------------------------------------------------------------- the sections, in the lecture's order


def hierarchy_section(values: dict, figures: dict[str, bytes]) -> Section:
    cnn_rows = _records(values["parameter_counts"], model="seed_cnn")
    shapes = ["1x28x28"]
    for row in cnn_rows:
        shape = str(row["output_shape"])
        if row["kind"] == "conv":
            # Each convolution is followed by a 2x2 max pool, which the counts do not list as a layer.
            channels, height, width = (int(v) for v in shape.split("x"))
            shapes += [shape, f"{channels}x{height // 2}x{width // 2}"]
        else:
            shapes.append(shape)
    stages = sum(1 for r in cnn_rows if r["kind"] == "conv")
    return Section(
        "hierarchy", "Deep learning = hierarchical representations",
        "It's deep if it has more than one stage of non-linear feature transformation (LeCun); "
        "Zeiler and Fergus's visualisation of an ImageNet network shows the features of each layer "
        "built from those of the layer below.",
        [Text(f"The lecture's network, as built and trained here, has {stages} stages of non-linear feature "
              "transformation (convolution, ReLU, 2x2 max pooling) before a linear classifier. Its signal, "
              "channels x height x width:"),
         Note(" \u2192 ".join(shapes), "info"),
         _figure(figures, "digit_examples", f"the {_dataset(values).item}s this run trained on "
                 f"({_dataset(values).title} training split, by class)", "small")],
        slide="Deep Learning = Learning Hierarchical Representations")


def convolution_section(values: dict, figures: dict[str, bytes]) -> Section:
    rows, classes = [], []
    for r in values.get("connectivity", []):
        rows.append((r["example"], r["dense"], r["local"], r["shared"]))
        classes.append("lecture" if str(r["example"]).startswith("lecture") else "")
    one_d = lecture.CONNECTIVITY_1D
    return Section(
        "convolution", "Convolution: local connectivity and parameter sharing",
        "A weight is zero unless |x1 - x2| <= k (local connectivity), and weights are indexed by the offset "
        f"x1 - x2 only (parameter sharing): for {one_d['inputs']} inputs and {one_d['outputs']} outputs, "
        f"{one_d['dense']} parameters become {one_d['local']}, then {one_d['shared']}. "
        "W[dx, dy, c0, c1] replaces W[x1, x2, y1, y2, c0, c1]; the operation is a cross-correlation, "
        "written with the convolution operator.",
        [Text("The same arithmetic, counted for the lecture's 1-D example and for both layers of the seed CNN "
              "(weights only, biases left out):"),
         Table(["example", "dense", "local connectivity", "shared (a convolution)"], rows, row_classes=classes)],
        slide="Local connectivity / Parameter sharing", claim_keys=("local_connectivity_and_sharing",))


def _weight_table(rows: list[dict], model: str) -> Table:
    """This run's weights per layer beside the lecture's, with a total row."""
    lecture_weights = lecture.WEIGHTS.get(model, ())
    body = [(r["layer"], r["kind"], r["output_shape"], r["weights"],
             lecture_weights[i] if i < len(lecture_weights) else None) for i, r in enumerate(rows)]
    body.append(("total", "", "", _weights(rows), sum(lecture_weights) if lecture_weights else None))
    return Table(["layer", "kind", "output", "weights", "lecture"], body, caption=f"{model}: weights (no biases)",
                 row_classes=[""] * len(rows) + ["total"])


def counting_section(values: dict, figures: dict[str, bytes]) -> Section:
    counts = values["parameter_counts"]
    rows_by_model = {model: _records(counts, model=model) for model in ("seed_cnn", "mlp")}
    signal_rows = [(model, ", ".join(map(str, _signals(rows))), sum(_signals(rows)),
                    ", ".join(map(str, lecture.SIGNALS[model])), _weights(rows))
                   for model, rows in rows_by_model.items()]
    cnn_weights, mlp_weights = _weights(rows_by_model["seed_cnn"]), _weights(rows_by_model["mlp"])
    ratio = mlp_weights / cnn_weights if cnn_weights else float("nan")
    signals = lecture.SIGNALS
    return Section(
        "counting", "The example network, counted",
        "MNIST is 28x28 pixels and 1 channel; the first hidden layer has 28x28 pixels and 9 channels, with 5x5 "
        f"filters. Weights: 5*5*9 + 5*5*9*16 + 7*7*16*10 = {_sum_text(lecture.WEIGHTS['seed_cnn'])}, against "
        f"{_sum_text(lecture.WEIGHTS['mlp'])} for the introductory MLP. Signals: "
        f"{', '.join(map(str, signals['seed_cnn']))} against {', '.join(map(str, signals['mlp']))}. "
        f"The convolutional network has more signals but fewer parameters (about {lecture.WEIGHT_RATIO} times "
        "fewer).",
        [Row([_weight_table(rows_by_model["seed_cnn"], "seed_cnn"), _weight_table(rows_by_model["mlp"], "mlp")]),
         Table(["model", "signals h", "total signal", "lecture", "weights"], signal_rows, caption="sizes of signals"),
         Facts([("weights, MLP / CNN", f"{mlp_weights} / {cnn_weights} = {ratio:.1f}x"),
                ("test accuracy, seed CNN (plain data)", _variant_accuracy(values, "seed_cnn")),
                ("test accuracy, MLP (plain data)", _variant_accuracy(values, "mlp"))]),
         _figure(figures, "weights_vs_signals", "every model: weights against signal size", "medium")],
        slide="Example (MNIST again) / Convolutional vs. non-convolutional",
        claim_keys=("seed_cnn_counts", "mlp_counts", "more_signals_fewer_weights", "cnn_beats_mlp_with_fewer_weights"))


def pooling_section(values: dict, figures: dict[str, bytes]) -> Section:
    training = values.get("training", {})
    blocks: list[object] = [
        Text("Each 2x2 max pool halves the resolution; the second convolution reads all 9 channels of the first "
             "and writes 16. After the second pool a 7x7x16 signal remains, and the linear layer sees all of it at "
             "once: a 1x1 'pixel' of 10 class scores."),
        Row([_figure(figures, "layer1_filters", "layer 1: the 9 learned 5x5 filters", "small"),
             _figure(figures, "layer2_filters",
                     "layer 2: 16 filters (rows), each over all 9 input channels (columns)", "large")]),
    ]
    if training:
        # The explained run is one run: its accuracy is labelled with its seed, as everywhere in the report.
        explained = _records(values.get("runs", []), partition=training.get("partition"))
        seed = explained[0].get("seed") if explained else None
        blocks.append(Facts([(k, format_accuracy(v, seed=seed) if k == "test accuracy" else v)
                             for k, v in training.items()]))
    blocks.append(Row([
        _figure(figures, "training_curves",
                "seed CNN on plain digits: trained by back-propagation (loss and accuracy by epoch)", "large"),
        _figure(figures, "confusion_matrix", "seed CNN: test confusion matrix", "large"),
    ]))
    return Section(
        "pooling", "Pooling and the whole network",
        "Decrease resolution and increase channels going up, here with the max of 2x2 activations; each unit looks "
        "at all channels of the previous layer; at the top the resolution drops to 1x1 pixel. Train by "
        "back-propagation as before.", blocks, slide="Pooling / Stack more layers / Whole network")


def representation_section(values: dict, figures: dict[str, bytes]) -> Section:
    representations = values.get("representations", [])
    cnn_ratios = {r["layer"]: r["ratio"] for r in _records(representations, model="seed_cnn")}
    mlp_ratios = {r["layer"]: r["ratio"] for r in _records(representations, model="mlp")}
    ratio_rows = [(layer, cnn_ratios.get(layer), lecture.TRIPLET_RATIOS.get(layer)) for layer in cnn_ratios]
    mlp_table = Table(["MLP layer", "d(9A,4A) / d(4A,4B)"], list(mlp_ratios.items()),
                      caption="the MLP, same triplet") if mlp_ratios else Text("")
    measure_rows = [(r["model"], r["layer"], r.get("dimensions"), r.get("knn1_accuracy"), r.get("triplet_order_rate"),
                     r.get("triplet_order_rate_4_9"), r.get("wrong_pixel_triplets_put_right"),
                     r.get("within_between_ratio"), r.get("silhouette"))
                    for r in representations]
    pixels, logits = lecture.TRIPLET_RATIOS["pixels"], lecture.TRIPLET_RATIOS["logits"]
    flip = next(layer for layer, ratio in lecture.TRIPLET_RATIOS.items() if ratio > 1)
    anchor, confusable = _triplet_names(values)
    dataset = _dataset(values)
    # On another data set the lecture's labels stay (9A, 4A, 4B) and this says what they stand for.
    pair_note = ([] if (anchor, confusable) == ("4", "9") else
                 [Note(f"This run is on {dataset.title}: 4A and 4B are two of class {anchor}, 9A one of class "
                       f"{confusable}, the pair of classes pixel space confuses most (conv_core.datasets).", "info")])
    return Section(
        "representation", "Good representation?",
        "In pixel space, 9-4 is closer. In feature space, 4-4 is closer: the ratio d(9A,4A) / d(4A,4B) is "
        f"below 1 on the pixels and above 1 at the top of the network (the lecture's Caffe notebooks: {pixels:.2f} "
        f"on pixels, {logits:.2f} at the logits; the order flips at {flip}).",
        [*pair_note,
         Row([_figure(figures, "triplet", f"the triplet: 9A of class {confusable}, 4A and 4B of class {anchor}",
                      "small"),
              Text(values.get("triplet_rule", ""))]),
         Row([Table(["seed CNN layer", "this run", "lecture"], ratio_rows,
                    caption=f"d(9A,4A) / d(4A,4B) by layer (above 1: the two of class {anchor} are closer)"),
              mlp_table]),
         _figure(figures, "triplet_ratios",
                 f"the ratio by layer, this run beside the lecture's {pixels:.2f} (pixels) and {logits:.2f} (logits)",
                 "medium"),
         Text("One triplet is an anecdote. The measures below use every test digit: 1-nearest-neighbour accuracy, "
              "the rate at which a random same-class pair is closer than a different-class pair (all classes, and "
              f"class {anchor} against class {confusable} only), the share of all 9-4-4 triplets built like the one "
              "above whose pixel order is "
              "wrong that the layer puts right, the within/between-class distance ratio (lower is better) and the "
              "silhouette."),
         Table(["model", "layer", "dimensions", "1-NN accuracy", "triplet order",
                f"triplet order {anchor} vs {confusable}",
                "wrong 9-4-4 put right", "within / between", "silhouette"], measure_rows,
               caption="representation measures by layer"),
         _figure(figures, "measures_by_layer", "the measures by layer", "large"),
         _figure(figures, "pca_maps",
                 "the test digits on their first two principal components: pixels against the last hidden layer",
                 "large")],
        claim_keys=("triplet_pixels_nine_closer", "triplet_features_fours_closer", "aggregate_features_order_better"))


def scaling_section(values: dict, figures: dict[str, bytes]) -> Section:
    counts = values["parameter_counts"]
    run_ids = {}
    for run in values.get("runs", []):
        if run.get("data_variant") == "plain":
            short = run["run_id"][:8]
            run_ids.setdefault(run["model"], Link(short, run["url"]) if run.get("url") else short)
    family = []
    for model in dict.fromkeys(r["model"] for r in counts):
        rows = _records(counts, model=model)
        family.append((model, ARCHITECTURES.get(model, {}).get("description", ""), len(rows), _weights(rows),
                       _variant_accuracy(values, model), run_ids.get(model, "\u2013")))
    return Section(
        "scaling", "Scaling up",
        "The trend in 2015 is towards small filters (3x3) and poolings (2x2), but lots of layers (10-40); the "
        "lecture's own examples come from Caffe notebooks.",
        [Table(["model", "architecture", "weight layers", "weights", "test accuracy (plain)", "MLflow run"], family,
               caption="the model family: the lecture's two, a VGG-style stack of 3x3 convolutions, and the Caffe "
                       "notebooks' variant"),
         _figure(figures, "accuracy_vs_weights",
                 "test accuracy against weights: one run per model and data variant (its first seed)", "medium")],
        slide="Scaling up")


def augmentation_section(values: dict, figures: dict[str, bytes]) -> Section:
    shifts = values.get("shifts", {})
    source, expanded = shifts.get("source_count"), shifts.get("expanded_count")
    variant_rows = [(r["model"], r["data_variant"], _row_accuracy(r, values.get("runs", [])),
                     format_spread(r.get("accuracy_std"), int(r.get("seeds") or 1)), r.get("seeds"))
                    for r in values.get("accuracy", [])]
    infinite_facts = [(k.replace("_", " "), v) for k, v in values.get("infinite", {}).items()]
    factor = lecture.AUGMENTATION_FACTOR
    return Section(
        "augmentation", "Regularization by data augmentation",
        f"Augmented data by image-specific transformations: cropping just 2 pixels gets you {factor} times the data. "
        "Infinite MNIST goes further, deforming every digit anew.",
        [Facts([("training digits", source), (f"after all {factor} one-pixel shifts", expanded),
                ("factor", f"{expanded / source:g}x" if source else None)]),
         Row([_figure(figures, "nine_shifts", f"one digit, its {factor} shifted versions", "small"),
              _figure(figures, "infinite_digits", "infinite MNIST: an original of each class and 8 deformations",
                      "large")]),
         Facts(infinite_facts) if infinite_facts else Text(""),
         Table(["model", "data", "test accuracy", "spread (std, points)", "seeds"], variant_rows,
               caption="test accuracy by data variant: one run (its seed) or the mean over seeds"),
         _figure(figures, "accuracy_by_variant", "test accuracy by model and data variant", "medium")],
        claim_keys=("nine_times_the_data", "augmentation_does_not_hurt"))


def segmentation_section(values: dict, figures: dict[str, bytes]) -> Section:
    sliding = values.get("sliding", {})
    facts = [
        ("max |FCN - classifier| on 28x28 digits", sliding.get("fcn_vs_classifier_max_abs_difference")),
        ("placed digits classified right", f"{sliding.get('placed_digits_correct')} of {sliding.get('placed_digits')}"),
        ("background fraction of the map", sliding.get("background_fraction")),
        ("background rule", sliding.get("background_rule")),
        ("multiply-adds, fully convolutional", sliding.get("fcn_multiply_adds")),
        ("multiply-adds, explicit windows", sliding.get("explicit_multiply_adds")),
        ("multiply-add ratio", f"{sliding['multiply_add_ratio']:.1f}x fewer" if "multiply_add_ratio" in sliding else None),
        ("wall time, fully convolutional / explicit (s)",
         f"{sliding['fcn_seconds']:.4f} / {sliding['explicit_seconds']:.4f}" if "fcn_seconds" in sliding else None),
        ("wall-time speedup", f"{sliding['wall_time_speedup']:.1f}x" if "wall_time_speedup" in sliding else None),
        ("argmax agreement with explicit windows", sliding.get("fcn_vs_explicit_argmax_agreement")),
    ]
    semantic = values.get("semantic", {})
    semantic_facts = [f for f in [
        ("mean IoU, fine-tuned FCN / sliding baseline",
         f"{semantic['mean_iou']:.3f} / {semantic['baseline_mean_iou']:.3f}" if "mean_iou" in semantic else None),
        ("pixel accuracy, fine-tuned FCN", semantic.get("pixel_accuracy")),
        ("scenes, training / held-out",
         f"{semantic['scenes_train']} / {semantic['scenes_heldout']}" if "scenes_train" in semantic else None),
    ] if f[1] is not None]
    return Section(
        "segmentation", "Semantic segmentation",
        "Sliding a convolutional network to classify each location: lots of shared computation (Long et al., 2015). "
        "As a fully convolutional net, the classifier's last layer becomes a 7x7 convolution.",
        [Facts([f for f in facts if f[1] is not None]),
         _figure(figures, "class_map", "the seed CNN slid over a canvas of test digits: class map", "large"),
         Text("Segmentation proper labels every pixel. Fine-tuned with an 11th class, background, on scenes of "
              "training digits (per-pixel cross-entropy; the stride-4 map upsampled bilinearly, plus a stride-1 "
              "skip from the first conv as FCN-8s adds finer layers), the same network is scored by intersection "
              "over union on scenes of test digits, against the slid classifier with its 0.9 threshold."),
         Facts(semantic_facts) if semantic_facts else Text(""),
         _figure(figures, "semantic_segmentation", "held-out scenes: image, ground truth, FCN and sliding baseline",
                 "large")],
        slide="Semantic segmentation (Long et al., 2015)", claim_keys=("fcn_equals_classifier",))


def gradients_section(values: dict, figures: dict[str, bytes]) -> Section:
    measured = values.get("gradients", {})
    unit = measured.get("unit")
    return Section(
        "gradients", "Gradients to inputs",
        "Propagate gradients from hidden units h to the inputs x: dh1/dx is boring, it gives just the filters W1 "
        "(where the ReLU lets it through). For the most active layer-2 unit, the gradient in input space shows what "
        "it was paying attention to: in the lecture, the upper loop of an 8.",
        [Facts([("example", f"test digit #{measured.get('test_index')} (the first 8 of the test split)"),
                ("max |dh1/dx - W1|", measured.get("max_abs_difference")),
                ("most active layer-2 unit", f"channel {unit[0]} at ({unit[1]}, {unit[2]})" if unit else None),
                ("its activation", measured.get("unit_value"))]),
         _figure(figures, "layer1_gradients_vs_filters",
                 "layer 1: the gradient of a unit to the input against its filter", "large"),
         _figure(figures, "layer2_unit_projections",
                 "the most active layer-2 unit on the 8: gradient, deconvnet and guided backprop", "large")],
        slide="Gradients to inputs (Zeiler and Fergus, 2013)", claim_keys=("dh1_dx_is_the_filter",))


def top_activations_section(values: dict, figures: dict[str, bytes]) -> Section:
    top = values.get("top_activations", {})
    return Section(
        "top-activations", "Top activations",
        "Bigger network: find the examples that activate a unit most, then work backwards as before "
        "(Zeiler and Fergus, 2013).",
        [Facts([("layer-2 channels", top.get("channels")), ("test images per channel", top.get("images_per_channel")),
                ("strongest activation", top.get("strongest_activation"))]),
         _figure(figures, "top_activations",
                 "for each layer-2 channel, the test digits that drive it most, with their deconvnet projections",
                 "large")],
        slide="Zeiler and Fergus, 2013")


def hallucinations_section(values: dict, figures: dict[str, bytes]) -> Section:
    dream = values.get("hallucinations", {})
    norm_rows = [(r["layer"], r["start"], r["norm_before"], r["norm_after"],
                  f"{r['norm_after'] / max(r['norm_before'], 1e-12):.2f}x") for r in dream.get("norms", [])]
    class_rows = [(r["digit"], r.get("logit_before"), r.get("logit_after"), r.get("probability"))
                  for r in dream.get("class_records", [])]
    return Section(
        "hallucinations", "Hallucinations",
        "What would activate the whole layer more? d||h||^2/dx = 2 h^T dh/dx. Generate hallucinations: change the "
        "input a bit towards what is 'seen' (Inceptionism, Mordvintsev 2015).",
        [Table(["layer", "start", "||h|| before", "||h|| after", "growth"], norm_rows,
               caption="gradient ascent on 1/2 ||h||^2, per layer and starting image"),
         _figure(figures, "hallucinations", "hallucinations per layer, from two digits and from noise", "large"),
         _figure(figures, "class_hallucinations", "class hallucinations: each class's logit maximised from noise",
                 "large"),
         Table(["digit", "logit before", "logit after", "softmax probability"], class_rows,
               caption="class hallucinations: the target's logit before and after, and its probability")],
        slide="What would activate the whole layer more?", claim_keys=("hallucination_increases_norm",))


# --------------------------------------------------------------------------- the whole lecture


def lecture_sections(values: dict, figures: dict[str, bytes]) -> list[Section]:
    """The lecture in its order, each slide's claim followed by this run's numbers and figures.

    `values` holds plain values (lists of dicts, dicts, numbers): parameter_counts,
    connectivity, representations, triplet_rule, accuracy, runs, shifts, infinite,
    gradients, top_activations, hallucinations, sliding, training. `figures` maps
    the names in `REPORT_FIGURES` to PNG bytes (training_curves and confusion_matrix
    are the seed CNN's on plain digits); a missing figure is named in a note
    instead of silently dropped.
    """
    return [
        hierarchy_section(values, figures),
        convolution_section(values, figures),
        counting_section(values, figures),
        pooling_section(values, figures),
        representation_section(values, figures),
        scaling_section(values, figures),
        augmentation_section(values, figures),
        segmentation_section(values, figures),
        gradients_section(values, figures),
        top_activations_section(values, figures),
        hallucinations_section(values, figures),
    ]


def lecture_report(values: dict, figures: dict[str, bytes], claims: Sequence[Claim], provenance: dict,
                   generated: str = "", subtitle: str = "", mlflow_note: str = "") -> str:
    """The lecture report as one HTML page: `lecture_sections` rendered with the claims, provenance and runs.

    `values["runs"]` are the training runs the numbers and figures come from, each with its
    partition key, model, data variant, seed, test accuracy and MLflow run id (and url).
    """
    import matplotlib.pyplot as plt

    figure = claims_overview(claims)
    overview = figure_png(figure)
    plt.close(figure)
    # the sections name the data set and its classes; the provenance says which it is
    values = {"dataset": provenance.get("dataset", DEFAULT_DATASET), **values}
    return render_report(lecture_sections(values, figures), claims, provenance, values.get("runs", []),
                         generated=generated, subtitle=subtitle, mlflow_note=mlflow_note, claims_figure=overview)
