"""DenseCL — Wang, Zhang, Shen, Kong, Li. "Dense Contrastive Learning for Self-Supervised Visual
Pre-Training", CVPR 2021.

Idea: MoCo v2 learns one vector per image, but dense tasks (detection, segmentation) need good
features at every location. DenseCL keeps MoCo v2's global branch and adds a dense branch in
parallel on the backbone's feature map (before pooling): a dense projection head (1x1 conv -
ReLU - 1x1 conv, sec. 3.2) turns the S x S map into S^2 vectors r_1 .. r_{S^2}. Between the two
views, each query vector r_s is paired with the key vector t_{s'} whose *backbone* feature is most
similar, s' = argmax_j cos(f_s, f'_j) (sec. 3.3: correspondence by feature similarity, no crop
geometry). The dense loss is InfoNCE per location (eq. 2),

    L_r = 1/S^2 sum_s -log exp(r_s . t+_s / tau) / (exp(r_s . t+_s / tau) + sum_k exp(r_s . t-_k / tau)),

with negatives t-_k from a second queue holding one vector per past key image: the key's dense
projection, average-pooled (the official neck's ``avgpooled_x2``). The total is

    L = (1 - lambda) L_q + lambda L_r,   lambda 0.5,

L_q MoCo v2's global InfoNCE. Everything else is MoCo v2: momentum key encoder (and key heads),
m 0.999, tau 0.2 for both terms, queues of 65536 of 128-d vectors, shuffled BN for the keys.

Faithful details (verified in WXinlong/DenseCL, openselfsup/models/densecl.py and necks.py
DenseCLNeck): the global head is fc-ReLU-fc and the dense head conv1x1-ReLU-conv1x1, neither with
BN, hidden width = the backbone's width (2048 on ResNet-50); the correspondence uses the
L2-normalised backbone features of both views; the dense queue stores the pooled dense keys.

The backbone needs ``forward_maps`` (convnet, resnet; selfsup.backbones); shuffled BN touches only
the backbone (the heads have no BN), so the maps are computed in shuffled BN groups and the heads
applied after, which is the same as running the whole key network shuffled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.errors import SelfsupError
from selfsup.losses import info_nce, infonce_bound
from selfsup.losses.dense import dense_correspondence, gather_locations
from selfsup.losses.moco import in_batch_info_nce, two_views
from selfsup.methods.base import StepOutput
from selfsup.methods.moco import MoCo, MoCoV2Config
from selfsup.nn.ema import ema_update, frozen_copy
from selfsup.nn.queue import Queue
from selfsup.nn.shuffle_bn import grouped_forward, shuffled_forward
from selfsup.registry import BuildContext, register


@dataclass
class DenseCLConfig(MoCoV2Config):
    # MoCo v2's: dim 128, 2-layer MLP global head (hidden = encoder width), tau 0.2 (both terms),
    # queue 65536 (each queue), m 0.999, shuffled BN
    loss_lambda: float = 0.5  # lambda: weight of the dense loss, (1 - lambda) on the global one


def dense_head(d: int, hidden: int, out: int) -> nn.Sequential:
    """DenseCL's dense projection head: conv1x1-ReLU-conv1x1, no BN (official DenseCLNeck.mlp2)."""
    return nn.Sequential(nn.Conv2d(d, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, out, 1))


