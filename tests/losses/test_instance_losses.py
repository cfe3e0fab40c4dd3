"""InstDisc NCE, InvaSpread and SupCon losses against explicit, loop-by-loop float64 computations
written from the papers' equations (values and gradients)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from selfsup.losses.contrastive import nt_xent
from selfsup.losses.instance import invariant_spreading, nce_instance, nce_log_z, supcon


def unit(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g), dim=-1)


# ------------------------------------------------------------------------------------ InstDisc


def nce_reference(f, v_pos, v_neg, tau, z, n):
    """Wu et al. 2018 sec. 3.2 as written: P(i|v) = exp(v.f_i/tau)/Z, h = P/(P + m/n),
    L = mean_i [ -log h(i, v_i) - sum_k log(1 - h(i, v_k)) ]. Ratio form, loops."""
    m = v_neg.shape[0]
    pn = 1.0 / n
    total = 0.0
    for i in range(f.shape[0]):
        p = torch.exp(f[i] @ v_pos[i] / tau) / z
        term = -torch.log(p / (p + m * pn))
        for k in range(m):
            p = torch.exp(f[i] @ v_neg[k] / tau) / z
            term = term - torch.log(1 - p / (p + m * pn))
        total = total + term
    return total / f.shape[0]


@pytest.mark.parametrize("b,m,n,tau", [(1, 1, 10, 0.5), (3, 5, 100, 0.07), (6, 16, 50, 0.1)])
def test_nce_matches_the_papers_ratio_form(b, m, n, tau):
    f = unit(b, 8, seed=b).requires_grad_()
    v_pos, v_neg = unit(b, 8, seed=10 + b), unit(m, 8, seed=20 + m)
    z = 3.7 * n
    loss, pos, neg = nce_instance(f, v_pos, v_neg, tau, math.log(z), n)
    (grad,) = torch.autograd.grad(loss, f)
    r = f.detach().double().requires_grad_()
    ref = nce_reference(r, v_pos.double(), v_neg.double(), tau, z, n)
    (ref_grad,) = torch.autograd.grad(ref, r)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    assert (pos + neg).item() == pytest.approx(loss.item(), rel=1e-6)
    torch.testing.assert_close(grad.double(), ref_grad, rtol=1e-4, atol=1e-7)


def test_nce_stays_finite_where_the_ratio_form_underflows():
    f = unit(2, 4)
    loss, _, _ = nce_instance(f, -f, f.repeat(3, 1), 0.01, math.log(1e3), 10)  # exp(+-100)
    assert torch.isfinite(loss) and loss > 0


def test_nce_log_z_is_n_times_the_mean_of_exp():
    f, noise = unit(4, 6, seed=1), unit(9, 6, seed=2)
    want = 1000 * torch.exp(f.double() @ noise.double().T / 0.07).mean()
    got = nce_log_z(f, noise, 0.07, 1000)
    assert got.exp().item() == pytest.approx(want.item(), rel=1e-5)
    assert not got.requires_grad


# ---------------------------------------------------------------------------------- InvaSpread


def invaspread_reference(z1, z2, tau, detach_weights):
    """Ye et al. 2019's loss over 2N anchors (official BatchCriterion, negM=1): P(k|a) =
    exp(w_k.z_a/tau)/sum_{j!=a} exp(w_j.z_a/tau) with w = z (detached when the official code's
    .data is mimicked); -log P(pos|a) - sum_{k != a, pos} log(1 - P(k|a)), mean over anchors."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    w = z.detach() if detach_weights else z
    n2, n = z.shape[0], z1.shape[0]
    total = 0.0
    for a in range(n2):
        pos = (a + n) % n2
        denom = sum(torch.exp(w[j] @ z[a] / tau) for j in range(n2) if j != a)
        total = total - torch.log(torch.exp(w[pos] @ z[a] / tau) / denom)
        for k in range(n2):
            if k not in (a, pos):
                total = total - torch.log(1 - torch.exp(w[k] @ z[a] / tau) / denom)
    return total / n2


