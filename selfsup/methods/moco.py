"""MoCo v1 and v2.

He, Fan, Wu, Xie, Girshick. "Momentum Contrast for Unsupervised Visual Representation
Learning", CVPR 2020 (v1). Chen, Fan, Girshick, He. "Improved Baselines with Momentum
Contrastive Learning", arXiv 2003.04297, 2020 (v2).

Idea: contrastive learning as dictionary look-up. A query q = f_q(x_q) should match its key
k+ = f_k(x_k) (another view of the same image) against a large dictionary of negative keys: a
FIFO queue holding the keys of the last K images (eq. 1, InfoNCE with tau). The key encoder is
not trained by gradients but follows the query encoder slowly, theta_k <- m theta_k + (1-m)
theta_q (eq. 2, m 0.999), so the keys in the queue stay consistent although they were computed
at different steps. BatchNorm is shuffled for the key encoder (sec. 3.3; selfsup.nn.shuffle_bn)
so the pretext task cannot be solved through BN batch statistics.

v2 keeps everything and changes three things: a 2-layer MLP head (hidden 2048 on ResNet-50,
ReLU, no BN) instead of the linear fc, tau 0.2 instead of 0.07, and SimCLR's augmentation with
blur (plus a cosine learning-rate schedule, which is the loop's ``optim.schedule``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.losses import info_nce, infonce_bound
from selfsup.losses.moco import in_batch_info_nce, two_views
from selfsup.methods.base import Method, StepOutput
from selfsup.nn.ema import ema_update, frozen_copy
from selfsup.nn.heads import mlp
from selfsup.nn.queue import Queue
from selfsup.nn.shuffle_bn import grouped_forward, shuffled_forward
from selfsup.registry import BuildContext, register


@dataclass
class MoCoV1Config:
    dim: int = 128  # dimension of the L2-normalised keys and queries
    mlp: bool = False  # v1: the encoder's fc replaced by one linear layer to `dim`
    mlp_hidden: int | None = None  # v2's MLP hidden width; None = the encoder's width (2048 on ResNet-50, as v2)
    temperature: float = 0.07
    queue_size: int = 65536  # K: negatives in the dictionary
    momentum: float = 0.999  # m of the key encoder's EMA (eq. 2), constant over training
    bn_groups: int = 8  # BN batches per step: the paper's 8 GPUs, each normalising its own 32 of 256 images
    shuffle_bn: bool = True  # shuffle the key batch across the BN groups (sec. 3.3); false = the paper's ablation


@dataclass
class MoCoV2Config(MoCoV1Config):
    mlp: bool = True  # 2-layer MLP head: Linear-ReLU-Linear (no BN in v2's head)
    temperature: float = 0.2


@register(
    "mocov2",
    config=MoCoV2Config,
    views="simclr",  # no code of its own: the config is the difference
    summary="MoCo v2: MoCo v1 with an MLP head, tau 0.2 and SimCLR's augmentation with blur.",
)
@register("mocov1", config=MoCoV1Config, views="mocov1")
class MoCo(Method):
    """MoCo v1: queries against a momentum-encoded queue of keys, with shuffled BN."""

    def __init__(self, encoder: nn.Module, cfg: MoCoV1Config = MoCoV1Config(), ctx: BuildContext = BuildContext()):
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        d = cast(int, encoder.num_features)
        # v1: Linear(d, 128); v2: Linear(d, d)-ReLU-Linear(d, 128), both without BN
        self.head = mlp(d, cfg.mlp_hidden or d, cfg.dim, num_layers=2 if cfg.mlp else 1, bn=False)
        self.key_encoder = frozen_copy(self.encoder)  # theta_k starts equal to theta_q
        self.key_head = frozen_copy(self.head)
        self.queue = Queue(cfg.queue_size, cfg.dim)  # the dictionary, in buffers (checkpointed)
        self._pending: list[torch.Tensor] = []  # this step's keys, enqueued in on_step_end

    def _query(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))

    def _key(self, x: torch.Tensor) -> torch.Tensor:
        return self.key_head(self.key_encoder(x))

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        return self._query(x)

    def training_step(self, batch) -> StepOutput:
        x_q, x_k = two_views(batch.views, self.name)  # [N, C, H, W] each: two augmentations of the same N images
        g = self.cfg.bn_groups
        q = grouped_forward(self._query, x_q, g)  # [N, dim]; each BN group normalised on its own
        with torch.no_grad():  # no gradient to keys (sec. 3.2)
            key_forward = shuffled_forward if self.cfg.shuffle_bn else grouped_forward
            k = F.normalize(key_forward(self._key, x_k, g).float(), dim=1)  # [N, dim], rows in image order
        negatives = self.queue.items()  # [K', dim]: the dictionary as of this step, before this step's keys
        if len(negatives):
            loss, candidates = info_nce(q, k, negatives, self.cfg.temperature)  # eq. 1, logits [N, 1+K']
        else:
            # only the very first step(s): the queue starts empty (the official code fills it with
            # random unit vectors instead); contrast against the batch's own keys, i.e. the keys
            # this step is about to enqueue, rather than train on a loss that is identically 0
            loss, candidates = in_batch_info_nce(q, k, self.cfg.temperature)
        self._pending.append(k)
        return StepOutput(loss, {"infonce_bound": infonce_bound(loss.detach(), candidates)})

    @torch.no_grad()
    def on_step_end(self, progress: float) -> None:
        # eq. 2 after the optimiser step, so the next step's keys come from the updated key encoder
        # (the official code updates at the start of the next forward: the same sequence)
        ema_update(self.key_encoder, self.encoder, self.cfg.momentum)
        ema_update(self.key_head, self.head, self.cfg.momentum)
        for k in self._pending:  # enqueue the newest keys, dequeue the oldest (sec. 3.2)
            self.queue.push(k)
        self._pending.clear()
