"""MoCo v3 — Chen, Xie, He. "An Empirical Study of Training Self-Supervised Vision
Transformers", ICCV 2021.

Idea: MoCo without the queue. With large batches the keys of the current batch are negatives
enough, so queries q = g(h(f(x))) (encoder, projector, predictor) contrast against the momentum
encoder's keys k = h_m(f_m(x)) of the same (gathered) batch. The loss is symmetrised over the two
views, ctr(q1, k2) + ctr(q2, k1), each ctr an InfoNCE scaled by 2 tau (Alg. 1). The predictor sits
on the query side only; the momentum m rises from 0.99 to 1 along a cosine. For ViT the paper
freezes the random patch projection, which removes the instability (loss spikes) it studies.

Temperature: the official code's default for ResNet is tau 1.0 (main_moco.py --moco-t default
1.0, and CONFIG.md's ResNet-50 commands do not change it); the ViT commands pass --moco-t=.2.
Selfsup's backbones are ResNets and convnets, so the default here is 1.0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from selfsup.errors import SelfsupError
from selfsup.losses import infonce_bound
from selfsup.losses.moco import mocov3_loss, two_views
from selfsup.methods.base import Method, StepOutput
from selfsup.nn.ema import cosine_momentum, ema_update, frozen_copy
from selfsup.nn.heads import mlp
from selfsup.registry import BuildContext, register


@dataclass
class MoCoV3Config:
    temperature: float = 1.0  # ResNet (official default); the paper's ViT runs use 0.2
    proj_hidden: int = 4096
    proj_dim: int = 256
    proj_layers: int = 3  # the paper's 3-layer projector (the official ResNet-50 code uses 2)
    pred_hidden: int = 4096  # 2-layer predictor, 256 -> 4096 -> 256
    momentum_base: float = 0.99  # m, raised to 1 along a cosine of training progress
    freeze_patch_embed: bool = False  # ViT only: the paper's frozen "random patch projection"


_NO_PATCH_EMBED = (
    "method.freeze_patch_embed=true freezes the random patch projection of a ViT encoder, but this "
    "encoder ({kind}) has no `patch_embed` submodule. Use a ViT backbone, or set "
    "method.freeze_patch_embed=false (the trick is for ViTs; ResNets need no frozen stem)."
)


@register("mocov3", config=MoCoV3Config, views="byol")
class MoCoV3(Method):
    """MoCo v3: symmetric in-batch contrast of predicted queries against momentum keys."""

    def __init__(self, encoder: nn.Module, cfg: MoCoV3Config = MoCoV3Config(), ctx: BuildContext = BuildContext()):
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        if cfg.freeze_patch_embed:
            patch_embed = getattr(encoder, "patch_embed", None)
            if not isinstance(patch_embed, nn.Module):
                raise SelfsupError(_NO_PATCH_EMBED.format(kind=type(encoder).__name__))
            # fixed at its random initialisation: no gradient, so no optimiser (nor weight decay) touches it
            for p in patch_embed.parameters():
                p.requires_grad_(False)
        # every layer with BN; the projector ends in an affine-free BN (SimCLR v2's design, official code)
        self.projector = mlp(
            cast(int, encoder.num_features), cfg.proj_hidden, cfg.proj_dim, cfg.proj_layers, last_bn=True
        )
        self.predictor = mlp(cfg.proj_dim, cfg.pred_hidden, cfg.proj_dim, 2)
        self.momentum_encoder = frozen_copy(self.encoder)
        self.momentum_projector = frozen_copy(self.projector)
        self.momentum = cfg.momentum_base

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.encoder(x))

    def training_step(self, batch) -> StepOutput:
        x1, x2 = two_views(batch.views, self.name)  # [N, C, H, W] each
        # each view its own forward (and BN batch), as the official code
        q1 = self.predictor(self.projector(self.encoder(x1)))  # [N, D]
        q2 = self.predictor(self.projector(self.encoder(x2)))
        with torch.no_grad():
            k1 = self.momentum_projector(self.momentum_encoder(x1))  # [N, D], no gradient
            k2 = self.momentum_projector(self.momentum_encoder(x2))
        loss, ce, candidates = mocov3_loss(q1, q2, k1, k2, self.cfg.temperature)
        return StepOutput(loss, {"infonce_bound": infonce_bound(ce, candidates), "momentum": self.momentum})

    def on_step_end(self, progress: float) -> None:
        # m = 1 - (1 - m0)(cos(pi p) + 1)/2: a function of progress, so a resumed run needs no state
        self.momentum = cosine_momentum(self.cfg.momentum_base, progress)
        ema_update(self.momentum_encoder, self.encoder, self.momentum)
        ema_update(self.momentum_projector, self.projector, self.momentum)
