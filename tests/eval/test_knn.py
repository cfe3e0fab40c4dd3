"""Weighted kNN against a brute-force implementation."""

from __future__ import annotations

import math

import pytest
import torch

from selfsup.eval import knn_accuracy, knn_predict


def brute_force_votes(train_f, train_y, test_f, k, tau, num_classes):
    """For each query: cosine similarity to every bank vector, the k largest, exp(s/tau) votes."""
    out = []
    for q in test_f.tolist():
        qn = math.sqrt(sum(v * v for v in q))
        sims = []
        for j, b in enumerate(train_f.tolist()):
            bn = math.sqrt(sum(v * v for v in b))
            sims.append((sum(x * y for x, y in zip(q, b)) / (qn * bn), j))
        sims.sort(reverse=True)
        votes = [0.0] * num_classes
        for s, j in sims[:k]:
            votes[int(train_y[j])] += math.exp(s / tau)
        out.append(votes)
    return torch.tensor(out, dtype=torch.float64)


def problem(seed=0, n=60, m=25, d=6, c=4):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(c, d, generator=g)
    ytr = torch.randint(0, c, (n,), generator=g)
    yte = torch.randint(0, c, (m,), generator=g)
    ftr = centres[ytr] + 0.9 * torch.randn(n, d, generator=g)
    fte = centres[yte] + 0.9 * torch.randn(m, d, generator=g)
    return ftr, ytr, fte, yte


@pytest.mark.parametrize("k,tau", [(1, 0.07), (3, 0.1), (5, 0.5), (10, 1.0)])
def test_knn_matches_brute_force(k, tau):
    ftr, ytr, fte, yte = problem(seed=k)
    scores = knn_predict(ftr, ytr, fte, k=k, temperature=tau, num_classes=4, chunk=7)  # chunking too
    ref = brute_force_votes(ftr, ytr, fte, k, tau, 4)
    torch.testing.assert_close(scores.double(), ref, rtol=1e-4, atol=1e-6)
    acc = knn_accuracy(ftr, ytr, fte, yte, ks=(k,), temperature=tau)
    ref_acc = (ref.argmax(1) == yte).double().mean().item()
    assert acc["top1"] == pytest.approx(ref_acc)
    assert acc["k"] == k and acc[f"top1_k{k}"] == acc["top1"]


def test_knn_accuracy_reports_every_k_and_is_scale_invariant():
    ftr, ytr, fte, yte = problem(seed=9, n=80, m=40)
    a = knn_accuracy(ftr, ytr, fte, yte, ks=(20, 3))
    b = knn_accuracy(ftr * 5, ytr, fte * 0.1, yte, ks=(20, 3))
    assert a["top1"] == a["top1_k20"] and a["k"] == 20 and "top1_k3" in a
    assert a == b  # cosine similarity: feature scale does not matter
    assert 0.0 <= a["top1_k3"] <= 1.0


def test_knn_on_separated_clusters_is_perfect_and_k_larger_than_bank_is_clamped():
    ftr = torch.cat(
        [torch.randn(10, 3) * 0.01 + torch.tensor([1.0, 0, 0]), torch.randn(10, 3) * 0.01 + torch.tensor([0, 1.0, 0])]
    )
    ytr = torch.tensor([0] * 10 + [1] * 10)
    fte = torch.tensor([[2.0, 0.1, 0], [0.1, 3.0, 0]])
    res = knn_accuracy(ftr, ytr, fte, torch.tensor([0, 1]), ks=(200, 5))
    assert res["top1_k5"] == 1.0 and res["top1_k200"] == 1.0
