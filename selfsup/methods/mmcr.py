"""MMCR — Yerxa, Kuang, Simoncelli, Chung. "Learning Efficient Coding of Natural Images with Maximum
Manifold Capacity Representations", NeurIPS 2023.

Idea: treat the k augmented views of an image as a sample of its object manifold, and make many
manifolds linearly separable at once. The paper simplifies the manifold capacity of mean-field theory to
the nuclear norm of the matrix of manifold centroids: with z_bi the L2-normalised embedding of view i of
image b and c_b = (1/k) sum_i z_bi, minimise

    L = -||C||_*,  C = [c_1; ...; c_B]  (B x D),

(optionally + lambda/B sum_b ||Z_b||_* to shrink each manifold; the official default lambda is 0). A
centroid of unit vectors is long only when the views agree, and the nuclear norm is large only when the
centroids point in many orthogonal directions: invariance and spread from one term, no negatives.

As in the official code (ThomasYerxa/mmcr, pretrain_imagenet.py, whose defaults gave the paper's ImageNet
results): 8 views per image, all encoded in one pass (one BatchNorm batch); a projector of two
Linear-BN-ReLU layers and a Linear, no biases, 2048 -> 8192 -> 8192 -> 512; and a momentum encoder (the
EMA, tau 0.99 held constant, of encoder and projector) that embeds the same views, its centroids averaged
with the online ones (``momentum: false`` is the official CIFAR/STL variant). Evaluation uses the online
encoder, as the official linear probe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from selfsup.errors import SelfsupError
from selfsup.losses.capacity import mmcr_loss
from selfsup.methods.base import Method, StepOutput
from selfsup.nn.ema import ema_update, frozen_copy
from selfsup.nn.heads import mlp
from selfsup.nn.multicrop import num_global_crops
from selfsup.registry import BuildContext, register, register_view_preset
from selfsup.transforms.views import ViewConfig

# The official ImageNet views (mmcr/imagenet/data.py, Barlow Twins' augmentations, BYOL's asymmetric pair):
# views 0, 2, 4, ... blur 1.0 and no solarize, views 1, 3, 5, ... blur 0.1 and solarize 0.2; k = 8.
register_view_preset(
    "mmcr", ViewConfig(jitter=(0.4, 0.4, 0.2, 0.1), blur_p=(1.0, 0.1), solarize_p=(0.0, 0.2), num_global=8)
)


@dataclass
class MMCRConfig:
    proj_hidden: int = 8192  # official ImageNet projector [8192, 8192, 512] (CIFAR/STL: [512, 128], 2 layers)
    proj_dim: int = 512
    proj_layers: int = 3  # Linear-BN-ReLU x (proj_layers - 1), then Linear; no biases
    lambd: float = 0.0  # weight of the mean per-image nuclear norm (official default 0)
    momentum: bool = True  # momentum encoder, as the official ImageNet default (objective MMCR_Momentum)
    tau: float = 0.99  # its EMA rate, constant (the official MomentumUpdate has no schedule)


@register("mmcr", config=MMCRConfig, views="mmcr")
class MMCR(Method):
    """MMCR: maximise the nuclear norm of the matrix of per-image centroids of k views."""

    def __init__(self, encoder: nn.Module, cfg: MMCRConfig = MMCRConfig(), ctx: BuildContext = BuildContext()):
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        self.projector = mlp(cast(int, encoder.num_features), cfg.proj_hidden, cfg.proj_dim, cfg.proj_layers)
        # official: no bias
        self.projector[-1] = nn.Linear(cast(nn.Linear, self.projector[-1]).in_features, cfg.proj_dim, bias=False)
        self.target_encoder = frozen_copy(self.encoder) if cfg.momentum else None
        self.target_projector = frozen_copy(self.projector) if cfg.momentum else None

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.encoder(x))

    def training_step(self, batch) -> StepOutput:
        views = batch.views  # k views [N, C, H, W]
        k, n = len(views), views[0].shape[0]
        if num_global_crops(views) != k:
            raise SelfsupError("mmcr takes k views of one size (the official recipe): set views.num_local=0")
        x = torch.cat(views)  # [k N, C, H, W]: one pass, BatchNorm statistics over all views (official)
        z = self.projector(self.encoder(x)).view(k, n, -1).transpose(0, 1)  # [N, k, D]
        z_m = None
        if self.cfg.momentum:
            assert self.target_encoder is not None and self.target_projector is not None  # built when cfg.momentum
            with torch.no_grad():
                z_m = self.target_projector(self.target_encoder(x)).view(k, n, -1).transpose(0, 1)  # [N, k, D]
        loss, terms = mmcr_loss(z, z_m, self.cfg.lambd)
        return StepOutput(loss, {**terms, "views": float(k)})

    @torch.no_grad()
    def on_step_end(self, progress: float) -> None:
        if self.cfg.momentum:
            assert self.target_encoder is not None and self.target_projector is not None  # built when cfg.momentum
            ema_update(self.target_encoder, self.encoder, self.cfg.tau)
            ema_update(self.target_projector, self.projector, self.cfg.tau)
