"""Collapse diagnostics on matrices whose answer is known."""

from __future__ import annotations

import math

import pytest
import torch

from selfsup.eval import effective_rank, embedding_std


def test_effective_rank_of_known_ranks():
    g = torch.Generator().manual_seed(0)
    u, v = torch.randn(500, 1, generator=g), torch.randn(1, 32, generator=g)
    assert effective_rank(u @ v) == pytest.approx(1.0, abs=0.01)
    # rank 4 with equal singular values: exactly 4
    q, _ = torch.linalg.qr(torch.randn(200, 4, generator=g))
    assert effective_rank(q @ torch.eye(4, 32)) == pytest.approx(4.0, abs=0.01)
    iso = torch.randn(5000, 32, generator=g)
    assert 0.95 * 32 <= effective_rank(iso) <= 32.001
    # anisotropic spectra lie in between
    aniso = iso * torch.logspace(0, -2, 32)
    assert 1.5 < effective_rank(aniso) < 0.8 * 32


def test_embedding_std_collapsed_and_spread():
    row = torch.randn(1, 64)
    assert embedding_std(row.repeat(100, 1)) == pytest.approx(0.0, abs=1e-6)
    g = torch.Generator().manual_seed(0)
    for d in (16, 128):
        z = torch.randn(4000, d, generator=g) * 3.0  # scale does not matter: rows are normalised
        assert embedding_std(z) == pytest.approx(1 / math.sqrt(d), rel=0.05)


def test_alignment_and_uniformity_against_explicit_pair_loops():
    import itertools
    import math

    import torch.nn.functional as F

    from selfsup.eval.diagnostics import alignment, uniformity

    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(7, 5, generator=g), torch.randn(7, 5, generator=g)
    a, b = F.normalize(z1.double(), dim=1), F.normalize(z2.double(), dim=1)
    want_align = sum(((a[i] - b[i]) ** 2).sum() for i in range(7)) / 7
    assert alignment(z1, z2) == pytest.approx(want_align.item(), rel=1e-5)
    pairs = list(itertools.combinations(range(7), 2))
    want_unif = math.log(sum(math.exp(-2 * ((a[i] - a[j]) ** 2).sum().item()) for i, j in pairs) / len(pairs))
    assert uniformity(z1) == pytest.approx(want_unif, rel=1e-5)
    # collapse: perfectly aligned, and uniformity at its maximum 0
    same = torch.ones(6, 5)
    assert alignment(same, same) == pytest.approx(0.0, abs=1e-7)
    assert uniformity(same) == pytest.approx(0.0, abs=1e-6)
