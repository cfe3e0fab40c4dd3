"""Context Encoder — Pathak, Krähenbühl, Donahue, Darrell, Efros. "Context Encoders: Feature Learning
by Inpainting", CVPR 2016.

Idea: remove a region of the image and make the network paint it back from the context around it.
Filling in the missing half of a shoe needs to know what shoes look like. Details (sec. 3):
the joint loss L = lambda_rec * L_rec + lambda_adv * L_adv with lambda_rec 0.999, lambda_adv 0.001;
L_rec = ||M * (x - F((1 - M) * x))||^2 over the removed region only (losses.masked_mse); L_adv a
GAN loss from a discriminator that sees real images and images with the prediction pasted into the
hole, without which the fills are blurry averages. Masks (sec. 3.3): the central block (a quarter
of the area: half the side) or random blocks placed anywhere.

The encoder is the backbone (pooled features), the decoder selfsup.nn.decoder.ConvDecoder (the
paper's channel-wise fully connected layer becomes one linear layer: the images are small), the
discriminator selfsup.nn.gan.Discriminator. One optimiser trains all three: the generator's
adversarial term goes through a frozen copy of D (``frozen_call``) and D's own loss sees detached
fills. The hole is filled with 0, the dataset mean after normalisation. Logged:
``pretext/inpaint_mse`` (per-pixel error inside the hole), ``loss_rec``, ``loss_adv``, ``loss_d``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from selfsup.losses.adversarial import discriminator_loss, generator_loss
from selfsup.losses.reconstruction import masked_mse
from selfsup.methods.base import Method, Picture, StepOutput
from selfsup.nn.decoder import ConvDecoder
from selfsup.nn.gan import Discriminator, frozen_call
from selfsup.registry import BuildContext, Needs, register
from selfsup.transforms.pretext import block_masks
from selfsup.transforms import eval_view
from selfsup.transforms.ops import denormalize


@dataclass
class InpaintingConfig:
    mask: str = "center"  # center (the central block) | random (random blocks anywhere)
    hole: float = 0.5  # side of the central block / of each random block, as a fraction of the image side
    random_blocks: int = 2  # random masks: this many blocks (they may overlap)
    lambda_rec: float = 0.999
    lambda_adv: float = 0.001
    code_dim: int = 256  # the bottleneck between encoder and decoder
    decoder_width: int = 128
    disc_width: int = 64


@register("inpainting", config=InpaintingConfig, views="pretext", needs=Needs(views=1))
class ContextEncoder(Method):
    """Inpaint a removed region from its context; reconstruction + adversarial loss."""

    def __init__(
        self, encoder: nn.Module, cfg: InpaintingConfig = InpaintingConfig(), ctx: BuildContext = BuildContext()
    ):
        super().__init__()
        image_shape = ctx.require("image_shape")
        block_masks(1, 8, cfg.mask, cfg.hole)  # an unknown mask kind fails here, not mid-run
        self.cfg = cfg
        self.encoder = encoder
        c, h, _ = image_shape
        self.code = nn.Linear(cast(int, encoder.num_features), cfg.code_dim)
        self.decoder = ConvDecoder(cfg.code_dim, c, h, cfg.decoder_width)
        self.discriminator = Discriminator(c, h, cfg.disc_width)

    def inpaint(self, x: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the prediction F((1 - M) x) of the whole image, x with the hole filled from it)."""
        pred = self.decoder(self.code(self.encoder(x * (1 - m))))  # [N, C, H, W]
        return pred, x * (1 - m) + pred * m

    def training_step(self, batch) -> StepOutput:
        x = batch.views[0]  # [N, C, H, W], normalised
        c = self.cfg
        m = block_masks(len(x), x.shape[-1], c.mask, c.hole, c.random_blocks, device=x.device)
        pred, filled = self.inpaint(x, m)
        loss_rec = masked_mse(pred, x, m)  # inside the hole only
        loss_adv = generator_loss(frozen_call(self.discriminator, filled))  # moves the generator, not D
        loss_d = discriminator_loss(self.discriminator(x), self.discriminator(filled.detach()))
        loss = c.lambda_rec * loss_rec + c.lambda_adv * loss_adv + loss_d
        return StepOutput(
            loss,
            {
                "pretext/inpaint_mse": loss_rec.detach(),
                "loss_rec": loss_rec.detach(),
                "loss_adv": loss_adv.detach(),
                "loss_d": loss_d.detach(),
            },
        )

    def pictures(self, images, data) -> dict:
        x = eval_view(images[:12], data.mean, data.std, data.size)
        c = self.cfg
        m = block_masks(
            len(x), x.shape[-1], c.mask, c.hole, c.random_blocks, torch.Generator().manual_seed(0), x.device
        )
        _, filled = self.inpaint(x, m)
        rows = [
            (n, denormalize(v, data.mean, data.std))
            for n, v in (("original", x), ("input (hole)", x * (1 - m)), ("inpainted", filled))
        ]
        return {"inpainting": Picture(rows, None, "Context encoder: the hole, and the network's fill")}
