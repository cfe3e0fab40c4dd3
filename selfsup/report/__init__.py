"""Plots and reports of runs."""

from selfsup.report.html import write_report
from selfsup.engine import read_metrics
from selfsup.train.pictures import plot_curves

__all__ = ["plot_curves", "read_metrics", "write_report"]
