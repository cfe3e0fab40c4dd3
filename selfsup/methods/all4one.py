"""All4One — Estepa, Rodríguez, Igual, Radeva. "All4One: Symbiotic Neighbour Contrastive Learning via
Self-Attention and Redundancy Reduction", ICCV 2023.

Idea: NNCLR's single nearest neighbour is a noisy positive. All4One keeps NNCLR's term and adds two:
a *centroid* of several neighbours, built by self-attention over the set, contrasted with a centroid
built from the sample itself and its neighbours; and a *feature* term that decorrelates the embedding's
dimensions (redundancy reduction). With z = h(f(x)) the online projection, p = g(z) and p' = g'(z) two
predictors, z^m the momentum (EMA) projection, unit length, and NN_1..k(z^m, Q) the k = 5 nearest
neighbours of z^m in a support queue Q of past z^m of view 1:

    L_NN   = 1/2 [ InfoNCE_tau(NN_1(z^m_1), p_2) + InfoNCE_tau(NN_1(z^m_2), p_1) ]           (tau 0.2)
    c_v    = T(PE + [NN_1, ..., NN_5](z^m_v))[0]         (the transformer's first output token)
    c'_v   = T(PE + [p'_v, NN_1, ..., NN_4](z^m_v))[0]   (the sample shifted in, the 5th neighbour out)
    L_cen  = 1/2 [ InfoNCE_0.1(c_1, c'_2) + InfoNCE_0.1(c_2, c'_1) ]
    C_v    = (z^m_v column-normalised)^T (z_u column-normalised), u != v     [D, D]
    L_feat = 10 [ 1/2 sqrt(mean_v mean_i (C_v,ii - 1)^2) + 1/2 sqrt(mean_v mean_{i!=j} C_v,ij^2) ]
    L      = 1/2 (L_cen + L_NN + L_feat)

InfoNCE_tau(a, b) = -mean_i log softmax_j(a_i . b_j / tau)[i] over unit vectors, one direction (the
authors' code in solo-learn, solo/methods/all4one.py, which also fixes: T = 3 post-norm transformer
layers, 8 heads, feed-forward 2d, dropout 0.1, trained at 0.1 of the base rate; PE the sinusoidal
encoding of ``positional_encodings``' PositionalEncodingPermute1D(5), sin and cos interleaved; a
3-layer projector with BN after every layer, 2-layer predictors of hidden 4096; EMA tau 0.99 -> 1 on a
cosine; Q of 98,304). Neighbours carry no gradient: the encoder learns the centroid term through p'.

Departure: Q starts empty (solo-learn: random unit vectors). While it holds fewer than k entries the
neighbours are looked up in Q plus this step's momentum projections (each sample's nearest is itself),
so the first steps contrast data, not noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from selfsup import dist
from selfsup.losses.moco import two_views
from selfsup.methods.base import Method, StepOutput
from selfsup.nn import cosine_momentum, ema_update, frozen_copy, mlp
from selfsup.nn.queue import SupportSet
from selfsup.registry import BuildContext, register


@dataclass
class All4OneConfig:
    temperature: float = 0.2  # tau of L_NN (the centroid term's InfoNCE keeps 0.1, as the authors' code)
    centroid_temperature: float = 0.1
    proj_hidden: int = 2048  # projector: 3 layers, 2048-2048-256, BN after each
    proj_dim: int = 256  # d: the embedding Q stores and the transformer's width
    pred_hidden: int = 4096  # both predictors: 256 -> 4096 -> 256
    queue_size: int = 98304  # Q
    neighbours: int = 5  # k: the set the transformer attends over
    heads: int = 8
    layers: int = 3
    dropout: float = 0.1
    transformer_lr_scale: float = 0.1  # the transformer's rate relative to the run's (0.1 with a base of 1.0)
    tau_base: float = 0.99  # EMA momentum, raised to 1 along a cosine over training
    weights: tuple[float, float, float] = (0.5, 0.5, 0.5)  # (centroid, neighbour, feature)
    feature_scale: float = 10.0


def positional_encoding(slots: int, dim: int) -> torch.Tensor:
    """[slots, dim] added to a set of ``slots`` embeddings of width ``dim``: the authors apply
    PositionalEncodingPermute1D(slots) to [B, slots, dim], i.e. a sinusoid over the ``dim`` positions with
    ``slots`` channels (sin, cos interleaved per frequency), transposed. Written out here (the package is
    one small function) so that selfsup needs no dependency for it."""
    channels = 2 * math.ceil(slots / 2)
    inv_freq = 1.0 / 10000 ** (torch.arange(0, channels, 2).float() / channels)  # [channels / 2]
    angles = torch.arange(dim).float()[:, None] * inv_freq[None, :]  # [dim, channels / 2]
    emb = torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1)  # [dim, channels]: sin0, cos0, sin1, ...
    return emb[:, :slots].T.contiguous()  # [slots, dim]


def one_way_infonce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """-mean_i log softmax_j(a_i . b_j / tau)[i], a and b L2-normalised; b gathered from every process
    (with gradient), a's rows are this process's. a, b: [N, D]."""
    a, b = F.normalize(a.float(), dim=1), F.normalize(b.float(), dim=1)
    labels = torch.arange(a.shape[0], device=a.device) + a.shape[0] * dist.rank()
    return F.cross_entropy(a @ dist.gather_with_grad(b).T / temperature, labels)


def off_diagonal(c: torch.Tensor) -> torch.Tensor:
    n = c.shape[0]
    return c.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


@register("all4one", config=All4OneConfig, views="byol")
class All4One(Method):
    """All4One: NNCLR's neighbour, a self-attention centroid of 5 neighbours and a feature decorrelation."""

    pos: torch.Tensor  # [k, d] positional encodings (a buffer)

    def __init__(self, encoder: nn.Module, cfg: All4OneConfig = All4OneConfig(), ctx: BuildContext = BuildContext()):
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        d = cfg.proj_dim
        self.projector = mlp(cast(int, encoder.num_features), cfg.proj_hidden, d, num_layers=3, last_bn=True)
        self.predictor = mlp(d, cfg.pred_hidden, d, num_layers=2)  # g: L_NN
        self.predictor2 = mlp(d, cfg.pred_hidden, d, num_layers=2)  # g': the sample's token of the centroid
        layer = nn.TransformerEncoderLayer(d, cfg.heads, dim_feedforward=2 * d, dropout=cfg.dropout, batch_first=True)
        self.transformer = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.register_buffer("pos", positional_encoding(cfg.neighbours, d), persistent=False)  # [k, d]
        self.momentum_encoder = frozen_copy(encoder)
        self.momentum_projector = frozen_copy(self.projector)
        self.momentum = cfg.tau_base
        self.support = SupportSet(cfg.queue_size, d)  # Q of unit z^m_1 (buffers, checkpointed)

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.encoder(x))

    @torch.no_grad()
    def neighbours(self, zm: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        """[N, k, D]: the k nearest (cosine, most similar first) of each unit row of ``zm`` in Q as it was
        before this step; while Q holds fewer than k, in Q plus ``batch`` (this step's unit z^m)."""
        support = self.support.items()  # [M, D]
        if len(support) < self.cfg.neighbours:
            support = torch.cat([support, batch])
        idx = (zm @ support.T).topk(self.cfg.neighbours, dim=1).indices  # [N, k]
        return support[idx]

    def centroid(self, tokens: torch.Tensor) -> torch.Tensor:
        """[N, k, D] -> [N, D]: the transformer's output at the first slot."""
        return self.transformer(tokens + self.pos)[:, 0]

    def training_step(self, batch) -> StepOutput:
        x1, x2 = two_views(batch.views, self.name)  # [N, C, H, W] each
        n, cfg = x1.shape[0], self.cfg
        # each view through the networks on its own, as the authors' code (BatchNorm statistics per view)
        z1, z2 = self.projector(self.encoder(x1)), self.projector(self.encoder(x2))  # [N, D] each
        p1, p2 = self.predictor(z1), self.predictor(z2)
        p_ = torch.cat([self.predictor2(z1), self.predictor2(z2)])  # [2N, D]
        with torch.no_grad():
            zm1, zm2 = (F.normalize(self.momentum_projector(self.momentum_encoder(x)).float(), dim=1) for x in (x1, x2))
            nn_ = self.neighbours(torch.cat([zm1, zm2]), zm1)  # [2N, k, D] unit, no gradient
        # L_NN: each view's first neighbour picks the other view's prediction among the batch's
        loss_nn = (
            one_way_infonce(nn_[:n, 0], p2, cfg.temperature) + one_way_infonce(nn_[n:, 0], p1, cfg.temperature)
        ) / 2
        # L_cen: the neighbours' centroid against the centroid with the sample shifted in (the k-th out)
        shifted = torch.cat([p_[:, None].float(), nn_[:, :-1]], dim=1)  # [2N, k, D]
        c, c_ = self.centroid(nn_), self.centroid(shifted)  # [2N, D] each
        loss_cen = (
            one_way_infonce(c[:n], c_[n:], cfg.centroid_temperature)
            + one_way_infonce(c[n:], c_[:n], cfg.centroid_temperature)
        ) / 2
        # L_feat: dimensions of the momentum view against the other view's online dimensions, over the batch
        a1, a2 = F.normalize(zm1, dim=0), F.normalize(zm2, dim=0)  # [N, D], unit columns
        b1, b2 = F.normalize(z1.float(), dim=0), F.normalize(z2.float(), dim=0)
        cc = (a1.T @ b2, a2.T @ b1)  # [D, D] each
        on = ((cc[0].diagonal().sub(1).pow(2).mean() + cc[1].diagonal().sub(1).pow(2).mean()) / 2).sqrt()
        off = ((off_diagonal(cc[0]).pow(2).mean() + off_diagonal(cc[1]).pow(2).mean()) / 2).sqrt()
        loss_feat = cfg.feature_scale * (on + off) / 2
        w = cfg.weights
        loss = w[0] * loss_cen + w[1] * loss_nn + w[2] * loss_feat
        self.support.stage(zm1)  # Q <- z^m of view 1, in on_step_end
        return StepOutput(
            loss,
            {
                "centroid": loss_cen.detach(),
                "neighbour": loss_nn.detach(),
                "feature": loss_feat.detach(),
                "tau": self.momentum,
            },
        )

    def param_groups(self) -> list[dict]:
        """Method's groups (no decay on norms and biases), the transformer's at ``transformer_lr_scale``."""
        mine = {id(p) for p in self.transformer.parameters()}
        groups = []
        for g in super().param_groups():
            own = [p for p in g["params"] if id(p) in mine]
            rest = [p for p in g["params"] if id(p) not in mine]
            opts = {k: v for k, v in g.items() if k != "params"}
            groups += [{**opts, "params": rest}, {**opts, "params": own, "lr_scale": self.cfg.transformer_lr_scale}]
        return [g for g in groups if g["params"]]

    def on_step_end(self, progress: float) -> None:
        self.momentum = cosine_momentum(self.cfg.tau_base, progress)
        ema_update(self.momentum_encoder, self.encoder, self.momentum)
        ema_update(self.momentum_projector, self.projector, self.momentum)
        self.support.flush()
