"""MoCo v3's symmetric in-batch loss and NNCLR's neighbour lookup and loss against loop-by-loop
computations written from the papers' equations."""

from __future__ import annotations

import math

import pytest

import torch
import torch.nn.functional as F

from selfsup.losses.moco import in_batch_info_nce, mocov3_loss, nearest_neighbour, nnclr_loss


def unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm()


def ctr_loop(q: torch.Tensor, k: torch.Tensor, tau: float) -> torch.Tensor:
    """-1/N sum_i log exp(q_i.k_i/tau) / sum_j exp(q_i.k_j/tau), cosine similarities, one query at a time."""
    total = 0.0
    for i in range(q.shape[0]):
        sims = [float(unit(q[i]) @ unit(k[j])) / tau for j in range(k.shape[0])]
        total += -(sims[i] - math.log(sum(math.exp(s) for s in sims)))
    return torch.tensor(total / q.shape[0])


def test_in_batch_info_nce_matches_the_loop():
    torch.manual_seed(0)
    q, k = torch.randn(7, 5), torch.randn(7, 5)
    loss, candidates = in_batch_info_nce(q, k, 0.3)
    assert candidates == 7
    torch.testing.assert_close(loss, ctr_loop(q, k, 0.3), rtol=1e-5, atol=1e-6)


def test_mocov3_loss_is_2tau_times_the_symmetric_sum():
    torch.manual_seed(1)
    q1, q2, k1, k2 = (torch.randn(6, 4) for _ in range(4))
    for tau in (0.2, 1.0):
        loss, ce_mean, candidates = mocov3_loss(q1, q2, k1, k2, tau)
        a, b = ctr_loop(q1, k2, tau), ctr_loop(q2, k1, tau)
        torch.testing.assert_close(loss, 2 * tau * (a + b), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ce_mean, (a + b) / 2, rtol=1e-5, atol=1e-6)
        assert candidates == 6
    # swapping the views leaves the symmetric loss unchanged
    torch.testing.assert_close(mocov3_loss(q2, q1, k2, k1, 0.2)[0], mocov3_loss(q1, q2, k1, k2, 0.2)[0])


def test_mocov3_loss_sends_no_gradient_to_keys_it_is_given_detached():
    torch.manual_seed(2)
    q1, q2 = torch.randn(5, 3, requires_grad=True), torch.randn(5, 3, requires_grad=True)
    k1, k2 = torch.randn(5, 3, requires_grad=True), torch.randn(5, 3, requires_grad=True)
    loss, _, _ = mocov3_loss(q1, q2, k1.detach(), k2.detach(), 0.2)
    loss.backward()
    assert q1.grad is not None and q1.grad.abs().sum() > 0
    assert k1.grad is None and k2.grad is None


def test_nearest_neighbour_matches_a_brute_force_search():
    torch.manual_seed(3)
    z = torch.randn(9, 6)
    support = torch.randn(40, 6) * torch.rand(40, 1) * 5  # arbitrary norms: the search is by cosine
    nn_, cos = nearest_neighbour(z, support)
    for i in range(z.shape[0]):
        best, best_j = -2.0, -1
        for j in range(support.shape[0]):
            c = float(unit(z[i]) @ unit(support[j]))
            if c > best:
                best, best_j = c, j
        torch.testing.assert_close(nn_[i], unit(support[best_j]))
        assert abs(float(cos[i]) - best) < 1e-5
    assert not nn_.requires_grad


def test_nearest_neighbour_of_a_vector_in_the_support_set_is_itself():
    support = F.normalize(torch.randn(30, 8), dim=1)
    nn_, cos = nearest_neighbour(support[[4, 17]] * 3.0, support)
    torch.testing.assert_close(nn_, support[[4, 17]])
    torch.testing.assert_close(cos, torch.ones(2))


@pytest.mark.parametrize("decoupled", [False, True])
def test_nnclr_loss_matches_the_loop_over_both_softmax_directions(decoupled):
    torch.manual_seed(4)
    nn_a, p_b = torch.randn(6, 5), torch.randn(6, 5)
    tau = 0.1
    loss, candidates = nnclr_loss(nn_a, p_b, tau, decoupled=decoupled)
    assert candidates == 6
    s = [[float(unit(nn_a[i]) @ unit(p_b[k])) / tau for k in range(6)] for i in range(6)]
    others = [[k for k in range(6) if not (decoupled and k == i)] for i in range(6)]  # DCL: without k = i
    rows = [-(s[i][i] - math.log(sum(math.exp(s[i][k]) for k in others[i]))) for i in range(6)]  # eq. 2
    cols = [-(s[i][i] - math.log(sum(math.exp(s[k][i]) for k in others[i]))) for i in range(6)]  # transposed
    torch.testing.assert_close(loss, torch.tensor((sum(rows) + sum(cols)) / 12), rtol=1e-5, atol=1e-6)


def test_nnclr_loss_gradient_reaches_predictions_only():
    torch.manual_seed(5)
    z = torch.randn(5, 4, requires_grad=True)
    p = torch.randn(5, 4, requires_grad=True)
    nn_, _ = nearest_neighbour(z, torch.randn(20, 4))
    nnclr_loss(nn_, p, 0.1)[0].backward()
    assert p.grad is not None and p.grad.abs().sum() > 0
    assert z.grad is None
