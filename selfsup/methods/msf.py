"""MSF — Koohpayegani, Tejankar, Pirsiavash. "Mean Shift for Self-Supervised Learning", ICCV 2021.

Idea: BYOL with neighbours. An online network (encoder, projector, predictor) sees a strongly
augmented view; a target network, the EMA of the online encoder and projector (m 0.99, constant),
embeds a weakly augmented view (crop and flip only). The target embeddings of the last M images
wait in a memory bank. The online prediction is pulled not only toward its own target z but toward
the k nearest neighbours of z in the bank (z itself is one of them, at distance 0): one step of mean
shift that groups an image with others that look alike. No negatives. Loss (eq. 1):

    L = 1/k sum_{b in NN(z, M, k)} || p/||p|| - b ||^2,   z, b unit vectors, k = 5.

Faithful to the official train_msf.py: the neighbours are chosen by the target z (not the
prediction); the bank already holds this step's targets when they are looked up (the official code
enqueues before the loss), so the bank here is the queue plus this step's targets, the newest M; one
direction only (strong -> weak), no symmetrised loss; the projector is Linear-BN-ReLU-Linear with a
hidden layer twice the encoder's width and an output a quarter of it (2048 -> 4096 -> 512 on
ResNet-50), the predictor the same shape (512 -> 4096 -> 512).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from selfsup import dist
from selfsup.losses.distillation import mean_shift_loss, mean_shift_neighbours
from selfsup.losses.moco import two_views
from selfsup.methods.base import Method, StepOutput
from selfsup.nn.ema import ema_update, frozen_copy
from selfsup.nn.heads import mlp
from selfsup.nn.queue import Queue
from selfsup.registry import BuildContext, register


@dataclass
class MSFConfig:
    proj_hidden: int = 4096  # 2 x the encoder width (ResNet-50: 2048)
    proj_dim: int = 512  # the encoder width / 4: the space of targets and bank
    pred_hidden: int = 4096
    momentum: float = 0.99  # m of the target's EMA, constant over training
    bank_size: int = 1024000  # M: the paper's ImageNet bank (run_msf.sh); 128,000 in its ablations
    topk: int = 5  # k nearest neighbours, the target itself included


@register("msf", config=MSFConfig, views="weak_strong")
class MSF(Method):
    """MSF: the online prediction moves toward the target's k nearest neighbours in a memory bank."""

    def __init__(self, encoder: nn.Module, cfg: MSFConfig = MSFConfig(), ctx: BuildContext = BuildContext()):
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        self.projector = mlp(cast(int, encoder.num_features), cfg.proj_hidden, cfg.proj_dim)  # Linear-BN-ReLU-Linear
        self.predictor = mlp(cfg.proj_dim, cfg.pred_hidden, cfg.proj_dim)
        self.target_encoder = frozen_copy(self.encoder)
        self.target_projector = frozen_copy(self.projector)
        self.bank = Queue(cfg.bank_size, cfg.proj_dim)  # M: unit target embeddings, in buffers (checkpointed)
        self._pending: list[torch.Tensor] = []  # this step's targets, enqueued in on_step_end

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.encoder(x))

    def training_step(self, batch) -> StepOutput:
        x_weak, x_strong = two_views(batch.views, self.name)  # [N, C, H, W] each: view 1 weak (target), 2 strong
        p = self.predictor(self.projector(self.encoder(x_strong)))  # online prediction [N, D]
        with torch.no_grad():
            z = nn.functional.normalize(self.target_projector(self.target_encoder(x_weak)).float(), dim=1)  # [N, D]
        # the bank as the official code sees it: this step's targets (all processes) enqueued, the newest M
        bank = torch.cat([self.bank.items(), dist.gather(z)])[-self.cfg.bank_size :]  # [min(M, filled+N*world), D]
        neighbours, cos = mean_shift_neighbours(z, bank, self.cfg.topk)  # [N, k, D], [N, k]
        loss = mean_shift_loss(p, neighbours)
        self._pending.append(z)
        # cosine of the target to its neighbours other than itself (the first is z, cosine 1)
        return StepOutput(loss, {"nn_cosine": cos[:, 1:].mean() if cos.shape[1] > 1 else cos.mean()})

    @torch.no_grad()
    def on_step_end(self, progress: float) -> None:
        # after the optimiser step; the official code updates at the start of the next forward: the same sequence
        ema_update(self.target_encoder, self.encoder, self.cfg.momentum)
        ema_update(self.target_projector, self.projector, self.cfg.momentum)
        for z in self._pending:  # the bank receives this step's targets, the oldest drop out
            self.bank.push(z)
        self._pending.clear()
