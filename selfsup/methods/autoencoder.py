"""Autoencoder and denoising autoencoder — the oldest pretext task: reconstruct the input.

Autoencoder (Hinton & Salakhutdinov 2006): encoder -> bottleneck code -> decoder, pixel MSE.
Denoising autoencoder — Vincent, Larochelle, Bengio, Manzagol. "Extracting and Composing Robust
Features with Denoising Autoencoders", ICML 2008: corrupt the input (masking noise: a random
fraction of the pixels set to zero; or additive Gaussian noise) and reconstruct the *clean* one,
so the code must capture how pixels depend on each other rather than copy them.

Here the encoder is the backbone (its pooled features are what evaluation sees), a linear layer
makes the bottleneck code, and a DCGAN-style decoder (selfsup.nn.decoder) maps it back to the
view. Loss and the logged ``pretext/recon_mse``: mean squared error per pixel, in the normalised
pixel units the encoder sees (the denoising variant: against the clean view).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.errors import SelfsupError
from selfsup.methods.base import Method, Picture, StepOutput
from selfsup.nn.decoder import ConvDecoder
from selfsup.registry import BuildContext, Needs, register
from selfsup.transforms import eval_view
from selfsup.transforms.ops import denormalize


@dataclass
class AutoencoderConfig:
    code_dim: int = 128  # the bottleneck
    decoder_width: int = 128  # channels of the decoder's first map
    noise: str = "none"  # none | mask (Vincent et al.'s masking noise) | gaussian
    noise_level: float = 0.0  # mask: fraction of pixels zeroed; gaussian: std in normalised units


@dataclass
class DenoisingAutoencoderConfig(AutoencoderConfig):
    noise: str = "mask"
    noise_level: float = 0.25  # the paper's masking noise levels range 10-40 % (its fig. 7: 25 %)


def corrupt(x: torch.Tensor, noise: str, level: float) -> torch.Tensor:
    """The DAE's corruption q(x~|x) of a normalised batch [N,C,H,W] (global RNG: seeded, checkpointed).
    Masking sets pixels to 0: Vincent et al. zero pixels of [0, 1] inputs; after normalisation 0 is
    the dataset mean, the neutral value."""
    if noise == "none" or level <= 0:
        return x
    if noise == "mask":
        keep = torch.rand(x.shape[0], 1, *x.shape[2:], device=x.device) >= level  # the same pixels in every channel
        return x * keep
    if noise == "gaussian":
        return x + level * torch.randn_like(x)
    raise SelfsupError(f"noise {noise!r}: choose none, mask or gaussian")


@register(
    "dae",
    config=DenoisingAutoencoderConfig,
    views="pretext",
    needs=Needs(views=1),  # the config is the difference
    summary="Reconstruct the clean view from a corrupted one (masking noise by default).",
)
@register("ae", config=AutoencoderConfig, views="pretext", needs=Needs(views=1))
class Autoencoder(Method):
    """Encode the view to a bottleneck code and decode it back; pixel MSE."""

    def __init__(
        self, encoder: nn.Module, cfg: AutoencoderConfig = AutoencoderConfig(), ctx: BuildContext = BuildContext()
    ):
        super().__init__()
        image_shape = ctx.require("image_shape")
        if cfg.noise not in ("none", "mask", "gaussian"):
            raise SelfsupError(f"method.noise={cfg.noise!r}: choose none, mask or gaussian")
        self.cfg = cfg
        self.encoder = encoder
        c, h, _ = image_shape
        self.code = nn.Linear(cast(int, encoder.num_features), cfg.code_dim)
        self.decoder = ConvDecoder(cfg.code_dim, c, h, cfg.decoder_width)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.code(self.encoder(x)))

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        return self.code(self.encoder(x))  # the bottleneck code

    def training_step(self, batch) -> StepOutput:
        x = batch.views[0]  # [N, C, H, W], normalised
        x_hat = self.reconstruct(corrupt(x, self.cfg.noise, self.cfg.noise_level))
        loss = F.mse_loss(x_hat.float(), x.float())  # against the clean view
        return StepOutput(loss, {"pretext/recon_mse": loss.detach()})

    def pictures(self, images, data) -> dict:
        x = eval_view(images[:12], data.mean, data.std, data.size)
        noisy = corrupt(x, self.cfg.noise, self.cfg.noise_level)
        rows = [("original", x)] + ([("corrupted", noisy)] if self.cfg.noise != "none" else [])
        rows.append(("reconstruction", self.reconstruct(noisy)))
        mse = (rows[-1][1] - x).pow(2).flatten(1).mean(1).tolist()
        caps: list[list[str]] = [[] for _ in rows[:-1]] + [[f"mse {e:.2f}" for e in mse]]
        rows = [(n, denormalize(r, data.mean, data.std)) for n, r in rows]
        title = "Denoising autoencoder" if self.cfg.noise != "none" else "Autoencoder"
        return {"reconstructions": Picture(rows, caps, f"{title}: inputs and reconstructions")}
