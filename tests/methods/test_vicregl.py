"""VICRegL: locations map a known crop geometry into the image; nearest-neighbour matching recovers a
known permutation; the loss is alpha * global VICReg + (1 - alpha) * local VICReg on the matched
vectors, written out by hand; the views' crop boxes leave the draws unchanged; it learns on digits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from learning import digits_recipe
from safetensors.torch import load_file

import selfsup
from selfsup.config import resolve
from selfsup.data import load_dataset
from selfsup.data.batch import Batch
from selfsup.eval import extract_features, knn_accuracy
from selfsup.losses.dense import crop_locations, local_vicreg_terms, nearest_neighbour_matches
from selfsup.train import fit
from selfsup.train.loop import build_method
from selfsup.transforms.views import Views, view_preset

B = 8


def test_crop_locations_map_a_known_geometry():
    full = torch.tensor([[[1.0, 0, 0], [0, 1, 0]]])  # the whole image
    right_half = torch.tensor([[[0.5, 0, 0.5], [0, 1, 0]]])  # x in [0, 1]
    flipped = torch.tensor([[[-1.0, 0, 0], [0, 1, 0]]])  # the whole image, mirrored
    torch.testing.assert_close(
        crop_locations(full, 2, 2), torch.tensor([[[-0.5, -0.5], [0.5, -0.5], [-0.5, 0.5], [0.5, 0.5]]])
    )
    torch.testing.assert_close(crop_locations(right_half, 2, 2)[0, :2], torch.tensor([[0.25, -0.5], [0.75, -0.5]]))
    torch.testing.assert_close(
        crop_locations(flipped, 2, 2, flip_grid=True)[0, :2], torch.tensor([[0.5, -0.5], [-0.5, -0.5]])
    )
    torch.testing.assert_close(crop_locations(flipped, 2, 2, flip_grid=False), crop_locations(full, 2, 2))
    # the right half's cells (x 0.25 and 0.75) both lie nearest the full view's right column (x 0.5)
    d = torch.cdist(crop_locations(right_half, 2, 2), crop_locations(full, 2, 2))
    i, j = nearest_neighbour_matches(d, None)
    assert i.tolist() == [[0, 1, 2, 3]] and j.tolist() == [[1, 1, 3, 3]]
    shifted = torch.tensor([[[0.4, 0, 0.4], [0, 1, 0]]])  # x in [0, 0.8]: cells at x 0.2 and 0.6
    i, j = nearest_neighbour_matches(torch.cdist(crop_locations(shifted, 2, 2), crop_locations(full, 2, 2)), 2)
    assert i.tolist() == [[1, 3]] and j.tolist() == [[1, 3]]  # the two closest pairs (0.6 vs 0.5), in order


def test_feature_matching_recovers_a_known_permutation():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 9, 16, generator=g)
    perm = torch.stack([torch.randperm(9, generator=g) for _ in range(3)])
    b = torch.stack([a[n, perm[n]] for n in range(3)]) + 1e-3  # b[n, j] = a[n, perm[n, j]]
    i, j = nearest_neighbour_matches(torch.cdist(a, b), None)
    assert torch.equal(i, torch.arange(9).expand(3, 9)) and torch.equal(j, torch.argsort(perm, dim=1))


def test_boxes_leave_the_draws_unchanged():
    views = Views(view_preset("byol"), [0.3], [0.35], 8)
    images = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)
    plain = views(images, torch.Generator().manual_seed(1))
    with_boxes, boxes = views(images, torch.Generator().manual_seed(1), boxes=True)
    assert all(torch.equal(p, q) for p, q in zip(plain, with_boxes)) and [b.shape for b in boxes] == [(4, 2, 3)] * 2


def vicreg_terms(x, y):
    """Official _vicreg_loss on [N, k, C], unweighted, by loops."""
    inv = ((x - y) ** 2).mean()
    var, cov = 0.0, 0.0
    for z in (x, y):
        std = torch.sqrt(z.var(0) + 1e-4)
        var = var + F.relu(1 - std).mean() / 2
        covs = []
        for s in range(z.shape[1]):
            zc = z[:, s] - z[:, s].mean(0)
            c = zc.T @ zc / (z.shape[0] - 1)
            covs.append((c.pow(2).sum() - c.diagonal().pow(2).sum()) / z.shape[2])
        cov = cov + torch.stack(covs).mean() / 2
    return inv, var, cov


def test_local_terms_and_loss_are_the_officials():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(6, 3, 5, generator=g), torch.randn(6, 3, 5, generator=g)
    for got, want in zip(local_vicreg_terms(x, y), vicreg_terms(x, y)):
        torch.testing.assert_close(got, want)

    torch.manual_seed(0)
    m = selfsup.create_method(
        "vicregl",
        backbone="convnet",
        in_channels=1,
        width=0.25,
        proj_hidden=32,
        proj_dim=16,
        maps_hidden=16,
        maps_dim=8,
        num_matches=[3, 2],
    ).train()
    views = Views(view_preset("byol"), [0.3], [0.35], 16)
    images = torch.randint(0, 256, (B, 1, 16, 16), dtype=torch.uint8, generator=g)
    b = Batch(images, torch.arange(B))
    b.views, b.boxes = views(images, g, boxes=True)
    got = m.training_step(b).loss
    with torch.no_grad():
        f = [m.encoder.forward_maps(v) for v in b.views]  # [N, F, 2, 2]
        z = [m.projector(fi.mean((2, 3))) for fi in f]
        # official forward_networks: the local projector (its BN) over all N x hw location vectors at once
        maps = [m.maps_projector(fi.permute(0, 2, 3, 1).reshape(B * 4, -1)).view(B, 4, -1) for fi in f]
        locs = [crop_locations(t, 2, 2, flip_grid=False) for t in b.boxes]

        # global: 25 mse + 25 mean_views(hinge) + 1 mean_views(off-diag cov^2 / D)
        def vc(zz):
            zc = zz - zz.mean(0)
            c = zc.T @ zc / (B - 1)
            return F.relu(1 - torch.sqrt(zz.var(0) + 1e-4)).mean(), (
                c.pow(2).sum() - c.diagonal().pow(2).sum()
            ) / zz.shape[1]

        (v1, c1), (v2, c2) = vc(z[0]), vc(z[1])
        glob = 25 * F.mse_loss(z[0], z[1]) + 25 * (v1 + v2) / 2 + (c1 + c2) / 2

        def matched(a, bb, dist, k):
            pairs = []
            for n in range(B):
                best = [(float(dist[n, i].min()), i, int(dist[n, i].argmin())) for i in range(dist.shape[1])]
                keep = sorted(sorted(best)[:k], key=lambda t: t[1])
                pairs.append((a[n, [t[1] for t in keep]], bb[n, [t[2] for t in keep]]))
            return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])

        def local_pair(a, bb, la, lb):
            terms = [
                vicreg_terms(*matched(a, bb, torch.cdist(a, bb), 4)),
                vicreg_terms(*matched(bb, a, torch.cdist(bb, a), 4)),
                vicreg_terms(*matched(a, bb, torch.cdist(la, lb), 3)),
                vicreg_terms(*matched(bb, a, torch.cdist(lb, la), 2)),
            ]
            return [sum(t[i] for t in terms) / 2 for i in range(3)]

        ta, tb = local_pair(maps[0], maps[1], locs[0], locs[1]), local_pair(maps[1], maps[0], locs[1], locs[0])
        inv, var, cov = [(a + bb) / 2 for a, bb in zip(ta, tb)]
        want = 0.75 * glob + 0.25 * (25 * inv + 25 * var + cov)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.slow  # ~24 s on the 2-core machine: run by `make test-slow`; the training step is in the default suite
def test_learns_on_digits(tmp_path):
    layers = digits_recipe("vicregl", 20, {"proj_hidden": 256, "proj_dim": 256, "maps_hidden": 128, "maps_dim": 128})
    layers[0]["views"]["size"] = 16  # a 2 x 2 map (the recipe's views.size), and kNN at 16 px too
    cfg = resolve(layers)
    fit(cfg, tmp_path / "run", progress_bar=False)
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    torch.manual_seed(cfg.train.seed)
    random_init = build_method(cfg, train.channels, len(train), 16)
    trained = build_method(cfg, train.channels, len(train), 16)
    trained.load_state_dict(load_file(tmp_path / "run" / "checkpoints" / "last" / "model.safetensors"))

    def knn(m):
        kw = dict(mean=cfg.data.mean, std=cfg.data.std, size=16)
        ftr, fte = extract_features(m.encoder, train.images, **kw), extract_features(m.encoder, test.images, **kw)
        return knn_accuracy(ftr, train.labels, fte, test.labels, ks=(200, 20))

    after, before = knn(trained), knn(random_init)
    print(
        f"vicregl kNN-200 {after['top1']:.3f} vs random {before['top1']:.3f}; "
        f"kNN-20 {after['top1_k20']:.3f} vs {before['top1_k20']:.3f}"
    )
    # measured 0.919 vs 0.883 (kNN-20 0.955 vs 0.958: not better yet at 20 epochs, so not asserted)
    assert after["top1"] >= before["top1"] + 0.02
