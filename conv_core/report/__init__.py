"""The lecture report: the lecture, slide by slide, beside this run's numbers, figures and checked claims.

One self-contained HTML page built from plain values and PNG bytes; nothing
here reads files or knows about the pipeline (the `lecture_report` asset
gathers the values and figures and passes them in).
"""

from conv_core.report.figures import claims_overview, figure_png, png_data_uri
from conv_core.report.html import format_value
from conv_core.report.sections import REPORT_FIGURES, lecture_report, lecture_sections

__all__ = ["REPORT_FIGURES", "claims_overview", "figure_png", "format_value", "lecture_report", "lecture_sections",
           "png_data_uri"]
