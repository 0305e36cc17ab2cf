"""What a report section is made of: plain, frozen values that `conv_core.report.html` renders.

Sections hold text, facts, tables, PNG figures and side-by-side rows; none of
them knows about HTML, so the lecture's sections can be built (and tested)
as data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


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
    # Optional CSS class per row ("pass", "fail", "muted", "lecture", "total"); same length as rows.
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
