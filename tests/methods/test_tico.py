"""TiCo: the loss is Algorithm 1's -mean(z1 . z2) + rho mean(z1^T C_t z1) with C_t = beta C_{t-1} +
(1 - beta) z1^T z1 / N (checked written out, inside a full step), the covariance buffer and the momentum
encoder change only in on_step_end; it learns on digits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from learning import digits_recipe, trained_vs_random

import selfsup
from selfsup.data.batch import Batch
from selfsup.losses.redundancy import tico_loss
from selfsup.methods.tico import TiCo, TiCoConfig
from selfsup.nn import cosine_momentum

SMALL = {"proj_hidden": 32, "proj_dim": 16}


def make(**cfg) -> TiCo:
    torch.manual_seed(0)
    return selfsup.create_method("tico", backbone="convnet", in_channels=1, width=0.25, **{**SMALL, **cfg}).train()


def batch(seed: int = 0, b: int = 10) -> Batch:
    g = torch.Generator().manual_seed(seed)
    out = Batch(torch.zeros(b, 1, 8, 8, dtype=torch.uint8), torch.arange(b), torch.zeros(b, dtype=torch.long))
    out.views = [torch.randn(b, 1, 8, 8, generator=g), torch.randn(b, 1, 8, 8, generator=g)]
    return out


def algorithm1(z1, z2, c_prev, beta=0.9, rho=20.0):
    """One image and one matrix entry at a time."""
    n, d = z1.shape
    u = [z1[i] / z1[i].norm() for i in range(n)]
    v = [z2[i] / z2[i].norm() for i in range(n)]
    c = torch.zeros(d, d, dtype=torch.float64)
    for a in range(d):
        for b in range(d):
            c[a, b] = beta * float(c_prev[a, b]) + (1 - beta) * sum(float(u[i][a] * u[i][b]) for i in range(n)) / n
    inv = -sum(float(u[i] @ v[i]) for i in range(n)) / n
    cov = sum(float(u[i].double() @ c @ u[i].double()) for i in range(n)) / n
    return inv + rho * cov, c


def test_defaults_are_the_papers():
    c = TiCoConfig()
    assert (c.beta, c.rho, c.proj_hidden, c.proj_dim) == (0.9, 20.0, 4096, 256)


def test_tico_loss_against_algorithm1():
    g = torch.Generator().manual_seed(0)
    z1, z2, c_prev = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g), torch.randn(5, 5, generator=g)
    c_prev = c_prev @ c_prev.T / 5
    loss, c = tico_loss(z1, z2, c_prev, 0.9, 20.0)
    want, want_c = algorithm1(z1, z2, c_prev)
    assert loss.item() == pytest.approx(want, rel=1e-5)
    torch.testing.assert_close(c.double(), want_c, rtol=1e-5, atol=1e-6)
    assert not c.requires_grad
    # the gradient reaches z1 through both terms (also through B), never z2
    z1.requires_grad_(True)
    z2.requires_grad_(True)
    tico_loss(z1, z2, c_prev)[0].backward()
    assert z2.grad is None and z1.grad.abs().sum() > 0


def test_step_uses_the_stored_covariance_and_the_momentum_encoder():
    m = make()
    torch.manual_seed(1)
    a = torch.randn(16, 16)
    m.covariance.copy_(a @ a.T / 16)
    b = batch()
    out = m.training_step(b)
    with torch.no_grad():
        z1 = m.projector(m.encoder(b.views[0]))
        z2 = m.target_projector(m.target_encoder(b.views[1]))
    assert out.loss.item() == pytest.approx(algorithm1(z1, z2, m.covariance)[0], rel=1e-5)


def test_state_changes_only_in_on_step_end():
    m = make()
    target = {k: v.detach().clone() for k, v in m.target_encoder.named_parameters()}
    b = batch()
    out = m.training_step(b)
    assert torch.equal(m.covariance, torch.zeros(16, 16))  # C_t is stored only after the step
    assert all(torch.equal(v, target[k]) for k, v in m.target_encoder.named_parameters())
    with torch.no_grad():
        z1 = F.normalize(m.projector(m.encoder(b.views[0])), dim=1)
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.5)
    out.loss.backward()
    opt.step()
    online = {k: v.detach().clone() for k, v in m.encoder.named_parameters()}
    m.on_step_end(0.5)
    torch.testing.assert_close(m.covariance, 0.1 * z1.T @ z1 / 10, rtol=1e-5, atol=1e-6)  # C_1 = (1 - beta) B
    mom = cosine_momentum(0.996, 0.5)
    for k, v in m.target_encoder.named_parameters():
        torch.testing.assert_close(v, mom * target[k] + (1 - mom) * online[k])
    assert "covariance" in m.state_dict()  # checkpointed with the weights


def test_learns_digits(tmp_path):
    trained, random = trained_vs_random(
        tmp_path, digits_recipe("tico", 30, {"proj_hidden": 256, "proj_dim": 64, "tau_base": 0.98})
    )
    print(
        f"tico kNN-200 {trained['top1']:.3f} vs random {random['top1']:.3f}; "
        f"kNN-20 {trained['top1_k20']:.3f} vs {random['top1_k20']:.3f}"
    )
    assert trained["top1"] >= random["top1"] + 0.06  # seen 0.967 vs 0.880, kNN-20 0.972 vs 0.942
    assert trained["top1_k20"] >= random["top1_k20"] + 0.015
    assert trained["top1"] >= 0.93
