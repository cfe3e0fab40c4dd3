"""NNCLR: the positive is the support set's nearest neighbour of z (checked against a brute-force
search inside a full step), the support queue receives this step's z1 after the step and never a
gradient, the first step (empty support set) falls back to z itself; it learns on digits."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import selfsup
from selfsup.data.batch import Batch
from selfsup.methods.nnclr import NNCLR, NNCLRConfig

SMALL = {"proj_hidden": 32, "proj_dim": 16, "pred_hidden": 32, "queue_size": 50}


def make(**cfg) -> NNCLR:
    torch.manual_seed(0)
    return selfsup.create_method("nnclr", backbone="convnet", in_channels=1, width=0.25, **{**SMALL, **cfg}).train()


def batch(seed: int = 0, b: int = 10) -> Batch:
    g = torch.Generator().manual_seed(seed)
    out = Batch(torch.zeros(b, 1, 8, 8, dtype=torch.uint8), torch.arange(b), torch.zeros(b, dtype=torch.long))
    out.views = [torch.randn(b, 1, 8, 8, generator=g), torch.randn(b, 1, 8, 8, generator=g)]
    return out


def brute_force_nn(z: torch.Tensor, support: torch.Tensor) -> tuple[torch.Tensor, list[float]]:
    out, cos = [], []
    for i in range(z.shape[0]):
        sims = [float(F.normalize(z[i], dim=0) @ F.normalize(support[j], dim=0)) for j in range(support.shape[0])]
        j = max(range(len(sims)), key=sims.__getitem__)
        out.append(F.normalize(support[j], dim=0))
        cos.append(sims[j])
    return torch.stack(out), cos


def loss_loop(nn_a: torch.Tensor, p_b: torch.Tensor, tau: float, decoupled: bool = False) -> float:
    """Eq. 2 and its transpose, averaged; one anchor at a time. decoupled (DCL): the positive k = i
    left out of the denominators."""
    a, p = F.normalize(nn_a, dim=1), F.normalize(p_b, dim=1)
    n = a.shape[0]
    s = [[float(a[i] @ p[k]) / tau for k in range(n)] for i in range(n)]
    ks = [[k for k in range(n) if not (decoupled and k == i)] for i in range(n)]
    rows = sum(math.log(sum(math.exp(s[i][k]) for k in ks[i])) - s[i][i] for i in range(n))
    cols = sum(math.log(sum(math.exp(s[k][i]) for k in ks[i])) - s[i][i] for i in range(n))
    return (rows + cols) / (2 * n)


def test_defaults_are_the_papers():
    c = NNCLRConfig()
    assert (c.temperature, c.proj_hidden, c.proj_dim, c.pred_hidden, c.queue_size) == (0.1, 2048, 256, 4096, 98304)


@pytest.mark.parametrize("decoupled", [False, True])
def test_step_uses_the_nearest_neighbour_of_the_support_set_as_positive(decoupled):
    m = make(decoupled=decoupled)
    torch.manual_seed(1)
    support = torch.randn(30, 16)
    m.support.push(support)
    b = batch()
    out = m.training_step(b)
    with torch.no_grad():  # recompute the step from the method's networks and a brute-force search
        z = m.projector(m.encoder(torch.cat(b.views)))
        p = m.predictor(z)
    z1, z2, p1, p2 = z[:10], z[10:], p[:10], p[10:]
    nn1, cos1 = brute_force_nn(z1, support)
    nn2, cos2 = brute_force_nn(z2, support)
    want = (loss_loop(nn1, p2, 0.1, decoupled) + loss_loop(nn2, p1, 0.1, decoupled)) / 2
    assert out.loss.item() == pytest.approx(want, rel=1e-5)
    assert float(out.logs["nn_cosine"]) == pytest.approx((sum(cos1) + sum(cos2)) / 20, abs=1e-5)
    if decoupled:  # DCL's loss bounds no mutual information: not logged as one
        assert "infonce_bound" not in out.logs
    else:
        assert out.logs["infonce_bound"] == pytest.approx(math.log(10) - want, abs=1e-5)


def test_support_queue_gets_this_steps_z1_after_the_step_and_no_gradient():
    m = make()
    b1, b2 = batch(1), batch(2)
    out = m.training_step(b1)
    with torch.no_grad():
        z1 = F.normalize(m.projector(m.encoder(torch.cat(b1.views)))[:10], dim=1)
    assert len(m.support) == 0, "the support set changes only in on_step_end"
    # empty support set on the first step: each z is its own neighbour
    assert float(out.logs["nn_cosine"]) == pytest.approx(1.0)
    opt = torch.optim.SGD([q for q in m.parameters() if q.requires_grad], lr=0.1)
    out.loss.backward()
    opt.step()
    m.on_step_end(0.1)
    torch.testing.assert_close(m.support.items(), z1)
    assert not m.support.data.requires_grad and m.support.data.grad_fn is None

    out = m.training_step(b2)
    with torch.no_grad():
        zb = F.normalize(m.projector(m.encoder(torch.cat(b2.views)))[:10], dim=1)
    m.on_step_end(0.2)
    torch.testing.assert_close(m.support.items(), torch.cat([z1, zb]))
    assert float(out.logs["nn_cosine"]) < 1.0  # neighbours now come from the previous batch


def test_support_queue_is_checkpointed():
    m = make()
    m.training_step(batch())
    m.on_step_end(0.1)
    fresh = make()
    fresh.load_state_dict(m.state_dict())
    torch.testing.assert_close(fresh.support.items(), m.support.items())


# Learning on digits with configs/nnclr_digits.yaml (15 epochs). Why the second assertion: see
# invariance_knn.py. Seen on this machine, seeds 0-2 (kNN-200; clean trained vs random | crops trained
# vs random with recalibrated BN):
#   0.947 vs 0.880, 0.922 vs 0.844, 0.914 vs 0.827 | 0.705 vs 0.546, 0.674 vs 0.496, 0.674 vs 0.538


def test_nnclr_learns_digits(tmp_path):
    from invariance_knn import digits_recipe_layers, train_and_compare

    r = train_and_compare(tmp_path, digits_recipe_layers("nnclr"))
    assert r["trained"] >= r["random"] + 0.04
    assert r["trained_crops"] >= r["recalibrated_crops"] + 0.10
