"""SimCLR — Chen, Kornblith, Norouzi, Hinton. "A Simple Framework for Contrastive Learning of
Visual Representations", ICML 2020.

Idea: two strong augmentations of each image should map close together and away from the
other 2(N-1) views in the batch. h = f(x) is the representation kept; z = g(h) a small MLP
projection on which the NT-Xent loss acts, dropped after training.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from selfsup.losses import infonce_bound, nt_xent
from selfsup.methods.base import Method, StepOutput
from selfsup.nn import mlp
from selfsup.registry import register


@dataclass
class SimCLRConfig:
    temperature: float = 0.1  # ImageNet; the paper uses 0.5 on CIFAR-10 (small-data recipes do)
    proj_hidden: int | None = None  # None: the encoder's feature width, as in the paper
    proj_dim: int = 128
    proj_layers: int = 2


@register("simclr", config=SimCLRConfig, views="simclr")
class SimCLR(Method):
    """SimCLR: NT-Xent between two augmented views, through a projection head."""

    def __init__(self, encoder: nn.Module, cfg: SimCLRConfig = SimCLRConfig()):
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        d = encoder.num_features
        self.projector = mlp(d, cfg.proj_hidden or d, cfg.proj_dim, cfg.proj_layers)

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.encoder(x))

    def training_step(self, batch) -> StepOutput:
        x1, x2 = batch.views  # [N, C, H, W] each
        n = x1.shape[0]
        h = self.encoder(torch.cat([x1, x2]))  # one pass over 2N views: [2N, F]
        z = self.projector(h)  # [2N, D]
        loss, candidates = nt_xent(z[:n], z[n:], self.cfg.temperature)
        return StepOutput(loss, {"infonce_bound": infonce_bound(loss.detach(), candidates)})
