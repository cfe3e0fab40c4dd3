"""What evaluation reads of a video method's encoder (Shuffle and Learn, tracking triplets): single frames."""

from __future__ import annotations

import torch
from torch import nn

from selfsup.data.video import split_frames


class FirstFrame(nn.Module):
    """A video's 2x2 mosaic [N, C, 2S, 2S] -> the encoder's features of frame 0 [N, F]: the video methods
    train on several frames, and every evaluation protocol reads one image per video."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.num_features = net.num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(split_frames(x)[:, 0])
