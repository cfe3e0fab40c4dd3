"""Adversarial building blocks: a small image discriminator (optionally joint with a code, for
BiGAN) and ``frozen_call``, which lets one optimiser step train a generator and its discriminator.

Why ``frozen_call``: the loop has one optimiser and one backward per step. A GAN step needs two
losses pulling the discriminator's weights in opposite directions — D's own loss, and the
generator's adversarial loss that must flow *through* D into the generator but must not move D.
Calling D through ``torch.func.functional_call`` with detached copies of its parameters does that:
the generator's term gets gradients with respect to D's input and none reach D's weights. Then
``loss = loss_G + loss_D`` (D's loss computed on detached fakes) trains both in one step.
"""

from __future__ import annotations

import torch
from torch import nn


def frozen_call(module: nn.Module, *args, **kwargs):
    """``module(*args)`` with its parameters detached: gradients flow to the inputs only."""
    params = {k: v.detach() for k, v in module.named_parameters()}
    return torch.func.functional_call(module, params, args, kwargs)


class Discriminator(nn.Module):
    """DCGAN-style critic (Radford et al. 2016) without batch norm (so ``frozen_call`` has no running
    statistics to update): strided 4x4 convolutions with LeakyReLU(0.2) halve the side twice, then a
    linear layer gives one logit. With ``code_dim`` > 0 it is BiGAN's joint discriminator D(x, z):
    the image features and an MLP embedding of the code are concatenated before the last layers.

    x [N, C, S, S] (, z [N, code_dim]) -> logits [N]."""

    def __init__(self, in_channels: int, size: int, width: int = 64, code_dim: int = 0, hidden: int = 256):
        super().__init__()
        self.image = nn.Sequential(
            nn.Conv2d(in_channels, width, 4, 2, 1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(width, 2 * width, 4, 2, 1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Flatten(),
        )
        feat = 2 * width * (size // 4) ** 2
        self.code = nn.Sequential(nn.Linear(code_dim, hidden), nn.LeakyReLU(0.2, inplace=True)) if code_dim else None
        self.out = nn.Sequential(
            nn.Linear(feat + (hidden if code_dim else 0), hidden), nn.LeakyReLU(0.2, inplace=True), nn.Linear(hidden, 1)
        )

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        h = self.image(x)
        if self.code is not None:
            h = torch.cat([h, self.code(z)], dim=1)
        return self.out(h).squeeze(1)
