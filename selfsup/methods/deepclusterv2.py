"""DeepCluster-v2 — Caron, Misra, Mairal, Goyal, Bojanowski, Joulin. "Unsupervised Learning of Visual
Features by Contrasting Cluster Assignments", NeurIPS 2020 (sec. 4 and appendix; the official
main_deepclusterv2.py).

Idea: DeepCluster's alternation of clustering and classification, rebuilt with SwAV's parts. Each
image's embedding z (an MLP projection, L2-normalised) of its global crops is kept in a memory of
the last epoch. At the start of every epoch, for each of H sets of prototypes, spherical k-means
clusters one crop's memory (the sets alternate between the crops) and the centroids become the
prototypes C_h: no classifier to re-initialise, since the prototypes *are* the clusters, and the
cluster indices' arbitrariness no longer matters. During the epoch every crop of image n (multi-
crop) is classified against each C_h by softmax(z . C_h^T / tau) with its image's assignment
y_h(n) as the hard target. The prototypes never get a gradient (the official code freezes them for
1e10 iterations), so they are buffers here: what k-means gives is what the loss uses.

Differences from DeepCluster (v1): no PCA/whitening (the embeddings are already on the sphere), k-means
on the memory of training embeddings instead of a separate pass, hard assignments but scored by
cosine with a temperature, no uniform sampling over clusters. Deviation: the memory of the first
epoch is filled by one pass of the deterministic evaluation view (the official code passes the
training crops once); afterwards it holds the training crops' embeddings as in the paper.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from selfsup import dist
from selfsup.errors import SelfsupError
from selfsup.losses.clustering import prototype_cross_entropy
from selfsup.methods.base import EpochContext, Method, StepOutput
from selfsup.nn import mlp
from selfsup.nn.kmeans import spherical_kmeans
from selfsup.nn.multicrop import encode_crops, num_global_crops
from selfsup.registry import BuildContext, register


@dataclass
class DeepClusterV2Config:
    proj_hidden: int = 2048
    proj_dim: int = 128  # the official feat_dim
    num_prototypes: tuple[int, ...] = (3000, 3000, 3000)  # H sets of K_h prototypes (ImageNet: 3 x 3000)
    temperature: float = 0.1
    kmeans_iters: int = 10  # the official nmb_kmeans_iters
    crops_for_assign: int = 2  # global crops whose embeddings the memory keeps (the official [0, 1])


@register("deepclusterv2", config=DeepClusterV2Config, views="swav")
class DeepClusterV2(Method):
    """DeepCluster-v2: each epoch, spherical k-means of a memory of embeddings; the centroids are the
    prototypes every crop is classified against."""

    # buffers (beside prototypes0, 1, ...): y_h(n) [H, N], the memory of embeddings [G, N, D], whether it is filled
    assignments: torch.Tensor
    memory: torch.Tensor
    memory_filled: torch.Tensor

    def __init__(
        self, encoder: nn.Module, cfg: DeepClusterV2Config = DeepClusterV2Config(), ctx: BuildContext = BuildContext()
    ):
        super().__init__()
        num_samples = ctx.require("num_samples")
        if not cfg.num_prototypes or min(cfg.num_prototypes) < 2:
            raise SelfsupError(f"method.num_prototypes={list(cfg.num_prototypes)}: one or more sets of >= 2 prototypes")
        self.cfg = cfg
        self.encoder = encoder
        self.projector = mlp(cast(int, encoder.num_features), cfg.proj_hidden, cfg.proj_dim)
        g, d = cfg.crops_for_assign, cfg.proj_dim
        for h, k in enumerate(cfg.num_prototypes):  # C_h: [K_h, D] unit rows, set by k-means only
            self.register_buffer(f"prototypes{h}", F.normalize(torch.randn(k, d), dim=1))
        # y_h(n): [H, N]; until the first k-means (which the loop runs before the first step) n mod K_h
        self.register_buffer("assignments", torch.stack([torch.arange(num_samples) % k for k in cfg.num_prototypes]))
        self.register_buffer("memory", torch.zeros(g, num_samples, d))  # [G, N, D]: z of each global crop
        self.register_buffer("memory_filled", torch.zeros((), dtype=torch.bool))
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []  # (index [B], z [G, B, D]) for the memory

    def prototypes(self) -> list[torch.Tensor]:
        return [getattr(self, f"prototypes{h}") for h in range(len(self.cfg.num_prototypes))]

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.projector(self.encoder(x)), dim=1)

    @torch.no_grad()
    def on_epoch_start(self, epoch: int, data: EpochContext) -> dict[str, float]:
        t = time.perf_counter()
        if not bool(self.memory_filled):  # the first epoch: one pass of the evaluation view (see the docstring)
            z = F.normalize(data.features(nn.Sequential(self.encoder, self.projector).train(self.training)), dim=1)
            self.memory.copy_(z.to(self.memory.device).expand_as(self.memory))
            self.memory_filled.fill_(True)
        logs = {}
        for h, c in enumerate(self.prototypes()):
            j = h % self.cfg.crops_for_assign  # the official code alternates the crop's memory across sets
            # initial centroids from the global RNG: seeded by the run, checkpointed, equal on every process
            gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, ())))
            assign, centroids = spherical_kmeans(self.memory[j], c.shape[0], self.cfg.kmeans_iters, gen)
            if dist.is_dist():  # every process trains on rank 0's clustering
                torch.distributed.broadcast(assign, 0)
                torch.distributed.broadcast(centroids, 0)
            c.copy_(centroids)
            self.assignments[h].copy_(assign)
            counts = torch.bincount(assign, minlength=c.shape[0])
            logs[f"kmeans/largest_cluster{h}"] = float(counts.max()) / len(assign)
            logs[f"kmeans/empty{h}"] = float((counts == 0).sum())
        logs["kmeans/seconds"] = time.perf_counter() - t
        return logs

    def training_step(self, batch) -> StepOutput:
        views = batch.views  # G global crops [B, C, S, S], then L local crops [B, C, s, s]
        v, b, g = len(views), views[0].shape[0], num_global_crops(views)
        if g < self.cfg.crops_for_assign:
            raise SelfsupError(
                f"deepclusterv2 keeps the embeddings of {self.cfg.crops_for_assign} global crops but "
                f"the views have {g}: set method.crops_for_assign <= views.num_global"
            )
        z = F.normalize(self.projector(encode_crops(self.encoder, views)), dim=1)  # [V*B, D]
        targets = [y[batch.index].repeat(v) for y in self.assignments]  # every crop takes its image's y_h
        loss = prototype_cross_entropy(z, self.prototypes(), targets, self.cfg.temperature)
        self._pending.append((batch.index, z[: self.cfg.crops_for_assign * b].detach().view(-1, b, z.shape[1])))
        with torch.no_grad():  # how often a crop's nearest prototype is its image's cluster (first set)
            hit = ((z.detach().float() @ self.prototypes()[0].T).argmax(1) == targets[0]).float().mean()
        return StepOutput(loss, {"assign_acc": hit})

    @torch.no_grad()
    def on_step_end(self, progress: float) -> None:
        pending, self._pending = self._pending, []
        for index, z in pending:  # the memory of this epoch's embeddings, gathered from every process
            index = dist.gather(index.to(self.memory.device))
            for j in range(z.shape[0]):
                self.memory[j, index] = dist.gather(z[j].float()).to(self.memory.device)
