"""Matching of dense (per-location) feature vectors between two views: DenseCL's correspondence by
feature similarity, VICRegL's matches by feature similarity and by image location. Pure functions
with no gradient through the matching itself (an index or a choice of pairs); the losses then act on
the matched vectors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from selfsup import dist


@torch.no_grad()
def dense_correspondence(fq: torch.Tensor, fk: torch.Tensor) -> torch.Tensor:
    """DenseCL's correspondence (Wang et al. 2021, sec. 3.3): for every location i of view 1, the
    location j of view 2 whose backbone feature is most cosine-similar, argmax_j cos(f1_i, f2_j).

    fq: [N, C, P] view 1's feature vectors at P locations; fk: [N, C, Q] view 2's. Returns int64
    [N, P] indices into the Q locations (computed in float32, no gradient).
    """
    fq, fk = F.normalize(fq.float(), dim=1), F.normalize(fk.float(), dim=1)
    sim = fq.transpose(1, 2) @ fk  # [N, P, Q]
    return sim.argmax(dim=2)


def gather_locations(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x: [N, C, Q] vectors at Q locations, index: int64 [N, P] -> [N, C, P], column p = x[:, :, index[:, p]]."""
    return x.gather(2, index[:, None, :].expand(-1, x.shape[1], -1))


def crop_locations(theta: torch.Tensor, h: int, w: int, flip_grid: bool = True) -> torch.Tensor:
    """Where the centres of an h x w feature map's cells lie in the original image (VICRegL, sec. 3.2).

    theta: [N, 2, 3] each view's crop geometry (``selfsup.transforms.ops.random_resized_crop``): view point
    (u, v) in [-1, 1] comes from image point theta @ (u, v, 1). Returns [N, h w, 2] image coordinates (x, y)
    in [-1, 1], cells in row-major order (as ``maps.flatten(2)``). ``flip_grid=False`` ignores a horizontal
    flip, as the official code's default ``--no-flip-grid 1`` does.
    """
    theta = theta.float()
    if not flip_grid:
        theta = theta.clone()
        theta[:, 0, 0] = theta[:, 0, 0].abs()
    v = (torch.arange(h, device=theta.device, dtype=theta.dtype) * 2 + 1) / h - 1  # cell centres, [-1, 1]
    u = (torch.arange(w, device=theta.device, dtype=theta.dtype) * 2 + 1) / w - 1
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    grid = torch.stack([uu.flatten(), vv.flatten(), torch.ones(h * w, device=theta.device)], 1)  # [h w, 3]
    return grid @ theta.transpose(1, 2)  # [N, h w, 2]


@torch.no_grad()
def nearest_neighbour_matches(distances: torch.Tensor, num_matches: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """VICRegL's matching (official ``neirest_neighbores``): every input location i gets its nearest
    candidate j(i) = argmin_j d_ij, and of these pairs the ``num_matches`` with the smallest distance
    are kept (all of them for None), in the input locations' order.

    distances: [N, P, Q]. Returns (input indices [N, k], candidate indices [N, k]), int64.
    """
    best, j = distances.min(dim=2)  # [N, P]
    k = distances.shape[1] if num_matches is None else min(num_matches, distances.shape[1])
    keep = best.argsort(dim=1)[:, :k].sort(dim=1).values  # [N, k], the k closest pairs, in location order
    return keep, j.gather(1, keep)


def local_vicreg_terms(
    x: torch.Tensor, y: torch.Tensor, gamma: float = 1.0, eps: float = 1e-4
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """VICReg's three terms on matched local vectors, as the official ``_vicreg_loss`` (unweighted):
    x, y: [N, k, C], row k of every image one match. Invariance = MSE over all entries; variance =
    the hinge on the std over the batch of each (match slot, channel), averaged, mean of the two sides;
    covariance = per match slot the off-diagonal squared covariances over the batch / C, averaged over
    slots, mean of the two sides. Statistics over the whole (gathered) batch; float32, autocast off.
    """
    with torch.autocast(device_type=x.device.type, enabled=False):
        x, y = x.float(), y.float()
        invariance = F.mse_loss(x, y)
        x, y = dist.gather_with_grad(x), dist.gather_with_grad(y)
        n, _, c = x.shape
        off = ~torch.eye(c, dtype=torch.bool, device=x.device)

        def var_cov(z):
            z = z - z.mean(0)
            std = torch.sqrt(z.pow(2).sum(0) / (n - 1) + eps)  # [k, C]
            zt = z.transpose(0, 1)  # [k, N, C]
            cov = zt.transpose(1, 2) @ zt / (n - 1)  # [k, C, C]
            return F.relu(gamma - std).mean(), (cov[:, off].pow(2).sum(-1) / c).mean()

        vx, cx = var_cov(x)
        vy, cy = var_cov(y)
        return invariance, (vx + vy) / 2, (cx + cy) / 2
