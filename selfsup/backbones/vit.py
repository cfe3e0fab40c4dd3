"""Vision Transformers (Dosovitskiy et al. 2021) sized for small images: patch 4 on 28-32 px images
gives a 7x7 or 8x8 grid of tokens.

The transformer blocks and the patch embedding are timm's (``timm.layers.PatchEmbed``,
``timm.models.vision_transformer.Block``); the trunk around them is ours because the methods need
more than timm's ``VisionTransformer.forward`` gives: MAE runs the encoder on the visible patches
only (``tokens(x, keep=...)``), SimMIM replaces masked patch embeddings by a mask token
(``tokens(x, mask=..., mask_token=...)``), DINO's pictures need the last block's [CLS] attention
(``last_attention``), dense heads read the patch tokens as a map (``forward_maps``), data2vec's
teacher reads every block's output (``block_outputs``).

Position embeddings: fixed 2-D sine-cosine (MAE, MoCo v3; the default) or learned (the original
ViT). ``forward`` returns the [CLS] token after the final LayerNorm: [B, dim].
"""

from __future__ import annotations

from functools import partial
import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.errors import SelfsupError, UnknownNameError

# name -> (embed dim, depth, heads); tiny/small/base are DeiT's / ViT's, "micro" is for 2-core CPUs
VIT_SIZES = {"vit_micro": (128, 6, 4), "vit_tiny": (192, 12, 3), "vit_small": (384, 12, 6), "vit_base": (768, 12, 12)}


