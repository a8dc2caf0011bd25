"""The model report: its numbers (``data``), matplotlib figures (``figures``), one self-contained HTML page (``html``)."""

from binclf.report.data import report_data
from binclf.report.html import FIGURE_IDS, render_bundle_report, render_html, render_training_report

__all__ = ["FIGURE_IDS", "render_bundle_report", "render_html", "render_training_report", "report_data"]
