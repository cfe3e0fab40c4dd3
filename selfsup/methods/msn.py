"""MSN — Assran, Caron, Misra, Bojanowski, Bordes, Vincent, Joulin, Rabbat, Ballas. "Masked Siamese
Networks for Label-Efficient Learning", ECCV 2022. PMSN's prior — Assran, Balestriero, Duval, Bordes,
Misra, Bojanowski, Vincent, Rabbat, Ballas. "The Hidden Uniform Cluster Prior in Self-Supervised
Learning", ICLR 2023.

Idea: match the view of a *masked* image to the view of the unmasked image, not in pixel space but as a
soft assignment to K learnable prototypes. An anchor view x_i (a random crop with a random subset of its
patches dropped from the ViT's input, or a small "focal" crop: masking by cropping) goes through the
encoder f_theta and a projection head to z_i; the unmasked target view x+ goes through their EMA copy
f_theta_bar to z+. With unit vectors and prototypes q_k:
    p_i = softmax(z_i . q / tau),   p+ = sharpen(softmax(z+ . q / tau), T) = softmax(z+ . q / (tau T))
and the loss (eq. 1) is the cross-entropy H(p+, p_i) averaged over the M anchor views of each image and
the batch, minus lambda times the entropy of the mean anchor prediction p_bar (mean-entropy
maximisation, me-max): every prototype must be used on average, while each target is sharp (T < 1).
Masking the anchors only makes the representation invariant to missing patches without reconstructing
them; dropping patches also makes the anchor pass cheap.

Details checked against the official code (facebookresearch/msn: src/losses.py ``init_msn_loss``,
src/msn_train.py, src/deit.py, src/data_manager.py, configs/pretrain/msn_vits16.yaml):
- views: the target is one random crop (scale 0.3-1); the anchors are 1 more random crop of the same
  kind and 10 focal crops (96 of 224 px, scale 0.05-0.3); colour jitter of strength 0.5, grayscale 0.2,
  blur 0.5, flip (the "msn" view preset below). Views order here: [x+, random anchors, focal anchors];
- random masking: the random anchors keep floor(P (1 - r)) of their P patch tokens (r = ``patch_drop``,
  0.15 for ViT-S/16) plus [CLS]; the focal crops are not masked (deit.py resets patch_drop after the
  first group of crops). The kept tokens go through the ViT with their own positions;
- head: Linear-BN-GELU-Linear-BN-GELU-Linear (2048 hidden, 256 out, ``use_bn``), on both branches
  (the target's is the EMA of the anchor's); each crop size goes through it as a group of its own;
- prototypes: K = 1024 free vectors, uniform(-1/sqrt(d), 1/sqrt(d)) at init, L2-normalised inside the
  loss only, learned through the anchors; the targets use the same prototypes, detached (no EMA copy);
- targets: tau 0.1, T 0.25 (the released config keeps T constant: start_sharpen = final_sharpen), then
  3 Sinkhorn-Knopp iterations on the sharpened targets (``use_sinkhorn: true``), repeated for every
  anchor view;
- me-max: rloss = sum_k p_bar_k log p_bar_k + log K = KL(p_bar || uniform) with weight lambda = 1
  (memax_weight), p_bar the mean over every anchor view of every image (all-reduced over processes).
  The anchor-entropy term (use_ent) is computed with ent_weight 0 in the config: left out;
- EMA: theta_bar <- m theta_bar + (1 - m) theta after each step, m rising *linearly* from 0.996 to 1
  over 1.25 x the training steps (so it ends at 0.9992), applied in ``on_step_end``.

PMSN (``prior: power_law``): the me-max term becomes KL(p_bar || p_prior) with a power-law prior
p_prior,k proportional to k^(-tau) (tau 0.25), for long-tailed data; with the uniform prior it is me-max
exactly (``selfsup.losses.clustering.prior_matching``).

Evaluation sees the target encoder (``evaluated_encoder`` is ``target_encoder``), as the paper does; the
anchor encoder ``encoder`` is the module that trains (``evaluate: online`` reads it instead: in a run of a
few hundred steps the target still lags it).
Logged: ``msn_ce`` (the cross-entropy), ``prior_kl`` (the me-max / prior term), ``momentum``,
``target_max`` (the mean largest target probability: near 1 when the sharpening wins) and
``prototypes_used`` (distinct arg-max prototypes of the batch's targets: the official log's ``np``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from selfsup import dist
from selfsup.backbones.vit import ViT
from selfsup.errors import SelfsupError
from selfsup.losses.clustering import power_law_prior, prior_matching, sinkhorn
from selfsup.methods.base import Method, StepOutput
from selfsup.nn.ema import ema_update, frozen_copy
from selfsup.nn.multicrop import num_global_crops, running_stats_frozen
from selfsup.registry import BuildContext, Needs, register, register_view_preset
from selfsup.transforms.views import ViewConfig

# The official MSN transforms (src/data_manager.py, configs/pretrain/msn_vits16.yaml): random crops of
# scale 0.3-1 (one target, rand_views anchors), focal crops of scale 0.05-0.3 at 96/224 of the side;
# flip; colour jitter of strength 0.5 = 0.8 x (0.4, 0.4, 0.4, 0.1); grayscale 0.2; blur 0.5 on every crop.
# Registered here, beside the one method that uses it.
register_view_preset(
    "msn",
    ViewConfig(
        crop_scale=(0.3, 1.0),
        jitter=(0.4, 0.4, 0.4, 0.1),
        blur_p=(0.5, 0.5),
        num_global=2,
        num_local=10,
        local_scale=(0.05, 0.3),
        local_blur_p=0.5,
    ),
)


@dataclass
class MSNConfig:
    hidden_dim: int = 2048
    out_dim: int = 256  # d, the projection the prototypes live in
    head_bn: bool = True  # the official ViT-S config's use_bn
    num_prototypes: int = 1024  # K
    temperature: float = 0.1  # tau, of the anchors' softmax
    sharpen: float = 0.25  # T: the targets' softmax runs at tau * T = 0.025
    use_sinkhorn: bool = True  # Sinkhorn-Knopp on the sharpened targets (the released config)
    sinkhorn_iters: int = 3
    me_max_weight: float = 1.0  # lambda; 0 removes the regulariser (the paper's ablation: collapse)
    prior: str = "uniform"  # uniform: MSN's me-max; power_law: PMSN's prior
    power_law_tau: float = 0.25  # PMSN's exponent
    patch_drop: float = 0.15  # r, of the random anchors' patches (ViT-S/16; larger models drop more)
    momentum_base: float = 0.996  # EMA, raised linearly towards momentum_final ...
    momentum_final: float = 1.0
    momentum_span: float = 1.25  # ... over 1.25 x the training steps (the official schedules): ends at 0.9992
    # which encoder evaluation, export and classifiers read: the EMA target, as the paper; "online" reads the
    # encoder that trains (a run of a few hundred steps: the target, moved by 1 - m a step, still lags it)
    evaluate: str = "target"


def kept_patches(num_patches: int, patch_drop: float) -> int:
    """How many patch tokens a masked anchor keeps: floor(P (1 - r)) as in the official deit.py, at least 1."""
    return max(1, math.floor(num_patches * (1 - patch_drop) + 1e-6))


def random_keep(n: int, num_patches: int, patch_drop: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per image, a uniformly random subset of ``kept_patches`` patch indices: [n, K]."""
    noise = torch.rand(n, num_patches, generator=generator)
    return noise.argsort(1)[:, : kept_patches(num_patches, patch_drop)]


