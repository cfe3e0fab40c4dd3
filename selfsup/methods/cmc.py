"""CMC — Tian, Krishnan, Isola. "Contrastive Multiview Coding", ECCV 2020 (arXiv 2019).

Idea: split each image into views that carry the same scene through different channels
(luminance vs chrominance; an image vs its depth), give every view its own encoder, and
make the views of one image agree against other images: the pairwise loss
L(V1, V2) + L(V2, V1), where L(V1, V2) contrasts an anchor from V1 with the
positive and the negatives from V2. As in InstDisc, negatives come from a memory bank per
view (one entry per training image, momentum 0.5). The representation kept is the
concatenation of both encoders' features.

Views here, from one augmented image:
- 3-channel data: Y vs DbDr of the linear YDbDr colour space (Y 1 channel, DbDr 2), the split
  the paper reports next to L vs ab (a linear transform, so it can act on the normalised input).
- 1-channel data: the image vs its Sobel gradient map (dx, dy): see ``ImageAndGradient``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.backbones import clone_backbone
from selfsup.errors import SelfsupError
from selfsup.losses.contrastive import info_nce, infonce_bound
from selfsup.methods.base import Method, StepOutput
from selfsup.nn.queue import MemoryBank
from selfsup.registry import BuildContext, register


class YDbDrSplit(nn.Module):
    """[B, 3, H, W] RGB -> (Y [B, 1, H, W], DbDr [B, 2, H, W]), the YDbDr transform (SECAM).

    It is applied to the dataset-normalised input x_c = (r_c - mu_c) / sigma_c. A linear colour
    transform W commutes with that up to two harmless changes: W x = W diag(1/sigma) r - const.
    The constant is removed by the first BatchNorm of each encoder (and the views are zero-mean
    anyway); the per-channel 1/sigma only re-weights R, G, B slightly (dataset stds differ by
    ~10%, e.g. CIFAR-10 0.247/0.243/0.261), so Y stays a luminance and DbDr the two colour
    differences. The method never needs the dataset's mean and std.
    """

    channels = (1, 2)

    def __init__(self):
        super().__init__()
        w = torch.tensor(
            [
                [0.299, 0.587, 0.114],  # Y
                [-0.450, -0.883, 1.333],  # Db
                [-1.333, 1.116, 0.217],
            ]
        )  # Dr
        self.register_buffer("w", w, persistent=False)  # a constant, not state

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ydbdr = torch.einsum("oc,bchw->bohw", self.w.to(x.dtype), x)
        return ydbdr[:, :1], ydbdr[:, 1:]


class ImageAndGradient(nn.Module):
    """[B, 1, H, W] -> (the image [B, 1, H, W], its Sobel gradient (dx, dy) [B, 2, H, W]).

    One-channel images have no colour to split. The gradient map is an honest second view in
    CMC's sense, like the paper's image vs surface normals: it shows the same object through
    a different low-level channel (edges and their orientation instead of intensities), it
    drops what the encoders should not agree on (absolute brightness, smooth shading), and
    each encoder sees only its own view. It is weaker than L vs ab in one way, said plainly:
    the gradient is a linear function of the image (invertible up to a constant), so the two
    views share almost all their information and the contrast is easier than across colour.
    Sobel is written by hand (3x3 kernels, replicate padding so the border does not read as an
    edge of the zero padding) because torch/torchvision offer no tensor Sobel filter.
    """

    kernels: torch.Tensor  # a buffer: the Sobel kernels [2, 1, 3, 3]

    channels = (1, 2)

    def __init__(self):
        super().__init__()
        kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8  # d/dx per pixel, smoothed in y
        self.register_buffer("kernels", torch.stack([kx, kx.T])[:, None], persistent=False)  # [2, 1, 3, 3]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        grad = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), self.kernels.to(x.dtype))
        return x, grad


class CMCEncoder(nn.Module):
    """What evaluation sees: image -> its two views -> concatenated features [B, F1 + F2]."""

    def __init__(self, split: nn.Module, enc1: nn.Module, enc2: nn.Module):
        super().__init__()
        self.split, self.enc1, self.enc2 = split, enc1, enc2
        self.num_features = cast(int, enc1.num_features) + cast(int, enc2.num_features)

    def views(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.split(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v1, v2 = self.split(x)
        return torch.cat([self.enc1(v1), self.enc2(v2)], 1)


@dataclass
class CMCConfig:
    dim: int = 128  # per-view embedding size in the banks
    negatives: int = 4096  # bank entries drawn as negatives per step (shared by both directions)
    temperature: float = 0.07
    bank_momentum: float = 0.5


@register("cmc", config=CMCConfig, views="cmc")
class CMC(Method):
    """CMC: one encoder per view (Y/DbDr, or image/gradient), pairwise contrast against per-view banks."""

    encoder: CMCEncoder

    def __init__(self, encoder: nn.Module, cfg: CMCConfig = CMCConfig(), ctx: BuildContext = BuildContext()):
        super().__init__()
        num_samples = ctx.require("num_samples")
        self.cfg = cfg
        enc2 = clone_backbone(encoder, in_channels=2)  # the 2-channel view (DbDr or dx,dy); fresh weights
        in_channels = cast(dict[str, Any], encoder.backbone_args)["in_channels"]
        split: nn.Module
        if in_channels == 3:
            split = YDbDrSplit()
            enc1 = clone_backbone(encoder, in_channels=1)  # the given 3-channel encoder has no view to see
        elif in_channels == 1:
            split = ImageAndGradient()
            enc1 = encoder
        else:
            raise SelfsupError(
                f"cmc splits 1-channel images into image/gradient and 3-channel images into Y/DbDr; "
                f"got an encoder for {in_channels} input channels (build it with create_backbone "
                f"for the dataset's channels)"
            )
        self.encoder = CMCEncoder(split, enc1, enc2)
        self.head1 = nn.Linear(cast(int, enc1.num_features), cfg.dim)
        self.head2 = nn.Linear(cast(int, enc2.num_features), cfg.dim)
        self.bank1 = MemoryBank(num_samples, cfg.dim, seed=0)
        self.bank2 = MemoryBank(num_samples, cfg.dim, seed=1)
        self._pending: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (index, z1, z2)

    def embed_views(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        v1, v2 = self.encoder.views(x)  # [B, 1, H, W], [B, 2, H, W]
        z1 = F.normalize(self.head1(self.encoder.enc1(v1)).float(), dim=1)  # [B, D]
        z2 = F.normalize(self.head2(self.encoder.enc2(v2)).float(), dim=1)  # [B, D]
        return z1, z2

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(self.embed_views(x), 1)  # [B, 2D]

    def training_step(self, batch) -> StepOutput:
        x, i = batch.views[0], batch.index  # one augmented image [B, C, H, W], its indices [B]
        z1, z2 = self.embed_views(x)
        neg = self.bank1.sample(self.cfg.negatives)  # the same K images from both banks: [K]
        tau = self.cfg.temperature
        # The softmax (InfoNCE) form with bank negatives: the k+1-way loss the paper writes, which
        # its implementation approximates with NCE or computes directly (the official code offers both).
        # L(V1, V2): anchor z1_i, positive bank2[i], negatives bank2[neg]; and the reverse.
        with torch.autocast(x.device.type, enabled=False):  # logits at tau 0.07 in float32
            l12, candidates = info_nce(z1, self.bank2.get(i), self.bank2.get(neg), tau)
            l21, _ = info_nce(z2, self.bank1.get(i), self.bank1.get(neg), tau)
        self._pending.append((i, z1.detach(), z2.detach()))
        return StepOutput(
            l12 + l21,
            {
                "infonce_bound": infonce_bound((l12 + l21).detach() / 2, candidates),
                "bound_v1_v2": infonce_bound(l12.detach(), candidates),
                "bound_v2_v1": infonce_bound(l21.detach(), candidates),
            },
        )

    @torch.no_grad()
    def on_step_end(self, progress: float) -> None:
        for i, z1, z2 in self._pending:  # banks move after the optimiser step
            self.bank1.update(i, z1, self.cfg.bank_momentum)
            self.bank2.update(i, z2, self.cfg.bank_momentum)
        self._pending.clear()
