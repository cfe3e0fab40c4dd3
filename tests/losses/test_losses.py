"""Losses against explicit, loop-by-loop reference implementations."""

from __future__ import annotations

import math

import pytest
import torch

from selfsup.losses import infonce_bound, normalized_mse, nt_xent


def nt_xent_reference(z1: torch.Tensor, z2: torch.Tensor, temperature: float, decoupled: bool = False) -> torch.Tensor:
    """SimCLR eq. 1 written out: for each of the 2N anchors, -log softmax of its partner among all
    2N - 1 other views (the anchor itself excluded), averaged over the anchors. float64, loops.
    decoupled (DCL, Yeh et al. 2022, eq. 6): the partner is left out of the denominator too."""
    views = [v for v in torch.cat([z1, z2]).double()]
    n2 = len(views)
    n = n2 // 2

    def cos(a, b):
        return (a * b).sum() / (a.norm() * b.norm())

    total = 0.0
    for i in range(n2):
        partner = (i + n) % n2
        denom = 0.0
        for j in range(n2):
            if j != i and not (decoupled and j == partner):
                denom = denom + torch.exp(cos(views[i], views[j]) / temperature)
        total = total - torch.log(torch.exp(cos(views[i], views[partner]) / temperature) / denom)
    return total / n2


# DCL from two images up: with one image it has no negative (an empty denominator)
@pytest.mark.parametrize(
    "n,d,tau,decoupled",
    [
        (n, d, tau, dcl)
        for n, d, tau in [(1, 3, 0.5), (2, 4, 0.1), (5, 8, 0.5), (8, 16, 0.2), (6, 2, 1.0)]
        for dcl in (False, True)
        if n > 1 or not dcl
    ],
)
def test_nt_xent_matches_double_loop_values_and_gradients(n, d, tau, decoupled):
    g = torch.Generator().manual_seed(n * 100 + d)
    # varied norms: the loss must normalise its inputs
    z1 = (torch.randn(n, d, generator=g) * torch.rand(n, 1, generator=g).add(0.2) * 3).requires_grad_()
    z2 = (torch.randn(n, d, generator=g) * 0.5).requires_grad_()
    loss, candidates = nt_xent(z1, z2, tau, decoupled)
    assert candidates == 2 * n - 1
    assert loss.ndim == 0
    g1, g2 = torch.autograd.grad(loss, [z1, z2])

    r1, r2 = z1.detach().double().requires_grad_(), z2.detach().double().requires_grad_()
    ref = nt_xent_reference(r1, r2, tau, decoupled)
    e1, e2 = torch.autograd.grad(ref, [r1, r2])
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-6)
    torch.testing.assert_close(g1.double(), e1, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(g2.double(), e2, rtol=1e-4, atol=1e-6)


def test_nt_xent_is_symmetric_in_the_views_and_scale_invariant():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    a, _ = nt_xent(z1, z2, 0.3)
    b, _ = nt_xent(z2, z1, 0.3)
    c, _ = nt_xent(z1 * 7.0, z2 * 0.01, 0.3)
    assert a.item() == pytest.approx(b.item(), rel=1e-6)
    assert a.item() == pytest.approx(c.item(), rel=1e-5)


def test_nt_xent_perfect_alignment_beats_random_and_has_known_value():
    # identical views, orthogonal images: the positive has cos 1, every negative cos 0
    n, tau = 4, 0.5
    z = torch.eye(n, 8)
    loss, _ = nt_xent(z, z.clone(), tau)
    expected = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + (2 * n - 2)))
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    rand, _ = nt_xent(torch.randn(n, 8), torch.randn(n, 8), tau)
    assert loss.item() < rand.item()
    # DCL: the positive out of the denominator, -1/tau + log(2n - 2): below zero, unlike InfoNCE
    dcl, _ = nt_xent(z, z.clone(), tau, decoupled=True)
    assert dcl.item() == pytest.approx(-1 / tau + math.log(2 * n - 2), rel=1e-6)


def test_infonce_bound_is_log_n_minus_loss():
    assert infonce_bound(1.25, 255) == pytest.approx(math.log(255) - 1.25)
    assert infonce_bound(torch.tensor(0.5), 7) == pytest.approx(math.log(7) - 0.5)
    # a perfect contrastive loss (0) gives the maximal bound log N
    assert infonce_bound(0.0, 1023) == pytest.approx(math.log(1023))


