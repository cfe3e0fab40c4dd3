"""Barlow Twins, VICReg and W-MSE losses against explicit per-element computations; SimSiam's D."""

from __future__ import annotations

import math

import pytest
import torch

from selfsup.losses.distillation import negative_cosine
from selfsup.losses.redundancy import (
    barlow_twins_loss,
    batch_standardize,
    cross_correlation,
    vicreg_loss,
    whiten,
    wmse_loss,
)


def _inputs(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    # different scales and offsets per dimension: the losses must standardise / centre themselves
    z1 = torch.randn(n, d, generator=g) * torch.rand(d, generator=g).add(0.3) * 2 + torch.randn(d, generator=g)
    z2 = 0.7 * z1 + 0.5 * torch.randn(n, d, generator=g)
    return z1.requires_grad_(), z2.requires_grad_()


# ------------------------------------------------------------------------------------ Barlow Twins


def barlow_reference(z1: torch.Tensor, z2: torch.Tensor, lambd: float, eps: float) -> torch.Tensor:
    """Zbontar et al. 2021 eq. 1-2 element by element, float64: C_ij = sum_b a_bi b_bj / N with
    a, b standardised per dimension over the batch (biased variance + eps, as BatchNorm)."""
    n, d = z1.shape

    def standardised(z):
        cols = []
        for i in range(d):
            mean = sum(z[b, i] for b in range(n)) / n
            var = sum((z[b, i] - mean) ** 2 for b in range(n)) / n
            cols.append([(z[b, i] - mean) / torch.sqrt(var + eps) for b in range(n)])
        return cols  # cols[i][b]

    a, b_ = standardised(z1.double()), standardised(z2.double())
    loss = 0.0
    for i in range(d):
        for j in range(d):
            c_ij = sum(a[i][b] * b_[j][b] for b in range(n)) / n
            loss = loss + ((1 - c_ij) ** 2 if i == j else lambd * c_ij**2)
    return loss


@pytest.mark.parametrize("n,d,lambd", [(4, 3, 5e-3), (8, 5, 0.1), (16, 4, 1.0)])
def test_barlow_twins_matches_element_sums_values_and_gradients(n, d, lambd):
    z1, z2 = _inputs(n, d, seed=n + d)
    loss, terms = barlow_twins_loss(z1, z2, lambd)
    g1, g2 = torch.autograd.grad(loss, [z1, z2])
    r1, r2 = z1.detach().double().requires_grad_(), z2.detach().double().requires_grad_()
    ref = barlow_reference(r1, r2, lambd, 1e-5)
    e1, e2 = torch.autograd.grad(ref, [r1, r2])
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-6)
    assert (terms["on_diag"] + lambd * terms["off_diag"]).item() == pytest.approx(loss.item(), rel=1e-6)
    torch.testing.assert_close(g1.double(), e1, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(g2.double(), e2, rtol=1e-4, atol=1e-6)


def test_cross_correlation_is_the_cosine_between_centred_dimensions():
    # with eps 0, C_ij is the paper's eq. 2: a cosine over the batch, so it is in [-1, 1] and
    # C(z, z) has an exactly unit diagonal
    z1, z2 = _inputs(12, 6, seed=0)
    c = cross_correlation(z1, z2, eps=0.0).detach()
    a, b = z1.detach() - z1.detach().mean(0), z2.detach() - z2.detach().mean(0)
    cos = (a.T @ b) / (a.norm(dim=0)[:, None] * b.norm(dim=0)[None, :])
    torch.testing.assert_close(c, cos, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cross_correlation(z1, z1, eps=0.0).diagonal(), torch.ones(6), rtol=0, atol=1e-5)
    s = batch_standardize(z1.detach(), eps=0.0)
    torch.testing.assert_close(s.mean(0), torch.zeros(6), rtol=0, atol=1e-6)
    torch.testing.assert_close(s.var(0, unbiased=False), torch.ones(6), rtol=0, atol=1e-5)


def test_barlow_twins_is_zero_for_identical_decorrelated_views_and_ignores_scale():
    # orthogonal, centred columns: C = I exactly, both terms vanish
    a = torch.randn(32, 4, generator=torch.Generator().manual_seed(1))
    z, _ = torch.linalg.qr(a - a.mean(0))  # orthonormal columns spanned by centred ones: still centred
    loss, terms = barlow_twins_loss(z, z.clone(), eps=0.0)
    assert terms["off_diag"].item() < 1e-10 and loss.item() < 1e-8
    z1, z2 = _inputs(10, 4, seed=3)
    a, _ = barlow_twins_loss(z1, z2, eps=0.0)
    b, _ = barlow_twins_loss(z1 * 5 + 2, z2 * 0.1 - 1, eps=0.0)
    assert a.item() == pytest.approx(b.item(), rel=1e-5)


def test_barlow_twins_is_computed_in_float32_under_bf16_autocast():
    z1, z2 = _inputs(64, 16, seed=5)
    ref, _ = barlow_twins_loss(z1, z2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = barlow_twins_loss(z1, z2)
    assert out.dtype == torch.float32 and out.item() == pytest.approx(ref.item(), rel=1e-6)


# ------------------------------------------------------------------------------------ VICReg


def vicreg_reference(z1, z2, lam, mu, nu, gamma, eps):
    """Bardes et al. 2022 eq. 1-6 element by element, float64 (variance averaged over the two
    branches, as the authors' code). Returns (loss, s, v, c)."""
    n, d = z1.shape
    s = sum((z1[b, j] - z2[b, j]) ** 2 for b in range(n) for j in range(d)) / (n * d)

    def v_and_c(z):
        mean = [sum(z[b, j] for b in range(n)) / n for j in range(d)]
        cov = [
            [sum((z[b, i] - mean[i]) * (z[b, j] - mean[j]) for b in range(n)) / (n - 1) for j in range(d)]
            for i in range(d)
        ]
        v = sum(torch.clamp(gamma - torch.sqrt(cov[j][j] + eps), min=0) for j in range(d)) / d
        c = sum(cov[i][j] ** 2 for i in range(d) for j in range(d) if i != j) / d
        return v, c

    v1, c1 = v_and_c(z1)
    v2, c2 = v_and_c(z2)
    v, c = (v1 + v2) / 2, c1 + c2
    return lam * s + mu * v + nu * c, s, v, c


@pytest.mark.parametrize("n,d,gamma", [(4, 3, 1.0), (8, 5, 1.0), (10, 4, 3.0)])
def test_vicreg_matches_element_sums_values_terms_and_gradients(n, d, gamma):
    z1, z2 = _inputs(n, d, seed=10 * n + d)
    loss, terms = vicreg_loss(z1, z2, 25.0, 25.0, 1.0, gamma, 1e-4)
    g1, g2 = torch.autograd.grad(loss, [z1, z2])
    r1, r2 = z1.detach().double().requires_grad_(), z2.detach().double().requires_grad_()
    ref, s, v, c = vicreg_reference(r1, r2, 25.0, 25.0, 1.0, gamma, 1e-4)
    e1, e2 = torch.autograd.grad(ref, [r1, r2])
    assert v.item() > 0, "the test must exercise the hinge"
    assert terms["invariance"].item() == pytest.approx(s.item(), rel=1e-5)
    assert terms["variance"].item() == pytest.approx(v.item(), rel=1e-5, abs=1e-7)
    assert terms["covariance"].item() == pytest.approx(c.item(), rel=1e-5)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    torch.testing.assert_close(g1.double(), e1, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(g2.double(), e2, rtol=1e-4, atol=1e-6)


def test_vicreg_terms_known_values():
    # identical views with every std above gamma and uncorrelated dimensions: all terms ~ 0
    a = torch.randn(50, 4, generator=torch.Generator().manual_seed(0))
    q, _ = torch.linalg.qr(a - a.mean(0))  # centred, orthogonal columns
    z = q * 10
    loss, t = vicreg_loss(z, z.clone())
    assert t["invariance"].item() == 0 and t["variance"].item() == 0 and loss.item() < 1e-8
    # a collapsed batch: every std is 0, the hinge is gamma - sqrt(eps) per dimension
    zc = torch.ones(8, 5)
    _, t = vicreg_loss(zc, zc.clone(), eps=1e-4)
    assert t["variance"].item() == pytest.approx(1 - math.sqrt(1e-4), rel=1e-6)
    assert t["covariance"].item() == 0


# ------------------------------------------------------------------------------------ whitening / W-MSE


@pytest.mark.parametrize("m,d", [(16, 4), (128, 64), (40, 8)])
def test_whitening_gives_zero_mean_identity_covariance_on_the_sub_batch(m, d):
    g = torch.Generator().manual_seed(m + d)
    mix = torch.randn(d, d, generator=g)  # strongly correlated, unequal scales
    x = torch.randn(m, d, generator=g) @ mix + 3 * torch.randn(d, generator=g)
    w = whiten(x)
    assert w.shape == (m, d) and w.dtype == torch.float32
    torch.testing.assert_close(w.mean(0), torch.zeros(d), rtol=0, atol=1e-4)
    cov = torch.cov(w.T.double())  # unbiased, as in the whitening
    torch.testing.assert_close(cov, torch.eye(d, dtype=torch.float64), rtol=0, atol=2e-3)


def test_whitening_is_the_inverse_cholesky_factor():
    # W = L^{-1}, lower triangular: the first whitened coordinate is the first input standardised
    g = torch.Generator().manual_seed(7)
    x = torch.randn(30, 3, generator=g) @ (torch.randn(3, 3, generator=g) + 3 * torch.eye(3))  # well conditioned
    w = whiten(x).double()
    xd = x.double() - x.double().mean(0)
    chol = torch.linalg.cholesky(torch.cov(xd.T))
    torch.testing.assert_close(w, torch.linalg.solve(chol, xd.T).T, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(w[:, 0], xd[:, 0] / xd[:, 0].std(), rtol=1e-4, atol=1e-5)
    # shrinkage eps: the factor of (1 - eps) Sigma + eps I
    s = (1 - 0.3) * torch.cov(xd.T) + 0.3 * torch.eye(3, dtype=torch.float64)
    torch.testing.assert_close(
        whiten(x, eps=0.3).double(), torch.linalg.solve(torch.linalg.cholesky(s), xd.T).T, rtol=1e-4, atol=1e-5
    )


def _wmse_reference(z1, z2, w_size, w_iter, seed):
    """Official algorithm spelled out: same permutations (the CPU generator), whiten each view's
    chunk, 2 - 2 cos per positive pair, mean over the batch, mean over iterations."""
    g = torch.Generator().manual_seed(seed)
    n = z1.shape[0]
    total = 0.0
    for _ in range(w_iter):
        perm = torch.randperm(n, generator=g)
        per_pair = torch.empty(n, dtype=torch.float64)
        for idx in perm.tensor_split(max(1, n // w_size)):
            a, b = whiten(z1[idx]).double(), whiten(z2[idx]).double()
            for r, i in enumerate(idx.tolist()):
                per_pair[i] = 2 - 2 * (a[r] @ b[r]) / (a[r].norm() * b[r].norm())
        total += per_pair.mean().item()
    return total / w_iter


@pytest.mark.parametrize("n,w_size,w_iter", [(32, 16, 1), (40, 16, 3), (24, 64, 2)])
def test_wmse_loss_matches_per_pair_reference(n, w_size, w_iter):
    z1, z2 = _inputs(n, 4, seed=n)
    loss = wmse_loss(z1, z2, w_size, w_iter, generator=torch.Generator().manual_seed(11))
    ref = _wmse_reference(z1.detach(), z2.detach(), w_size, w_iter, seed=11)
    assert loss.item() == pytest.approx(ref, rel=1e-5)
    g1, g2 = torch.autograd.grad(loss, [z1, z2])
    assert g1.abs().sum() > 0 and g2.abs().sum() > 0  # no stop-gradient in W-MSE: both views learn


def test_wmse_is_zero_for_identical_views_and_invariant_to_affine_maps():
    z1, _ = _inputs(64, 4, seed=2)
    assert wmse_loss(z1, z1.clone(), 32).item() < 1e-6
    # whitening removes any invertible linear map and shift of one view (so collapse gains nothing)
    _, z2 = _inputs(64, 4, seed=2)
    a = wmse_loss(z1, z2, 64)
    tri = torch.tril(torch.rand(4, 4)) + torch.eye(4)  # lower triangular: Cholesky whitening undoes it exactly
    b = wmse_loss(z1, z2 @ tri.T + 5.0, 64)
    assert a.item() == pytest.approx(b.item(), rel=1e-4)


# ------------------------------------------------------------------------------------ SimSiam's D


def test_negative_cosine_value_and_stop_gradient():
    g = torch.Generator().manual_seed(0)
    p, z = torch.randn(5, 7, generator=g).requires_grad_(), torch.randn(5, 7, generator=g).requires_grad_()
    ref = -sum((p[i] @ z[i]) / (p[i].norm() * z[i].norm()) for i in range(5)) / 5
    loss = negative_cosine(p, z)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
    loss.backward()
    assert z.grad is None and p.grad.abs().sum() > 0  # stop-gradient: the target z learns nothing
    p.grad = None
    negative_cosine(p, z, stop_gradient=False).backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    assert negative_cosine(p, p * 3.0).item() == pytest.approx(-1.0, abs=1e-6)
