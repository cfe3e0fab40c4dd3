"""MoCo v3: the step's loss is the symmetric ctr(q1,k2)+ctr(q2,k1) of the method's own networks; the
momentum encoder gets no gradient and follows the cosine momentum; freeze_patch_embed keeps a ViT's
patch projection at its random initialisation (and refuses an encoder without one); it learns on digits."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import selfsup
from selfsup.data.batch import Batch
from selfsup.methods.mocov3 import MoCoV3, MoCoV3Config
from selfsup.nn.ema import cosine_momentum

SMALL = {"proj_hidden": 32, "proj_dim": 16, "pred_hidden": 32}


def make(encoder="convnet", **cfg) -> MoCoV3:
    torch.manual_seed(0)
    return selfsup.create_method("mocov3", backbone=encoder, in_channels=1, width=0.25, **{**SMALL, **cfg}).train()


def batch(seed: int = 0, b: int = 12) -> Batch:
    g = torch.Generator().manual_seed(seed)
    out = Batch(torch.zeros(b, 1, 8, 8, dtype=torch.uint8), torch.arange(b), torch.zeros(b, dtype=torch.long))
    out.views = [torch.randn(b, 1, 8, 8, generator=g), torch.randn(b, 1, 8, 8, generator=g)]
    return out


def ctr_loop(q: torch.Tensor, k: torch.Tensor, tau: float) -> float:
    """2 tau * mean_i -log softmax_j(q_i . k_j / tau)[i], cosine similarities, one query at a time."""
    q, k = nn.functional.normalize(q, dim=1), nn.functional.normalize(k, dim=1)
    total = 0.0
    for i in range(q.shape[0]):
        s = [float(q[i] @ k[j]) / tau for j in range(k.shape[0])]
        total += math.log(sum(math.exp(v) for v in s)) - s[i]
    return 2 * tau * total / q.shape[0]


def test_defaults_are_the_papers():
    c = MoCoV3Config()
    assert (c.temperature, c.proj_hidden, c.proj_dim, c.proj_layers, c.pred_hidden, c.momentum_base) == (
        1.0,
        4096,
        256,
        3,
        4096,
        0.99,
    )
    m = selfsup.create_method("mocov3", backbone="convnet", in_channels=1, width=0.25)
    assert sum(isinstance(l, nn.Linear) for l in m.projector) == 3  # 3-layer projector
    assert sum(isinstance(l, nn.Linear) for l in m.predictor) == 2  # 2-layer predictor
    assert sum(isinstance(l, nn.BatchNorm1d) for l in m.projector) == 3  # BN in every layer (last affine-free)
    assert not hasattr(m, "queue")


@pytest.mark.parametrize("tau", [1.0, 0.2])
def test_step_loss_is_the_symmetric_contrast_of_predicted_queries_and_momentum_keys(tau):
    m = make(temperature=tau)
    b = batch()
    out = m.training_step(b)
    x1, x2 = b.views
    with torch.no_grad():  # an independent recomputation from the method's networks
        q1, q2 = (m.predictor(m.projector(m.encoder(x))) for x in (x1, x2))
        k1, k2 = (m.momentum_projector(m.momentum_encoder(x)) for x in (x1, x2))
    want = ctr_loop(q1, k2, tau) + ctr_loop(q2, k1, tau)
    assert out.loss.item() == pytest.approx(want, rel=1e-5)
    assert out.logs["infonce_bound"] == pytest.approx(math.log(12) - want / (4 * tau), abs=1e-5)


def test_momentum_encoder_gets_no_gradient_and_moves_by_the_cosine_ema():
    m = make()
    targets = list(m.momentum_encoder.parameters()) + list(m.momentum_projector.parameters())
    online = list(m.encoder.parameters()) + list(m.projector.parameters())
    assert all(not p.requires_grad for p in targets)
    old = [p.detach().clone() for p in targets]
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.5)
    m.training_step(batch()).loss.backward()
    assert all(p.grad is None for p in targets)
    assert all(p.grad is not None for p in m.predictor.parameters())  # the predictor (query side) trains
    opt.step()
    new_online = [p.detach().clone() for p in online]
    m.on_step_end(0.25)
    mom = cosine_momentum(0.99, 0.25)
    assert mom == pytest.approx(1 - 0.01 * (math.cos(math.pi * 0.25) + 1) / 2)
    assert m.momentum == pytest.approx(mom)
    for t, o, q in zip(targets, old, new_online):
        torch.testing.assert_close(t.detach(), mom * o + (1 - mom) * q, rtol=1e-6, atol=1e-7)
    m.on_step_end(1.0)
    assert m.momentum == pytest.approx(1.0)


class PatchNet(nn.Module):
    """A stand-in for a ViT: a conv patch projection, then per-token layers pooled to a vector."""

    def __init__(self):
        super().__init__()
        self.patch_embed = nn.Conv2d(1, 16, kernel_size=4, stride=4)  # 8x8 image -> 2x2 patches of 16-d
        self.mix = nn.Linear(16, 16)
        self.num_features = 16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)  # [B, 4, 16]
        return self.mix(torch.relu(tokens)).mean(1)  # [B, 16]


@pytest.mark.parametrize("freeze", [True, False])
def test_freeze_patch_embed_keeps_the_random_patch_projection(freeze):
    torch.manual_seed(0)
    m = MoCoV3(PatchNet(), MoCoV3Config(**SMALL, freeze_patch_embed=freeze)).train()
    pe_before = [p.detach().clone() for p in m.encoder.patch_embed.parameters()]
    mix_before = [p.detach().clone() for p in m.encoder.mix.parameters()]
    opt = torch.optim.SGD([p for g in m.param_groups() for p in g["params"]], lr=0.5, weight_decay=0.1)
    m.training_step(batch()).loss.backward()
    opt.step()
    m.on_step_end(0.5)
    pe = list(m.encoder.patch_embed.parameters())
    in_optimiser = {id(p) for g in m.param_groups() for p in g["params"]}
    if freeze:
        assert all(p.grad is None and not p.requires_grad for p in pe)
        assert not any(id(p) in in_optimiser for p in pe)
        assert all(torch.equal(p.detach(), b) for p, b in zip(pe, pe_before))
        # the momentum copy stays equal to the frozen projection (m t + (1-m) t = t up to rounding)
        for t, p in zip(m.momentum_encoder.patch_embed.parameters(), pe):
            torch.testing.assert_close(t, p.detach(), rtol=1e-6, atol=1e-7)
    else:
        assert all(not torch.equal(p.detach(), b) for p, b in zip(pe, pe_before))
    assert all(not torch.equal(p.detach(), b) for p, b in zip(m.encoder.mix.parameters(), mix_before))


def test_freeze_patch_embed_without_a_patch_embed_names_the_fix():
    with pytest.raises(ValueError, match=r"no `patch_embed`.*freeze_patch_embed=false"):
        selfsup.create_method(
            "mocov3", backbone="resnet10", in_channels=1, width=0.25, freeze_patch_embed=True, **SMALL
        )


# Learning on digits with configs/mocov3_digits.yaml (20 epochs: the predictor makes it slower to
# start). Why the second assertion: see invariance_knn.py. Seen on this machine, seeds 0-2 (kNN-200;
# clean trained vs random | crops trained vs random with recalibrated BN):
#   0.950 vs 0.880, 0.947 vs 0.844, 0.947 vs 0.827 | 0.713 vs 0.546, 0.713 vs 0.496, 0.724 vs 0.538


def test_mocov3_learns_digits(tmp_path):
    from invariance_knn import digits_recipe_layers, train_and_compare

    r = train_and_compare(tmp_path, digits_recipe_layers("mocov3"))
    assert r["trained"] >= r["random"] + 0.04
    assert r["trained_crops"] >= r["recalibrated_crops"] + 0.10
