"""Clustering metrics against hand-made cases."""

from __future__ import annotations

import pytest
import torch

from selfsup.eval.cluster import cluster_scores, hungarian_accuracy


def test_hungarian_accuracy_ignores_cluster_names():
    y = [0, 0, 1, 1, 2, 2]
    assert hungarian_accuracy(y, [2, 2, 0, 0, 1, 1]) == 1.0
    # one point in the wrong cluster: 5 of 6; two clusters merged: the best mapping gets 4 of 6
    assert hungarian_accuracy(y, [2, 2, 0, 1, 1, 1]) == pytest.approx(5 / 6)
    assert hungarian_accuracy(y, [0, 0, 0, 0, 1, 1]) == pytest.approx(4 / 6)


def test_cluster_scores_on_separated_and_on_random_features():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(5).repeat_interleave(40)
    centres = torch.randn(5, 16, generator=g) * 5
    good = centres[labels] + 0.1 * torch.randn(200, 16, generator=g)
    s = cluster_scores(good, labels)
    assert s["nmi"] > 0.99 and s["ari"] > 0.99 and s["accuracy"] == 1.0 and s["k"] == 5
    noise = cluster_scores(torch.randn(200, 16, generator=g), labels)
    assert noise["nmi"] < 0.2 and noise["accuracy"] < 0.5