@register("densecl", config=DenseCLConfig, views="simclr")
class DenseCL(MoCo):
    """DenseCL: MoCo v2 plus a per-location InfoNCE between feature-matched dense projections."""

    cfg: DenseCLConfig

    def __init__(self, encoder: nn.Module, cfg: DenseCLConfig = DenseCLConfig(), ctx: BuildContext = BuildContext()):
        if not hasattr(encoder, "forward_maps"):
            raise SelfsupError(
                "densecl needs a backbone with a spatial feature map (forward_maps): use a convnet or "
                "resnet backbone, e.g. backbone.name=resnet18"
            )
        super().__init__(encoder, cfg, ctx)  # encoder, global head, key encoder + head, global queue
        d = cast(int, encoder.num_features)
        self.dense_head = dense_head(d, cfg.mlp_hidden or d, cfg.dim)
        self.key_dense_head = frozen_copy(self.dense_head)
        self.dense_queue = Queue(cfg.queue_size, cfg.dim)  # pooled dense keys t- (the official queue2)
        self._pending_dense: list[torch.Tensor] = []

    @staticmethod
    def _branches(maps: torch.Tensor, head: nn.Module, dense: nn.Module):
        """Backbone maps [N, F, h, w] -> (global projection [N, D], dense projections [N, D, S^2],
        pooled dense projection [N, D], backbone vectors [N, F, S^2]); S^2 = h w."""
        g = head(maps.mean((2, 3)))  # average pool, then fc-ReLU-fc
        r = dense(maps)  # [N, D, h, w]
        return g, r.flatten(2), r.mean((2, 3)), maps.flatten(2)

    def training_step(self, batch) -> StepOutput:
        x_q, x_k = two_views(batch.views, self.name)  # [N, C, H, W] each
        c, g = self.cfg, self.cfg.bn_groups
        # [N, F, h, w]
        maps_q = grouped_forward(self.encoder.forward_maps, x_q, g)  # type: ignore[arg-type]  # a backbone's method
        q, r, _, f_q = self._branches(maps_q, self.head, self.dense_head)
        with torch.no_grad():
            key_forward = shuffled_forward if c.shuffle_bn else grouped_forward
            # [N, F, h, w], rows in image order
            maps_k = key_forward(self.key_encoder.forward_maps, x_k, g)  # type: ignore[arg-type]  # a backbone's method
            k, t, t_pooled, f_k = self._branches(maps_k, self.key_head, self.key_dense_head)
            k = F.normalize(k.float(), dim=1)  # [N, D]
            t = F.normalize(t.float(), dim=1)  # [N, D, S^2]
            t_pooled = F.normalize(t_pooled.float(), dim=1)  # [N, D]
            match = dense_correspondence(f_q, f_k)  # [N, S^2]: s' = argmax_j cos(f_s, f'_j)
            t_pos = gather_locations(t, match)  # [N, D, S^2]: t+_s for every query location s
        r = r.transpose(1, 2).reshape(-1, r.shape[1])  # [N S^2, D]: one query per location
        t_pos = t_pos.transpose(1, 2).reshape(-1, t.shape[1])  # [N S^2, D]
        negatives, dense_negatives = self.queue.items(), self.dense_queue.items()  # as before this step
        if len(negatives):
            loss_q, candidates = info_nce(q, k, negatives, c.temperature)  # MoCo v2's L_q
            loss_r, _ = info_nce(r, t_pos, dense_negatives, c.temperature)  # eq. 2, L_r
        else:  # first step only (empty queues): this step's own keys, as MoCo here (see moco.py)
            loss_q, candidates = in_batch_info_nce(q, k, c.temperature)
            loss_r, _ = info_nce(r, t_pos, t_pooled, c.temperature)
        loss = (1 - c.loss_lambda) * loss_q + c.loss_lambda * loss_r
        self._pending.append(k)
        self._pending_dense.append(t_pooled)
        return StepOutput(
            loss,
            {
                "infonce_bound": infonce_bound(loss_q.detach(), candidates),
                "densecl/global": loss_q.detach(),
                "densecl/dense": loss_r.detach(),
            },
        )

    @torch.no_grad()
    def on_step_end(self, progress: float) -> None:
        super().on_step_end(progress)  # EMA of the key encoder and global head; global keys enqueued
        ema_update(self.key_dense_head, self.dense_head, self.cfg.momentum)
        for t in self._pending_dense:
            self.dense_queue.push(t)
        self._pending_dense.clear()
