"""SMoG: momentum grouping and the group-contrastive loss against their definitions written out one
sample and one group at a time; the groups, the memory, the momentum network and the step count change
only in on_step_end; the periodic reset re-clusters the groups and restarts the momentum network; it
learns on digits."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from learning import digits_recipe, trained_vs_random

import selfsup
from selfsup.data.batch import Batch
from selfsup.methods.smog import SMoG, SMoGConfig
from selfsup.nn.kmeans import momentum_grouping

SMALL = {"proj_hidden": 32, "proj_dim": 16, "pred_hidden": 32, "num_groups": 8, "memory_size": 64}


def make(**cfg) -> SMoG:
    torch.manual_seed(0)
    return selfsup.create_method("smog", backbone="convnet", in_channels=1, width=0.25, **{**SMALL, **cfg}).train()


def batch(seed: int = 0, b: int = 10) -> Batch:
    g = torch.Generator().manual_seed(seed)
    out = Batch(torch.zeros(b, 1, 8, 8, dtype=torch.uint8), torch.arange(b), torch.zeros(b, dtype=torch.long))
    out.views = [torch.randn(b, 1, 8, 8, generator=g), torch.randn(b, 1, 8, 8, generator=g)]
    return out


def test_defaults_are_the_papers():
    c = SMoGConfig()
    assert (c.num_groups, c.temperature, c.beta, c.proj_dim, c.proj_hidden, c.reset_every) == (
        3000,
        0.1,
        0.99,
        128,
        2048,
        300,
    )


def test_momentum_grouping_one_group_at_a_time():
    g = torch.Generator().manual_seed(0)
    groups = torch.randn(5, 4, generator=g)
    z = F.normalize(torch.randn(12, 4, generator=g), dim=1)
    moved, assign = momentum_grouping(groups, z, 0.9)
    for i in range(12):  # each embedding's group: the largest cosine
        cos = [float(z[i] @ groups[k] / groups[k].norm()) for k in range(5)]
        assert assign[i] == max(range(5), key=cos.__getitem__)
    for k in range(5):
        members = [z[i] for i in range(12) if assign[i] == k]
        want = groups[k] if not members else 0.9 * groups[k] + 0.1 * sum(members) / len(members)
        torch.testing.assert_close(moved[k], want)


def test_the_loss_written_out_inside_a_step():
    m = make()
    b = batch()
    out = m.training_step(b)
    n, tau = 10, m.cfg.temperature
    with torch.no_grad():
        x = torch.cat(b.views)
        z = m.projector(m.encoder(x))
        p = m.predictor(z)
        zt = m.target_projector(m.target_encoder(x))
        groups = m.groups.clone()
        moved, _ = momentum_grouping(groups, F.normalize(z, dim=1), m.cfg.beta)

    def cos(u, v):
        return float(u @ v / (u.norm() * v.norm()))

    total = 0.0
    for i in range(2 * n):
        j = (i + n) % (2 * n)  # the same image in the other view
        a = max(range(8), key=lambda k: cos(zt[j], groups[k]))  # the momentum embedding's group, before the move
        logits = [cos(p[i], moved[k]) / tau for k in range(8)]
        total += -(logits[a] - math.log(sum(math.exp(v) for v in logits)))
    assert out.loss.item() == pytest.approx(total / (2 * n), rel=1e-4)
    assert 0 < float(out.logs["groups_used"]) <= 1


def test_state_changes_only_in_on_step_end():
    m = make(reset_every=0)
    groups = m.groups.clone()
    target = {k: v.detach().clone() for k, v in m.target_encoder.named_parameters()}
    b = batch()
    out = m.training_step(b)
    assert torch.equal(m.groups, groups) and len(m.memory) == 0 and int(m.steps) == 0
    assert all(torch.equal(v, target[k]) for k, v in m.target_encoder.named_parameters())
    with torch.no_grad():
        u = F.normalize(m.projector(m.encoder(torch.cat(b.views))), dim=1)
    moved, _ = momentum_grouping(groups, u, m.cfg.beta)
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.5)
    out.loss.backward()
    opt.step()
    online = {k: v.detach().clone() for k, v in m.encoder.named_parameters()}
    m.on_step_end(0.5)
    torch.testing.assert_close(m.groups, moved)  # the groups moved by this step's online embeddings
    assert len(m.memory) == 20 and int(m.steps) == 1
    for k, v in m.target_encoder.named_parameters():  # a constant momentum
        torch.testing.assert_close(v, 0.99 * target[k] + 0.01 * online[k])
    assert {"groups", "steps", "memory.data"} <= set(m.state_dict())  # checkpointed, so resuming repeats the run


def test_the_reset_reclusters_the_groups_and_restarts_the_momentum_network():
    m = make(reset_every=3)
    for step in range(3):
        m.training_step(batch(step))
        before = m.groups.clone()
        with torch.no_grad():  # the online weights move between steps
            for p in m.encoder.parameters():
                p.add_(0.01)
        m.on_step_end(step / 3)
    assert len(m.memory) == 60 and int(m.steps) == 3
    assert not torch.allclose(m.groups, before)  # re-clustered ...
    torch.testing.assert_close(m.groups.norm(dim=1), torch.ones(8))  # ... into unit centroids
    # every memory embedding's nearest group is a centroid of its own cluster: k-means' fixed point (close to it)
    mem = m.memory.items()
    assign = (mem @ m.groups.T).argmax(1)
    for k in assign.unique():
        assert F.cosine_similarity(F.normalize(mem[assign == k].mean(0), dim=0), m.groups[k], dim=0) > 0.95
    for t, o in zip(m.target_encoder.parameters(), m.encoder.parameters()):  # the momentum network restarted
        assert torch.equal(t, o)


def test_too_few_groups_or_too_small_a_memory_is_refused():
    with pytest.raises(ValueError, match="num_groups"):
        make(num_groups=1)
    with pytest.raises(ValueError, match="memory_size"):
        make(memory_size=4)


def test_learns_digits(tmp_path):
    trained, random = trained_vs_random(
        tmp_path,
        digits_recipe(
            "smog",
            30,
            {
                "proj_hidden": 256,
                "proj_dim": 64,
                "pred_hidden": 256,
                "num_groups": 64,
                "reset_every": 50,
                "memory_size": 2048,
            },
        ),
    )
    print(
        f"smog kNN-200 {trained['top1']:.3f} vs random {random['top1']:.3f}; "
        f"kNN-20 {trained['top1_k20']:.3f} vs {random['top1_k20']:.3f}"
    )
    assert trained["top1"] >= random["top1"] + 0.04
    assert trained["top1_k20"] >= random["top1_k20"] + 0.01
