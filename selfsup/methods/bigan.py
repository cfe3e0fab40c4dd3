"""BiGAN — Donahue, Krähenbühl, Darrell. "Adversarial Feature Learning", ICLR 2017 (and ALI, Dumoulin
et al. 2017, the same model found at the same time).

Idea: a GAN whose generator G: z -> x gets a partner, an encoder E: x -> z, and whose
discriminator judges *pairs*: real (x, E(x)) against generated (G(z), z). The only way for E and G
to fool D is to invert each other, so E learns to map images to the latent space that explains
them — features learned without any pixel loss. Details (sec. 3): D(x, z) sees the image and the
code jointly; E and G are trained with the labels flipped (they want D to call (x, E(x)) fake and
(G(z), z) real); z ~ U(-1, 1)^d in the paper (here N(0, I), as in ALI).

E is the backbone plus a linear layer to z (the backbone's pooled features are evaluated), G a
DCGAN-style decoder, D selfsup.nn.gan.Discriminator with a code branch. One optimiser trains all
three (see selfsup.nn.gan.frozen_call). Logged: ``loss_d``, ``loss_eg``, D's accuracy on the pairs
(``d_acc``: 0.5 is an equilibrium), and, each epoch, ``pretext/recon_mse`` = ||G(E(x)) - x||^2 per
pixel, how well the two have learned to invert each other (never trained directly).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from selfsup.losses.adversarial import discriminator_loss
from selfsup.methods.base import Method, Picture, StepOutput
from selfsup.nn.decoder import ConvDecoder
from selfsup.nn.gan import Discriminator, frozen_call
from selfsup.registry import BuildContext, Needs, register
from selfsup.transforms import eval_view
from selfsup.transforms.ops import denormalize


@dataclass
class BiGANConfig:
    latent_dim: int = 64  # the paper: 200 for ImageNet, 50 for MNIST
    generator_width: int = 128
    disc_width: int = 64
    disc_hidden: int = 256


@register("bigan", config=BiGANConfig, views="pretext", needs=Needs(views=1))
class BiGAN(Method):
    """Encoder and generator trained against a joint discriminator D(x, z)."""

    def __init__(self, encoder: nn.Module, cfg: BiGANConfig = BiGANConfig(), ctx: BuildContext = BuildContext()):
        super().__init__()
        image_shape = ctx.require("image_shape")
        self.cfg = cfg
        self.encoder = encoder
        c, h, _ = image_shape
        self.to_z = nn.Linear(cast(int, encoder.num_features), cfg.latent_dim)
        self.generator = ConvDecoder(cfg.latent_dim, c, h, cfg.generator_width)
        self.discriminator = Discriminator(c, h, cfg.disc_width, code_dim=cfg.latent_dim, hidden=cfg.disc_hidden)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_z(self.encoder(x))

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x)

    def training_step(self, batch) -> StepOutput:
        x = batch.views[0]  # [N, C, H, W], normalised
        z = torch.randn(len(x), self.cfg.latent_dim, device=x.device)  # the prior (global RNG: checkpointed)
        ex, gz = self.encode(x), self.generator(z)  # [N, d], [N, C, H, W]
        real, fake = self.discriminator(x, ex.detach()), self.discriminator(gz.detach(), z)
        loss_d = discriminator_loss(real, fake)
        # E and G: the same loss with the labels swapped, through a D that does not move
        loss_eg = discriminator_loss(frozen_call(self.discriminator, gz, z), frozen_call(self.discriminator, x, ex))
        d_acc = ((real > 0).float().mean() + (fake < 0).float().mean()) / 2
        return StepOutput(
            loss_d + loss_eg, {"loss_d": loss_d.detach(), "loss_eg": loss_eg.detach(), "d_acc": d_acc.detach()}
        )

    @torch.no_grad()
    def on_epoch_start(self, epoch, data):
        """``pretext/recon_mse`` of G(E(x)) on 512 fixed training images, once an epoch (not in the
        step: it is a measurement, and a generator pass per step would cost ~10 % of training)."""
        was = self.training
        self.eval()
        x = eval_view(data.dataset.images[:512].to(data.device), data.mean, data.std, data.size)
        recon = (self.generator(self.encode(x)) - x).float().pow(2).mean().item()
        self.train(was)
        return {"pretext/recon_mse": recon}

    def pictures(self, images, data) -> dict:
        x = eval_view(images[:12], data.mean, data.std, data.size)
        z = torch.randn(24, self.cfg.latent_dim, generator=torch.Generator().manual_seed(0)).to(x.device)
        samples = denormalize(self.generator(z), data.mean, data.std)
        rows = [
            ("original", denormalize(x, data.mean, data.std)),
            ("G(E(x))", denormalize(self.generator(self.encode(x)), data.mean, data.std)),
            ("samples G(z)", samples[:12]),
            ("", samples[12:]),
        ]
        title = "BiGAN: originals, G(E(x)) (near x once E inverts G), samples G(z) from the prior"
        return {"bigan": Picture(rows, None, title)}
