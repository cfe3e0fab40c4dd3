"""Deep InfoMax — Hjelm, Fedorov, Lavoie-Marchildon, Grewal, Bachman, Trischler, Bengio.
"Learning deep representations by mutual information estimation and maximization", ICLR 2019.

Idea: a representation is good when it shares much information with every local part of its
input. The encoder's local feature map M = C(x) ([B, C, h, w], each position sees a patch) and
its global vector y = E(x) (the pooled features evaluation uses) are scored by a critic
T(m, y) = phi_l(m) . phi_g(y) — a 1x1-conv network on each local position and an MLP on the
global, then a dot product (the paper's "encode-and-dot-product" architecture). DIM(L) maximises
the average over positions of a lower bound on I(m_i; y): the Jensen-Shannon estimator (default,
the paper's main choice) or InfoNCE, with the other images' locals as negatives.

Left out: the global-DIM term (alpha = 0, as in DIM(L)) and the prior-matching adversarial term
(gamma); the paper uses gamma = 0.1 to shape the marginal of y, not for the local MI.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from selfsup.losses.contrastive import infonce_bound
from selfsup.losses.mutual_info import dim_infonce, dim_jsd
from selfsup.methods.base import Method, StepOutput
from selfsup.registry import register


@dataclass
class DIMConfig:
    estimator: str = "jsd"  # "jsd" | "infonce" (Hjelm et al. 2019, eq. 4 and 5)
    nce_negatives: str = "locals"  # infonce: "locals" (paper, eq. 5) swaps the local; "globals" swaps the global
    embed_dim: int = 2048  # units of the critic's embedding networks (the official code's mi_units)


class CriticEmbedding(nn.Module):
    """One side of the encode-and-dot-product critic (the official code's MI1x1ConvNet): a
    2-layer ReLU network plus a linear shortcut, then LayerNorm. Applied to every local position
    it is a 1x1-conv network (a 1x1 convolution is a Linear at every position); applied to the
    global vector it is an MLP. [..., in_dim] -> [..., out_dim]."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, out_dim, bias=False)
        self.bn = nn.BatchNorm1d(out_dim)
        self.fc2 = nn.Linear(out_dim, out_dim)
        self.shortcut = nn.Linear(in_dim, out_dim, bias=False)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1])  # positions of all images share the BatchNorm statistics
        h = self.fc2(torch.relu(self.bn(self.fc1(x))))
        return self.norm(h + self.shortcut(x)).view(*shape[:-1], -1)


@register("dim", config=DIMConfig, views="simclr")
class DIM(Method):
    """Deep InfoMax (local): maximise MI between the global vector and every local feature."""

    def __init__(self, encoder: nn.Module, cfg: DIMConfig = DIMConfig()):
        super().__init__()
        if cfg.estimator not in ("jsd", "infonce"):
            raise ValueError(f"dim estimator must be 'jsd' or 'infonce', got {cfg.estimator!r}")
        if not hasattr(encoder, "forward_maps"):
            raise TypeError(f"dim needs local features: {type(encoder).__name__} has no forward_maps(x)")
        self.cfg = cfg
        self.encoder = encoder
        c = encoder.num_features  # forward_maps has as many channels as the pooled output
        self.local_embed = CriticEmbedding(c, cfg.embed_dim)  # phi_l, 1x1 convs on M
        self.global_embed = CriticEmbedding(c, cfg.embed_dim)  # phi_g, MLP on y

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        return self.global_embed(self.encoder(x))

    def training_step(self, batch) -> StepOutput:
        x = batch.views[0]  # [B, C, H, W]; one view
        m = self.encoder.forward_maps(x)  # local features M: [B, C, h, w]
        # y = E(x): every backbone's output is the mean of forward_maps over positions, so pool
        # here rather than run the encoder twice
        y = m.mean((2, 3))  # [B, C]
        local = self.local_embed(m.flatten(2).transpose(1, 2))  # [B, h*w, D]
        glob = self.global_embed(y)  # [B, D]
        if self.cfg.estimator == "jsd":
            loss, mi = dim_jsd(local, glob)
            return StepOutput(loss, {"jsd_mi": mi})
        loss, candidates = dim_infonce(local, glob, self.cfg.nce_negatives)
        return StepOutput(loss, {"infonce_bound": infonce_bound(loss.detach(), candidates)})
