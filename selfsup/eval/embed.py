"""2-D pictures of a feature space: t-SNE (scikit-learn) and, when ``umap-learn`` is installed,
UMAP — test features coloured by their label, saved as PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from selfsup.errors import SelfsupError


def embed_2d(features: torch.Tensor, method: str = "tsne", seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """[N, D] -> [N, 2]. Features are L2-normalised first (the geometry kNN and the losses see)."""
    x = F.normalize(features.float(), dim=1).numpy()
    if method == "tsne":
        from sklearn.manifold import TSNE

        return TSNE(2, perplexity=min(perplexity, (len(x) - 1) / 3), init="pca", random_state=seed).fit_transform(x)
    if method == "umap":
        try:
            import umap
        except ImportError:
            raise SelfsupError(
                "UMAP needs the optional package umap-learn: pip install umap-learn (or use method='tsne')"
            ) from None
        return umap.UMAP(random_state=seed).fit_transform(x)
    raise SelfsupError(f"unknown 2-D embedding {method!r}: choose tsne or umap")


def plot_embedding(xy: np.ndarray, labels, path: str | Path, title: str = "", class_names=None) -> Path:
    """Scatter of [N, 2] points coloured by label, with a legend; returns the PNG path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = np.asarray(labels)
    fig, ax = plt.subplots(figsize=(6.5, 6))
    cmap = plt.get_cmap("tab10" if labels.max() < 10 else "tab20")
    for c in np.unique(labels):
        m = labels == c
        name = class_names[c] if class_names is not None and c < len(class_names) else str(c)
        ax.scatter(xy[m, 0], xy[m, 1], s=4, color=cmap(int(c) % cmap.N), label=name, alpha=0.8, linewidths=0)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)
    ax.legend(markerscale=3, fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5), frameon=False)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path
