"""Shuffle and Learn — Misra, Zitnick, Hebert. "Shuffle and Learn: Unsupervised Learning using Temporal
Order Verification", ECCV 2016.

Idea: a video's frames come in an order that only makes sense if the network understands what moves.
Given a tuple of three frames, the network tells whether they are in temporal order. From five frames
(a, b, c, d, e) of a video the paper takes (b, c, d) and its reverse (d, c, b) as positives and
(b, a, d), (b, e, d) — the middle replaced by a frame from outside the interval — as negatives, 25 %
positives and 75 % negatives (the ratio its ablation chose). A triplet siamese network: one encoder
(shared weights) per frame, the three feature vectors concatenated, a linear layer (fc8) to "in order"
or "not", cross-entropy.

Here: the SYNTHETIC moving-shapes videos (selfsup.data.video: 4 frames of 32 px as a 2x2 mosaic), so
from frames (0, 1, 2, 3) the end pairs are (0, 2) and (1, 3): positive (0, 1, 2) / (1, 2, 3), negative
(0, 3, 2) / (1, 0, 3) (the middle from the one side outside the interval that 4 frames leave), each
reversed with probability 1/2. Every video is drawn for its tuple in every step (the paper samples
tuples from high-motion windows; every video here moves). The frames are the raw ones, normalised, no
crops (the paper's random crops serve a 227-px AlexNet). As AlexNet's fc6-fc7 read pool5's spatial map,
fc7 here reads the encoder's feature map pooled to ``grid`` x ``grid`` cells (where the shapes are is what
tells the order); fc8 reads the three frames' fc7 side by side, through one hidden layer by default (a
linear fc8, the paper's, scores the frames additively: see ``fc8_hidden``). Evaluation sees single frames: the
evaluated encoder reads frame 0 of each video's mosaic (pooled features, as every method's).
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
from selfsup.nn.frames import FirstFrame
from selfsup.registry import BuildContext, Needs, register


@dataclass
class ShuffleLearnConfig:
    positive_fraction: float = 0.25  # the paper's best ratio: 25 % positive tuples, 75 % negative
    grid: int = 4  # the feature map is pooled to grid x grid cells before fc7 (AlexNet's pool5: 6 x 6)
    hidden: int = 256  # fc7's width per frame (the paper's 4096, scaled with the smaller encoder)
    fc8_hidden: int = 256  # 0: the paper's linear fc8; >0: fc8 as a hidden ReLU layer of this width, then linear


# the frame tuples of a 4-frame video: (positive, negative) for the end pairs (0, 2) and (1, 3)
TUPLES = torch.tensor([[[0, 1, 2], [0, 3, 2]], [[1, 2, 3], [1, 0, 3]]])  # [end pair, positive / negative, 3 frames]


# video: the method reads the raw frames (batch.images), not augmented views
@register("shuffle_learn", config=ShuffleLearnConfig, views="pretext", needs=Needs(views=1, video=True))
class ShuffleLearn(Method):
    """Temporal order verification: are these three frames of a video in order (or reversed)?"""

    encoder: FirstFrame
    # buffers: the views' normalisation [1, C, 1, 1]
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self, encoder: nn.Module, cfg: ShuffleLearnConfig = ShuffleLearnConfig(), ctx: BuildContext = BuildContext()
    ):
        super().__init__()
        normalization = ctx.require("normalization")
        if not 0.0 < cfg.positive_fraction < 1.0:
            raise SelfsupError(f"method.positive_fraction={cfg.positive_fraction}: a fraction in (0, 1)")
        self.cfg = cfg
        self.encoder = FirstFrame(encoder)
        c = len(normalization[0])
        self.register_buffer("mean", torch.tensor(normalization[0], dtype=torch.float32).view(1, c, 1, 1))
        self.register_buffer("std", torch.tensor(normalization[1], dtype=torch.float32).view(1, c, 1, 1))
        if not hasattr(encoder, "forward_maps"):
            raise SelfsupError(
                "shuffle_learn reads the encoder's feature map (where things are): choose a "
                "convolutional or ViT backbone with forward_maps"
            )
        # fc7 on the spatial map, as AlexNet's fc6-fc7 on pool5: a pooled vector forgets where the shapes are,
        # and where they are is what tells the order here
        self.fc7 = nn.Sequential(
            nn.AdaptiveAvgPool2d(cfg.grid),
            nn.Flatten(),
            nn.Linear(cast(int, encoder.num_features) * cfg.grid**2, cfg.hidden),
            nn.ReLU(inplace=True),
        )
        # "not in order" (0) / "in order" (1). A linear fc8 scores the three frames additively, w_a.h(a) +
        # w_b.h(b) + w_c.h(c), which cannot say whether the shapes of b lie between those of a and c when single
        # frames carry no cue of their time (constant-velocity shapes from random starts); one hidden layer
        # compares the frames (fc8_hidden=0: the paper's linear fc8)
        self.fc8 = (
            nn.Sequential(
                nn.Linear(3 * cfg.hidden, cfg.fc8_hidden), nn.ReLU(inplace=True), nn.Linear(cfg.fc8_hidden, 2)
            )
            if cfg.fc8_hidden
            else nn.Linear(3 * cfg.hidden, 2)
        )

    def draw(self, n: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """For n videos: frame indices [n, 3] of each one's tuple and its label [n] (1: in order), from the
        global RNG (seeded by the run, checkpointed)."""
        ends = torch.randint(0, 2, (n,))
        label = (torch.rand(n) < self.cfg.positive_fraction).long()
        frames = TUPLES[ends, 1 - label]  # [n, 3]
        reverse = torch.rand(n) < 0.5
        frames[reverse] = frames[reverse].flip(1)  # (d, c, b) is as much "in order" as (b, c, d)
        return frames.to(device), label.to(device)

    def training_step(self, batch) -> StepOutput:
        images = batch.images  # uint8 mosaics [B, C, 2S, 2S]
        if images.shape[-1] % 2 or images.shape[-2] % 2:
            raise SelfsupError("shuffle_learn reads 4-frame videos stored as 2x2 mosaics: --data moving-shapes")
        video = (split_frames(images).float() / 255 - self.mean.unsqueeze(1)) / self.std.unsqueeze(1)  # [B, 4, C, S, S]
        b = len(video)
        frames, label = self.draw(b, video.device)
        tuples = video[torch.arange(b, device=video.device)[:, None], frames]  # [B, 3, C, S, S]
        # [3B, H]: one encoder for the three frames
        f = self.fc7(self.encoder.net.forward_maps(tuples.flatten(0, 1)))  # type: ignore[operator]  # a backbone's method
        logits = self.fc8(f.view(b, -1)).float()  # the three frames' features side by side: [B, 3F'] -> [B, 2]
        loss = F.cross_entropy(logits, label)
        acc = (logits.detach().argmax(1) == label).float().mean()
        return StepOutput(loss, {"pretext/order_acc": acc})
