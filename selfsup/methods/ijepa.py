"""I-JEPA — Assran, Duval, Misra, Bojanowski, Vincent, Rabbat, LeCun, Ballas. "Self-Supervised Learning
from Images with a Joint-Embedding Predictive Architecture", CVPR 2023.

Idea: predict the *representations* of hidden image blocks, not their pixels, from one visible context
block. A context encoder f_theta sees the context block x with the target patches removed; a target
encoder f_theta_bar (an EMA of f_theta, no gradient) sees the whole image and gives the patch
representations s_y; a narrow ViT predictor g_phi gets the context tokens s_x plus, for each target
block B_i, one learned mask token per target patch (carrying that patch's position) and predicts
s_hat_y(i). Loss (eq. 1): (1 / M) sum_i sum_{j in B_i} D(s_hat_yj, s_yj). Predicting in representation
space lets the encoders drop pixel detail no context could predict; large target blocks and a large,
spread-out context make the predictable part semantic; no augmentation beyond a crop is needed.

Details (sec. 3, appendix, and the official code facebookresearch/ijepa) that make it I-JEPA:
- multi-block masking (``selfsup.nn.multiblock_masking``): M = 4 target blocks of scale 0.15-0.2 and
  aspect 0.75-1.5, one context block of scale 0.85-1.0 with every target patch removed; block sizes
  drawn once per batch, positions per image;
- targets are the target encoder's output for the *full* image, then layer-normalised per patch with
  no affine parameters (``F.layer_norm(h, (D,))`` in src/train.py), then gathered at each block;
- the predictor (src/models/vision_transformer.py, VisionTransformerPredictor): a linear map to its own
  width (384), fixed 2-D sine-cosine positions added to the context tokens, one shared mask token plus
  position per target patch, its own blocks (the ViT-H recipe: 12; heads: the encoder's), a LayerNorm,
  a linear map back to the encoder width; each target block is predicted in a pass of its own
  (the context repeated M times), so targets never attend to each other;
- D is the smooth-L1 loss averaged over elements (``F.smooth_l1_loss`` in src/train.py; the paper's
  eq. 1 writes the squared L2 distance: ``loss: l2``); every block has the same size, so the mean over
  elements is the mean over blocks of each block's mean;
- the EMA momentum rises *linearly* (not along a cosine) from 0.996 to 1.0 over training (train.py's
  momentum_scheduler), applied in ``on_step_end``.

Evaluation sees the target encoder (``evaluated_encoder`` is ``target_encoder``), as the paper and the
official evaluation do; the context encoder ``encoder`` is the module that trains (``evaluate: online`` reads
it instead: in a run of a few hundred steps the target still lags it). selfsup's ViT carries a [CLS] token,
the official one does not: it runs through both encoders like any token and is dropped before the
predictor and the targets, so nothing predicts it or from it, and features read from it (``forward``)
are shaped only through attention to the patch tokens.
Logged: ``pretext/jepa_loss``, ``momentum``, ``context_patches`` and ``target_patches`` (K_c, K_t of the
step: the official log's mask-A / mask-B), ``target_std`` (per-dimension std of the targets over
patches; near 0 would mean collapse).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.backbones.vit import ViT, sincos_2d
from selfsup.errors import SelfsupError
from selfsup.methods.base import Method, StepOutput
from selfsup.nn.ema import ema_update, frozen_copy
from selfsup.nn.multiblock_masking import multiblock_masks
from selfsup.registry import BuildContext, Needs, register


@dataclass
class IJEPAConfig:
    num_targets: int = 4  # M
    target_scale: tuple[float, float] = (0.15, 0.2)
    target_aspect: tuple[float, float] = (0.75, 1.5)
    context_scale: tuple[float, float] = (0.85, 1.0)
    # the official min_keep: a context keeps at least 10 of 14x14 = 196 patches (~5 %); as a fraction it
    # carries to small grids (1 patch of 4x4, 3 of 7x7)
    min_context: float = 0.05
    predictor_dim: int = 384  # the paper's narrow predictor (ViT-H encoder: 1280)
    predictor_depth: int = 12  # the official ViT-H/14 config (pred_depth); helper.py's default is 6
    predictor_heads: int | None = None  # None: the encoder's, as the official init_model
    loss: str = "smooth_l1"  # the official code's D; "l2": the paper's eq. 1 (squared error, same averaging)
    momentum_base: float = 0.996  # EMA, raised linearly to momentum_final over training
    momentum_final: float = 1.0
    # which encoder evaluation, export and classifiers read: the EMA target, as the paper; "online" reads the
    # encoder that trains (a run of a few hundred steps: the target, moved by 1 - m a step, still lags it)
    evaluate: str = "target"


def linear_momentum(base: float, final: float, progress: float) -> float:
    """The official schedule: m = base + (final - base) * progress, a straight line (BYOL's is a cosine)."""
    return base + (final - base) * min(max(progress, 0.0), 1.0)


class Predictor(nn.Module):
    """g_phi: context tokens s_x [N, K_c, D] + target positions -> predictions [M, N, K_t, D]."""

    pos: torch.Tensor  # a buffer: the fixed positions [P, width]

    def __init__(self, dim: int, grid: int, width: int, depth: int, heads: int):
        super().__init__()
        from timm.models.vision_transformer import Block

        self.embed = nn.Linear(dim, width)
        self.mask_token = nn.Parameter(torch.zeros(width))
        self.register_buffer("pos", sincos_2d(width, grid))  # fixed, as the official predictor_pos_embed: [P, width]
        self.blocks = nn.ModuleList(
            [
                Block(
                    width, heads, 4.0, qkv_bias=True, norm_layer=cast(type[nn.Module], partial(nn.LayerNorm, eps=1e-6))
                )
                for _ in range(depth)
            ]
        )
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.proj = nn.Linear(width, dim)
        # the official init: truncated normal (std 0.02) weights, zero biases, and each block's output
        # projections scaled by 1 / sqrt(2 * layer), so the residual stream does not grow with depth
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        blk: Any  # a timm Block: timm types its attn and mlp as Modules; their proj and fc2 are Linears
        with torch.no_grad():
            for layer, blk in enumerate(self.blocks, start=1):
                blk.attn.proj.weight.div_(math.sqrt(2.0 * layer))
                blk.mlp.fc2.weight.div_(math.sqrt(2.0 * layer))

    def forward(self, s_x: torch.Tensor, context: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """s_x [N, K_c, D] at patch indices ``context`` [N, K_c]; ``targets`` [M, N, K_t] -> [M, N, K_t, D]."""
        m, n, k_t = targets.shape
        k_c = context.shape[1]
        x = self.embed(s_x) + self.pos[context].to(s_x.dtype)  # [N, K_c, w]
        x = x.repeat(m, 1, 1)  # one pass per target block: [M*N, K_c, w]
        q = (self.mask_token + self.pos[targets.flatten(0, 1)]).to(x.dtype)  # mask tokens at the targets: [M*N, K_t, w]
        t = torch.cat([x, q], dim=1)
        for blk in self.blocks:
            t = blk(t)
        return self.proj(self.norm(t[:, k_c:])).view(m, n, k_t, -1)  # the mask tokens' outputs only


@register("ijepa", config=IJEPAConfig, views="pretext", needs=Needs(views=1, backbone="vit"))
class IJEPA(Method):
    """I-JEPA: from a context block, a narrow predictor regresses an EMA encoder's target-block patch features."""

    encoder: ViT  # the registry gives a ViT-only method a ViT
    target_encoder: ViT  # its EMA copy
    progress: torch.Tensor  # a buffer: the fraction of training done

    def __init__(self, encoder: ViT, cfg: IJEPAConfig = IJEPAConfig(), ctx: BuildContext = BuildContext()):
        super().__init__()
        if cfg.loss not in ("smooth_l1", "l2"):
            raise SelfsupError(
                f"method.loss={cfg.loss!r}: choose smooth_l1 (the official code) or l2 (the paper's eq. 1)"
            )
        if cfg.num_targets < 1:
            raise SelfsupError(f"method.num_targets={cfg.num_targets}: at least 1 target block")
        if cfg.predictor_dim % 4:
            raise SelfsupError(
                f"method.predictor_dim={cfg.predictor_dim}: the sine-cosine positions need a multiple of 4"
            )
        heads = cfg.predictor_heads or encoder.num_heads
        if cfg.predictor_dim % heads:
            raise SelfsupError(
                f"method.predictor_dim={cfg.predictor_dim} does not split into {heads} heads: set "
                f"method.predictor_heads to a divisor of it"
            )
        if not 0.0 <= cfg.min_context < 1.0:
            raise SelfsupError(f"method.min_context={cfg.min_context}: a fraction of the patches, in [0, 1)")
        if cfg.evaluate not in ("target", "online"):
            raise SelfsupError(f"method.evaluate={cfg.evaluate!r}: choose target (the paper's) or online")
        self.cfg = cfg
        self.encoder = encoder  # f_theta, the context encoder: what trains
        # f_theta_bar: EMA of f_theta, never a gradient; evaluated
        self.target_encoder = cast(ViT, frozen_copy(encoder))
        self.predictor = Predictor(encoder.num_features, encoder.grid, cfg.predictor_dim, cfg.predictor_depth, heads)
        self.register_buffer("progress", torch.zeros(()))  # fraction of training done: the momentum's input
        self.momentum = cfg.momentum_base

    def masks(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(context [N, K_c], targets [M, N, K_t]) patch indices for a batch of ``n`` images."""
        c, grid = self.cfg, self.encoder.grid
        return multiblock_masks(
            n,
            grid,
            c.num_targets,
            c.target_scale,
            c.target_aspect,
            c.context_scale,
            max(1, math.ceil(c.min_context * grid * grid)),
            generator,
        )

    def predict(self, x: torch.Tensor, context: torch.Tensor, targets: torch.Tensor):
        """(predictions s_hat_y, targets s_y), both [M, N, K_t, D] float32."""
        with torch.no_grad():
            h = self.target_encoder.tokens(x)[:, 1:].float()  # full image, [CLS] dropped: [N, P, D]
            h = F.layer_norm(h, (h.shape[-1],))  # per patch, no affine (official forward_target)
            m, n, k_t = targets.shape
            s_y = torch.gather(h.expand(m, -1, -1, -1), 2, targets[..., None].expand(-1, -1, -1, h.shape[-1]))
        s_x = self.encoder.tokens(x, keep=context)[:, 1:]  # context patches only: [N, K_c, D]
        return self.predictor(s_x, context, targets).float(), s_y

    @staticmethod
    def distance(pred: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
        """D averaged over every element of every block (all blocks the same size: the mean over blocks)."""
        return F.smooth_l1_loss(pred, target) if kind == "smooth_l1" else F.mse_loss(pred, target)

    def training_step(self, batch) -> StepOutput:
        x = batch.views[0]  # one cropped view: [N, C, H, W]
        context, targets = self.masks(len(x))
        context, targets = context.to(x.device), targets.to(x.device)
        s_hat_y, s_y = self.predict(x, context, targets)  # [M, N, K_t, D]
        loss = self.distance(s_hat_y, s_y, self.cfg.loss)
        c = self.cfg  # the schedule's momentum at this point of training, as a tensor: logging it needs no device sync
        momentum = c.momentum_base + (c.momentum_final - c.momentum_base) * self.progress.clamp(0, 1)
        return StepOutput(
            loss,
            {
                "pretext/jepa_loss": loss.detach(),
                "momentum": momentum,
                "context_patches": float(context.shape[1]),
                "target_patches": float(targets.shape[2]),
                "target_std": s_y.flatten(0, 2).std(0).mean(),
            },
        )

    @property
    def evaluated_encoder(self) -> nn.Module:
        return self.target_encoder if self.cfg.evaluate == "target" else self.encoder

    @torch.no_grad()
    def on_step_end(self, progress: float) -> None:
        self.progress.fill_(progress)
        self.momentum = linear_momentum(self.cfg.momentum_base, self.cfg.momentum_final, progress)
        ema_update(self.target_encoder, self.encoder, self.momentum)  # theta_bar <- m theta_bar + (1 - m) theta
