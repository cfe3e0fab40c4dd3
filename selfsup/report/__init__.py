"""Plots and reports of runs."""
from selfsup.report.html import write_report
from selfsup.report.plots import plot_curves, read_metrics

__all__ = ["plot_curves", "read_metrics", "write_report"]
