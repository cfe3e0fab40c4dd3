"""Weighted k-nearest-neighbour classification (Wu et al. 2018, "Unsupervised Feature
Learning via Non-Parametric Instance Discrimination"): cosine similarity on L2-normalised
features, each of the k neighbours votes for its class with weight exp(s / tau)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def knn_predict(
    train_f: torch.Tensor,
    train_y: torch.Tensor,
    test_f: torch.Tensor,
    k: int = 200,
    temperature: float = 0.07,
    num_classes: int | None = None,
    chunk: int = 1024,
) -> torch.Tensor:
    """Class scores [M, num_classes] for test features [M, D] against a bank [N, D] with labels [N]."""
    num_classes = num_classes or int(train_y.max()) + 1
    bank = F.normalize(train_f.float(), dim=1)
    k = min(k, len(bank))
    scores = []
    for i in range(0, len(test_f), chunk):
        q = F.normalize(test_f[i : i + chunk].float(), dim=1)
        sim, idx = (q @ bank.T).topk(k, dim=1)  # [m, k]
        w = (sim / temperature).exp()
        votes = torch.zeros(len(q), num_classes, dtype=w.dtype)
        votes.scatter_add_(1, train_y[idx], w)  # sum of weights per class
        scores.append(votes)
    return torch.cat(scores)


def knn_accuracy(train_f, train_y, test_f, test_y, ks=(200, 20), temperature: float = 0.07) -> dict:
    """Top-1 accuracy (a fraction) for each k, with the protocol's settings."""
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    result = {"protocol": "knn", "temperature": temperature, "ks": list(ks)}
    for k in ks:
        pred = knn_predict(train_f, train_y, test_f, k, temperature, num_classes).argmax(1)
        result[f"top1_k{k}"] = (pred == test_y).float().mean().item()
    result["top1"] = result[f"top1_k{ks[0]}"]
    result["k"] = ks[0]
    return result
