"""Linear probe on features with a known answer."""

from __future__ import annotations

import torch

from selfsup.eval import fit_logistic, linear_probe

CENTRES = torch.randn(3, 10, generator=torch.Generator().manual_seed(0)) * 6.0


def blobs(n_per_class, seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(len(CENTRES)).repeat_interleave(n_per_class)
    x = CENTRES[y] + torch.randn(len(y), CENTRES.shape[1], generator=g)
    perm = torch.randperm(len(y), generator=g)
    return x[perm], y[perm]


def test_linear_probe_separable_blobs():
    xtr, ytr = blobs(100, seed=1)
    xte, yte = blobs(40, seed=2)
    grid = (1e-5, 1e-3, 1e-1)
    res = linear_probe(xtr, ytr, xte, yte, l2_grid=grid, val_fraction=0.2, max_iter=100)
    assert res["top1"] >= 0.99
    assert res["train_top1"] >= 0.99
    assert res["l2"] in grid
    assert set(res["val"]) == {str(v) for v in grid}
    assert res["protocol"] == "linear"


def test_linear_probe_is_near_chance_on_random_labels():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(300, 8, generator=g)
    y = torch.randint(0, 4, (300,), generator=g)
    xt = torch.randn(300, 8, generator=g)
    yt = torch.randint(0, 4, (300,), generator=g)
    res = linear_probe(x, y, xt, yt, l2_grid=(1e-3,), max_iter=100)
    assert res["top1"] < 0.4


def test_fit_logistic_regularisation_shrinks_weights():
    x, y = blobs(50, seed=3)
    x = (x - x.mean(0)) / x.std(0)
    weak = fit_logistic(x, y, 3, l2=1e-6, max_iter=100)
    strong = fit_logistic(x, y, 3, l2=1.0, max_iter=100)
    assert strong.weight.norm() < 0.5 * weak.weight.norm()
    assert (weak(x).argmax(1) == y).float().mean() == 1.0
