"""VAE — Kingma & Welling. "Auto-Encoding Variational Bayes", ICLR 2014.

Idea: a probabilistic autoencoder. The encoder outputs a Gaussian q(z|x) = N(mu, diag(sigma^2)),
a code is sampled with the reparameterisation z = mu + sigma * eps (eps ~ N(0, I)) so gradients flow
through the sampling, and the decoder gives p(x|z). Training maximises the evidence lower bound
ELBO = E_q[log p(x|z)] - KL(q(z|x) || N(0, I)); the KL term has a closed form (losses.gaussian_kl).
New images come from decoding z ~ N(0, I).

p(x|z) here is a Gaussian with fixed std ``recon_std`` on the normalised pixels (the paper's
real-valued case; its MNIST experiments use a Bernoulli on [0, 1] pixels). ``beta`` weights the KL
(beta-VAE, Higgins et al. 2017; 1 is the ELBO). The loss is the negative ELBO per pixel; logged are
the ELBO per image (nats, up to the Gaussian's constant), its two terms, and ``pretext/recon_mse``.
The encoder evaluated downstream is the backbone before the mu / log sigma^2 layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from selfsup.losses.reconstruction import gaussian_kl
from selfsup.methods.base import Method, Picture, StepOutput
from selfsup.nn.decoder import ConvDecoder
from selfsup.registry import BuildContext, Needs, register
from selfsup.transforms import eval_view
from selfsup.transforms.ops import denormalize


@dataclass
class VAEConfig:
    latent_dim: int = 32
    decoder_width: int = 128
    recon_std: float = 0.5  # sigma of p(x|z) in normalised pixel units: smaller weighs reconstruction more
    beta: float = 1.0  # weight of the KL term (1: the ELBO)


@register("vae", config=VAEConfig, views="pretext", needs=Needs(views=1))
class VAE(Method):
    """Variational autoencoder: reparameterised Gaussian code, ELBO."""

    def __init__(self, encoder: nn.Module, cfg: VAEConfig = VAEConfig(), ctx: BuildContext = BuildContext()):
        super().__init__()
        image_shape = ctx.require("image_shape")
        self.cfg = cfg
        self.encoder = encoder
        self.to_q = nn.Linear(cast(int, encoder.num_features), 2 * cfg.latent_dim)  # -> (mu, log sigma^2)
        c, h, _ = image_shape
        self.decoder = ConvDecoder(cfg.latent_dim, c, h, cfg.decoder_width)

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.to_q(self.encoder(x)).float().chunk(2, dim=1)  # [N, d] each
        return mu, logvar.clamp(-10, 10)  # keeps exp(logvar) finite in the first steps

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        return self.posterior(x)[0]

    def training_step(self, batch) -> StepOutput:
        x = batch.views[0].float()  # [N, C, H, W], normalised
        mu, logvar = self.posterior(x)
        z = mu + (0.5 * logvar).exp() * torch.randn_like(mu)  # reparameterisation
        x_hat = self.decoder(z).float()
        sq = (x_hat - x).pow(2).flatten(1)  # [N, P]
        nll = sq.sum(1) / (2 * self.cfg.recon_std**2)  # -log p(x|z) up to a constant, per image
        kl = gaussian_kl(mu, logvar)  # [N]
        elbo = -(nll + kl)
        loss = (nll + self.cfg.beta * kl).mean() / sq.shape[1]  # negative (beta-)ELBO per pixel
        return StepOutput(
            loss,
            {
                "elbo": elbo.mean().detach(),
                "recon_nll": nll.mean().detach(),
                "kl": kl.mean().detach(),
                "pretext/recon_mse": sq.mean().detach(),
            },
        )

    def pictures(self, images, data) -> dict:
        x = eval_view(images[:12], data.mean, data.std, data.size)
        mu, _ = self.posterior(x)
        z = torch.randn(24, self.cfg.latent_dim, generator=torch.Generator().manual_seed(0)).to(mu.device)
        samples = denormalize(self.decoder(z), data.mean, data.std)
        rows = [
            ("original", denormalize(x, data.mean, data.std)),
            ("reconstruction", denormalize(self.decoder(mu), data.mean, data.std)),  # the posterior mean
            ("samples z~N(0,I)", samples[:12]),
            ("", samples[12:]),
        ]
        return {"vae": Picture(rows, None, "VAE: reconstructions (posterior mean) and samples from the prior")}
