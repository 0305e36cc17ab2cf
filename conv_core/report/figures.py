"""PNG figures for the report: matplotlib figures as bytes, bytes as data URIs, and the claims overview."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

from matplotlib.figure import Figure as MplFigure

from conv_core.claims import Claim


def png_data_uri(png: bytes) -> str:
    """The figure embedded in the page itself, so the report fetches nothing."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure_png(figure: MplFigure, dpi: int = 110) -> bytes:
    """A matplotlib figure as PNG bytes (for figures made on the spot)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def claims_overview(claims: Sequence[Claim]) -> MplFigure:
    """One line per claim, a green tick or a red cross: the report's (and the asset's) summary figure."""
    import matplotlib

    # No display is needed (or available) where reports are made: a worker, a test, a server.
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = max(1, len(claims))
    figure, ax = plt.subplots(figsize=(6.4, 0.6 + 0.3 * count))
    for row, claim in enumerate(claims):
        y = count - row
        colour = "#137333" if claim.passed else "#b3261e"
        ax.text(0.02, y, "\u2713" if claim.passed else "\u2717", color=colour, fontsize=12, va="center",
                fontweight="bold")
        ax.text(0.08, y, claim.key, fontsize=9.5, va="center")
        ax.text(0.98, y, claim.slide, fontsize=8.5, va="center", ha="right", color="#5f6872")
    passed = sum(c.passed for c in claims)
    ax.set_title(f"{passed} of {len(claims)} of the lecture's claims hold", fontsize=10, loc="left")
    ax.set_xlim(0, 1)
    ax.set_ylim(0.4, count + 0.6)
    ax.axis("off")
    figure.tight_layout()
    return figure
