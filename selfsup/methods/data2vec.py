"""data2vec (vision) — Baevski, Hsu, Xu, Babu, Gu, Auli. "data2vec: A General Framework for
Self-supervised Learning in Speech, Vision and Language", ICML 2022.

Idea: one learning objective for speech, text and images. A student sees a masked input and, at
the masked positions, regresses the *contextualised* representation that a teacher — an
exponential moving average of the student — builds from the whole, unmasked input. The target is
not a local unit (a pixel, a visual token, a word) but the average of the teacher's top K block
outputs, each normalised, so it carries information from the entire image:

    y_t = LN( 1/K sum_{l=L-K+1}^{L} LN(a_t^l) )        a_t^l: block l's output at patch t (teacher)
    loss = mean over masked t of SmoothL1_beta( W f_t(x_masked), y_t )
    Delta <- tau Delta + (1 - tau) theta                (teacher Delta, student theta)

Details (sec. 3 and 5.1; the official vision code, facebookresearch/data2vec_vision
``beit/engine_for_cyclical.py``, ``modeling_cyclical.py``, and its ViT-B command in ``beit/README.md``):
the student is a ViT whose masked patches are replaced by a learned mask token (as BEiT/SimMIM);
BEiT's block-wise masks over 60 % of the patches (120 of 196, rectangles of at least 16); the teacher
encodes the same augmented image unmasked, in eval mode, with no gradient; its targets are the
outputs of the top K = 6 of 12 blocks (after each block's residual, before the final norm, [CLS]
dropped), each normalised by a parameter-less layer norm over the channels of each patch, averaged,
and layer-normalised again (``--post_target_layer_norm``). Instance norm over the patches of each
channel (``target_norm: instance``) is the speech variant (sec. 3.3: neighbouring speech frames are
correlated; for vision and text, layer norm suffices). The student's last (layer-normalised) tokens
go through a linear layer D -> D; the loss is smooth L1 with beta = 2 on the masked patches, averaged
over patches and channels. The teacher is an EMA of the whole student encoder; the paper's schedule
raises tau linearly from tau_0 to tau_e over the first tau_n updates, then holds it; the official
ViT-B run holds it at 0.9998 throughout (``--ema_decay 0.9998 --ema_start_at 0``); 0.999 -> 0.9999 is
the speech and text setting.
Logged: ``pretext/regression`` (the loss), ``ema_decay``, ``target_std`` and ``pred_std`` (per-channel
std over the masked patches, averaged: the official collapse check).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.backbones.vit import ViT
from selfsup.errors import SelfsupError
from selfsup.methods.base import Method, StepOutput
from selfsup.nn.blockwise_masking import blockwise_mask
from selfsup.nn.ema import ema_update, frozen_copy
from selfsup.registry import BuildContext, Needs, register


@dataclass
class Data2VecConfig:
    mask_ratio: float = 0.6  # the paper's 60 % (the official ViT-B run: 120 of 196 patches)
    min_block: float = 16 / 196  # smallest masked rectangle as a fraction of the patches (official: 16 of 196)
    top_k: int = 6  # K: the teacher's top K blocks averaged (ViT-B: 6 of its 12)
    target_norm: str = "layer"  # per block: "layer" (vision, text), "instance" (speech), "none"
    final_norm: bool = True  # layer norm of the average (the official vision run's post_target_layer_norm)
    loss_beta: float = 2.0  # smooth-L1 beta; 0: the L2 loss
    ema_decay: float = 0.9998  # tau_0
    ema_end_decay: float = 0.9998  # tau_e (official ViT-B: constant 0.9998; speech and text 0.999 -> 0.9999)
    ema_anneal_end: float = 1.0  # tau_n as a fraction of training: tau reaches tau_e there, then stays


def instance_norm_over_patches(y: torch.Tensor) -> torch.Tensor:
    """[B, P, D] -> each channel of each image standardised over its P patches (F.instance_norm on BDP)."""
    return F.instance_norm(y.transpose(1, 2)).transpose(1, 2)


@register("data2vec", config=Data2VecConfig, views="pretext", needs=Needs(views=1, backbone="vit"))
class Data2Vec(Method):
    """A masked student regresses the EMA teacher's normalised top-K block average at masked patches."""

    encoder: ViT  # the registry gives a ViT-only method a ViT
    teacher: ViT  # its EMA copy
    progress: torch.Tensor  # a buffer: the fraction of training done

    def __init__(self, encoder: ViT, cfg: Data2VecConfig = Data2VecConfig(), ctx: BuildContext = BuildContext()):
        super().__init__()
        depth = len(encoder.blocks)
        if not 1 <= cfg.top_k <= depth:
            raise SelfsupError(f"method.top_k={cfg.top_k}: must be between 1 and the ViT's {depth} blocks")
        if cfg.target_norm not in ("layer", "instance", "none"):
            raise SelfsupError(f"method.target_norm={cfg.target_norm!r}: choose layer, instance or none")
        if not 0.0 < cfg.mask_ratio < 1.0:
            raise SelfsupError(f"method.mask_ratio={cfg.mask_ratio}: must be in (0, 1)")
        self.cfg = cfg
        self.encoder = encoder  # the student: what evaluation sees
        d = encoder.num_features
        self.mask_token = nn.Parameter(torch.zeros(d))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.head = nn.Linear(d, d)  # the official lm_head / final_proj
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)
        self.teacher = cast(ViT, frozen_copy(self.encoder))
        self.register_buffer("progress", torch.zeros(()))  # fraction of training done: the EMA schedule's input

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # the official EMA model builds targets in eval mode (no drop path)
        return self

    def ema_decay(self, progress: float) -> float:
        """tau: linear from tau_0 to tau_e over the first ``ema_anneal_end`` of training, then tau_e."""
        c = self.cfg
        if c.ema_anneal_end <= 0 or progress >= c.ema_anneal_end:
            return c.ema_end_decay
        return c.ema_decay + (c.ema_end_decay - c.ema_decay) * progress / c.ema_anneal_end

    def mask(self, n: int, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """[N, P] bool, True = masked: BEiT's block-wise masks of round(ratio * P) patches."""
        p = self.encoder.num_patches
        return blockwise_mask(
            n,
            self.encoder.grid,
            int(round(self.cfg.mask_ratio * p)),
            min_block=max(1, int(round(self.cfg.min_block * p))),
            max_block=p,
            device=device,
            generator=generator,
        )

    @torch.no_grad()
    def targets(self, x: torch.Tensor) -> torch.Tensor:
        """y [N, P, D]: the teacher's top-K block outputs on the unmasked x, each normalised, averaged,
        normalised again (float32)."""
        top = [a[:, 1:].float() for a in self.teacher.block_outputs(x)[-self.cfg.top_k :]]  # K x [N, P, D]
        if self.cfg.target_norm == "layer":
            top = [F.layer_norm(a, a.shape[-1:]) for a in top]  # over the channels of each patch
        elif self.cfg.target_norm == "instance":
            top = [instance_norm_over_patches(a) for a in top]  # over the patches of each channel
        y = cast(torch.Tensor, sum(top)) / len(top)  # top_k >= 1 tensors: never sum's start, 0
        return F.layer_norm(y, y.shape[-1:]) if self.cfg.final_norm else y

    def predict(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The student's regression of every patch [N, P, D] from x with the patches in ``mask`` hidden."""
        z = self.encoder.tokens(x, mask=mask, mask_token=self.mask_token)[:, 1:]  # [N, P, D], normed
        return self.head(z).float()

    def training_step(self, batch) -> StepOutput:
        x = batch.views[0]  # the same augmented image for student and teacher
        mask = self.mask(len(x), x.device)  # [N, P]
        pred = self.predict(x, mask)[mask]  # [M, D] masked patches only
        y = self.targets(x)[mask]  # [M, D]
        if self.cfg.loss_beta > 0:
            loss = F.smooth_l1_loss(pred, y, beta=self.cfg.loss_beta)
        else:
            loss = F.mse_loss(pred, y)
        with torch.no_grad():
            target_std, pred_std = y.std(0).mean(), pred.std(0).mean()
        return StepOutput(
            loss,
            {
                "pretext/regression": loss.detach(),
                "target_std": target_std,
                "pred_std": pred_std,
                "ema_decay": self.ema_decay(self.progress_now),
            },
        )

    @torch.no_grad()
    def on_step_end(self, progress: float) -> None:
        self.progress.fill_(progress)
        self.progress_now = progress  # outside the loop too (the loop also sets it)
        ema_update(self.teacher, self.encoder, self.ema_decay(progress))
