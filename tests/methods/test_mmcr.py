"""MMCR: the loss is -||C||_* (+ lambda times the mean per-image nuclear norm) of the centroids of unit
embeddings, checked against nuclear norms computed another way (square roots of the eigenvalues of the
Gram matrix, in float64, one image at a time) and against known values; the step encodes all k views in
one pass and averages the momentum encoder's centroids in; the momentum encoder changes only in
on_step_end; the defaults and the view preset are the official code's; it learns on digits."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from learning import digits_recipe, trained_vs_random

import selfsup
from selfsup.config import deep_merge, resolve
from selfsup.data.batch import Batch
from selfsup.errors import SelfsupError
from selfsup.losses.capacity import mmcr_loss
from selfsup.methods.mmcr import MMCRConfig
from selfsup.transforms.views import view_config

SMALL = {"proj_hidden": 32, "proj_dim": 16}


def make(**cfg):
    torch.manual_seed(0)
    return selfsup.create_method("mmcr", backbone="convnet", in_channels=1, width=0.25, **{**SMALL, **cfg}).train()


def batch(k: int = 4, seed: int = 0, b: int = 6) -> Batch:
    g = torch.Generator().manual_seed(seed)
    out = Batch(torch.zeros(b, 1, 8, 8, dtype=torch.uint8), torch.arange(b))
    out.views = [torch.randn(b, 1, 8, 8, generator=g) for _ in range(k)]
    return out


def nuc_by_eigenvalues(m: torch.Tensor) -> float:
    """||M||_* = sum sqrt(eig(M M^T)), eigenvalues of the symmetric Gram matrix in float64."""
    m = m.double()
    return float(torch.linalg.eigvalsh(m @ m.T).clamp_min(0).sqrt().sum())


def written_out(z, z_m=None, lambd=0.0) -> float:
    """z, z_m: [B, k, D]. Each view normalised by hand, each centroid summed by hand."""
    b, k, _ = z.shape
    unit = [[z[i, j].double() / z[i, j].double().norm() for j in range(k)] for i in range(b)]
    cents = [sum(unit[i]) / k for i in range(b)]
    if z_m is not None:
        cents = [
            (cents[i] + sum(z_m[i, j].double() / z_m[i, j].double().norm() for j in range(k)) / k) / 2 for i in range(b)
        ]
    local = sum(nuc_by_eigenvalues(torch.stack(unit[i])) for i in range(b)) / b
    return -nuc_by_eigenvalues(torch.stack(cents)) + lambd * local


def test_defaults_are_the_official_codes():
    c = MMCRConfig()
    assert (c.proj_hidden, c.proj_dim, c.proj_layers, c.lambd, c.momentum, c.tau) == (8192, 512, 3, 0.0, True, 0.99)
    v = view_config(resolve([{"method": "mmcr"}]))
    assert (v.num_global, v.blur_p, v.solarize_p, v.jitter) == (8, (1.0, 0.1), (0.0, 0.2), (0.4, 0.4, 0.2, 0.1))
    m = selfsup.create_method("mmcr", backbone="convnet", in_channels=1, width=0.25)
    linears = [x for x in m.projector if isinstance(x, torch.nn.Linear)]
    assert [(x.out_features, x.bias is None) for x in linears] == [(8192, True), (8192, True), (512, True)]


@pytest.mark.parametrize("lambd", [0.0, 0.3])
@pytest.mark.parametrize("momentum", [False, True])
def test_loss_against_the_written_out_formula(lambd, momentum):
    g = torch.Generator().manual_seed(1)
    z, z_m = torch.randn(7, 5, 9, generator=g) * 3, torch.randn(7, 5, 9, generator=g)
    loss, terms = mmcr_loss(z, z_m if momentum else None, lambd)
    assert loss.item() == pytest.approx(written_out(z, z_m if momentum else None, lambd), rel=1e-5)
    assert -terms["global_nuc"].item() + lambd * terms["local_nuc"].item() == pytest.approx(loss.item(), rel=1e-5)
    # B < D and B > D: the nuclear norm of a wide and of a tall centroid matrix
    z = torch.randn(3, 4, 11, generator=g)
    assert mmcr_loss(z, None, lambd)[0].item() == pytest.approx(written_out(z, None, lambd), rel=1e-5)


def test_known_values_and_invariances():
    b, k, d = 5, 4, 8
    # every view of image i is the same direction e_i (scaled): C = [I | 0], ||C||_* = B; each Z_i has
    # one singular value sqrt(k)
    z = torch.zeros(b, k, d)
    for i in range(b):
        z[i, :, i] = torch.arange(1.0, k + 1)
    loss, terms = mmcr_loss(z, None, 0.5)
    assert terms["global_nuc"].item() == pytest.approx(b, rel=1e-6)
    assert loss.item() == pytest.approx(-b + 0.5 * math.sqrt(k), rel=1e-6)
    # all images collapsed to one point: ||C||_* = ||C||_F = sqrt(B)
    assert mmcr_loss(torch.ones(b, k, d), None)[1]["global_nuc"].item() == pytest.approx(math.sqrt(b), rel=1e-6)
    # unchanged by a rotation of the embedding space, by the order of the views and of the images
    g = torch.Generator().manual_seed(2)
    z = torch.randn(b, k, d, generator=g)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g))
    want = mmcr_loss(z, None, 0.2)[0].item()
    assert mmcr_loss(z @ q, None, 0.2)[0].item() == pytest.approx(want, rel=1e-5)
    assert mmcr_loss(z[torch.randperm(b), :][:, torch.randperm(k)], None, 0.2)[0].item() == pytest.approx(
        want, rel=1e-5
    )


def test_gradient_never_reaches_the_momentum_embeddings():
    g = torch.Generator().manual_seed(3)
    z, z_m = (
        torch.randn(6, 3, 5, generator=g, requires_grad=True),
        torch.randn(6, 3, 5, generator=g, requires_grad=True),
    )
    mmcr_loss(z, z_m, 0.1)[0].backward()
    assert z_m.grad is None and z.grad.abs().sum() > 0


@pytest.mark.parametrize("momentum", [False, True])
def test_step_is_the_loss_of_one_pass_over_all_views(momentum):
    m = make(momentum=momentum)
    if momentum:  # make the momentum encoder differ from the online one, so that its use shows
        with torch.no_grad():
            for p in list(m.target_encoder.parameters()) + list(m.target_projector.parameters()):
                p.add_(0.1 * torch.randn_like(p))
    b = batch(k=4)
    out = m.training_step(b)
    with torch.no_grad():
        x = torch.cat(b.views)  # one BatchNorm batch of all k N views
        z = m.projector(m.encoder(x)).view(4, 6, -1).transpose(0, 1)
        z_m = m.target_projector(m.target_encoder(x)).view(4, 6, -1).transpose(0, 1) if momentum else None
    assert out.loss.item() == pytest.approx(written_out(z, z_m), rel=1e-5)
    assert out.logs["views"] == 4
    assert (m.target_encoder is None) == (not momentum)


def test_momentum_encoder_changes_only_in_on_step_end():
    m = make(tau=0.9)
    target = {k: v.detach().clone() for k, v in m.target_encoder.named_parameters()}
    out = m.training_step(batch())
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.5)
    out.loss.backward()
    assert all(p.grad is None for p in m.target_encoder.parameters())
    opt.step()
    assert all(torch.equal(v, target[k]) for k, v in m.target_encoder.named_parameters())
    online = {k: v.detach().clone() for k, v in m.encoder.named_parameters()}
    assert any(not torch.equal(online[k], target[k]) for k in online)
    m.on_step_end(0.5)
    for k, v in m.target_encoder.named_parameters():  # constant tau: no schedule
        torch.testing.assert_close(v, 0.9 * target[k] + 0.1 * online[k])


def test_views_of_two_sizes_are_refused():
    b = batch(k=2)
    b.views.append(F.interpolate(b.views[0], size=4))
    with pytest.raises(SelfsupError, match="num_local"):
        make().training_step(b)


def test_learns_digits(tmp_path):
    """k = 4 views (the preset's 8 at half the cost), 15 epochs, the default momentum encoder."""
    layers = digits_recipe("mmcr", 15, {"proj_hidden": 256, "proj_dim": 64})
    layers[0] = deep_merge(layers[0], {"views": {"num_global": 4}})
    trained, random = trained_vs_random(tmp_path, layers)
    print(
        f"mmcr kNN-200 {trained['top1']:.3f} vs random {random['top1']:.3f}; "
        f"kNN-20 {trained['top1_k20']:.3f} vs {random['top1_k20']:.3f}"
    )
    assert trained["top1"] >= random["top1"] + 0.07  # seen 0.969 vs 0.880; kNN-20 0.975-0.981 vs 0.942
    assert trained["top1_k20"] >= random["top1_k20"] + 0.02
    assert trained["top1"] >= 0.94
