"""W-MSE — Ermolov, Siarohin, Sangineto, Sebe. "Whitening for Self-Supervised Representation
Learning", ICML 2021.

Idea: the MSE between positives alone would collapse everything to one point; whitening the
embeddings first makes collapse impossible — a whitened batch has zero mean and identity
covariance, so it cannot sit in a point or a subspace — and no negatives are needed.
"Batch slicing" (sec. 3.1): the batch is cut at random into sub-batches of ``w_size`` rows
(more than the embedding dimension, so the covariance is full-rank); each view's sub-batch is
whitened with the inverse Cholesky factor of its own covariance; then positives are compared
by the MSE of their L2-normalised whitened vectors (2 - 2 cos), averaged over the whole batch.
``w_iter`` repeats the slicing with fresh random permutations and averages the losses, which
lowers the variance of the loss estimate.

Defaults follow the official CIFAR-10 setting (W-MSE 2: two views per image): a 2-layer head
1024-BN-ReLU -> 64-d embedding, w_size 128, w_iter 1, no shrinkage (eps 0); Adam, lr 3e-3,
weight decay 1e-6, batch 512. Views (official CIFAR code): crop 0.2-1, jitter 0.8 x
(0.4, 0.4, 0.4, 0.1), grayscale 0.1, flip, no blur — the "simclr" preset, with the rest set in
the recipes. The paper's W-MSE 4 (four views) needs a four-view preset this loop does not make.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from selfsup.losses.redundancy import wmse_loss
from selfsup.methods.base import Method, StepOutput
from selfsup.nn.heads import mlp
from selfsup.registry import BuildContext, register


@dataclass
class WMSEConfig:
    proj_hidden: int = 1024
    emb_dim: int = 64  # CIFAR (128 for STL-10 / Tiny ImageNet)
    w_size: int = 128  # sub-batch size; must exceed emb_dim for a full-rank covariance
    w_iter: int = 1  # whitening repeats with fresh sub-batches (4 for STL-10 / Tiny ImageNet)
    w_eps: float = 0.0  # shrinkage (1 - eps) Sigma + eps I of the covariance before Cholesky


# Shrinkage used when a sub-batch has no more rows than dimensions (a batch smaller than the
# paper ever uses, e.g. in smoke tests): its covariance is singular and cannot be whitened.
_SINGULAR_EPS = 0.1


@register("wmse", config=WMSEConfig, views="simclr")
class WMSE(Method):
    """W-MSE: MSE between positives after whitening the embeddings in sub-batches."""

    def __init__(self, encoder: nn.Module, cfg: WMSEConfig = WMSEConfig(), ctx: BuildContext = BuildContext()):
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        self.projector = mlp(cast(int, encoder.num_features), cfg.proj_hidden, cfg.emb_dim)
        # whitening subtracts each sub-batch's mean, so an output bias would get no gradient
        self.projector[-1] = nn.Linear(cfg.proj_hidden, cfg.emb_dim, bias=False)

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.encoder(x))  # before whitening (the whitened batch is always spread)

    def training_step(self, batch) -> StepOutput:
        x1, x2 = batch.views  # [N, C, H, W] each
        n = x1.shape[0]
        # encoder per view, head on both at once, as in the official code (its BN sees 2N rows)
        z = self.projector(torch.cat([self.encoder(x1), self.encoder(x2)]))  # [2N, d]
        c = self.cfg
        eps = c.w_eps
        rows = n // max(1, n // c.w_size)  # the smallest sub-batch wmse_loss will make
        if rows <= c.emb_dim:
            warnings.warn(
                f"W-MSE: sub-batches of {rows} rows cannot whiten {c.emb_dim}-d embeddings (the "
                f"covariance is singular); shrinking it by eps={_SINGULAR_EPS}. Use a batch and w_size "
                f"above method.emb_dim",
                stacklevel=2,
            )
            eps = max(eps, _SINGULAR_EPS)
        loss = wmse_loss(z[:n], z[n:], c.w_size, c.w_iter, eps)
        return StepOutput(loss, {})
