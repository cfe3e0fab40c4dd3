"""Clustering of frozen features: k-means, then how well clusters match the classes.

NMI and ARI come from scikit-learn; accuracy after Hungarian matching (each cluster mapped to
at most one class, the mapping that maximises agreement) uses scipy's linear_sum_assignment.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def hungarian_accuracy(y_true, y_pred) -> float:
    """Best one-to-one mapping of predicted clusters to classes; the fraction it gets right."""
    from scipy.optimize import linear_sum_assignment

    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    k = int(max(y_true.max(), y_pred.max())) + 1
    counts = np.zeros((k, k), dtype=np.int64)  # [cluster, class]
    np.add.at(counts, (y_pred, y_true), 1)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return counts[rows, cols].sum() / len(y_true)


def cluster_scores(
    features: torch.Tensor, labels: torch.Tensor, num_clusters: int | None = None, seed: int = 0, n_init: int = 3
) -> dict:
    """k-means (k = number of classes unless given) on L2-normalised features [N, D] -> NMI, ARI, accuracy."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    y = labels.numpy()
    k = num_clusters or int(y.max()) + 1
    x = F.normalize(features.float(), dim=1).numpy()
    pred = KMeans(k, n_init=n_init, random_state=seed).fit_predict(x)
    return {
        "protocol": "cluster",
        "k": k,
        "nmi": float(normalized_mutual_info_score(y, pred)),
        "ari": float(adjusted_rand_score(y, pred)),
        "accuracy": float(hungarian_accuracy(y, pred)),
        "top1": float(hungarian_accuracy(y, pred)),
    }
