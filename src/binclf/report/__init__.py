"""The model report: report numbers, matplotlib figures, one self-contained HTML file."""

from binclf.report.html import FIGURE_IDS, render_bundle_report, render_html, render_training_report, report_data

__all__ = ["FIGURE_IDS", "render_bundle_report", "render_html", "render_training_report", "report_data"]
