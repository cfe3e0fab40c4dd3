"""DINO — Caron, Touvron, Misra, Jégou, Mairal, Bojanowski, Joulin. "Emerging Properties in
Self-Supervised Vision Transformers", ICCV 2021.

Idea: self-distillation with no labels. A student network (encoder + DINO head, K outputs)
matches the output distribution of a teacher — an exponential moving average of the student —
across crops: the teacher sees the 2 global crops, the student every crop (multi-crop, views
preset "dino"), and the loss is the cross-entropy -P_t(x_i) log P_s(x_j) over pairs of different
crops (eq. 3). Collapse is avoided by centering and sharpening the teacher's output only:
P_t = softmax((g_t(x) - c) / tau_t), with a centre c tracked as an EMA (momentum 0.9) of the
teacher's batch mean and a low teacher temperature (0.04, warmed up to 0.07 over the first 30 %
of training) against the student's 0.1. Centering alone collapses to a uniform output,
sharpening alone to one dimension; together they balance (sec. 5.3, fig. 7).

Ablations (config): ``center: false`` removes centering (c stays 0); ``teacher_temp`` and
``warmup_teacher_temp`` equal to ``student_temp`` remove sharpening. Nothing here is specific to
a backbone: any encoder with ``num_features`` (ResNet or ViT) works.

DINOv2's additions (Oquab et al. 2023, sec. 4; facebookresearch/dinov2 ``train/ssl_meta_arch.py``), off
by default so that DINO stays DINO: ``koleo_weight`` (DINOv2: 0.1) adds the KoLeo regulariser on the
student's backbone features of each global crop, summed over the crops; ``centering: sinkhorn``
replaces the centre by 3 Sinkhorn-Knopp iterations on the teacher's logits (SwAV's balanced codes at
temperature tau_t; the centre then stays as it is).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from selfsup import dist
from selfsup.errors import SelfsupError
from selfsup.losses.distillation import centred_softmax, dino_cross_entropy, koleo, sinkhorn_knopp_teacher
from selfsup.methods.base import Method, StepOutput
from selfsup.nn.dino_head import DINOHead
from selfsup.nn.ema import cosine_momentum, ema_update, frozen_copy
from selfsup.nn.multicrop import encode_crops, num_global_crops
from selfsup.registry import BuildContext, Needs, register


@dataclass
class DINOConfig:
    out_dim: int = 65536  # K, ImageNet; the recipes scale it to the data (10-class sets: a few thousand)
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    head_bn: bool = False  # the official default (use_bn_in_head)
    norm_last_layer: bool = True  # weight norm g fixed to 1
    student_temp: float = 0.1
    teacher_temp: float = 0.07  # after the warm-up (the paper's tau_t 0.04 -> 0.07)
    warmup_teacher_temp: float = 0.04
    warmup_teacher_temp_frac: float = 0.3  # 30 of 100 epochs
    center: bool = True  # False: the no-centering ablation
    center_momentum: float = 0.9
    momentum_base: float = 0.996  # teacher EMA, raised to 1 along a cosine
    freeze_last_layer: float = 0.01  # fraction of training with no gradient to the last layer (1 of 100 epochs)
    koleo_weight: float = 0.0  # DINOv2's KoLeo regulariser on the student's global-crop features (DINOv2: 0.1)
    centering: str = "centre"  # "centre" (DINO's EMA centre) or "sinkhorn" (DINOv2's Sinkhorn-Knopp teacher)


# skips_parameters: the last layer gets no gradient while freeze_last_layer lasts
@register("dino", config=DINOConfig, views="dino", needs=Needs(skips_parameters=True))
class DINO(Method):
    """DINO: a student matches a centred, sharpened EMA teacher across multi-crop views."""

    # buffers: the teacher centre c [K], the fraction of training done
    center: torch.Tensor
    progress: torch.Tensor

    def __init__(self, encoder: nn.Module, cfg: DINOConfig = DINOConfig(), ctx: BuildContext = BuildContext()):
        super().__init__()
        if cfg.centering not in ("centre", "sinkhorn"):
            raise SelfsupError(f"method.centering={cfg.centering!r}: choose centre (DINO) or sinkhorn (DINOv2)")
        if cfg.koleo_weight < 0:
            raise SelfsupError(f"method.koleo_weight={cfg.koleo_weight}: must be >= 0 (0 = off; DINOv2 uses 0.1)")
        self.cfg = cfg
        self.encoder = encoder  # the student backbone: what evaluation sees
        self.head = DINOHead(
            cast(int, encoder.num_features),
            cfg.out_dim,
            cfg.hidden_dim,
            cfg.bottleneck_dim,
            bn=cfg.head_bn,
            norm_last_layer=cfg.norm_last_layer,
        )
        self.teacher_encoder = frozen_copy(self.encoder)
        self.teacher_head = frozen_copy(self.head)
        self.register_buffer("center", torch.zeros(cfg.out_dim))  # c: [K]
        self.register_buffer("progress", torch.zeros(()))  # fraction of training done: the schedules' input
        self.momentum = cfg.momentum_base
        self._pending: list[torch.Tensor] = []  # teacher batch means [K] waiting for the centre update

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        # the normalised bottleneck: the K logits are its cosines with K unit vectors, so it carries
        # the same collapse information in 256 rather than K dimensions
        return self.head.bottleneck(self.encoder(x))

    def teacher_temp(self) -> float:
        c, t = self.cfg, self.progress_now
        if c.warmup_teacher_temp_frac > 0 and t < c.warmup_teacher_temp_frac:  # linear warm-up
            return c.warmup_teacher_temp + (c.teacher_temp - c.warmup_teacher_temp) * t / c.warmup_teacher_temp_frac
        return c.teacher_temp

    def training_step(self, batch) -> StepOutput:
        views = batch.views  # G global crops [B, C, S, S], then L local crops [B, C, s, s]
        v, b, g = len(views), views[0].shape[0], num_global_crops(views)
        frozen = self.progress_now < self.cfg.freeze_last_layer
        h = encode_crops(self.encoder, views)  # [V*B, F], the G globals first
        s = self.head(h, freeze_last_layer=frozen).view(v, b, -1)  # [V, B, K]
        with torch.no_grad():
            t = self.teacher_head(self.teacher_encoder(torch.cat(views[:g]))).view(g, b, -1)  # [G, B, K]
        tau_t = self.teacher_temp()
        sinkhorn = self.cfg.centering == "sinkhorn"
        p_t = sinkhorn_knopp_teacher(t, tau_t) if sinkhorn else centred_softmax(t, self.center, tau_t)  # [G, B, K]
        loss = dino_cross_entropy(s, p_t, self.cfg.student_temp)
        if self.cfg.center and not sinkhorn:
            self._pending.append(t.float().mean((0, 1)))  # this micro-batch's teacher mean [K]
        with (
            torch.no_grad()
        ):  # entropy of the teacher's distribution: ~0 when sharpening wins, log K when centering does
            entropy = -(p_t * p_t.clamp_min(1e-12).log()).sum(-1).mean()
        logs: dict[str, torch.Tensor | float] = {
            "teacher_temp": tau_t,
            "momentum": cosine_momentum(self.cfg.momentum_base, self.progress_now),
            "teacher_entropy": entropy,
        }
        if self.cfg.koleo_weight > 0:  # per global crop (never between two crops of one image), summed
            k = cast(torch.Tensor, sum(koleo(x) for x in h[: g * b].chunk(g)))  # g >= 1 terms: never sum's 0
            logs["koleo"] = k.detach()
            loss = loss + self.cfg.koleo_weight * k
        return StepOutput(loss, logs)

    @torch.no_grad()
    def on_step_end(self, progress: float) -> None:
        self.progress.fill_(progress)
        self.progress_now = progress  # outside the loop too (the loop also sets it)
        self.momentum = cosine_momentum(self.cfg.momentum_base, progress)
        ema_update(self.teacher_encoder, self.encoder, self.momentum)
        ema_update(self.teacher_head, self.head, self.momentum)
        pending, self._pending = self._pending, []
        if pending:
            # c <- m c + (1 - m) mean of the teacher outputs of this step over all processes (eq. 4)
            batch_center = dist.all_reduce_mean(torch.stack(pending).mean(0))
            self.center.mul_(self.cfg.center_momentum).add_(batch_center, alpha=1 - self.cfg.center_momentum)
