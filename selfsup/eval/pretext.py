"""Pretext performance and its relation to downstream accuracy.

Pretext-task methods (rotation, jigsaw, relative position, inpainting, colorization, ...) log how
well they solve their own task as ``pretext/<name>`` in metrics.jsonl. The field's early lesson
(Kolesnikov et al. 2019, "Revisiting Self-Supervised Visual Representation Learning") is that
pretext accuracy is a poor predictor of representation quality across architectures and tasks;
across runs of one task it usually correlates. This module reads the metric back and measures
that correlation (Pearson and Spearman) against each run's linear-probe accuracy.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from selfsup.report.plots import read_metrics


def pretext_metrics(run_dir: str | Path) -> dict[str, float]:
    """The last logged value of every ``pretext/*`` key of a run (names without the prefix)."""
    last = {}
    for r in read_metrics(run_dir):
        last.update({k[len("pretext/"):]: v for k, v in r.items() if k.startswith("pretext/")})
    return last


def correlation(xs, ys) -> dict:
    """Pearson and Spearman correlation of two equal-length sequences (None with fewer than 3 points
    or a constant sequence: no correlation is defined)."""
    from scipy.stats import pearsonr, spearmanr

    x, y = np.asarray(xs, float), np.asarray(ys, float)
    if len(x) < 3 or x.std() == 0 or y.std() == 0:
        return {"pearson": None, "spearman": None, "n": len(x)}
    return {"pearson": float(pearsonr(x, y)[0]), "spearman": float(spearmanr(x, y)[0]), "n": len(x)}
