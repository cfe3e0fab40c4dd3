"""MAE — He, Chen, Xie, Li, Dollár, Girshick. "Masked Autoencoders Are Scalable Vision Learners",
CVPR 2022.

Idea: hide most of an image's patches (75 %) and reconstruct their pixels. Images are redundant
enough that a low ratio is solved by interpolation; at 75 % the encoder must understand the
object. Details (sec. 3) that make it MAE and not a look-alike: random masking per image, uniform
over patches; the encoder runs on the *visible* patches only (no mask tokens in the encoder: the
reason it is cheap); a lightweight decoder gets the encoded visible tokens plus a shared, learned
mask token at every hidden position, with fixed 2-D sine-cosine position embeddings; a linear
projection to each patch's pixels; the MSE on the masked patches only; optionally per-patch
normalised targets (each target patch standardised by its own mean and variance, which the paper
finds improves the representation). The decoder is thrown away; ``encoder`` is the ViT.
Logged: ``pretext/recon_mse`` (the loss: masked patches, in target units).
"""

from __future__ import annotations

from functools import partial
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from selfsup.backbones.vit import ViT, patchify, sincos_2d, unpatchify
from selfsup.errors import SelfsupError
from selfsup.methods.base import Method, Picture, StepOutput
from selfsup.registry import BuildContext, Needs, register
from selfsup.transforms import eval_view
from selfsup.transforms.ops import denormalize


@dataclass
class MAEConfig:
    mask_ratio: float = 0.75
    decoder_dim: int = 512  # the paper's default decoder: 8 blocks of width 512 (16 heads)
    decoder_depth: int = 8
    decoder_heads: int = 16
    norm_pix_loss: bool = True  # per-patch normalised targets (the paper's better variant, table 1c)


def random_masking(
    n: int, num_patches: int, ratio: float, device=None, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per image, a uniformly random subset of patches to keep: (keep [N, K] indices, mask [N, P] bool,
    True = hidden, restore [N, P]: the permutation that puts (kept, hidden) tokens back in patch order).
    K = round(P * (1 - ratio)), at least 1."""
    k = max(1, int(round(num_patches * (1 - ratio))))
    noise = torch.rand(n, num_patches, generator=generator).to(device)
    shuffle = noise.argsort(1)  # ascending: the first K are kept
    restore = shuffle.argsort(1)
    mask = torch.ones(n, num_patches, dtype=torch.bool, device=device)
    mask[:, :k] = False
    return shuffle[:, :k], torch.gather(mask, 1, restore), restore


@register("mae", config=MAEConfig, views="pretext", needs=Needs(views=1, backbone="vit"))
class MAE(Method):
    """Masked autoencoder: encode the visible 25 %, decode all patches, MSE on the hidden ones."""

    encoder: ViT  # the registry gives a ViT-only method a ViT
    decoder_pos: torch.Tensor  # [1, P, d] fixed sine-cosine positions (a buffer)

    def __init__(self, encoder: ViT, cfg: MAEConfig = MAEConfig(), ctx: BuildContext = BuildContext()):
        super().__init__()
        image_shape = ctx.require("image_shape")
        from timm.models.vision_transformer import Block

        if not 0.0 <= cfg.mask_ratio < 1.0:
            raise SelfsupError(f"method.mask_ratio={cfg.mask_ratio}: must be in [0, 1)")
        self.cfg = cfg
        self.encoder = encoder
        d, p, c = cfg.decoder_dim, encoder.patch_size, image_shape[0]
        self.decoder_embed = nn.Linear(encoder.num_features, d)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, d))
        nn.init.normal_(self.mask_token, std=0.02)
        self.register_buffer("decoder_pos", sincos_2d(d, encoder.grid)[None])  # fixed, as in the paper
        self.decoder_blocks = nn.ModuleList(
            [
                Block(
                    d,
                    cfg.decoder_heads,
                    4.0,
                    qkv_bias=True,
                    norm_layer=cast(type[nn.Module], partial(nn.LayerNorm, eps=1e-6)),
                )
                for _ in range(cfg.decoder_depth)
            ]
        )
        self.decoder_norm = nn.LayerNorm(d, eps=1e-6)
        self.decoder_pred = nn.Linear(d, p * p * c)  # the pixels of one patch
        for m in [self.decoder_embed, self.decoder_pred, *self.decoder_blocks.modules()]:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def reconstruct(self, x: torch.Tensor, generator: torch.Generator | None = None):
        """(predicted patches [N, P, p*p*C], mask [N, P] True = hidden, target patches [N, P, p*p*C])."""
        n, num = len(x), self.encoder.num_patches
        keep, mask, restore = random_masking(n, num, self.cfg.mask_ratio, x.device, generator)
        latent = self.decoder_embed(self.encoder.tokens(x, keep=keep))  # visible patches only: [N, 1+K, d]
        hidden = self.mask_token.to(latent.dtype).expand(n, num - keep.shape[1], -1)
        t = torch.cat([latent[:, 1:], hidden], dim=1)  # (kept, hidden) order
        t = torch.gather(t, 1, restore[..., None].expand(-1, -1, t.shape[-1]))  # back to patch order: [N, P, d]
        t = torch.cat([latent[:, :1], t + self.decoder_pos.to(t.dtype)], dim=1)  # [CLS] has no position
        for blk in self.decoder_blocks:
            t = blk(t)
        pred = self.decoder_pred(self.decoder_norm(t))[:, 1:].float()
        target = patchify(x.float(), self.encoder.patch_size)
        if self.cfg.norm_pix_loss:
            mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
            target = (target - mean) / (var + 1e-6).sqrt()
        return pred, mask, target

    def training_step(self, batch) -> StepOutput:
        pred, mask, target = self.reconstruct(batch.views[0])
        per_patch = (pred - target).pow(2).mean(-1)  # [N, P]
        loss = (per_patch * mask).sum() / mask.sum()  # hidden patches only
        return StepOutput(loss, {"pretext/recon_mse": loss.detach()})

    def pictures(self, images, data) -> dict:
        x = eval_view(images[:12], data.mean, data.std, data.size)
        pred, mask, _ = self.reconstruct(x, torch.Generator().manual_seed(0))
        p, c = self.encoder.patch_size, x.shape[1]
        if self.cfg.norm_pix_loss:  # back to pixels with each true patch's own statistics, as the paper shows
            true = patchify(x.float(), p)
            pred = pred * (true.var(-1, keepdim=True) + 1e-6).sqrt() + true.mean(-1, keepdim=True)
        m = unpatchify(mask[..., None].float().expand(-1, -1, p * p * c), p, c)
        recon = unpatchify(pred, p, c)
        rows = [
            ("original", x),
            ("masked", x * (1 - m)),
            ("reconstruction", recon),
            ("+ visible", x * (1 - m) + recon * m),
        ]
        rows = [(name, denormalize(v, data.mean, data.std)) for name, v in rows]
        return {"mae": Picture(rows, None, f"MAE: {100 * self.cfg.mask_ratio:g} % of the patches hidden")}
