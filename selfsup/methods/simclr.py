"""SimCLR — Chen, Kornblith, Norouzi, Hinton. "A Simple Framework for Contrastive Learning of
Visual Representations", ICML 2020.

Idea: two strong augmentations of each image should map close together and away from the
other 2(N-1) views in the batch. h = f(x) is the representation kept; z = g(h) a small MLP
projection on which the NT-Xent loss acts, dropped after training.

Multi-crop (an option, as in SwAV's appendix, Caron et al. 2020): with ``views.num_local > 0`` the
extra small crops are extra positives. The loss is the mean of NT-Xent over the pairs
(global i, view j > i): global-global pairs and every local crop with every global crop (locals
are not paired with each other). With the classic two views that is the single pair (1, 2): SimCLR.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from selfsup.losses import infonce_bound, nt_xent
from selfsup.methods.base import Method, StepOutput
from selfsup.nn import mlp
from selfsup.nn.multicrop import encode_crops, num_global_crops
from selfsup.registry import BuildContext, register


@dataclass
class SimCLRConfig:
    temperature: float = 0.1  # ImageNet; the paper uses 0.5 on CIFAR-10 (small-data recipes do)
    proj_hidden: int | None = None  # None: the encoder's feature width, as in the paper
    proj_dim: int = 128
    proj_layers: int = 2
    decoupled: bool = False  # DCL (Yeh et al. 2022): the positive left out of NT-Xent's denominator


@register("simclr", config=SimCLRConfig, views="simclr")
class SimCLR(Method):
    """SimCLR: NT-Xent between two augmented views, through a projection head."""

    def __init__(self, encoder: nn.Module, cfg: SimCLRConfig = SimCLRConfig(), ctx: BuildContext = BuildContext()):
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        d = cast(int, encoder.num_features)
        self.projector = mlp(d, cfg.proj_hidden or d, cfg.proj_dim, cfg.proj_layers)

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.encoder(x))

    def training_step(self, batch) -> StepOutput:
        views = batch.views  # [N, C, H, W] each: 2 views (or G globals + smaller locals)
        n, g = views[0].shape[0], num_global_crops(views)
        h = encode_crops(self.encoder, views)  # one pass per crop size: [V*N, F] (two views: one pass)
        z = self.projector(h).view(len(views), n, -1)  # [V, N, D]
        pairs = [(i, j) for i in range(g) for j in range(i + 1, len(views))]  # two views: [(0, 1)]
        losses = [nt_xent(z[i], z[j], self.cfg.temperature, self.cfg.decoupled) for i, j in pairs]
        loss = sum(l for l, _ in losses) / len(pairs)
        if self.cfg.decoupled:  # DCL's loss is no InfoNCE: log N - L would not bound anything
            return StepOutput(loss, {})
        return StepOutput(loss, {"infonce_bound": infonce_bound(loss.detach(), losses[0][1])})