def sincos_2d(dim: int, grid: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embeddings [grid*grid, dim] (MAE's get_2d_sincos_pos_embed):
    half of the channels encode the row, half the column, each with sin and cos at geometric
    frequencies 1 / 10000^(2i/d)."""
    if dim % 4:
        raise SelfsupError(f"sine-cosine position embeddings need a dim divisible by 4, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))  # [d/4]
    ys, xs = torch.meshgrid(
        torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64), indexing="ij"
    )

    def axis(pos):
        out = pos.flatten()[:, None] * omega[None]  # [P, d/4]
        return torch.cat([out.sin(), out.cos()], dim=1)  # [P, d/2]

    return torch.cat([axis(xs), axis(ys)], dim=1).float()  # MAE's order: width (x) half first


class ViT(nn.Module):
    """[B, C, H, W] -> [CLS] features [B, dim]; see the module docstring for the other entry points."""

    def __init__(
        self,
        size: str = "vit_tiny",
        in_channels: int = 3,
        image_size: int = 32,
        patch_size: int = 4,
        pos_embed: str = "sincos",
        drop_path: float = 0.0,
        pool: str = "token",
    ):
        super().__init__()
        from timm.layers import PatchEmbed
        from timm.models.vision_transformer import Block

        if size not in VIT_SIZES:
            raise UnknownNameError(f"unknown ViT size {size!r}: choose from {', '.join(VIT_SIZES)}")
        if image_size % patch_size:
            raise SelfsupError(f"image side {image_size} is not a multiple of the patch size {patch_size}")
        if pos_embed not in ("sincos", "learned"):
            raise SelfsupError(f"backbone.pos_embed={pos_embed!r}: choose sincos or learned")
        if pool not in ("token", "avg"):
            raise SelfsupError(
                f"backbone.pool={pool!r}: choose token (the [CLS] output) or avg (the patch tokens' mean)"
            )
        self.pool = pool  # what forward returns (timm's global_pool): [CLS], or the mean of the patch tokens
        dim, depth, heads = VIT_SIZES[size]
        self.patch_size, self.grid = patch_size, image_size // patch_size
        self.num_patches, self.num_features, self.num_heads = self.grid**2, dim, heads
        # strict_img_size off: other sides (multi-crop's local crops) get interpolated positions
        self.patch_embed = PatchEmbed(image_size, patch_size, in_channels, dim, strict_img_size=False)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        pos = sincos_2d(dim, self.grid)[None]  # [1, P, dim]; the [CLS] token gets no position (MAE)
        if pos_embed == "learned":
            self.pos_embed = nn.Parameter(pos.clone().normal_(std=0.02))
        else:
            self.register_buffer("pos_embed", pos)  # fixed, but saved: a checkpoint says what it used
        rates = [drop_path * i / max(1, depth - 1) for i in range(depth)]  # stochastic depth, linear in depth
        self.blocks = nn.ModuleList(
            [
                Block(
                    dim,
                    heads,
                    mlp_ratio=4.0,
                    qkv_bias=True,
                    drop_path=r,
                    norm_layer=cast(type[nn.Module], partial(nn.LayerNorm, eps=1e-6)),
                )
                for r in rates
            ]
        )  # (timm's hint names a class; it calls any factory)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self._init()

    def _init(self):
        """MAE's initialisation: xavier-uniform linear layers (and the patch projection seen as one),
        N(0, 0.02) [CLS] token, LayerNorms at (1, 0)."""
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def position(self, grid: int) -> torch.Tensor:
        """Position embeddings [1, grid*grid, dim]: the built ones, or bicubically resized to another
        grid (DINO's interpolate_pos_encoding: multi-crop's small local crops)."""
        if grid == self.grid:
            return self.pos_embed
        pos = self.pos_embed.reshape(1, self.grid, self.grid, -1).permute(0, 3, 1, 2)
        pos = F.interpolate(pos, size=(grid, grid), mode="bicubic", align_corners=False)
        return pos.permute(0, 2, 3, 1).reshape(1, grid * grid, -1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Patch embeddings plus positions: [B, C, H, W] -> [B, P, dim]."""
        if x.shape[-1] != x.shape[-2] or x.shape[-1] % self.patch_size:
            raise SelfsupError(
                f"a ViT with {self.patch_size}-px patches needs square images whose side is a multiple "
                f"of {self.patch_size}, got {tuple(x.shape[-2:])}"
            )
        return self.patch_embed(x) + self.position(x.shape[-1] // self.patch_size)

    def tokens(
        self,
        x: torch.Tensor,
        keep: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        mask_token: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """All output tokens, [CLS] first: [B, 1 + P', dim] after the final norm.

        keep [B, K]: indices of the patches to run (MAE: the visible ones; P' = K).
        mask [B, P] bool with ``mask_token`` [dim]: masked patches' embeddings replaced by the token
        (plus their position), as SimMIM does (P' = P)."""
        t = self.embed(x)  # [B, P, dim]
        if mask is not None:
            if mask_token is None:
                raise SelfsupError("a mask needs its mask_token: the embedding that replaces the masked patches")
            t = torch.where(mask[..., None], mask_token.to(t.dtype) + self.position(self.grid), t)
        if keep is not None:
            t = torch.gather(t, 1, keep[..., None].expand(-1, -1, t.shape[-1]))
        t = torch.cat([self.cls_token.expand(len(t), -1, -1).to(t.dtype), t], dim=1)
        for blk in self.blocks:
            t = blk(t)
        return self.norm(t)

    def block_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each block's output tokens, [CLS] first, before the final norm: ``depth`` tensors
        [B, 1 + P, dim] (data2vec's teacher averages the top K of them)."""
        t = self.embed(x)
        t = torch.cat([self.cls_token.expand(len(t), -1, -1).to(t.dtype), t], dim=1)
        outputs = []
        for blk in self.blocks:
            t = blk(t)
            outputs.append(t)
        return outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.tokens(x)  # [B, 1 + P, dim]
        return t[:, 0] if self.pool == "token" else t[:, 1:].mean(1)

    def forward_maps(self, x: torch.Tensor) -> torch.Tensor:
        """Patch tokens as a feature map [B, dim, grid, grid] (for dense heads)."""
        t = self.tokens(x)[:, 1:]
        g = x.shape[-1] // self.patch_size
        return t.transpose(1, 2).reshape(len(t), -1, g, g)

    @torch.no_grad()
    def last_attention(self, x: torch.Tensor) -> torch.Tensor:
        """Self-attention of the last block, [B, heads, 1 + P, 1 + P] (rows: queries; row 0 is [CLS]).
        timm's blocks use fused attention, which never forms the matrix, so it is recomputed here from
        the last block's qkv projection — the quantity DINO's attention maps show."""
        t = self.embed(x)
        t = torch.cat([self.cls_token.expand(len(t), -1, -1).to(t.dtype), t], dim=1)
        for blk in self.blocks[:-1]:
            t = blk(t)
        from timm.models.vision_transformer import Attention, Block  # timm loads on first use

        blk = cast(Block, self.blocks[-1])
        attn = cast(Attention, blk.attn)
        b, n, d = t.shape
        qkv = attn.qkv(blk.norm1(t)).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
        return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d // self.num_heads), dim=-1)


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, (H/p)(W/p), p*p*C] (MAE's order: row-major patches, pixels then channels)."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // p, p, w // p, p)
    return torch.einsum("nchpwq->nhwpqc", x).reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(t: torch.Tensor, p: int, c: int) -> torch.Tensor:
    """[B, P, p*p*C] -> [B, C, H, W], the inverse of ``patchify`` (square images)."""
    b, n, _ = t.shape
    g = int(round(math.sqrt(n)))
    x = t.reshape(b, g, g, p, p, c)
    return torch.einsum("nhwpqc->nchpwq", x).reshape(b, c, g * p, g * p)
