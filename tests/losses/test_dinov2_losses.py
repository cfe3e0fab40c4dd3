"""DINOv2's additions as losses: KoLeo against an explicit nearest-neighbour computation, the
Sinkhorn-Knopp teacher's balanced targets, and DINO's loss split into targets + cross-entropy."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from selfsup.losses.distillation import centred_softmax, dino_cross_entropy, dino_loss, koleo, sinkhorn_knopp_teacher


def test_koleo_equals_the_explicit_nearest_neighbour_computation():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(9, 5, generator=g) * 3
    u = [v / v.norm() for v in x]  # L2-normalised rows
    explicit = []
    for i in range(len(u)):
        d = min((u[i] - u[j]).norm() for j in range(len(u)) if j != i)  # distance to the nearest other row
        explicit.append(-math.log(float(d) + 1e-8))
    torch.testing.assert_close(koleo(x), torch.tensor(sum(explicit) / len(explicit)), rtol=1e-5, atol=1e-5)


def test_koleo_pushes_the_nearest_neighbours_apart():
    x = torch.tensor([[1.0, 0.0], [0.99, 0.1], [-1.0, 0.2]], requires_grad=True)
    before = koleo(x)
    before.backward()
    with torch.no_grad():
        after = koleo(x - 0.01 * x.grad)  # a gradient step on the regulariser
    assert after < before
    spread = F.normalize(torch.randn(64, 3), dim=-1)
    clumped = F.normalize(torch.randn(64, 3) * 0.05 + torch.tensor([1.0, 0.0, 0.0]), dim=-1)
    assert koleo(spread) < koleo(clumped)  # higher entropy of the features, lower loss


def test_sinkhorn_teacher_targets_are_balanced_assignments():
    g = torch.Generator().manual_seed(0)
    t = torch.randn(2, 24, 6, generator=g)  # [G, B, K] logits (cosines are in [-1, 1]; these are wider)
    t[..., 0] += 2.0  # a teacher that prefers prototype 0: centring's job, here Sinkhorn's
    q = sinkhorn_knopp_teacher(t, teacher_temp=0.5)
    assert q.shape == t.shape and (q >= 0).all()
    torch.testing.assert_close(q.sum(-1), torch.ones(2, 24))  # each sample's row: a distribution
    per_prototype = q.reshape(-1, 6).sum(0)  # each prototype gets about N / K of the mass after 3 iterations
    torch.testing.assert_close(per_prototype, torch.full((6,), 48 / 6), rtol=0.1, atol=0.0)  # ~, after 3 rounds
    assert per_prototype.std() < torch.softmax(t / 0.5, -1).reshape(-1, 6).sum(0).std() / 10


def test_sinkhorn_teacher_is_swav_sinkhorn_at_the_teacher_temperature():
    """The official DINOv2 sinkhorn_knopp_teacher, transcribed (one process)."""
    g = torch.Generator().manual_seed(1)
    t = torch.rand(10, 7, generator=g) * 2 - 1
    q = torch.exp(t / 0.07).t()
    b, k = q.shape[1], q.shape[0]
    q /= q.sum()
    for _ in range(3):
        q /= q.sum(1, keepdim=True)
        q /= k
        q /= q.sum(0, keepdim=True)
        q /= b
    q *= b
    torch.testing.assert_close(sinkhorn_knopp_teacher(t, 0.07), q.t(), rtol=1e-5, atol=1e-6)


def test_dino_loss_is_the_cross_entropy_against_centred_softmax_targets():
    g = torch.Generator().manual_seed(2)
    s, t, c = torch.randn(4, 3, 9, generator=g), torch.randn(2, 3, 9, generator=g), torch.randn(9, generator=g)
    assert torch.equal(dino_loss(s, t, c, 0.1, 0.04), dino_cross_entropy(s, centred_softmax(t, c, 0.04), 0.1))
