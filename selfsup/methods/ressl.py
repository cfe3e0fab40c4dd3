"""ReSSL — Zheng, You, Wang, Qian, Zhang, Wang, Xu. "ReSSL: Relational Self-Supervised Learning with
Weak Augmentation", NeurIPS 2021.

Idea: keep the relations between images, not the images themselves. A student (encoder + projector)
embeds a strongly augmented view, a teacher (their EMA) a weakly augmented one (crop and flip only,
so its relations are reliable). Each embedding's relation to a queue of K past teacher embeddings is a
softmax over cosine similarities; the teacher's is sharpened by a lower temperature. The student's
relation must match the teacher's (eq. 3-5):

    p_s^i = softmax_j(z_s . q_j / tau_s),   p_t^i = softmax_j(z_t . q_j / tau_t),
    L = -sum_j p_t^j log p_s^j,              tau_t = 0.04 < tau_s = 0.1.

No positive pair is contrasted against negatives: an image similar to one in the queue may stay close
to it. Faithful to the official code (network/ressl.py, ressl.py): the head is Linear-ReLU-Linear
(2048 -> 4096 -> 512, no BatchNorm), its output L2-normalised; the relations are taken against the
queue as it was before this step's teacher embeddings enter it; one direction (strong -> weak), no
symmetrised loss; EMA momentum 0.999, constant; queue K = 131,072.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.losses.distillation import relational_loss
from selfsup.losses.moco import two_views
from selfsup.methods.base import Method, StepOutput
from selfsup.nn.ema import ema_update, frozen_copy
from selfsup.nn.heads import mlp
from selfsup.nn.queue import Queue
from selfsup.registry import BuildContext, register


@dataclass
class ReSSLConfig:
    proj_hidden: int = 4096
    proj_dim: int = 512
    student_temp: float = 0.1  # tau_s
    teacher_temp: float = 0.04  # tau_t, sharper: the paper's best (its table 1)
    momentum: float = 0.999  # m of the teacher's EMA, constant (0.99 in the paper's small-data runs)
    queue_size: int = 131072  # K (ImageNet); 4096 on CIFAR in the paper


@register("ressl", config=ReSSLConfig, views="weak_strong")
class ReSSL(Method):
    """ReSSL: the student's relations to a queue of teacher embeddings match the teacher's, sharpened."""

    def __init__(self, encoder: nn.Module, cfg: ReSSLConfig = ReSSLConfig(), ctx: BuildContext = BuildContext()):
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        # Linear-ReLU-Linear
        self.projector = mlp(cast(int, encoder.num_features), cfg.proj_hidden, cfg.proj_dim, bn=False)
        self.teacher_encoder = frozen_copy(self.encoder)
        self.teacher_projector = frozen_copy(self.projector)
        self.queue = Queue(cfg.queue_size, cfg.proj_dim)  # unit teacher embeddings, in buffers (checkpointed)
        self._pending: list[torch.Tensor] = []  # this step's teacher embeddings, enqueued in on_step_end

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.encoder(x))

    def training_step(self, batch) -> StepOutput:
        x_weak, x_strong = two_views(batch.views, self.name)  # [N, C, H, W] each: view 1 weak (teacher), 2 strong
        z_s = self.projector(self.encoder(x_strong))  # student [N, D]
        with torch.no_grad():
            z_t = F.normalize(self.teacher_projector(self.teacher_encoder(x_weak)).float(), dim=1)  # teacher [N, D]
        queue = self.queue.items()  # [K', D]: before this step's embeddings
        if not len(queue):
            # only the very first step: the queue starts empty (the official code fills it with random
            # unit vectors); relate to this batch's teacher embeddings, those this step will enqueue
            queue = z_t
        loss = relational_loss(z_s, z_t, queue, self.cfg.student_temp, self.cfg.teacher_temp)
        self._pending.append(z_t)
        return StepOutput(loss)

    @torch.no_grad()
    def on_step_end(self, progress: float) -> None:
        # after the optimiser step; the official code updates at the start of the next forward: the same sequence
        ema_update(self.teacher_encoder, self.encoder, self.cfg.momentum)
        ema_update(self.teacher_projector, self.projector, self.cfg.momentum)
        for z_t in self._pending:  # enqueue the newest teacher embeddings, dequeue the oldest
            self.queue.push(z_t)
        self._pending.clear()
