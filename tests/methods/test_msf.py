"""MSF: the loss is the mean squared distance of the online prediction to the target's k nearest
neighbours in the bank (checked against a brute-force computation of eq. 1 inside a full step), the
bank holds this step's targets at look-up but receives them for good only in on_step_end, together
with the EMA; the weak_strong views keep view 1 weak; it learns on digits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from learning import digits_recipe, trained_vs_random

import selfsup
from selfsup.data.batch import Batch
from selfsup.losses.distillation import mean_shift_loss, mean_shift_neighbours
from selfsup.methods.msf import MSF, MSFConfig
from selfsup.transforms import Views, view_preset

SMALL = {"proj_hidden": 32, "proj_dim": 16, "pred_hidden": 32, "bank_size": 40, "topk": 3}


def make(**cfg) -> MSF:
    torch.manual_seed(0)
    return selfsup.create_method("msf", backbone="convnet", in_channels=1, width=0.25, **{**SMALL, **cfg}).train()


def batch(seed: int = 0, b: int = 10) -> Batch:
    g = torch.Generator().manual_seed(seed)
    out = Batch(torch.zeros(b, 1, 8, 8, dtype=torch.uint8), torch.arange(b), torch.zeros(b, dtype=torch.long))
    out.views = [torch.randn(b, 1, 8, 8, generator=g), torch.randn(b, 1, 8, 8, generator=g)]
    return out


def eq1(p: torch.Tensor, z: torch.Tensor, bank: torch.Tensor, k: int) -> float:
    """1/N sum_i 1/k sum_{b in NN_k(z_i)} ||p_i/||p_i|| - b/||b|| ||^2, one image at a time."""
    total = 0.0
    for i in range(p.shape[0]):
        zi, pi = z[i] / z[i].norm(), p[i] / p[i].norm()
        rows = sorted(range(bank.shape[0]), key=lambda j: float((zi - bank[j] / bank[j].norm()).pow(2).sum()))[:k]
        total += sum(float((pi - bank[j] / bank[j].norm()).pow(2).sum()) for j in rows) / k
    return total / p.shape[0]


def test_defaults_are_the_papers():
    c = MSFConfig()
    assert (c.momentum, c.topk, c.bank_size, c.proj_dim) == (0.99, 5, 1024000, 512)
    assert selfsup.registry.get_method_spec("msf").views == "weak_strong"


def test_loss_functions_against_eq1():
    g = torch.Generator().manual_seed(0)
    p, z, bank = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g), torch.randn(20, 8, generator=g)
    bank = torch.cat([bank, z])  # the targets are in the bank: each z is its own nearest neighbour
    nbrs, cos = mean_shift_neighbours(z, bank, 4)
    assert nbrs.shape == (6, 4, 8) and torch.allclose(cos[:, 0], torch.ones(6))
    torch.testing.assert_close(nbrs[:, 0], F.normalize(z, dim=1))
    assert mean_shift_loss(p, nbrs).item() == pytest.approx(eq1(p, z, bank, 4), rel=1e-5)
    # k = 1 is BYOL's normalised MSE to the target itself
    one, _ = mean_shift_neighbours(z, bank, 1)
    want = (2 - 2 * F.cosine_similarity(p, z)).mean()
    assert mean_shift_loss(p, one).item() == pytest.approx(want.item(), rel=1e-5)


def test_step_pulls_the_strong_prediction_toward_neighbours_of_the_weak_target():
    m = make()
    torch.manual_seed(1)
    old = torch.randn(35, 16)
    m.bank.push(old)
    b = batch()
    out = m.training_step(b)
    with torch.no_grad():
        p = m.predictor(m.projector(m.encoder(b.views[1])))  # online: the strong view 2
        z = m.target_projector(m.target_encoder(b.views[0]))  # target: the weak view 1
    bank = torch.cat([F.normalize(old, dim=1), F.normalize(z, dim=1)])[-40:]  # the newest M = 40
    assert out.loss.item() == pytest.approx(eq1(p, z, bank, 3), rel=1e-5)


def test_state_changes_only_in_on_step_end():
    m = make()
    target = {k: v.detach().clone() for k, v in m.target_encoder.named_parameters()}
    out = m.training_step(batch())
    assert len(m.bank) == 0  # the step saw its targets in the bank, but did not store them
    assert all(torch.equal(v, target[k]) for k, v in m.target_encoder.named_parameters())
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.5)
    out.loss.backward()
    assert all(p.grad is None for p in m.target_encoder.parameters())
    opt.step()
    online = {k: v.detach().clone() for k, v in m.encoder.named_parameters()}
    old_t = {k: v.detach().clone() for k, v in m.target_encoder.named_parameters()}
    m.on_step_end(0.5)
    assert len(m.bank) == 10 and not m.bank.data.requires_grad
    torch.testing.assert_close(m.bank.items().norm(dim=1), torch.ones(10))
    for k, v in m.target_encoder.named_parameters():  # theta_t <- 0.99 theta_t + 0.01 theta
        torch.testing.assert_close(v, 0.99 * old_t[k] + 0.01 * online[k])


def test_weak_strong_views_keep_view_one_weak():
    cfg = view_preset("weak_strong")
    views = Views(cfg, [0.5], [0.5], image_size=8)
    images = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    weak, strong = views(images, torch.Generator().manual_seed(0))
    # crop + flip only: no grayscale, so a colour image keeps distinct channels; the strong view greys some
    grey = lambda v: (v.std(dim=1).flatten(1).max(dim=1).values < 1e-6).float().mean()  # noqa: E731
    assert grey(weak) == 0 and grey(strong) > 0
    assert cfg.weak == (True, False) and cfg.blur_p == (0.0, 0.5)


def test_learns_digits(tmp_path):
    trained, random = trained_vs_random(
        tmp_path, digits_recipe("msf", 30, {"proj_hidden": 256, "proj_dim": 64, "pred_hidden": 256, "bank_size": 1024})
    )
    print(
        f"msf kNN-200 {trained['top1']:.3f} vs random {random['top1']:.3f}; "
        f"kNN-20 {trained['top1_k20']:.3f} vs {random['top1_k20']:.3f}"
    )
    assert trained["top1"] >= random["top1"] + 0.045  # seen 0.947 vs 0.880, kNN-20 0.958 vs 0.942
    assert trained["top1_k20"] >= random["top1_k20"] + 0.005
    assert trained["top1"] >= 0.91
