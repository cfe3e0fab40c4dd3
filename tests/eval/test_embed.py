"""2-D embeddings keep neighbourhoods and the plot is written."""

from __future__ import annotations

import pytest
import torch

from selfsup.eval.embed import embed_2d, plot_embedding


def test_tsne_keeps_separated_classes_apart(tmp_path):
    from sklearn.manifold import trustworthiness

    g = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat_interleave(30)
    feats = torch.randn(4, 20, generator=g)[labels] * 4 + torch.randn(120, 20, generator=g) * 0.3
    xy = embed_2d(feats)
    assert xy.shape == (120, 2)
    assert trustworthiness(torch.nn.functional.normalize(feats, dim=1).numpy(), xy, n_neighbors=5) > 0.9
    # each class's 2-D centroid is closer to its own points than the other classes' centroids are
    import numpy as np

    y = labels.numpy()
    cent = np.stack([xy[y == c].mean(0) for c in range(4)])
    nearest = ((xy[:, None] - cent[None]) ** 2).sum(-1).argmin(1)
    assert (nearest == y).mean() > 0.95
    png = plot_embedding(xy, y, tmp_path / "tsne.png", title="test")
    assert png.stat().st_size > 5000 and png.read_bytes()[:4] == b"\x89PNG"


def test_unknown_embedding_names_the_choices():
    with pytest.raises(ValueError, match="tsne or umap"):
        embed_2d(torch.randn(10, 3), method="pca")