def normalized_mse_reference(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    rows = []
    for pi, zi in zip(p.double(), z.double()):
        cos = sum(a * b for a, b in zip(pi, zi)) / (
            torch.sqrt(sum(a * a for a in pi)) * torch.sqrt(sum(b * b for b in zi))
        )
        rows.append(2 - 2 * cos)
    return sum(rows) / len(rows)


@pytest.mark.parametrize("n,d", [(1, 2), (4, 3), (7, 16)])
def test_normalized_mse_is_two_minus_two_cos_and_target_gets_no_gradient(n, d):
    g = torch.Generator().manual_seed(n + d)
    p = (torch.randn(n, d, generator=g) * 4).requires_grad_()
    z = torch.randn(n, d, generator=g).requires_grad_()
    loss = normalized_mse(p, z)
    p_ref = p.detach().double().requires_grad_()
    ref = normalized_mse_reference(p_ref, z.detach())
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-6)
    loss.backward()
    assert z.grad is None, "the target must be detached (stop-gradient)"
    (ref_grad,) = torch.autograd.grad(ref, [p_ref])
    torch.testing.assert_close(p.grad.double(), ref_grad, rtol=1e-4, atol=1e-6)


def test_normalized_mse_range():
    x = torch.randn(5, 4)
    assert normalized_mse(x, 3 * x).item() == pytest.approx(0.0, abs=1e-6)
    assert normalized_mse(x, -x).item() == pytest.approx(4.0, abs=1e-5)


def info_nce_reference(q, k, negatives, temperature):
    """MoCo eq. 1 written out per query: -log exp(q.k+/t) / (exp(q.k+/t) + sum_n exp(q.n/t)), cosine."""

    def cos(a, b):
        return (a * b).sum() / (a.norm() * b.norm())

    total = 0.0
    for i in range(q.shape[0]):
        pos = torch.exp(cos(q[i].double(), k[i].double()) / temperature)
        neg = sum(torch.exp(cos(q[i].double(), n.double()) / temperature) for n in negatives)
        total = total - torch.log(pos / (pos + neg))
    return total / q.shape[0]


def test_info_nce_matches_the_explicit_per_query_sum():
    from selfsup.losses import info_nce

    g = torch.Generator().manual_seed(3)
    q, k, neg = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g), torch.randn(11, 8, generator=g)
    loss, n = info_nce(q, k, neg, 0.2)
    assert n == 12
    assert loss.item() == pytest.approx(info_nce_reference(q, k, neg, 0.2).item(), rel=1e-5)
    # no negatives: a single candidate, loss 0
    loss0, n0 = info_nce(q, k, None, 0.2)
    assert n0 == 1 and loss0.item() == pytest.approx(0.0, abs=1e-6)


def test_info_nce_gradient_reaches_only_what_is_not_detached():
    from selfsup.losses import info_nce

    q = torch.randn(4, 6, requires_grad=True)
    k = torch.randn(4, 6, requires_grad=True)
    neg = torch.randn(7, 6, requires_grad=True)
    loss, _ = info_nce(q, k.detach(), neg.detach(), 0.07)
    loss.backward()
    assert q.grad is not None and q.grad.abs().sum() > 0
    assert k.grad is None and neg.grad is None


def test_contrastive_losses_stay_float32_inside_bf16_autocast():
    """Under CPU autocast a float32 matmul runs in bf16 unless the loss leaves autocast: the loss
    must equal its float32 value, not a bf16-rounded one (here they differ by ~2e-3)."""
    from selfsup.losses import info_nce

    g = torch.Generator().manual_seed(0)
    z1, z2, neg = torch.randn(64, 32, generator=g), torch.randn(64, 32, generator=g), torch.randn(256, 32, generator=g)
    ref_nt, _ = nt_xent(z1, z2, 0.1)
    ref_in, _ = info_nce(z1, z2, neg, 0.1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        nt, _ = nt_xent(z1, z2, 0.1)
        inn, _ = info_nce(z1, z2, neg, 0.1)
    assert nt.dtype == torch.float32 and inn.dtype == torch.float32
    assert nt.item() == pytest.approx(ref_nt.item(), rel=1e-6)
    assert inn.item() == pytest.approx(ref_in.item(), rel=1e-6)
