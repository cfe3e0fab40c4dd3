"""InvaSpread — Ye, Zhang, Yuen, Chang. "Unsupervised Embedding Learning via Invariant and
Spreading Instance Feature", CVPR 2019.

Idea: instance discrimination without a memory bank. One encoder, trained end to end, maps two
augmentations of each image to 128-d unit vectors; the features of the batch itself serve as the
softmax weights. An augmented sample should be recognised as its own instance (invariance), and
no other instance should claim it (spreading): L = -sum_i log P(i|x^_i) - sum_i sum_{j!=i} log(1 - P(i|x_j)),
over the 2N views of the batch with 2(N-1) negatives per anchor. Being fresh every step,
the "weights" never go stale the way a memory bank's do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.losses.contrastive import infonce_bound, nt_xent
from selfsup.losses.instance import invariant_spreading
from selfsup.methods.base import Method, StepOutput
from selfsup.registry import BuildContext, register


@dataclass
class InvaSpreadConfig:
    dim: int = 128  # embedding size (a linear layer after the encoder, as in the official code)
    temperature: float = 0.1
    detach_weights: bool = True  # the official code stops the gradient through the softmax-weight side


@register("invaspread", config=InvaSpreadConfig, views="mocov1")
class InvaSpread(Method):
    """InvaSpread: in-batch instance softmax over 2N views, invariance + spreading terms, no bank."""

    def __init__(
        self, encoder: nn.Module, cfg: InvaSpreadConfig = InvaSpreadConfig(), ctx: BuildContext = BuildContext()
    ):
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        self.head = nn.Linear(cast(int, encoder.num_features), cfg.dim)

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.encoder(x)).float(), dim=1)

    def training_step(self, batch) -> StepOutput:
        x, x_hat = batch.views  # an image's two augmentations, [N, C, H, W] each
        n = x.shape[0]
        f = self.embedding(torch.cat([x, x_hat]))  # f_i and f^_i in one pass: [2N, D]
        loss, candidates = invariant_spreading(f[:n], f[n:], self.cfg.temperature, self.cfg.detach_weights)
        # The invariance term alone, -mean_a log P(pos(a)|a) over the same logits, is an InfoNCE loss
        # (NT-Xent exactly); the MI bound is logged from it, the spreading term apart.
        with torch.no_grad():
            ce, _ = nt_xent(f[:n], f[n:], self.cfg.temperature)
        return StepOutput(
            loss, {"infonce_bound": infonce_bound(ce, candidates), "invariance": ce, "spreading": loss.detach() - ce}
        )
