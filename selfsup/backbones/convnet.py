"""A four-block convnet: the smallest honest encoder, for tests and quick experiments."""

from __future__ import annotations

import torch
from torch import nn


class ConvNet(nn.Module):
    """conv-BN-ReLU blocks with stride-2 down-sampling: [B,C,H,W] -> [B, num_features]."""

    def __init__(self, in_channels: int = 3, width: float = 1.0, small_stem: bool = True, stem_stride: int = 1):
        super().__init__()
        w = [max(8, int(round(c * width))) for c in (32, 64, 128, 256)]
        layers, prev = [], in_channels
        for i, c in enumerate(w):
            stride = (stem_stride if small_stem else 2) if i == 0 else 2
            layers += [nn.Conv2d(prev, c, 3, stride, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
            prev = c
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = prev

    def forward_maps(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # [B, F, H/16, W/16] (H/8 with stem_stride 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(self.forward_maps(x)), 1)
