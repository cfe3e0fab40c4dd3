"""VIbCReg — Lee, Aune. "VIbCReg: Variance-Invariance-better-Covariance Regularization for
Self-Supervised Learning on Time Series", arXiv 2109.00783, 2021.

Idea: VICReg (selfsup.methods.vicreg) with two changes that make the decorrelation work better:
  1. an IterNorm layer (iterative whitening, Huang et al. 2019: 64 groups, T = 5 Newton iterations)
     at the end of the projector, so the embeddings arrive already (partly) whitened;
  2. a "better" covariance term: the covariance of the embeddings after each dimension is centred
     and divided by its norm, i.e. their correlation matrix rho, and the mean of its squared
     off-diagonal entries, c(Z) = (1/D^2) sum_{i != j} rho_ij^2: bounded and independent of D and of
     the embeddings' scale, so one weight nu fits every width.
With Z, Z' the two views' embeddings [N, D]:

    loss = lambda s(Z, Z') + mu [v(Z) + v(Z')] + nu [c(Z) + c(Z')],   lambda 25, mu 25, nu 200,

s the MSE and v the variance hinge max(0, 1 - std) of VICReg. Terms logged unweighted as
"vibcreg/invariance", "vibcreg/variance", "vibcreg/covariance".

Projector (official code, ML4ITS/vibcreg): Linear-BN-ReLU, Linear-BN-ReLU, Linear, IterNorm (affine),
4096 units throughout. Checked against that code: the loss (vibcreg/losses/), the IterNorm
(vibcreg/normalization/iter_norm.py) and the defaults (vibcreg/configs/frameworks/config_vibcreg.yaml).
Deviations: the last Linear and the IterNorm's affine part have no bias (the IterNorm subtracts the batch
mean and the loss is blind to a shift shared by both views, so a bias gets no gradient); the IterNorm's
gradient is autograd's, not the code's hand-written backward (the same function); the IterNorm's and
the loss's statistics are the global batch's across processes. Views are BYOL's image augmentations
(the paper is on time series: random crop, amplitude resize, vertical shift), and the paper's optimiser
(AdamW, lr 1e-3, weight decay 1e-5) is left to the recipes, which follow VICReg's. The code's optional
MSF add-in (off by default there) is not included.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from selfsup.losses.redundancy import vibcreg_loss
from selfsup.methods.base import Method, StepOutput
from selfsup.nn.heads import mlp
from selfsup.nn.iternorm import IterNorm
from selfsup.registry import BuildContext, register


@dataclass
class VIbCRegConfig:
    proj_hidden: int = 4096
    proj_dim: int = 4096
    sim_coeff: float = 25.0  # lambda, invariance
    std_coeff: float = 25.0  # mu, variance
    cov_coeff: float = 200.0  # nu, the normalised ("better") covariance
    gamma: float = 1.0  # target std of each dimension
    eps: float = 1e-4  # inside the square root of the variance
    iternorm_groups: int = 64  # IterNorm groups (64 channels each at D = 4096)
    iternorm_iterations: int = 5  # T, Newton iterations of the whitening matrix


@register("vibcreg", config=VIbCRegConfig, views="byol")
class VIbCReg(Method):
    """VIbCReg: VICReg with an IterNorm-whitened projector output and a normalised covariance term."""

    def __init__(self, encoder: nn.Module, cfg: VIbCRegConfig = VIbCRegConfig(), ctx: BuildContext = BuildContext()):
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        self.projector = mlp(cast(int, encoder.num_features), cfg.proj_hidden, cfg.proj_dim, num_layers=3)
        # no biases after the last BN: the IterNorm centres away the Linear's, and every term of the loss is
        # blind to a shift shared by both views (the MSE of z - z', the centred std and correlations), so the
        # IterNorm's affine bias would get no gradient either (the official code keeps it, at 0 for ever)
        self.projector[-1] = nn.Linear(cfg.proj_hidden, cfg.proj_dim, bias=False)
        self.projector.append(IterNorm(cfg.proj_dim, cfg.iternorm_groups, cfg.iternorm_iterations, bias=False))

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.encoder(x))

    def training_step(self, batch) -> StepOutput:
        x1, x2 = batch.views  # [N, C, H, W] each
        z1, z2 = self.projector(self.encoder(x1)), self.projector(self.encoder(x2))  # Z, Z': [N, D], whitened
        c = self.cfg
        loss, terms = vibcreg_loss(z1, z2, c.sim_coeff, c.std_coeff, c.cov_coeff, c.gamma, c.eps)
        return StepOutput(loss, {f"vibcreg/{k}": v for k, v in terms.items()})
