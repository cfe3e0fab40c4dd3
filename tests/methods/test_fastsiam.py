"""FastSiam: the loss is the mean over views of -cos(p_i, mean of the other views' z), written out one
image and one view at a time; with two views it is SimSiam's step exactly; no gradient reaches the
targets; the view preset gives four views; it learns on digits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from learning import digits_recipe, trained_vs_random

import selfsup
from selfsup.config import deep_merge, resolve
from selfsup.data.batch import Batch
from selfsup.transforms.views import view_config

SMALL = {"proj_hidden": 32, "proj_dim": 16, "pred_hidden": 8}


def make(name: str = "fastsiam", **cfg):
    torch.manual_seed(0)
    return selfsup.create_method(name, backbone="convnet", in_channels=1, width=0.25, **{**SMALL, **cfg}).train()


def batch(k: int = 4, seed: int = 0, b: int = 6) -> Batch:
    g = torch.Generator().manual_seed(seed)
    out = Batch(torch.zeros(b, 1, 8, 8, dtype=torch.uint8), torch.arange(b))
    out.views = [torch.randn(b, 1, 8, 8, generator=g) for _ in range(k)]
    return out


def written_out(m, views) -> float:
    """(1/K) sum_i (1/N) sum_n -cos(p_i[n], (1/(K-1)) sum_{j != i} z_j[n]), in float64."""
    with torch.no_grad():
        z = [m.projector(m.encoder(x)).double() for x in views]  # each view its own BatchNorm batch
        p = [m.predictor(z_i.float()).double() for z_i in z]
    k, n = len(views), len(views[0])
    total = 0.0
    for i in range(k):
        for r in range(n):
            target = sum(z[j][r] for j in range(k) if j != i) / (k - 1)
            total += -float(p[i][r] @ target / (p[i][r].norm() * target.norm())) / n
    return total / k


@pytest.mark.parametrize("k", [3, 4])
def test_loss_against_the_written_out_formula(k):
    m = make()
    b = batch(k)
    out = m.training_step(b)
    assert out.loss.item() == pytest.approx(written_out(m, b.views), rel=1e-5, abs=1e-6)
    assert out.logs["views"] == k


def test_two_views_are_simsiam_exactly():
    b = batch(2)
    fast, siam = make("fastsiam"), make("simsiam")
    siam.load_state_dict(fast.state_dict())
    torch.testing.assert_close(fast.training_step(b).loss, siam.training_step(b).loss, rtol=0, atol=1e-7)


def test_no_gradient_reaches_the_targets():
    """The step's gradients are those of the loss with every target detached by hand: the mean of the
    other views' projections is a constant, and each z_i gets its gradient only through p_i = h(z_i)."""
    b = batch(4)
    m = make()
    m.training_step(b).loss.backward()
    got = {k: v.grad.clone() for k, v in m.named_parameters() if v.grad is not None}
    m = make()
    z = [m.projector(m.encoder(x)) for x in b.views]
    loss = 0.0
    for i in range(4):
        target = (sum(z[j] for j in range(4) if j != i) / 3).detach()
        p = F.normalize(m.predictor(z[i]), dim=1)
        loss = loss - (p * F.normalize(target, dim=1)).sum(1).mean() / 4
    loss.backward()
    want = {k: v.grad for k, v in m.named_parameters() if v.grad is not None}
    assert got.keys() == want.keys() and any("predictor" in k for k in got)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-4, atol=1e-6, msg=lambda msg: f"{k}: {msg}")


def test_the_preset_gives_four_views_and_the_recipe_keeps_them():
    assert view_config(resolve([{"method": "fastsiam"}])).num_global == 4
    assert view_config(resolve([{"method": "simsiam"}])).num_global == 2


def test_learns_digits(tmp_path):
    """SimSiam's digits test (tests/methods/test_learning_siamese_redundancy.py) at the same compute: four
    views, so half its 30 epochs."""
    layers = digits_recipe("fastsiam", 15, {"proj_hidden": 256, "proj_dim": 256, "pred_hidden": 64})
    layers[0] = deep_merge(
        layers[0],
        {"views": {"num_global": 4}, "optim": {"name": "sgd", "lr": 0.5, "weight_decay": 1e-4, "warmup": 0.0}},
    )
    trained, random = trained_vs_random(tmp_path, layers)
    print(
        f"fastsiam kNN-200 {trained['top1']:.3f} vs random {random['top1']:.3f}; "
        f"kNN-20 {trained['top1_k20']:.3f} vs {random['top1_k20']:.3f}"
    )
    assert trained["top1"] >= random["top1"] + 0.045
    assert trained["top1_k20"] >= random["top1_k20"] + 0.01
