"""Tracking triplets — Wang, Gupta. "Unsupervised Learning of Visual Representations using Videos",
ICCV 2015.

Idea: visual tracking provides the supervision. A patch that moves in a video is tracked; its first and
last appearance, X and X+, are the same thing seen differently (pose, light, occlusion), and a patch X-
from elsewhere is something else. A siamese-triplet network (one encoder, shared weights, then fc layers
to a 1024-d embedding f) is trained with the ranking loss on cosine distance D(a, b) = 1 - cos(f(a), f(b)):

    L = max(0, D(X, X+) - D(X, X-) + M),   M = 0.5,

with random negatives first and, later, hard negatives: for each pair the K (= 4 in the paper) patches
of the batch with the highest loss.

Here: the SYNTHETIC moving-shapes videos (selfsup.data.video: 4 frames of 32 px as a 2x2 mosaic). The
paper finds moving patches with SURF points and dense trajectories and follows them with a KCF tracker
over 30 frames; here a patch (``patch`` of the frame's side) is placed where frame 0 differs most from frame 1 (the
motion energy, summed over the patch), then followed frame to frame by template matching (the shift,
within ``search`` px, of least squared difference; the shapes move up to 3 px a frame), and its frame-3
patch is X+. Every video gives one pair per step; the negatives are the other videos' X+ of the batch
(the paper's negatives are random patches of other videos too). Hard mining starts after
``hard_after`` of training, as the paper switches after its first epochs. Evaluation sees single frames:
the evaluated encoder reads frame 0 of each video's mosaic (the patches are half a frame by default).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.data.video import split_frames
from selfsup.errors import SelfsupError
from selfsup.methods.base import Method, StepOutput
from selfsup.nn import mlp
from selfsup.nn.frames import FirstFrame
from selfsup.registry import BuildContext, Needs, register


@dataclass
class TrackingConfig:
    patch: float = 0.5  # a tracked patch's side, as a fraction of the frame's (the paper: 227-px boxes in its frames)
    search: int = 4  # px the tracker searches around the last position, each way
    dim: int = 1024  # the embedding (the paper's fc7 output)
    hidden: int = 1024  # the paper's fc6 width is 4096; scaled with the smaller encoder
    margin: float = 0.5  # M
    hard_negatives: int = 4  # K: the hardest negatives per pair once mining starts
    hard_after: float = 0.1  # fraction of training with random negatives first


def track(video: torch.Tensor, patch: int, search: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Follow the most moving patch of each video from frame 0 to its last frame.

    video: float [N, T, C, S, S]. The start is the patch whose pixels change most from frame 0 to frame 1
    (motion energy |x_1 - x_0| summed over channels and over the patch); each next frame's position is the
    shift within +-``search`` px of least mean squared difference to the previous frame's patch (template
    matching). Returns the top-left corners [N, T, 2] (y, x) and the patches [N, T, C, patch, patch]."""
    n, t, c, s, _ = video.shape
    if patch > s:
        raise SelfsupError(f"method.patch={patch} is larger than the {s}-px frames")
    energy = (video[:, 1] - video[:, 0]).abs().sum(1, keepdim=True)  # [N, 1, S, S]
    energy = F.avg_pool2d(energy, patch, stride=1)  # [N, 1, S - p + 1, S - p + 1]: per top-left corner
    w = energy.shape[-1]
    flat = energy.flatten(1).argmax(1)
    pos = torch.stack([flat // w, flat % w], 1)  # [N, 2]
    corners, patches = [pos], [_crop(video[:, 0], pos, patch)]
    shifts = torch.stack(
        torch.meshgrid(torch.arange(-search, search + 1), torch.arange(-search, search + 1), indexing="ij"), -1
    ).view(-1, 2)  # [Q, 2]
    for k in range(1, t):
        cand = (pos[:, None] + shifts[None]).clamp(0, s - patch)  # [N, Q, 2]
        q = cand.shape[1]
        crops = _crop(video[:, k].repeat_interleave(q, 0), cand.view(-1, 2), patch).view(n, q, c, patch, patch)
        err = ((crops - patches[-1][:, None]) ** 2).flatten(2).mean(2)  # [N, Q]
        pos = cand[torch.arange(n), err.argmin(1)]
        corners.append(pos)
        patches.append(_crop(video[:, k], pos, patch))
    return torch.stack(corners, 1), torch.stack(patches, 1)


def _crop(frames: torch.Tensor, corner: torch.Tensor, patch: int) -> torch.Tensor:
    """[N, C, S, S] frames, [N, 2] top-left corners -> [N, C, patch, patch], one indexing op for the batch."""
    n, c = frames.shape[:2]
    r = torch.arange(patch, device=frames.device)
    corner = corner.to(frames.device)
    ys = (corner[:, 0, None] + r)[:, None, :, None]  # [N, 1, p, 1]
    xs = (corner[:, 1, None] + r)[:, None, None, :]  # [N, 1, 1, p]
    i = torch.arange(n, device=frames.device)[:, None, None, None]
    ch = torch.arange(c, device=frames.device)[None, :, None, None]
    return frames[i, ch, ys, xs]


def ranking_loss(
    f: torch.Tensor, f_pos: torch.Tensor, margin: float, hard: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's triplet ranking loss with the other pairs' X+ as negatives: f, f_pos [N, D] embeddings
    of X and X+. D = 1 - cos. hard = 0: every other pair's X+ is a negative (the loss averaged over them);
    hard = K: only the K with the highest loss for each pair. Returns (loss, the fraction of triplets
    ranked right: D(X, X+) + M < D(X, X-))."""
    a, p = F.normalize(f.float(), dim=1), F.normalize(f_pos.float(), dim=1)
    d_pos = 1 - (a * p).sum(1, keepdim=True)  # [N, 1]
    d_neg = 1 - a @ p.T  # [N, N]: row i, column j != i: X_i against X_j+
    loss = (d_pos - d_neg + margin).clamp_min(0)
    off = ~torch.eye(len(a), dtype=torch.bool, device=a.device)
    loss = loss[off].view(len(a), -1)  # [N, N - 1]
    ranked = (d_pos + margin < d_neg)[off].float().mean()
    if hard:
        loss = loss.topk(min(hard, loss.shape[1]), dim=1).values
    return loss.mean(), ranked


# video: the method reads the raw frames (batch.images), not augmented views
@register("tracking", config=TrackingConfig, views="pretext", needs=Needs(views=1, video=True))
class Tracking(Method):
    """Patches tracked through a video are the same thing: a triplet ranking loss on their embeddings."""

    encoder: FirstFrame
    # buffers: the views' normalisation [1, 1, C, 1, 1]
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, encoder: nn.Module, cfg: TrackingConfig = TrackingConfig(), ctx: BuildContext = BuildContext()):
        super().__init__()
        normalization = ctx.require("normalization")
        if not 0 < cfg.patch <= 1 or cfg.search < 1 or cfg.hard_negatives < 0 or not 0.0 <= cfg.hard_after <= 1.0:
            raise SelfsupError(
                f"tracking: method.patch={cfg.patch} (a fraction of the frame in (0, 1]), "
                f"method.search={cfg.search} (>= 1 px), "
                f"method.hard_negatives={cfg.hard_negatives} (>= 0) and method.hard_after="
                f"{cfg.hard_after} (a fraction of training) are out of range"
            )
        self.cfg = cfg
        self.encoder = FirstFrame(encoder)
        c = len(normalization[0])
        self.register_buffer("mean", torch.tensor(normalization[0], dtype=torch.float32).view(1, 1, c, 1, 1))
        self.register_buffer("std", torch.tensor(normalization[1], dtype=torch.float32).view(1, 1, c, 1, 1))
        self.head = mlp(cast(int, encoder.num_features), cfg.hidden, cfg.dim, bn=False)  # fc6-fc7 to the 1024-d f

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))

    def training_step(self, batch) -> StepOutput:
        images = batch.images  # uint8 mosaics [B, C, 2S, 2S]
        if images.shape[-1] % 2 or images.shape[-2] % 2:
            raise SelfsupError("tracking reads 4-frame videos stored as 2x2 mosaics: --data moving-shapes")
        video = (split_frames(images).float() / 255 - self.mean) / self.std  # [B, T, C, S, S]
        with torch.no_grad():  # the tracker is fixed, not learnt
            side = max(2, round(self.cfg.patch * video.shape[-1]))  # px
            _, patches = track(video, side, self.cfg.search)
        b = len(video)
        pair = torch.cat([patches[:, 0], patches[:, -1]])  # [2B, C, p, p]: X then X+
        f = self.head(self.encoder.net(pair))
        hard = self.cfg.hard_negatives if self.progress_now >= self.cfg.hard_after else 0
        loss, ranked = ranking_loss(f[:b], f[b:], self.cfg.margin, hard)
        return StepOutput(loss, {"pretext/ranked": ranked})
