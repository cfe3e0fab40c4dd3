"""iBOT — Zhou, Wei, Wang, Shen, Xie, Yuille, Kong. "iBOT: Image BERT Pre-Training with Online
Tokenizer", ICLR 2022.

Idea: masked image modelling where the "visual tokenizer" is not a fixed, separately trained dVAE (as
in BEiT) but the EMA teacher itself, learnt online. Two self-distillation losses with one
student/teacher pair (sec. 3):

    L_[CLS] = - sum_{i != j} P_t^[CLS](u_i)^T log P_s^[CLS](v_j)               (DINO, across views)
    L_MIM   = - sum_i 1/|M_i| sum_{p in M_i} P_t^patch(u_i)_p^T log P_s^patch(u~_i)_p   (same view)
    L       = lambda1 L_[CLS] + lambda2 L_MIM

u_i are the global crops, u~_i the same crops with the block-wise masked patches M_i replaced by a
learned mask token, v_j every crop the student sees (masked globals, unmasked locals). The teacher
sees the unmasked globals; its [CLS] and patch outputs are centred and sharpened as in DINO,
P_t = softmax((g_t - c) / tau_t), with *separate* centres for [CLS] and patch tokens (each an EMA,
momentum 0.9, of the teacher's batch mean; the patch centre over every patch, masked or not).

Details (checked in the official code, bytedance/ibot ``main_ibot.py`` ``iBOTLoss``, ``loader.py``
``ImageFolderMask``, ``models/head.py`` ``iBOTHead``, ``models/vision_transformer.py``, and the ViT-S/16
command in its README):
- Masks: per global crop of each image its own prediction ratio r: with ``--pred_ratio 0 0.3
  --pred_ratio_var 0 0.2``, r = 0 (no masking: that image only serves L_[CLS]) or r ~ U(0.1, 0.5), each
  with probability 1/2; BEiT's block-wise masking of floor(r P) patches, rectangles of at least
  (grid // 3)^2 patches, aspect 0.3-3.3 (``selfsup.nn.blockwise_masking``). The mask token replaces
  the patch embedding before the position is added (``masked_embed``, initialised to zero).
- L_MIM per image is the mean over its masked patches (an unmasked image counts 0), then the mean
  over images and global crops; L_[CLS] is DINO's mean over (teacher crop, other student crop) pairs,
  the student's global [CLS] coming from the *masked* crops.
- Head: the published runs share one head (MLP and weight-normalised last layer) between [CLS] and
  patch tokens (``--shared_head true``; the code's default unties only the student's last layer);
  ``separate_heads`` gives the patch tokens a head of their own, as DINOv2 does (``ibot.separate_head``).
- Temperatures: student 0.1; teacher 0.04 -> 0.07 over the first 30 epochs for [CLS] (ViT-S/16's
  ``--teacher_temp 0.07``) and for patches (``--teacher_patch_temp 0.07``); teacher EMA 0.996 -> 1.
- The teacher has no drop path (built with ``drop_path_rate`` 0): its encoder runs in eval mode here.

DINOv2's additions (Oquab et al. 2023; facebookresearch/dinov2 ``train/ssl_meta_arch.py``, ``loss/``):
``koleo_weight`` (0.1 there) adds the KoLeo regulariser on the student's [CLS] features of each global
crop; ``centering: sinkhorn`` replaces both centres by 3 Sinkhorn-Knopp iterations on the teacher's
logits (for patches, over the masked ones, as DINOv2); ``separate_heads`` unties the patch head.

Logged: ``cls_loss``, ``patch_loss`` (the terms before their lambdas), ``koleo`` when on,
``teacher_entropy`` and ``teacher_patch_entropy`` (~0: sharpening wins; log K: centring does),
``mask_ratio`` (fraction of the global crops' patches masked), the temperatures and the EMA momentum.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from selfsup import dist
from selfsup.backbones.vit import ViT
from selfsup.errors import SelfsupError
from selfsup.losses.distillation import (
    centred_softmax,
    dino_cross_entropy,
    koleo,
    masked_patch_distillation,
    sinkhorn_knopp_teacher,
)
from selfsup.methods.base import Method, StepOutput
from selfsup.nn.blockwise_masking import blockwise_mask
from selfsup.nn.dino_head import DINOHead
from selfsup.nn.ema import cosine_momentum, ema_update, frozen_copy
from selfsup.nn.multicrop import encode_crops, num_global_crops
from selfsup.registry import BuildContext, Needs, register, register_view_preset
from selfsup.transforms.views import ViewConfig

# The official main_ibot.py defaults: 2 global crops of scale 0.14-1 and no local crops (--local_crops_number 0;
# "without multi-crop, a wider scale range"); DINO's colour distortion and blur/solarize asymmetry. The paper's
# runs add 10 local crops (ViT-S/16: globals 0.25-1, locals 0.05-0.25), as the recipes do where the local crop
# side can be a multiple of the ViT's patch size.
register_view_preset(
    "ibot",
    ViewConfig(
        crop_scale=(0.14, 1.0),
        jitter=(0.4, 0.4, 0.2, 0.1),
        blur_p=(1.0, 0.1),
        solarize_p=(0.0, 0.2),
        num_global=2,
        num_local=0,
        local_scale=(0.05, 0.4),
        local_blur_p=0.5,
    ),
)


@dataclass
class IBOTConfig:
    out_dim: int = 8192  # K of the [CLS] head (the official ViT runs; the recipes scale it to the data)
    patch_out_dim: int = 8192  # K of the patch head, used with separate_heads only (a shared head has out_dim)
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    head_bn: bool = False  # the official --norm_in_head None
    norm_last_layer: bool = False  # the ViT-S/16 run (ViT-B and ViT-L: true)
    separate_heads: bool = False  # the official runs share one head (--shared_head true); true: DINOv2's own patch head
    student_temp: float = 0.1
    teacher_temp: float = 0.07  # [CLS], after the warm-up (ViT-S/16's --teacher_temp 0.07)
    warmup_teacher_temp: float = 0.04
    teacher_patch_temp: float = 0.07  # patch tokens, after the warm-up
    warmup_teacher_patch_temp: float = 0.04
    warmup_teacher_temp_frac: float = 0.3  # 30 epochs of the code's default 100 (30 of 800 in the ViT-S/16 run)
    center_momentum: float = 0.9  # [CLS] centre
    center_momentum_patch: float = 0.9  # patch centre (the official center_momentum2)
    momentum_base: float = 0.996  # teacher EMA, raised to 1 along a cosine
    freeze_last_layer: float = 0.01  # fraction of training with no gradient to the last layer (1 of 100 epochs)
    pred_ratio: tuple[float, ...] = (0.0, 0.3)  # per masked crop one of these means is chosen at random ...
    pred_ratio_var: tuple[float, ...] = (0.0, 0.2)  # ... and drawn uniformly within +- this: r = 0 or U(0.1, 0.5)
    lambda1: float = 1.0  # weight of the [CLS] loss
    lambda2: float = 1.0  # weight of the masked-patch loss
    koleo_weight: float = 0.0  # DINOv2's KoLeo regulariser on the student's global [CLS] features (DINOv2: 0.1)
    centering: str = "centre"  # "centre" (iBOT's two EMA centres) or "sinkhorn" (DINOv2's Sinkhorn-Knopp teacher)


# skips_parameters: the last layer gets no gradient while freeze_last_layer lasts
@register("ibot", config=IBOTConfig, views="ibot", needs=Needs(backbone="vit", skips_parameters=True))
class IBOT(Method):
    """DINO's [CLS] self-distillation plus masked-patch self-distillation with the EMA teacher as tokenizer."""

    encoder: ViT  # the registry gives a ViT-only method a ViT
    teacher_encoder: ViT  # its EMA copy
    # buffers: the centres of the [CLS] [K] and patch [K'] teacher outputs, the fraction of training done
    center: torch.Tensor
    patch_center: torch.Tensor
    progress: torch.Tensor

    def __init__(self, encoder: ViT, cfg: IBOTConfig = IBOTConfig(), ctx: BuildContext = BuildContext()):
        super().__init__()
        if cfg.centering not in ("centre", "sinkhorn"):
            raise SelfsupError(f"method.centering={cfg.centering!r}: choose centre (iBOT) or sinkhorn (DINOv2)")
        if cfg.koleo_weight < 0:
            raise SelfsupError(f"method.koleo_weight={cfg.koleo_weight}: must be >= 0 (0 = off; DINOv2 uses 0.1)")
        if not cfg.pred_ratio or len(cfg.pred_ratio) != len(cfg.pred_ratio_var):
            raise SelfsupError(
                f"method.pred_ratio={list(cfg.pred_ratio)} and method.pred_ratio_var="
                f"{list(cfg.pred_ratio_var)} need the same (non-zero) length"
            )
        for r, var in zip(cfg.pred_ratio, cfg.pred_ratio_var):
            if not (0 <= r - var and r + var < 1 and var >= 0):
                raise SelfsupError(f"method.pred_ratio {r} +- {var}: ratios must stay in [0, 1)")
        if not any(r + var > 0 for r, var in zip(cfg.pred_ratio, cfg.pred_ratio_var)):
            raise SelfsupError("method.pred_ratio: all zero masks nothing, so there is no masked-patch loss")
        self.cfg = cfg
        self.encoder = encoder  # the student backbone: what evaluation sees
        d = encoder.num_features
        self.mask_token = nn.Parameter(torch.zeros(d))  # the official masked_embed, zero-initialised

        def head(k: int) -> DINOHead:
            return DINOHead(
                d, k, cfg.hidden_dim, cfg.bottleneck_dim, bn=cfg.head_bn, norm_last_layer=cfg.norm_last_layer
            )

        self.head = head(cfg.out_dim)
        self.patch_head = head(cfg.patch_out_dim) if cfg.separate_heads else None
        self.teacher_encoder = cast(ViT, frozen_copy(self.encoder))
        self.teacher_head = frozen_copy(self.head)
        self.teacher_patch_head = (
            frozen_copy(self.patch_head) if cfg.separate_heads else None  # type: ignore[arg-type]  # separate_heads: patch_head is set
        )
        k_patch = cfg.patch_out_dim if cfg.separate_heads else cfg.out_dim
        self.register_buffer("center", torch.zeros(cfg.out_dim))  # c for [CLS]: [K]
        self.register_buffer("patch_center", torch.zeros(k_patch))  # c' for patch tokens: [K']
        self.register_buffer("progress", torch.zeros(()))  # fraction of training done: the schedules' input
        self.momentum = cfg.momentum_base
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []  # teacher means ([K], [K']) for the centres

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher_encoder.eval()  # the official teacher has no drop path (drop_path_rate 0)
        return self

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        return self.head.bottleneck(self.encoder(x))  # the normalised [CLS] bottleneck, as DINO

    def _warmed_up(self, start: float, end: float) -> float:
        c, t = self.cfg, self.progress_now
        if c.warmup_teacher_temp_frac > 0 and t < c.warmup_teacher_temp_frac:  # linear warm-up
            return start + (end - start) * t / c.warmup_teacher_temp_frac
        return end

    def teacher_temp(self) -> float:
        return self._warmed_up(self.cfg.warmup_teacher_temp, self.cfg.teacher_temp)

    def teacher_patch_temp(self) -> float:
        return self._warmed_up(self.cfg.warmup_teacher_patch_temp, self.cfg.teacher_patch_temp)

    def mask(self, n: int, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """[N, P] bool, True = masked: per image a prediction ratio r (one of ``pred_ratio``, uniform within
        +- ``pred_ratio_var``), then BEiT's block-wise mask of floor(r P) patches (none when that is 0)."""
        grid, p = self.encoder.grid, self.encoder.num_patches
        means = torch.tensor(self.cfg.pred_ratio, dtype=torch.float64)
        spread = torch.tensor(self.cfg.pred_ratio_var, dtype=torch.float64)
        pick = torch.randint(len(means), (n,), generator=generator)
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        ratios = means[pick] + spread[pick] * (2 * u - 1)  # [N]
        masks = torch.zeros(n, p, dtype=torch.bool)
        for i, r in enumerate(ratios.tolist()):
            num = int(r * p)
            if num > 0:
                masks[i] = blockwise_mask(1, grid, num, min_block=max(1, (grid // 3) ** 2), generator=generator)[0]
        return masks.to(device)

    def heads(self, student: bool):
        """(the [CLS] head, the patch head) of the student or the teacher: one head twice unless separate_heads."""
        cls_head = self.head if student else self.teacher_head
        patch_head = self.patch_head if student else self.teacher_patch_head
        return cls_head, patch_head if patch_head is not None else cls_head

    def training_step(self, batch) -> StepOutput:
        views = batch.views  # G global crops [B, C, S, S], then L local crops [B, C, s, s]
        v, b, g = len(views), views[0].shape[0], num_global_crops(views)
        x = torch.cat(views[:g])  # [G*B, C, S, S]
        mask = self.mask(g * b, x.device)  # [G*B, P]: each global crop of each image its own mask
        frozen = self.progress_now < self.cfg.freeze_last_layer
        cls_head, patch_head = self.heads(student=True)
        z = self.encoder.tokens(x, mask=mask, mask_token=self.mask_token)  # [G*B, 1 + P, D]: the masked globals
        h = z[:, 0]  # [G*B, D] student [CLS] of the masked globals
        if v > g:
            h = torch.cat([h, encode_crops(self.encoder, views[g:])])  # + [L*B, D] of the unmasked locals
        s_cls = cls_head(h, freeze_last_layer=frozen).view(v, b, -1)  # [V, B, K]
        s_patch = patch_head(z[:, 1:][mask], freeze_last_layer=frozen)  # [M, K'] at the masked patches only
        with torch.no_grad():
            t_cls_head, t_patch_head = self.heads(student=False)
            zt = self.teacher_encoder.tokens(x)  # [G*B, 1 + P, D]: the unmasked globals
            t_cls = t_cls_head(zt[:, 0]).view(g, b, -1)  # [G, B, K]
            t_patch = t_patch_head(zt[:, 1:].flatten(0, 1)).view(g * b, -1, s_patch.shape[-1])  # [G*B, P, K']
        tau, tau_p = self.teacher_temp(), self.teacher_patch_temp()
        if self.cfg.centering == "sinkhorn":
            p_cls, p_patch = sinkhorn_knopp_teacher(t_cls, tau), sinkhorn_knopp_teacher(t_patch[mask], tau_p)
        else:
            p_cls = centred_softmax(t_cls, self.center, tau)  # [G, B, K]
            p_patch = centred_softmax(t_patch[mask], self.patch_center, tau_p)  # [M, K']
            # this micro-batch's teacher means: [CLS] over crops and images, patches over every patch too
            self._pending.append((t_cls.float().mean((0, 1)), t_patch.float().mean((0, 1))))
        cls_loss = dino_cross_entropy(s_cls, p_cls, self.cfg.student_temp)
        patch_loss = masked_patch_distillation(s_patch, p_patch, mask, self.cfg.student_temp)
        loss = self.cfg.lambda1 * cls_loss + self.cfg.lambda2 * patch_loss
        with torch.no_grad():
            logs: dict[str, torch.Tensor | float] = {
                "cls_loss": cls_loss.detach(),
                "patch_loss": patch_loss.detach(),
                "teacher_entropy": -(p_cls * p_cls.clamp_min(1e-12).log()).sum(-1).mean(),
                "teacher_patch_entropy": -(p_patch * p_patch.clamp_min(1e-12).log()).sum(-1).mean()
                if len(p_patch)
                else torch.zeros(()),
                "mask_ratio": mask.float().mean(),
                "teacher_temp": tau,
                "teacher_patch_temp": tau_p,
                "momentum": cosine_momentum(self.cfg.momentum_base, self.progress_now),
            }
        if self.cfg.koleo_weight > 0:  # DINOv2: per global crop (never between two crops of one image), summed
            k = cast(torch.Tensor, sum(koleo(c) for c in h[: g * b].chunk(g)))  # g >= 1 terms: never sum's 0
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
        if self.patch_head is not None:
            assert self.teacher_patch_head is not None  # built with patch_head (separate_heads)
            ema_update(self.teacher_patch_head, self.patch_head, self.momentum)
        pending, self._pending = self._pending, []
        if pending:
            # c <- m c + (1 - m) mean of this step's teacher outputs over all processes, for each centre
            cls_mean = dist.all_reduce_mean(torch.stack([c for c, _ in pending]).mean(0))
            patch_mean = dist.all_reduce_mean(torch.stack([p for _, p in pending]).mean(0))
            self.center.mul_(self.cfg.center_momentum).add_(cls_mean, alpha=1 - self.cfg.center_momentum)
            self.patch_center.mul_(self.cfg.center_momentum_patch).add_(
                patch_mean, alpha=1 - self.cfg.center_momentum_patch
            )
