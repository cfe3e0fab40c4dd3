"""SwAV — Caron, Misra, Mairal, Goyal, Bojanowski, Joulin. "Unsupervised Learning of Visual
Features by Contrasting Cluster Assignments", NeurIPS 2020.

Idea: cluster online instead of contrasting pairs. Each crop's embedding z (L2-normalised
projection) is scored against K learnable prototypes C (unit vectors). The codes q of a global
crop — a soft assignment of the batch to the prototypes under an equal-partition constraint,
solved by 3 Sinkhorn-Knopp iterations — must be predicted from every other crop of the same
image through p = softmax(z . C / tau): the "swapped prediction". The equal partition is what
prevents the trivial solution (all samples in one cluster). Multi-crop: 2 global crops compute
codes, several small local crops only predict them (views preset "swav").

Bookkeeping as in the official code: prototypes are re-normalised after every step; they are
frozen (no gradient) for the first ``freeze_prototypes_iters`` steps; with small batches, a
queue of past embeddings of each global crop joins the Sinkhorn problem (only the batch's codes
are used), from ``queue_start`` of training on and once it is full.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.errors import SelfsupError
from selfsup.losses.clustering import sinkhorn, swapped_prediction
from selfsup.methods.base import Method, StepOutput
from selfsup.nn import mlp
from selfsup.nn.multicrop import encode_crops, num_global_crops
from selfsup.nn.queue import Queue
from selfsup.registry import BuildContext, Needs, register


@dataclass
class SwAVConfig:
    proj_hidden: int = 2048
    proj_dim: int = 128
    num_prototypes: int = 3000  # ImageNet; the recipes scale it to the data (10-class sets: a few hundred)
    temperature: float = 0.1
    epsilon: float = 0.05  # entropic regularisation of Sinkhorn (smaller: sharper codes)
    sinkhorn_iters: int = 3
    freeze_prototypes_iters: int = 313  # the official code: about one ImageNet epoch at batch 4096
    queue_size: int = 0  # per global crop; 0 = none (large batches). The paper: 3840 for batch 256
    queue_start: float = 0.05  # fraction of training before the queue starts filling (official: epoch 15)
    queue_crops: int = 2  # global crops, one queue each: must equal views.num_global when queue_size > 0


# skips_parameters: the prototypes get no gradient while freeze_prototypes_iters lasts
@register("swav", config=SwAVConfig, views="swav", needs=Needs(skips_parameters=True))
class SwAV(Method):
    """SwAV: swapped prediction of Sinkhorn cluster codes between crops."""

    iteration: torch.Tensor  # a buffer: optimiser steps done

    def __init__(self, encoder: nn.Module, cfg: SwAVConfig = SwAVConfig(), ctx: BuildContext = BuildContext()):
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        self.projector = mlp(cast(int, encoder.num_features), cfg.proj_hidden, cfg.proj_dim)
        self.prototypes = nn.Linear(cfg.proj_dim, cfg.num_prototypes, bias=False)  # C: [K, D]
        self._normalize_prototypes()
        self.queues = nn.ModuleList(
            [Queue(cfg.queue_size, cfg.proj_dim) for _ in range(cfg.queue_crops)] if cfg.queue_size > 0 else []
        )
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long))  # optimiser steps done
        self._pending: list[torch.Tensor] = []  # global-crop embeddings waiting to enter the queues

    @torch.no_grad()
    def _normalize_prototypes(self) -> None:
        w = self.prototypes.weight
        w.copy_(F.normalize(w, dim=1))

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.projector(self.encoder(x)), dim=1)

    def training_step(self, batch) -> StepOutput:
        views = batch.views  # G global crops [B, C, S, S], then L local crops [B, C, s, s]
        v, b, g = len(views), views[0].shape[0], num_global_crops(views)
        if self.queues and g != len(self.queues):
            raise SelfsupError(
                f"swav: {g} global crops but method.queue_crops={len(self.queues)} queues; "
                "set method.queue_crops to views.num_global"
            )
        z = F.normalize(self.projector(encode_crops(self.encoder, views)), dim=1)  # [V*B, D] on the sphere
        c = self.prototypes.weight  # [K, D], unit rows
        if int(self.iteration) < self.cfg.freeze_prototypes_iters:
            # frozen: no gradient at all, so the optimiser skips C (the official p.grad = None); hence
            # needs.skips_parameters (DDP's find_unused_parameters)
            c = c.detach()
        # scores in float32: tau = 0.1 and epsilon = 0.05 would magnify bf16's rounding of the cosines
        with torch.autocast(z.device.type, enabled=False):
            scores = (z.float() @ c.float().T).view(v, b, -1)  # [V, B, K]
        codes = torch.stack([self._codes(scores[i], i) for i in range(g)])  # [G, B, K], only globals
        loss = swapped_prediction(scores, codes, self.cfg.temperature)
        if self.queues:
            self._pending.append(z[: g * b].detach().view(g, b, -1))
        # mean entropy of one image's code: log K for undecided codes, 0 for hard assignments
        # (how the batch spreads over prototypes is fixed by the equal partition, so not worth logging)
        logs: dict[str, torch.Tensor | float] = {"code_entropy": -(codes * codes.clamp_min(1e-12).log()).sum(-1).mean()}
        return StepOutput(loss, logs)

    @torch.no_grad()
    def _codes(self, scores: torch.Tensor, i: int) -> torch.Tensor:
        """Codes of global crop i: [B, K]. With a full queue, Sinkhorn runs on
        [queue scores; batch scores] and only the batch rows are kept."""
        queue = cast(Queue, self.queues[i]) if self.queues else None
        shared = 0
        if queue is not None and len(queue) == queue.size:
            with torch.autocast(scores.device.type, enabled=False):
                past = queue.items() @ self.prototypes.weight.float().T  # [Q, K] with today's prototypes
            scores, shared = torch.cat([past, scores.detach()]), past.shape[0]
        q = sinkhorn(scores, self.cfg.epsilon, self.cfg.sinkhorn_iters, num_shared=shared)
        return q[shared:]

    def on_step_end(self, progress: float) -> None:
        self.iteration += 1
        self._normalize_prototypes()  # C back on the sphere after the optimiser step
        pending, self._pending = self._pending, []
        if self.queues and progress >= self.cfg.queue_start:
            for z in pending:  # [G, B, D] per micro-batch
                for queue, z_i in zip(self.queues, z):
                    # gathered from every process (the same queue everywhere); Sinkhorn counts
                    # these shared rows once (num_shared), so it is one global queue
                    cast(Queue, queue).push(z_i)