@pytest.mark.parametrize("detach", [True, False])
@pytest.mark.parametrize("n,tau", [(1, 0.1), (3, 0.1), (5, 0.5)])
def test_invariant_spreading_matches_the_double_loop(n, tau, detach):
    g = torch.Generator().manual_seed(n)
    z1 = (torch.randn(n, 6, generator=g) * 2).requires_grad_()  # any scale: normalised inside
    z2 = torch.randn(n, 6, generator=g).requires_grad_()
    loss, candidates = invariant_spreading(z1, z2, tau, detach_weights=detach)
    assert candidates == 2 * n - 1
    g1, g2 = torch.autograd.grad(loss, [z1, z2])
    r1, r2 = z1.detach().double().requires_grad_(), z2.detach().double().requires_grad_()
    ref = invaspread_reference(r1, r2, tau, detach)
    e1, e2 = torch.autograd.grad(ref, [r1, r2])
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    torch.testing.assert_close(g1.double(), e1, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(g2.double(), e2, rtol=1e-4, atol=1e-7)


def test_invariant_spreading_adds_the_spreading_terms_to_nt_xent():
    z1, z2 = unit(4, 8, seed=3), unit(4, 8, seed=4)
    loss, _ = invariant_spreading(z1, z2, 0.1)
    ce, _ = nt_xent(z1, z2, 0.1)
    assert loss > ce  # the -log(1 - P) terms are positive
    # a batch of orthogonal instances whose views agree: no mass on negatives, nearly zero loss
    e = torch.eye(8)[:4]
    tiny, _ = invariant_spreading(e, e, 0.05)
    assert tiny.item() < 1e-6


# ------------------------------------------------------------------------------------- SupCon


def supcon_reference(z1, z2, labels, tau):
    """Khosla et al. 2020 eq. 2 (L_out), loops: for each of the 2N anchors,
    -1/|P(i)| sum_{p in P(i)} log(exp(z_i.z_p/tau) / sum_{a != i} exp(z_i.z_a/tau)), mean over anchors."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    y = torch.cat([labels, labels]).tolist()
    n2 = len(y)
    total = 0.0
    for i in range(n2):
        denom = sum(torch.exp(z[i] @ z[a] / tau) for a in range(n2) if a != i)
        pos = [p for p in range(n2) if p != i and y[p] == y[i]]
        total = total - sum(torch.log(torch.exp(z[i] @ z[p] / tau) / denom) for p in pos) / len(pos)
    return total / n2


@pytest.mark.parametrize("labels,tau", [([0], 0.1), ([0, 1, 0, 2, 1], 0.1), ([3, 3, 3, 3], 0.5), ([0, 1, 2], 0.07)])
def test_supcon_matches_the_loop(labels, tau):
    n = len(labels)
    g = torch.Generator().manual_seed(n)
    z1 = (torch.randn(n, 5, generator=g) * 3).requires_grad_()
    z2 = torch.randn(n, 5, generator=g).requires_grad_()
    y = torch.tensor(labels)
    loss, candidates = supcon(z1, z2, y, tau)
    assert candidates == 2 * n - 1
    g1, g2 = torch.autograd.grad(loss, [z1, z2])
    r1, r2 = z1.detach().double().requires_grad_(), z2.detach().double().requires_grad_()
    ref = supcon_reference(r1, r2, y, tau)
    e1, e2 = torch.autograd.grad(ref, [r1, r2])
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    torch.testing.assert_close(g1.double(), e1, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(g2.double(), e2, rtol=1e-4, atol=1e-7)


def test_supcon_with_distinct_labels_is_nt_xent():
    z1, z2 = unit(6, 8, seed=5), unit(6, 8, seed=6)
    a, _ = supcon(z1, z2, torch.arange(6), 0.2)
    b, _ = nt_xent(z1, z2, 0.2)
    assert a.item() == pytest.approx(b.item(), rel=1e-6)
