"""BYOL — Grill et al. "Bootstrap Your Own Latent: A New Approach to Self-Supervised
Learning", NeurIPS 2020.

Idea: no negatives. An online network (encoder, projector, predictor q) predicts the
projection that a slowly moving target network — an exponential moving average of the
online encoder and projector — gives for another view. The predictor and the EMA keep it
from collapsing. Loss: normalised MSE 2 - 2 cos(q(z1), z'2), symmetrised over the views.

Multi-crop (an option): with ``views.num_local > 0`` the target network sees only the global
crops, and every other crop (the other globals and all locals) predicts each global's target.
The loss is 2 x the mean over those (target i, online j != i) pairs, so that the classic two
views give exactly BYOL's symmetrised sum of two terms.

NN-BYOL (an option, ``nn_support > 0``; Dwibedi et al. 2021, NNCLR, which also applies its
nearest-neighbour idea to BYOL; lightly's NNBYOL): each target projection z' is
replaced, before the loss, by its nearest neighbour (cosine) in a support set Q, a FIFO queue of
past target projections (``SupportSet``, NNCLR's). The loss becomes 2 - 2 cos(q(z1), NN(z'2, Q)).
Q receives this step's target projections of the first view in ``on_step_end``, and is looked up
as it was before the step (empty on the first step: each target is then its own neighbour).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from selfsup.losses import normalized_mse
from selfsup.methods.base import Method, StepOutput
from selfsup.nn import cosine_momentum, ema_update, frozen_copy, mlp
from selfsup.nn.multicrop import encode_crops, num_global_crops
from selfsup.nn.queue import SupportSet
from selfsup.registry import BuildContext, register


@dataclass
class BYOLConfig:
    proj_hidden: int = 4096
    proj_dim: int = 256
    pred_hidden: int = 4096
    tau_base: float = 0.996  # EMA momentum, raised to 1 along a cosine over training
    head_bn: bool = True  # BatchNorm in projector/predictor; the paper's ablation turns it off
    head_gn_ws: bool = False  # with head_bn false: GroupNorm + weight standardisation (Richemond et al. 2020)
    nn_support: int = 0  # NN-BYOL: size of the support set whose nearest neighbour replaces each target; 0 = BYOL


@register("byol", config=BYOLConfig, views="byol")
class BYOL(Method):
    """BYOL: online network predicts an EMA target's projection of the other view."""

    def __init__(self, encoder: nn.Module, cfg: BYOLConfig = BYOLConfig(), ctx: BuildContext = BuildContext()):
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        self.projector = mlp(
            cast(int, encoder.num_features), cfg.proj_hidden, cfg.proj_dim, bn=cfg.head_bn, gn_ws=cfg.head_gn_ws
        )
        self.predictor = mlp(cfg.proj_dim, cfg.pred_hidden, cfg.proj_dim, bn=cfg.head_bn, gn_ws=cfg.head_gn_ws)
        self.target_encoder = frozen_copy(self.encoder)
        self.target_projector = frozen_copy(self.projector)
        self.momentum = cfg.tau_base
        # NN-BYOL's support set Q of past target projections (buffers, checkpointed); None = plain BYOL
        self.support = SupportSet(cfg.nn_support, cfg.proj_dim) if cfg.nn_support > 0 else None

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.encoder(x))

    def training_step(self, batch) -> StepOutput:
        views = batch.views  # 2 x [N, C, H, W] (or G globals + smaller locals)
        n, g = views[0].shape[0], num_global_crops(views)
        p = self.predictor(self.projector(encode_crops(self.encoder, views)))  # online predictions [V*N, D]
        with torch.no_grad():
            z_t = self.target_projector(self.target_encoder(torch.cat(views[:g])))  # target projections [G*N, D]
            if self.support is not None:  # NN-BYOL: each target -> its nearest neighbour in Q (before this step)
                self.support.stage(z_t[:n])  # the first view's targets, enqueued in on_step_end
                z_t, cos = self.support.neighbours(z_t)[0]  # [G*N, D] unit, no gradient; [G*N]
        # symmetric: view j predicts the target of every global view i != j (two views: 1 -> 2 and 2 -> 1)
        pairs = [(i, j) for i in range(g) for j in range(len(views)) if j != i]
        terms = [normalized_mse(p[j * n : (j + 1) * n], z_t[i * n : (i + 1) * n]) for i, j in pairs]
        loss = cast(torch.Tensor, sum(terms)) * (2 / len(terms))  # g >= 1 targets, 2 views: never sum's 0
        logs: dict[str, torch.Tensor | float] = {"tau": self.momentum}
        if self.support is not None:  # how close the neighbours are to the targets they replace (1.0 = itself)
            logs["nn_cosine"] = cos.mean()
        return StepOutput(loss, logs)

    def on_step_end(self, progress: float) -> None:
        # the momentum is a function of progress alone, so a resumed run needs no extra state
        self.momentum = cosine_momentum(self.cfg.tau_base, progress)
        ema_update(self.target_encoder, self.encoder, self.momentum)
        ema_update(self.target_projector, self.projector, self.momentum)
        if self.support is not None:
            self.support.flush()  # Q <- Q + this step's first-view targets