def whole_patches(x: torch.Tensor, patch: int) -> torch.Tensor:
    """Focal crops resized to the nearest multiple of the patch size (at least one patch) when their side
    is not one: the default focal side, 96/224 of the global one, need not be (the official 96 px are 6
    patches of 16). Recipes choose ``views.local_size`` as a multiple, and then nothing changes."""
    side = x.shape[-1]
    if side % patch == 0:
        return x
    new = max(patch, round(side / patch) * patch)
    return F.interpolate(x, size=(new, new), mode="bilinear", align_corners=False, antialias=new < side)


def projection_head(in_dim: int, hidden_dim: int, out_dim: int, bn: bool) -> nn.Sequential:
    """The official fc: Linear-(BN)-GELU-Linear-(BN)-GELU-Linear, truncated-normal (0.02) weights, zero biases."""
    norm = (lambda: [nn.BatchNorm1d(hidden_dim)]) if bn else (lambda: [])
    head = nn.Sequential(
        nn.Linear(in_dim, hidden_dim),
        *norm(),
        nn.GELU(),
        nn.Linear(hidden_dim, hidden_dim),
        *norm(),
        nn.GELU(),
        nn.Linear(hidden_dim, out_dim),
    )
    for m in head:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
    return head


@register("msn", config=MSNConfig, views="msn", needs=Needs(backbone="vit"))
class MSN(Method):
    """MSN: masked anchor views predict the prototype assignment of the unmasked target view (me-max against collapse)."""

    encoder: ViT  # the registry gives a ViT-only method a ViT
    # buffers: the prototypes' prior (None: uniform, me-max), the fraction of training done
    prior: torch.Tensor | None
    progress: torch.Tensor

    def __init__(self, encoder: ViT, cfg: MSNConfig = MSNConfig(), ctx: BuildContext = BuildContext()):
        super().__init__()
        if not 0.0 <= cfg.patch_drop < 1.0:
            raise SelfsupError(f"method.patch_drop={cfg.patch_drop}: a fraction of the patches, in [0, 1)")
        if cfg.prior not in ("uniform", "power_law"):
            raise SelfsupError(f"method.prior={cfg.prior!r}: choose uniform (MSN's me-max) or power_law (PMSN)")
        if cfg.temperature <= 0 or cfg.sharpen <= 0:
            raise SelfsupError("method.temperature and method.sharpen must be positive")
        if cfg.evaluate not in ("target", "online"):
            raise SelfsupError(f"method.evaluate={cfg.evaluate!r}: choose target (the paper's) or online")
        self.cfg = cfg
        self.encoder = encoder  # f_theta, the anchor encoder: what trains
        self.head = projection_head(encoder.num_features, cfg.hidden_dim, cfg.out_dim, cfg.head_bn)
        self.target_encoder = frozen_copy(self.encoder)  # f_theta_bar: EMA, never a gradient
        self.target_head = frozen_copy(self.head)
        bound = cfg.out_dim**-0.5  # the official init: uniform(-1/sqrt(d), 1/sqrt(d)), never re-normalised
        self.prototypes = nn.Parameter(
            torch.empty(cfg.num_prototypes, cfg.out_dim).uniform_(-bound, bound)
        )  # q: [K, d]
        prior = power_law_prior(cfg.num_prototypes, cfg.power_law_tau) if cfg.prior == "power_law" else None
        self.register_buffer("prior", prior, persistent=False)  # None: uniform (me-max)
        self.register_buffer("progress", torch.zeros(()))  # fraction of training done: the momentum's input
        self.momentum = self.momentum_at(0.0)

    def momentum_at(self, progress: float) -> float:
        c = self.cfg
        return c.momentum_base + (c.momentum_final - c.momentum_base) * min(max(progress / c.momentum_span, 0.0), 1.0)

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.encoder(x)), dim=1)

    def anchors(
        self, randoms: list[torch.Tensor], focals: list[torch.Tensor], generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """z_i of every anchor view, [M*B, d] in view order: the random crops with patches dropped, then
        the focal crops whole; one head pass per crop size (its BatchNorm statistics are per group)."""
        z = []
        if randoms:
            x = torch.cat(randoms)
            keep = None
            if self.cfg.patch_drop > 0:
                keep = random_keep(len(x), self.encoder.num_patches, self.cfg.patch_drop, generator).to(x.device)
            z.append(self.head(self.encoder.tokens(x, keep=keep)[:, 0]))  # [CLS] of the kept patches
        if focals:
            x = whole_patches(torch.cat(focals), self.encoder.patch_size)
            with running_stats_frozen(self.head, bool(randoms)):  # running statistics: the global crops'
                z.append(self.head(self.encoder(x)))
        return torch.cat(z)

    def training_step(self, batch) -> StepOutput:
        views = batch.views  # x+ [B, C, S, S], G - 1 random anchors [B, C, S, S], L focal anchors [B, C, s, s]
        g = num_global_crops(views)
        b, c = views[0].shape[0], self.cfg
        z = self.anchors(views[1:g], views[g:])  # [M*B, d], M = G - 1 + L
        m = len(z) // b
        with torch.no_grad():
            z_plus = self.target_head(self.target_encoder(views[0]))  # [B, d]
        # in float32: cosines / 0.025 would magnify bf16's rounding
        with torch.autocast(z.device.type, enabled=False):
            q = F.normalize(self.prototypes.float(), dim=1)  # [K, d]
            log_p = F.log_softmax(F.normalize(z.float(), dim=1) @ q.T / c.temperature, dim=1)  # log p_i: [M*B, K]
            with torch.no_grad():
                # sharpen(p, T) = p^(1/T) / sum = softmax(z+ . q / (tau T)): computed in log space
                log_p_plus = F.log_softmax(
                    F.normalize(z_plus.float(), dim=1) @ q.T / (c.temperature * c.sharpen), dim=1
                )
                # Sinkhorn on the sharpened probabilities themselves (the official distributed_sinkhorn(targets)):
                # exp(log p+ / 1) is p+
                p_plus = sinkhorn(log_p_plus, 1.0, c.sinkhorn_iters) if c.use_sinkhorn else log_p_plus.exp()  # [B, K]
            ce = -(p_plus.repeat(m, 1) * log_p).sum(1).mean()  # H(p+, p_i) over the M anchors of every image
            p_bar = dist.all_reduce_sum_with_grad(log_p.exp().mean(0)) / dist.world_size()  # [K]
            reg = prior_matching(p_bar, self.prior)  # KL(p_bar || prior): uniform = log K - H(p_bar)
        loss = ce + c.me_max_weight * reg
        with torch.no_grad():  # tensors: logging them needs no device sync
            used = torch.zeros_like(p_plus[0]).index_fill_(0, p_plus.argmax(1), 1.0).sum()
            momentum = c.momentum_base + (c.momentum_final - c.momentum_base) * (self.progress / c.momentum_span).clamp(
                0, 1
            )
        return StepOutput(
            loss,
            {
                "msn_ce": ce.detach(),
                "prior_kl": reg.detach(),
                "momentum": momentum,
                "target_max": p_plus.max(1).values.mean(),
                "prototypes_used": used,
            },
        )

    @property
    def evaluated_encoder(self) -> nn.Module:
        return self.target_encoder if self.cfg.evaluate == "target" else self.encoder

    @torch.no_grad()
    def on_step_end(self, progress: float) -> None:
        self.progress.fill_(progress)
        self.momentum = self.momentum_at(progress)
        ema_update(self.target_encoder, self.encoder, self.momentum)  # theta_bar <- m theta_bar + (1 - m) theta
        ema_update(self.target_head, self.head, self.momentum)
