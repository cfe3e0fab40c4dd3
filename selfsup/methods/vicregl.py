"""VICRegL — Bardes, Ponce, LeCun. "VICRegL: Self-Supervised Learning of Local Visual Features",
NeurIPS 2022.

Idea: VICReg (selfsup.methods.vicreg) learns a global vector per image; VICRegL adds the same
criterion on the backbone's feature-map vectors, so that local features are good too. Each of the
two views' maps, [N, C, h, w], goes through a local projector (an MLP applied to every location
vector) to z_1 .. z_{hw}. Local vectors of the two views are paired twice (sec. 3.2):

  by location:   every location of view 1 is mapped back into the original image through its crop
                 (selfsup.losses.dense.crop_locations) and paired with the nearest location of view 2
                 in image coordinates; the num_matches closest pairs are kept (official 20, and 4 the
                 other way round, on 7 x 7 maps);
  by feature:    every z_i is paired with its nearest z'_j in embedding space (L2 distance), all kept
                 (the official default --l2_all_matches 1);

each in both directions, and VICReg's invariance, variance and covariance act on the pairs
(local_vicreg_terms). With alpha weighting the global against the local criterion,

    L = alpha * l_global(Z, Z') + (1 - alpha) * l_local,   alpha 0.75 (0.9 in the released ResNet-50 of
                                                             the better classification trade-off),

both with VICReg's coefficients 25 / 25 / 1. Verified in facebookresearch/VICRegL, main_vicregl.py
(global_loss, local_loss, _local_loss, _vicreg_loss, neirest_neighbores*), transforms.py (the location
grid) and utils.py (MLP: Linear-BN-ReLU x2, Linear without bias).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from selfsup.errors import SelfsupError
from selfsup.losses.dense import crop_locations, local_vicreg_terms, nearest_neighbour_matches
from selfsup.losses.moco import two_views
from selfsup.losses.redundancy import vicreg_loss
from selfsup.methods.base import Method, StepOutput
from selfsup.nn.heads import mlp
from selfsup.registry import BuildContext, Needs, register


@dataclass
class VICRegLConfig:
    # global expander: paper 8192-8192-8192, scaled to 2048 for CPU use as selfsup's VICReg
    proj_hidden: int = 2048
    proj_dim: int = 2048
    maps_hidden: int = 512  # local projector: the paper's 512-512-512
    maps_dim: int = 512
    alpha: float = 0.75  # weight of the global criterion, (1 - alpha) on the local one
    num_matches: tuple[int, int] = (20, 4)  # location matches kept, view 1 -> 2 and 2 -> 1 (of 49 on 7 x 7)
    l2_all_matches: bool = True  # feature matching keeps every location (official default)
    flip_grid: bool = False  # official --no-flip-grid 1: locations ignore a horizontal flip
    sim_coeff: float = 25.0
    std_coeff: float = 25.0
    cov_coeff: float = 1.0


def _projector(d: int, hidden: int, out: int) -> nn.Sequential:
    p = mlp(d, hidden, out, num_layers=3)  # Linear-BN-ReLU x2, Linear (official utils.MLP)
    p[-1] = nn.Linear(hidden, out, bias=False)
    return p


# boxes: the loop hands each view's crop geometry in batch.boxes
@register("vicregl", config=VICRegLConfig, views="byol", needs=Needs(boxes=True))
class VICRegL(Method):
    """VICRegL: VICReg on pooled embeddings + VICReg on local vectors matched by location and by feature."""

    def __init__(self, encoder: nn.Module, cfg: VICRegLConfig = VICRegLConfig(), ctx: BuildContext = BuildContext()):
        super().__init__()
        if not hasattr(encoder, "forward_maps"):
            raise SelfsupError(
                "vicregl needs a backbone with a spatial feature map (forward_maps): use a convnet or "
                "resnet backbone, e.g. backbone.name=resnet18"
            )
        self.cfg = cfg
        self.encoder = encoder
        d = cast(int, encoder.num_features)
        self.projector = _projector(d, cfg.proj_hidden, cfg.proj_dim)
        self.maps_projector = _projector(d, cfg.maps_hidden, cfg.maps_dim)

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.encoder(x))

    def _local_pair(self, m1, m2, loc1, loc2):
        """Official _local_loss: feature and location matches, both directions; unweighted (inv, var, cov)."""
        c, terms = self.cfg, []
        feat_k = (None, None) if c.l2_all_matches else c.num_matches
        pairs = [
            (m1, m2, torch.cdist(m1.float(), m2.float()), feat_k[0]),  # by feature (L2 in embedding space)
            (m2, m1, torch.cdist(m2.float(), m1.float()), feat_k[1]),
            (m1, m2, torch.cdist(loc1, loc2), c.num_matches[0]),  # by location in the image
            (m2, m1, torch.cdist(loc2, loc1), c.num_matches[1]),
        ]
        for a, b, d, k in pairs:
            i, j = nearest_neighbour_matches(d, k)  # [N, k] each
            terms.append(
                local_vicreg_terms(
                    a.gather(1, i[..., None].expand(-1, -1, a.shape[2])),
                    b.gather(1, j[..., None].expand(-1, -1, b.shape[2])),
                )
            )
        inv = sum(t[0] for t in terms) / 2  # (feature 1->2 + 2->1)/2 + (location 1->2 + 2->1)/2
        var = sum(t[1] for t in terms) / 2
        cov = sum(t[2] for t in terms) / 2
        return inv, var, cov

    def training_step(self, batch) -> StepOutput:
        x1, x2 = two_views(batch.views, self.name)  # [N, C, H, W] each
        if batch.boxes is None:
            raise SelfsupError(
                "vicregl matches locations through the crops' geometry: the batch needs boxes "
                "(Views(..., boxes=True); the training loop fills them for methods that declare needs.boxes)"
            )
        c = self.cfg
        # [N, F, h, w]
        f1, f2 = self.encoder.forward_maps(x1), self.encoder.forward_maps(x2)  # type: ignore[operator]  # a backbone's method
        n, f, h, w = f1.shape
        z1, z2 = self.projector(f1.mean((2, 3))), self.projector(f2.mean((2, 3)))  # Z, Z': [N, D]
        # local projections of every location vector: [N, h w, D_loc]
        m1 = self.maps_projector(f1.flatten(2).transpose(1, 2).reshape(-1, f)).view(n, h * w, -1)
        m2 = self.maps_projector(f2.flatten(2).transpose(1, 2).reshape(-1, f)).view(n, h * w, -1)
        loc1 = crop_locations(batch.boxes[0], h, w, c.flip_grid)  # [N, h w, 2] in image coordinates
        loc2 = crop_locations(batch.boxes[1], h, w, c.flip_grid)
        # global: official global_loss averages the two views' covariance terms, VICReg's code sums them
        g_loss, g = vicreg_loss(z1, z2, c.sim_coeff, c.std_coeff, c.cov_coeff / 2)
        # local: official local_loss over the view pairs (1, 2) and (2, 1), averaged
        inv_a, var_a, cov_a = self._local_pair(m1, m2, loc1, loc2)
        inv_b, var_b, cov_b = self._local_pair(m2, m1, loc2, loc1)
        inv, var, cov = (inv_a + inv_b) / 2, (var_a + var_b) / 2, (cov_a + cov_b) / 2
        l_loss = c.sim_coeff * inv + c.std_coeff * var + c.cov_coeff * cov
        loss = c.alpha * g_loss + (1 - c.alpha) * l_loss
        return StepOutput(
            loss,
            {
                "vicregl/global": g_loss.detach(),
                "vicregl/local": l_loss.detach(),
                "vicregl/local_invariance": inv.detach(),
                "vicregl/local_variance": var.detach(),
                "vicregl/local_covariance": cov.detach(),
            },
        )
