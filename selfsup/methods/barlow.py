"""Barlow Twins — Zbontar, Jing, Misra, LeCun, Deny. "Barlow Twins: Self-Supervised Learning via
Redundancy Reduction", ICML 2021.

Idea (Barlow's redundancy-reduction principle): the cross-correlation matrix C between the
batch-normalised embeddings of two views should be the identity — diagonal 1 makes the
embedding invariant to the augmentation, off-diagonal 0 makes its dimensions carry
non-redundant information, which also rules out collapse. No negatives, no predictor, no
stop-gradient, no momentum encoder. Loss (eq. 1): sum_i (1 - C_ii)^2 + lambda sum_{i!=j} C_ij^2.

Projector (sec. 2 "Implementation details"): 3 linear layers of 8192 units, BN + ReLU after
the first two; the output is normalised over the batch inside the loss. The paper finds wider
projectors keep helping (fig. 4); the default here is 2048 (see the config). Optimiser: LARS, batch
2048, lr 0.2 for weights and 0.0048 for biases and BN parameters, weight decay 1.5e-6,
10-epoch warm-up, cosine. Distributed: C is summed over processes (the official all_reduce of
C), with the batch statistics of the whole batch (see losses.redundancy.cross_correlation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from selfsup.losses.redundancy import barlow_twins_loss
from selfsup.methods.base import Method, StepOutput
from selfsup.nn.heads import mlp
from selfsup.registry import BuildContext, register


@dataclass
class BarlowTwinsConfig:
    # The paper's projector is 8192-8192-8192 (134M parameters: seconds just to initialise and
    # ~3 GB to train on a CPU). The default is scaled to 2048 for CPU use; set both to 8192 for
    # the paper's setting (the paper finds wider keeps helping, so expect a few points from it).
    proj_hidden: int = 2048
    proj_dim: int = 2048
    lambd: float = 5e-3  # weight of the redundancy-reduction term (sec. 2, tuned in fig. 5 / table 7)
    bn_eps: float = 1e-5  # eps of the batch standardisation (the official code's BatchNorm1d default)


@register("barlow", config=BarlowTwinsConfig, views="byol")
class BarlowTwins(Method):
    """Barlow Twins: the cross-correlation of the two views' embeddings is pushed to the identity."""

    def __init__(
        self, encoder: nn.Module, cfg: BarlowTwinsConfig = BarlowTwinsConfig(), ctx: BuildContext = BuildContext()
    ):
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        self.projector = mlp(cast(int, encoder.num_features), cfg.proj_hidden, cfg.proj_dim, num_layers=3)
        # the loss standardises each output dimension over the batch, which removes any bias:
        # the last layer has none (as in the official code), so no parameter sits without a gradient
        self.projector[-1] = nn.Linear(cfg.proj_hidden, cfg.proj_dim, bias=False)

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.encoder(x))

    def training_step(self, batch) -> StepOutput:
        x1, x2 = batch.views  # [N, C, H, W] each
        # one pass per view, as the official code: each view's BatchNorm statistics are its own
        z1, z2 = self.projector(self.encoder(x1)), self.projector(self.encoder(x2))  # [N, D] each
        loss, terms = barlow_twins_loss(z1, z2, self.cfg.lambd, self.cfg.bn_eps)
        return StepOutput(loss, {"barlow/on_diag": terms["on_diag"], "barlow/off_diag": terms["off_diag"]})
