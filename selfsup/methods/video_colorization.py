"""Video colorization — Vondrick, Shrivastava, Fathi, Guadarrama, Murphy. "Tracking Emerges by
Colorizing Videos", ECCV 2018.

Idea: colour a grey target frame by *copying* colours from a coloured reference frame. The network
only produces an embedding f per pixel of the grey frames; target pixel j takes the colours of the
reference pixels i it attends to, A_ij = softmax_i(f_i^T f_j), y_j = sum_i A_ij c_i (eq. 1-2), and
the loss is the cross-entropy of y_j against the target's true colour. Colour is a free label that
stays with an object as it moves, so to copy it right the embedding must find the same object
in the other frame: tracking emerges. Evaluated as the paper does: propagate a segmentation mask
from the first frame through the same attention, frame to frame, and measure its IoU.

Details: colours are quantised into 16 clusters by k-means over the ab channels of Lab (sec. 3.2;
estimated once from training frames, kept as a buffer); three reference frames colour the fourth
(sec. 4); the network sees grey frames only (L). Here: frames come from the SYNTHETIC moving-shapes
videos (selfsup.data.video), 4 frames of 32 px, stored as 2x2 mosaics; the backbone's feature maps
(1/8 of its input) are computed on frames enlarged ``scale`` x and resized to ``map_size`` before a
1x1 projection to ``embed_dim``. Logged: ``pretext/color_acc`` (target pixels whose most likely
copied colour is right) and, at each epoch start on 100 held-out videos, ``pretext/track_iou``
(the mask propagated from frame 0 to frames 1-3) next to ``track_iou_static`` (frame 0's mask kept
still: what no tracking gives).
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.backbones import clone_backbone
from selfsup.data.video import make_videos, split_frames
from selfsup.losses.precision import float32_loss
from selfsup.methods.base import Method, Picture, StepOutput
from selfsup.methods.colorization import LabEncoder
from selfsup.registry import BuildContext, Needs, register
from selfsup.transforms.color import rgb_to_lab
from selfsup.nn.kmeans import kmeans


@dataclass
class VideoColorizationConfig:
    num_colors: int = 16  # k-means clusters of ab (the paper's 16)
    embed_dim: int = 64
    map_size: int = 16  # side of the embedding map the attention works on
    scale: int = 2  # frames are enlarged by this before the backbone (whose feature maps are 1/8)
    temperature: float = 1.0  # softmax over f_i^T f_j / temperature (the paper: 1)
    eval_videos: int = 100  # held-out videos for the tracking IoU


@float32_loss  # attention in float32 even under bf16 autocast
def propagate(f_ref: torch.Tensor, f_tgt: torch.Tensor, values: torch.Tensor, temperature: float) -> torch.Tensor:
    """Copy ``values`` [N, R, K] of R reference pixels to target pixels through A = softmax_ref(f_ref^T f_tgt):
    f_ref [N, R, D], f_tgt [N, P, D] -> [N, P, K] (rows are convex combinations of the reference values)."""
    attn = torch.softmax(torch.einsum("npd,nrd->npr", f_tgt.float(), f_ref.float()) / temperature, dim=2)
    return attn @ values.float()


@register(
    "video_colorization", config=VideoColorizationConfig, views="pretext", needs=Needs(views=1, color=True, video=True)
)
class VideoColorization(Method):
    """Colour the last frame by pointing at reference pixels; tracking by the same pointing."""

    encoder: LabEncoder
    colors: torch.Tensor  # a buffer: the ab colour clusters [K, 2]
    colors_ready: torch.Tensor  # a buffer: whether k-means has run

    def __init__(
        self,
        encoder: nn.Module,
        cfg: VideoColorizationConfig = VideoColorizationConfig(),
        ctx: BuildContext = BuildContext(),
    ):
        super().__init__()
        normalization: tuple[Sequence[float], Sequence[float]] = ctx.require("normalization")  # (mean, std)
        self.cfg = cfg
        net = clone_backbone(encoder, in_channels=1)
        self.encoder = LabEncoder(*normalization, {"L": net})  # evaluation: grey mosaic -> pooled features
        self.embed = nn.Conv2d(cast(int, net.num_features), cfg.embed_dim, 1)
        # until k-means has run (first epoch): grey plus colours spread on a circle of the ab plane
        angle = torch.arange(cfg.num_colors - 1) * (2 * torch.pi / max(1, cfg.num_colors - 1))
        ring = 50 * torch.stack([angle.cos(), angle.sin()], 1)
        self.register_buffer("colors", torch.cat([torch.zeros(1, 2), ring]))
        self.register_buffer("colors_ready", torch.tensor(False))

    def embeddings(self, lab: torch.Tensor) -> torch.Tensor:
        """Lab frames [B, 3, S, S] -> per-pixel embeddings [B, map_size^2, D]."""
        x = F.interpolate(lab[:, :1] / 50 - 1, scale_factor=self.cfg.scale, mode="bilinear", align_corners=False)
        maps = self.encoder.nets["L"].forward_maps(x)  # type: ignore[operator]  # a backbone's method
        maps = F.interpolate(maps, size=(self.cfg.map_size,) * 2, mode="bilinear", align_corners=False)
        return self.embed(maps).flatten(2).transpose(1, 2)

    def _frames_lab(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 mosaics [N, 3, 2S, 2S] -> Lab frames [N, 4, 3, S, S]."""
        frames = split_frames(images)
        n, t = frames.shape[:2]
        return rgb_to_lab(frames.flatten(0, 1).float() / 255).view(n, t, 3, *frames.shape[-2:])

    def _color_ids(self, lab: torch.Tensor) -> torch.Tensor:
        """Lab frames [B, 3, S, S] -> colour cluster of each map pixel [B, map_size^2]."""
        ab = F.adaptive_avg_pool2d(lab[:, 1:], self.cfg.map_size).flatten(2).transpose(1, 2)  # [B, P, 2]
        return torch.cdist(ab, self.colors.expand(len(ab), -1, -1)).argmin(2)

    def on_epoch_start(self, epoch, data):
        if not bool(self.colors_ready):
            g = torch.Generator().manual_seed(0)
            lab = self._frames_lab(data.dataset.images[torch.randperm(len(data.dataset.images), generator=g)[:300]])
            ab = lab[:, :, 1:].permute(0, 1, 3, 4, 2).reshape(-1, 2)
            ab = ab[torch.randperm(len(ab), generator=g)[:100_000]]
            self.colors.copy_(kmeans(ab, self.cfg.num_colors, seed=0).centroids)
            self.colors_ready.fill_(True)
        was = self.training
        self.eval()
        with torch.no_grad():
            iou, static = self.tracking_iou(data.device)
        self.train(was)
        return {"pretext/track_iou": iou, "track_iou_static": static}

    def training_step(self, batch) -> StepOutput:
        lab = self._frames_lab(batch.images)  # [N, 4, 3, S, S]: 3 reference frames, then the target
        n = len(lab)
        f = self.embeddings(lab.flatten(0, 1)).view(n, 4, -1, self.cfg.embed_dim)  # [N, 4, P, D]
        ids = self._color_ids(lab.flatten(0, 1)).view(n, 4, -1)  # [N, 4, P]
        onehot = F.one_hot(ids[:, :3].flatten(1), self.cfg.num_colors)  # reference colours [N, 3P, K]
        y = propagate(f[:, :3].flatten(1, 2), f[:, 3], onehot, self.cfg.temperature)  # [N, P, K]
        loss = F.nll_loss(y.clamp_min(1e-8).log().flatten(0, 1), ids[:, 3].flatten())
        acc = (y.argmax(2) == ids[:, 3]).float().mean().detach()
        return StepOutput(loss, {"pretext/color_acc": acc})

    def track(self, lab: torch.Tensor, mask0: torch.Tensor, objects: int = 4) -> torch.Tensor:
        """Propagate frame 0's mask (ids [N, P]) frame to frame: soft masks [N, 4, P, objects]."""
        n = len(lab)
        f = self.embeddings(lab.flatten(0, 1)).view(n, 4, -1, self.cfg.embed_dim)
        soft = [F.one_hot(mask0, objects).float()]
        for t in range(1, 4):
            soft.append(propagate(f[:, t - 1], f[:, t], soft[-1], self.cfg.temperature))
        return torch.stack(soft, 1)

    def tracking_iou(self, device) -> tuple[float, float]:
        """Mean IoU of the propagated masks over objects and frames 1-3 of held-out videos, and of the
        static baseline (frame 0's mask kept), at the map resolution."""
        videos, masks = make_videos(self.cfg.eval_videos, seed=12345)
        lab = rgb_to_lab(videos.flatten(0, 1).float() / 255).view(*videos.shape[:2], 3, *videos.shape[-2:]).to(device)
        small = (
            F.interpolate(masks.float(), size=(self.cfg.map_size,) * 2, mode="nearest").long().flatten(2)
        )  # [N, 4, P]
        pred = self.track(lab, small[:, 0].to(device)).argmax(3).cpu()  # [N, 4, P]
        return _mean_iou(pred[:, 1:], small[:, 1:]), _mean_iou(small[:, :1].expand(-1, 3, -1), small[:, 1:])

    def pictures(self, images, data) -> dict:

        videos, masks = make_videos(6, seed=12345)
        lab = rgb_to_lab(videos.flatten(0, 1).float() / 255).view(6, 4, 3, 32, 32).to(data.device)
        m = self.cfg.map_size
        small = F.interpolate(masks.float(), size=(m, m), mode="nearest").long().flatten(2)
        pred = self.track(lab, small[:, 0].to(data.device)).argmax(3).cpu().view(6, 4, 1, m, m)
        palette = torch.tensor([[0.1, 0.1, 0.1], [1, 0.3, 0.3], [0.3, 1, 0.3], [0.3, 0.5, 1]])
        rows = []
        for i in range(3):
            rows.append((f"video {i}", videos[i].float() / 255))
            rows.append(("tracked", palette[pred[i, :, 0]].permute(0, 3, 1, 2)))
        return {
            "tracking": Picture(
                rows,
                None,
                "Video colorization: frames 0-3 and the mask propagated from frame 0 (SYNTHETIC moving shapes)",
            )
        }


def _mean_iou(pred: torch.Tensor, true: torch.Tensor) -> float:
    """Mean over videos, frames and objects present (ids >= 1) of |pred = k and true = k| / |either|."""
    ious = []
    for k in range(1, int(true.max()) + 1):
        p, t = pred == k, true == k
        union = (p | t).flatten(2).sum(2).float()
        inter = (p & t).flatten(2).sum(2).float()
        present = union > 0
        ious.append((inter[present] / union[present]))
    return torch.cat(ious).mean().item() if ious else 0.0
