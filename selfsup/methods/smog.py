"""SMoG — Pang, Zhang, Li, Wang. "Unsupervised Visual Representation Learning by Synchronous Momentum
Grouping", ECCV 2022.

Idea: contrast groups, not instances, and group as you learn. K group features g_k live beside the
network. Each step, the momentum (EMA) network's embedding z'_i of one view is assigned to its nearest
group a_i = argmax_k cos(z'_i, g_k), and the online network's prediction p of the OTHER view must pick
that group among all K:

    L = -1/N sum_i log( exp(cos(p_i, g_{a_i}) / tau) / sum_k exp(cos(p_i, g_k) / tau) ),  tau = 0.1,

summed over both view orders. The groups move synchronously with training (momentum grouping, sec. 3.2):
every online embedding z_i joins its nearest group and each group takes a momentum step towards its
members' mean, g_k <- beta g_k + (1 - beta) mean z_i (beta 0.99), within the same step — where
DeepCluster re-clusters once an epoch. Every ``reset_every`` steps (300, the paper's table 7b) the groups
are re-initialised by k-means over a memory of recent online embeddings and the momentum network is reset
to the online one. Heads (sec. 4.1): projector Linear-BN-ReLU-Linear-BN, predictor Linear-BN-ReLU-Linear.

No official code was released; lightly's (SMoGPrototypes and its examples) is the public reference and
this file follows it in: the groups are moved by the online projections and assigned to by the momentum
ones, the loss uses the groups after this step's move, a constant momentum of 0.99. Deviations: both
view orders every step (lightly alternates them step by step; this is BYOL's symmetrised sum), groups
start as random unit vectors (lightly: uniform in [0, 1)^D, all in one orthant), the embeddings that move
and cluster the groups are L2-normalised (the groups are compared by cosine), and the k-means is spherical
(selfsup.nn.kmeans.spherical_kmeans; lightly runs scikit-learn's Euclidean k-means, then normalises).
State — the groups, the memory, the momentum network, the step count — changes only in ``on_step_end``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from selfsup import dist
from selfsup.errors import SelfsupError
from selfsup.losses.clustering import prototype_cross_entropy
from selfsup.losses.moco import two_views
from selfsup.methods.base import Method, StepOutput
from selfsup.nn import SupportSet, ema_update, frozen_copy, mlp
from selfsup.nn.kmeans import momentum_grouping, spherical_kmeans
from selfsup.nn.multicrop import encode_crops
from selfsup.registry import BuildContext, register


@dataclass
class SMoGConfig:
    proj_hidden: int = 2048
    proj_dim: int = 128
    pred_hidden: int = 2048
    num_groups: int = 3000  # K, the paper's ImageNet value
    temperature: float = 0.1  # tau
    beta: float = 0.99  # the groups' momentum
    momentum: float = 0.99  # the momentum network's EMA (constant: it is reset every reset_every steps)
    reset_every: int = 300  # steps between k-means re-initialisations of the groups (table 7b); 0: never
    memory_size: int = 65536  # recent online embeddings the k-means clusters (lightly: reset_every x batch)
    kmeans_iters: int = 10


@register("smog", config=SMoGConfig, views="byol")
class SMoG(Method):
    """SMoG: predict the group of the other view's momentum embedding; the groups move every step."""

    # buffers: the group features [K, D], the steps done
    groups: torch.Tensor
    steps: torch.Tensor

    def __init__(self, encoder: nn.Module, cfg: SMoGConfig = SMoGConfig(), ctx: BuildContext = BuildContext()):
        super().__init__()
        if cfg.num_groups < 2 or cfg.memory_size < cfg.num_groups:
            raise SelfsupError(
                f"smog: method.num_groups={cfg.num_groups} needs >= 2 groups and method.memory_size "
                f"({cfg.memory_size}) at least as large, to cluster them"
            )
        self.cfg = cfg
        self.encoder = encoder
        self.projector = mlp(cast(int, encoder.num_features), cfg.proj_hidden, cfg.proj_dim, last_bn=True)
        self.predictor = mlp(cfg.proj_dim, cfg.pred_hidden, cfg.proj_dim)
        self.target_encoder = frozen_copy(self.encoder)
        self.target_projector = frozen_copy(self.projector)
        self.register_buffer("groups", F.normalize(torch.randn(cfg.num_groups, cfg.proj_dim), dim=1))  # [K, D]
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.memory = SupportSet(cfg.memory_size, cfg.proj_dim)  # a FIFO of unit online embeddings
        self._moved: torch.Tensor | None = None  # this step's groups after the momentum move

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.encoder(x))

    def training_step(self, batch) -> StepOutput:
        x1, x2 = two_views(batch.views, self.name)  # [N, C, H, W] each
        n = x1.shape[0]
        z = self.projector(encode_crops(self.encoder, [x1, x2]))  # online [2N, D]: view 1, then view 2
        p = self.predictor(z)
        with torch.no_grad():
            z_t = F.normalize(self.target_projector(self.target_encoder(torch.cat([x1, x2]))).float(), dim=1)
            a = (z_t @ F.normalize(self.groups.float(), dim=1).T).argmax(1)  # each momentum embedding's group [2N]
            u = F.normalize(z.detach().float(), dim=1)
            moved, _ = momentum_grouping(self.groups, dist.gather(u), self.cfg.beta)  # synchronous move
            self._moved = moved
            self.memory.stage(u)
        targets = torch.cat([a[n:], a[:n]])  # view 1 predicts view 2's group, and view 2 view 1's
        loss = prototype_cross_entropy(
            F.normalize(p.float(), dim=1), [F.normalize(moved, dim=1)], [targets], self.cfg.temperature
        )
        used = (torch.bincount(a, minlength=self.cfg.num_groups) > 0).float().mean()  # a tensor: no host sync
        return StepOutput(loss, {"groups_used": used})

    @torch.no_grad()
    def on_step_end(self, progress: float) -> None:
        if self._moved is not None:
            self.groups.copy_(self._moved)
            self._moved = None
        self.memory.flush()
        self.steps += 1
        every = self.cfg.reset_every
        if every and int(self.steps) % every == 0 and len(self.memory) >= self.cfg.num_groups:
            # table 7b: re-cluster the groups from recent embeddings, restart the momentum network from the
            # online one; the k-means seed comes from the run's RNG, so a resumed run repeats it
            gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, ())))
            _, centroids = spherical_kmeans(self.memory.items(), self.cfg.num_groups, self.cfg.kmeans_iters, gen)
            if dist.is_dist():  # every process continues from rank 0's clustering
                torch.distributed.broadcast(centroids, 0)
            self.groups.copy_(centroids)
            ema_update(self.target_encoder, self.encoder, 0.0)
            ema_update(self.target_projector, self.projector, 0.0)
        else:
            ema_update(self.target_encoder, self.encoder, self.cfg.momentum)
            ema_update(self.target_projector, self.projector, self.cfg.momentum)
