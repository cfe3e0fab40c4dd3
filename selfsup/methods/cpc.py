"""CPC — van den Oord, Li, Vinyals. "Representation Learning with Contrastive Predictive Coding",
arXiv 2018; image details from Hénaff et al. "Data-Efficient Image Recognition with Contrastive
Predictive Coding", ICML 2020 (arXiv 2019).

Idea: cut the input into overlapping pieces, encode each piece on its own, z = g_enc(x_piece),
summarise the pieces seen so far with an autoregressive model, c_t = g_ar(z_<=t), and predict
the encodings k steps ahead from c_t with a per-step linear map W_k. The score
f_k(z, c_t) = exp(z^T W_k c_t) is trained by InfoNCE to pick the true z_{t+k} among the other
positions of the same and of other inputs; log N - L_N lower-bounds I(x_{t+k}; c_t).

- Images: a G x G grid of P-px patches with stride P/2 (the paper: 7x7 patches of 64 px from a
  256-px image); the image is resized to (G-1)*P/2 + P px first when its side differs. The
  context is PixelCNN-style: stacked convolutions padded only at the top, so c_{i,j} sees rows
  <= i; predictions go k = 1..K rows down, z_{i+k,j}.
- 1-D sequences (backbone ``conv1d``, or ``mode: sequence``): segments of L samples with hop
  L/2 along time, a GRU context over them, predictions k = 1..K steps ahead.

``self.encoder`` (what evaluation sees) is the whole pipeline — pieces -> backbone -> context —
mean-pooled over positions: the pooled context c, as the paper's linear evaluations use.
Not done: the per-patch augmentation and the four prediction directions of Hénaff et al.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.errors import SelfsupError
from selfsup.losses.contrastive import infonce_bound
from selfsup.losses.mutual_info import cpc_info_nce
from selfsup.methods.base import Method, StepOutput
from selfsup.registry import BuildContext, register


@dataclass
class CPCConfig:
    mode: str = "auto"  # "image" | "sequence" | "auto": sequence when the backbone reads 1-D input (conv1d)
    grid: int = 7  # image: grid x grid patches (both papers: 7x7)
    patch: int = 8  # image: patch side in px (paper 64 px of 256; 8 px suits 28-32 px images); stride patch/2
    segment: int = 64  # sequence: samples per segment; hop segment/2
    steps: int | None = None  # K; None: the paper's 5 rows for images, 12 steps for sequences (audio)
    context_hidden: int = 256  # PixelCNN bottleneck width (Hénaff et al.) / GRU state size (256 for audio)
    context_layers: int = 5  # image: residual PixelCNN blocks (Hénaff et al. appendix A)


class MaskedRowContext(nn.Module):
    """PixelCNN-style context over a grid of encodings (Hénaff et al. 2019, appendix pseudocode):
    residual blocks of 1x1 conv, 1x3 conv along the row, a 2x1 conv over (row above, this row)
    after one row of zero padding at the top, 1x1 conv back. Nothing is padded below, so c_{i,j}
    depends on rows <= i only (each block widens the view one row up). [B, D, H, W] -> [B, D, H, W]."""

    def __init__(self, dim: int, hidden: int, layers: int):
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(dim, hidden, 1),
                nn.ReLU(inplace=True),
                nn.Conv2d(hidden, hidden, (1, 3), padding=(0, 1)),
                nn.ZeroPad2d((0, 0, 1, 0)),  # (left, right, top, bottom): one row of zeros on top only
                nn.Conv2d(hidden, hidden, (2, 1)),
                nn.ReLU(inplace=True),
                nn.Conv2d(hidden, dim, 1),
            )
            for _ in range(layers)
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            z = z + block(z)
        return F.relu(z)


class CPCEncoder(nn.Module):
    """What evaluation sees: input -> pieces -> backbone (shared) -> context -> mean over positions.

    ``encode`` and ``context`` expose the two halves for training: z [B, H, W, D] on a grid whose
    rows are the prediction axis (time for sequences, with W = 1) and c [B, H, W, num_features].
    """

    ar: nn.Module  # g_ar: a GRU (sequences) or masked row convolutions (images)

    def __init__(self, backbone: nn.Module, cfg: CPCConfig):
        super().__init__()
        self.backbone = backbone
        self.cfg = cfg
        if cfg.mode not in ("auto", "image", "sequence"):
            raise SelfsupError(f"cpc mode must be 'auto', 'image' or 'sequence', got {cfg.mode!r}")
        self.sequence = cfg.mode == "sequence" or (cfg.mode == "auto" and getattr(backbone, "sequence_input", False))
        d = cast(int, backbone.num_features)
        if self.sequence:
            self.ar = nn.GRU(d, cfg.context_hidden, batch_first=True)  # the audio model's g_ar (256 units)
            self.num_features = cfg.context_hidden
        else:
            self.ar = MaskedRowContext(d, cfg.context_hidden, cfg.context_layers)
            self.num_features = d  # residual blocks keep the width of z

    def pieces(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """[B, C, H, W] -> (pieces [B*G1*G2, C, h, w] in row-major grid order, (G1, G2))."""
        b, c = x.shape[:2]
        if self.sequence:
            seq = x.flatten(2)  # [B, C, T]: [B,1,1,T] or the signals dataset's row-major [B,1,32,32]
            length, hop = self.cfg.segment, max(1, self.cfg.segment // 2)
            if seq.shape[-1] < length:
                raise SelfsupError(
                    f"cpc: a sequence of {seq.shape[-1]} samples is shorter than one segment "
                    f"({length}); lower method.segment"
                )
            seg = seq.unfold(2, length, hop)  # [B, C, n, L]
            n = seg.shape[2]
            return seg.permute(0, 2, 1, 3).reshape(b * n, c, 1, length), (n, 1)
        g, p = self.cfg.grid, self.cfg.patch
        side = (g - 1) * (p // 2) + p  # the image side a g x g grid of half-overlapping patches covers
        if x.shape[-2:] != (side, side):  # "resize if needed": the grid always covers the whole image
            x = F.interpolate(x, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
        tiles = x.unfold(2, p, p // 2).unfold(3, p, p // 2)  # [B, C, G, G, p, p]
        return tiles.permute(0, 2, 3, 1, 4, 5).reshape(b * g * g, c, p, p), (g, g)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """z_{i,j} = g_enc(piece_{i,j}): [B, H, W, D]."""
        pieces, (h, w) = self.pieces(x)
        return self.backbone(pieces).view(x.shape[0], h, w, -1)

    def context(self, z: torch.Tensor) -> torch.Tensor:
        """c_{i,j} from z_{<=i, :}: [B, H, W, D] -> [B, H, W, num_features]."""
        if self.sequence:
            return self.ar(z[:, :, 0])[0].unsqueeze(2)  # GRU over time: [B, T, Dc] -> [B, T, 1, Dc]
        return self.ar(z.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.context(self.encode(x)).mean((1, 2))  # [B, num_features]


@register("cpc", config=CPCConfig, views="simclr")
class CPC(Method):
    """CPC: predict the encodings of pieces further down/ahead from an autoregressive context (InfoNCE)."""

    encoder: CPCEncoder

    def __init__(self, encoder: nn.Module, cfg: CPCConfig = CPCConfig(), ctx: BuildContext = BuildContext()):
        super().__init__()
        self.cfg = cfg
        d_z = cast(int, encoder.num_features)  # the backbone's width: the size of each z
        self.encoder = CPCEncoder(encoder, cfg)  # evaluation sees the pooled context (embedding() too)
        self.steps = cfg.steps or (12 if self.encoder.sequence else 5)
        # W_1..W_K stacked in one bias-free linear map: output block k-1 (D_z wide) is W_k c
        self.predictor = nn.Linear(self.encoder.num_features, self.steps * d_z, bias=False)

    def training_step(self, batch) -> StepOutput:
        x = batch.views[0]  # [B, C, H, W]; one (lightly augmented) view
        z = self.encoder.encode(x)  # [B, H, W, D]   H: rows (image) or segments (sequence)
        c = self.encoder.context(z)  # [B, H, W, Dc]  c_{i,j} sees rows <= i
        pred = self.predictor(c).unflatten(-1, (self.steps, z.shape[-1]))  # [B, H, W, K, D]: W_k c_{i,j}
        loss, candidates = cpc_info_nce(pred, z)
        return StepOutput(loss, {"infonce_bound": infonce_bound(loss.detach(), candidates)})
