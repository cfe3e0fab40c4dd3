"""TiCo — Zhu, Liu, Wang. "TiCo: Transformation Invariance and Covariance Contrast for Self-Supervised
Visual Representation Learning", arXiv 2206.10698, 2022.

Idea: a contrastive method whose negatives are a matrix. Instead of pushing an embedding away from a
queue of other embeddings (MoCo), it is pushed away from the running covariance of past embeddings,
C_t = beta C_{t-1} + (1 - beta) z^T z / N of unit embeddings, which summarises every image seen lately
in a D x D matrix (Algorithm 1):

    L = -1/N sum_i z1_i . z2_i  +  rho/N sum_i z1_i^T C_t z1_i,   beta 0.9, rho 20.

The first term makes the embedding invariant to the augmentation; the second penalises the directions
the embeddings already occupy, so they spread out (it is also the Barlow Twins idea with an EMA'd
covariance, as the paper shows). The second view is embedded by a momentum encoder, the EMA of the
online encoder and projector, as in BYOL (no predictor); C_t is a buffer, stored after the step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from selfsup.losses.moco import two_views
from selfsup.losses.redundancy import tico_loss
from selfsup.methods.base import Method, StepOutput
from selfsup.nn.ema import cosine_momentum, ema_update, frozen_copy
from selfsup.nn.heads import mlp
from selfsup.registry import BuildContext, register


@dataclass
class TiCoConfig:
    proj_hidden: int = 4096  # projector Linear-BN-ReLU-Linear, 2048 -> 4096 -> 256 on ResNet-50
    proj_dim: int = 256
    beta: float = 0.9  # EMA of the covariance
    rho: float = 20.0  # weight of the covariance-contrast term
    tau_base: float = 0.996  # momentum encoder's EMA, raised to 1 along a cosine (BYOL's schedule)


@register("tico", config=TiCoConfig, views="byol")
class TiCo(Method):
    """TiCo: invariance to the momentum encoder's view plus contrast against a running covariance."""

    covariance: torch.Tensor  # a buffer: C_{t-1} [D, D]

    def __init__(self, encoder: nn.Module, cfg: TiCoConfig = TiCoConfig(), ctx: BuildContext = BuildContext()):
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        self.projector = mlp(cast(int, encoder.num_features), cfg.proj_hidden, cfg.proj_dim)
        self.target_encoder = frozen_copy(self.encoder)
        self.target_projector = frozen_copy(self.projector)
        self.register_buffer("covariance", torch.zeros(cfg.proj_dim, cfg.proj_dim))  # C_{t-1}: [D, D], starts at 0
        self.momentum = cfg.tau_base
        self._pending: torch.Tensor | None = None  # C_t of this step, stored in on_step_end

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.encoder(x))

    def training_step(self, batch) -> StepOutput:
        x1, x2 = two_views(batch.views, self.name)  # [N, C, H, W] each
        z1 = self.projector(self.encoder(x1))  # online [N, D]
        with torch.no_grad():
            z2 = self.target_projector(self.target_encoder(x2))  # momentum encoder [N, D]
        loss, c = tico_loss(z1, z2, self.covariance, self.cfg.beta, self.cfg.rho)  # c: C_t [D, D]
        self._pending = c
        return StepOutput(loss, {"tau": self.momentum})

    @torch.no_grad()
    def on_step_end(self, progress: float) -> None:
        if self._pending is not None:  # C_{t-1} <- C_t for the next step
            self.covariance.copy_(self._pending)
            self._pending = None
        self.momentum = cosine_momentum(self.cfg.tau_base, progress)
        ema_update(self.target_encoder, self.encoder, self.momentum)
        ema_update(self.target_projector, self.projector, self.momentum)
