"""A small convolutional decoder: a vector back to an image, for the reconstruction methods
(autoencoders, VAE, BiGAN's generator). DCGAN-style (Radford et al. 2016): a linear layer to a
[width, s, s] map, transposed convolutions that double the side, BN + ReLU between them."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class ConvDecoder(nn.Module):
    """[B, in_dim] -> [B, out_channels, size, size] (linear output: the caller picks the activation).

    ``ups`` transposed convolutions (x2 each) from a side of ceil(size / 2**ups); a last 3x3 conv
    maps to the channels, and a side overshooting ``size`` (e.g. 32 for 28) is resized down."""

    def __init__(self, in_dim: int, out_channels: int, size: int, width: int = 128, ups: int = 2):
        super().__init__()
        self.size = size
        self.start = math.ceil(size / 2**ups)
        self.width = width
        self.fc = nn.Sequential(
            nn.Linear(in_dim, width * self.start**2, bias=False),
            nn.BatchNorm1d(width * self.start**2),
            nn.ReLU(inplace=True),
        )
        blocks: list[nn.Module] = []
        ch = width
        for _ in range(ups):
            blocks += [
                nn.ConvTranspose2d(ch, ch // 2, 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(ch // 2),
                nn.ReLU(inplace=True),
            ]
            ch //= 2
        blocks.append(nn.Conv2d(ch, out_channels, 3, padding=1))
        self.net = nn.Sequential(*blocks)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.net(self.fc(z).view(len(z), self.width, self.start, self.start))
        if x.shape[-1] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        return x
