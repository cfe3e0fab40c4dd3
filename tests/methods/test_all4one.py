"""All4One: the loss of a whole step against the paper's three terms written out one sample and one matrix
entry at a time (neighbours found by brute force, InfoNCE as a log-softmax by hand, the feature term's
correlations as sums over the batch); the positional encoding against the sinusoid's definition; Q and the
momentum network change only in on_step_end; the transformer trains at 0.1 of the rate; it learns digits."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from learning import digits_recipe, trained_vs_random

import selfsup
from selfsup.data.batch import Batch
from selfsup.methods.all4one import All4One, All4OneConfig, positional_encoding
from selfsup.nn import cosine_momentum

SMALL = {"proj_hidden": 32, "proj_dim": 16, "pred_hidden": 32, "queue_size": 40, "heads": 2}


def make(**cfg) -> All4One:
    torch.manual_seed(0)
    return selfsup.create_method("all4one", backbone="convnet", in_channels=1, width=0.25, **{**SMALL, **cfg}).train()


def batch(seed: int = 0, b: int = 8) -> Batch:
    g = torch.Generator().manual_seed(seed)
    out = Batch(torch.zeros(b, 1, 8, 8, dtype=torch.uint8), torch.arange(b), torch.zeros(b, dtype=torch.long))
    out.views = [torch.randn(b, 1, 8, 8, generator=g), torch.randn(b, 1, 8, 8, generator=g)]
    return out


def test_defaults_are_the_authors():
    c = All4OneConfig()
    assert (c.temperature, c.centroid_temperature, c.neighbours, c.heads, c.layers, c.dropout) == (
        0.2,
        0.1,
        5,
        8,
        3,
        0.1,
    )
    assert (c.proj_hidden, c.proj_dim, c.pred_hidden, c.queue_size, c.tau_base) == (2048, 256, 4096, 98304, 0.99)
    assert (c.weights, c.feature_scale, c.transformer_lr_scale) == ((0.5, 0.5, 0.5), 10.0, 0.1)


def test_positional_encoding_is_the_interleaved_sinusoid_over_the_feature_positions():
    pe = positional_encoding(5, 12)  # [slots, dim]
    for k in range(5):
        for d in range(12):
            angle = d / 10000 ** (2 * (k // 2) / 6)  # 5 slots -> 6 channels, 3 frequencies
            assert pe[k, d].item() == pytest.approx(math.sin(angle) if k % 2 == 0 else math.cos(angle), abs=1e-6)


def infonce(a, b, tau):
    a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    n = a.shape[0]
    return -sum(torch.log_softmax(torch.stack([a[i] @ b[j] / tau for j in range(n)]), 0)[i] for i in range(n)) / n


def paper_loss(m: All4One, views, queue: torch.Tensor) -> torch.Tensor:
    """Every term one sample / one entry at a time; dropout off."""
    x1, x2 = views
    n, k = x1.shape[0], m.cfg.neighbours
    z = [m.projector(m.encoder(x)) for x in (x1, x2)]
    p, p_ = [m.predictor(v) for v in z], [m.predictor2(v) for v in z]
    with torch.no_grad():
        zm = [F.normalize(m.momentum_projector(m.momentum_encoder(x)), dim=1) for x in (x1, x2)]
    # brute-force neighbours: sort Q by cosine, per sample
    nbr = [
        torch.stack([queue[sorted(range(len(queue)), key=lambda j: -float(zm[v][i] @ queue[j]))[:k]] for i in range(n)])
        for v in (0, 1)
    ]  # [N, k, D] per view
    pe = positional_encoding(k, m.cfg.proj_dim)
    cen = [m.transformer(nbr[v] + pe)[:, 0] for v in (0, 1)]
    cen_ = [m.transformer(torch.cat([p_[v][:, None], nbr[v][:, : k - 1]], 1) + pe)[:, 0] for v in (0, 1)]
    l_cen = (infonce(cen[0], cen_[1], 0.1) + infonce(cen[1], cen_[0], 0.1)) / 2
    l_nn = (infonce(nbr[0][:, 0], p[1], 0.2) + infonce(nbr[1][:, 0], p[0], 0.2)) / 2
    d = z[0].shape[1]
    on, off = [], []
    for a, b in ((zm[0], z[1]), (zm[1], z[0])):
        c = [
            [sum(a[s, i] * b[s, j] for s in range(n)) / (a[:, i].norm() * b[:, j].norm()) for j in range(d)]
            for i in range(d)
        ]
        on.append(sum((c[i][i] - 1) ** 2 for i in range(d)) / d)
        off.append(sum(c[i][j] ** 2 for i in range(d) for j in range(d) if i != j) / (d * d - d))
    l_feat = 10 * (0.5 * ((on[0] + on[1]) / 2).sqrt() + 0.5 * ((off[0] + off[1]) / 2).sqrt())
    return 0.5 * (l_cen + l_nn + l_feat)


def test_step_loss_against_the_paper_written_out():
    m = make(dropout=0.0)
    g = torch.Generator().manual_seed(3)
    m.support.push(F.normalize(torch.randn(40, 16, generator=g), dim=1))  # a full Q
    b = batch()
    out = m.training_step(b)
    want = paper_loss(m, b.views, m.support.items())
    assert out.loss.item() == pytest.approx(want.item(), rel=1e-4)
    out.loss.backward()
    assert m.encoder.features[0].weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in m.transformer.parameters())


def test_an_empty_queue_looks_neighbours_up_in_the_batch():
    m = make(dropout=0.0)
    b = batch()
    nbr = m.neighbours(*(2 * [F.normalize(torch.randn(8, 16), dim=1)]))
    assert nbr.shape == (8, 5, 16)
    with torch.no_grad():
        zm = F.normalize(m.momentum_projector(m.momentum_encoder(b.views[0])), dim=1)
    torch.testing.assert_close(m.neighbours(zm, zm)[:, 0], zm)  # each sample's nearest is itself


def test_state_changes_only_in_on_step_end():
    m = make()
    target = {k: v.detach().clone() for k, v in m.momentum_encoder.named_parameters()}
    b = batch()
    out = m.training_step(b)
    assert len(m.support) == 0
    assert all(torch.equal(v, target[k]) for k, v in m.momentum_encoder.named_parameters())
    with torch.no_grad():
        zm1 = F.normalize(m.momentum_projector(m.momentum_encoder(b.views[0])), dim=1)
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.5)
    out.loss.backward()
    opt.step()
    online = {k: v.detach().clone() for k, v in m.encoder.named_parameters()}
    m.on_step_end(0.5)
    torch.testing.assert_close(m.support.items(), zm1)  # Q <- z^m of view 1
    mom = cosine_momentum(0.99, 0.5)
    for k, v in m.momentum_encoder.named_parameters():
        torch.testing.assert_close(v, mom * target[k] + (1 - mom) * online[k])
    assert {"support.data", "support.ptr"} <= set(m.state_dict()) and "pos" not in m.state_dict()


def test_the_transformer_trains_at_a_tenth_of_the_rate():
    from selfsup.config import OptimConfig
    from selfsup.train.optim import build_optimizer, set_lr

    m = make()
    opt = build_optimizer(m.param_groups(), OptimConfig(name="lars", lr=1.0, scale_lr=False), 256)
    set_lr(opt, 0.5)
    mine = {id(p) for p in m.transformer.parameters()}
    rates = {(any(id(p) in mine for p in g["params"]), g["lr"]) for g in opt.param_groups}
    assert rates == {(False, 0.5), (True, 0.05)}
    assert sum(len(g["params"]) for g in opt.param_groups) == len([p for p in m.parameters() if p.requires_grad])


@pytest.mark.slow  # ~26 s on the 2-core machine: run by `make test-slow`; the training step is in the default suite
@pytest.mark.learning
def test_learns_digits(tmp_path):
    trained, random = trained_vs_random(
        tmp_path,
        digits_recipe(
            "all4one", 20, {"proj_hidden": 256, "proj_dim": 64, "pred_hidden": 256, "queue_size": 256, "tau_base": 0.98}
        ),
    )
    print(
        f"all4one kNN-200 {trained['top1']:.3f} vs random {random['top1']:.3f}; "
        f"kNN-20 {trained['top1_k20']:.3f} vs {random['top1_k20']:.3f}"
    )
    assert trained["top1"] >= random["top1"] + 0.05  # seen 0.955 vs 0.880, kNN-20 0.981 vs 0.942
    assert trained["top1_k20"] >= random["top1_k20"] + 0.02
