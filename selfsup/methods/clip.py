"""CLIP — Radford et al. "Learning Transferable Visual Models From Natural Language Supervision",
ICML 2021.

Idea: learn images from the words people write about them. An image encoder and a text encoder
are trained so that an image and its own caption are more similar than the image and the other
captions in the batch (and vice versa): a symmetric cross-entropy over the N x N cosine
similarities, scaled by a learned temperature (fig. 3's pseudocode). Afterwards any set of class
names becomes a classifier by writing prompts ("a photo of a {label}") and picking the most
similar one: zero-shot transfer (selfsup.eval.clip).

Details: linear projections of both encoders to a shared space, L2-normalised; the logit scale
exp(t) learned, t initialised to log(1 / 0.07) and clipped so exp(t) <= 100 (sec. 2.5); in-batch
negatives gathered across processes when distributed (with gradient). The text encoder here is a
small transformer over a fixed character vocabulary (selfsup.data.text: nothing to download or
fit), bidirectional, read at its [BOS] token (CLIP's is causal and read at [EOS]; with no language
modelling objective the direction does not matter). Captions come with the data:
``captioned-fashion-mnist`` (SYNTHETIC, templated) or an image folder with a captions.tsv.
Logged: ``logit_scale`` and ``pretext/clip_acc`` (images whose own caption is the most similar).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from selfsup import dist
from selfsup.data.text import PAD, VOCAB_SIZE
from selfsup.errors import SelfsupError
from selfsup.losses.precision import float32_loss
from selfsup.methods.base import Method, StepOutput
from selfsup.registry import BuildContext, Needs, register


@dataclass
class CLIPConfig:
    embed_dim: int = 256  # the shared space (the paper: 512-1024)
    text_width: int = 128  # the paper's text transformer: 512 wide, 12 layers, 8 heads
    text_layers: int = 3
    text_heads: int = 4
    context: int = 64  # characters per caption
    init_temperature: float = 0.07
    max_logit_scale: float = 100.0


class TextTransformer(nn.Module):
    """Token ids [B, L] (0 = padding, [BOS] first) -> text features [B, width] at [BOS]."""

    def __init__(self, width: int, layers: int, heads: int, context: int):
        super().__init__()
        self.token = nn.Embedding(VOCAB_SIZE, width)
        self.pos = nn.Parameter(torch.randn(1, context, width) * 0.01)
        layer = nn.TransformerEncoderLayer(
            width, heads, 4 * width, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        nn.init.normal_(self.token.weight, std=0.02)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.token(ids) + self.pos[:, : ids.shape[1]]
        x = self.blocks(x, src_key_padding_mask=ids == PAD)
        return self.norm(x[:, 0])


@float32_loss
def clip_loss(img: torch.Tensor, txt: torch.Tensor, logit_scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric cross-entropy of CLIP (fig. 3): rows of ``img`` [N, D] and ``txt`` [N, D] (L2-normalised)
    are pairs; logits = scale * img @ txt.T. Returns (loss, logits [N, N])."""
    logits = logit_scale.float() * img.float() @ txt.float().T
    target = torch.arange(len(img), device=img.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2, logits


@register("clip", config=CLIPConfig, views="pretext", needs=Needs(views=1, text=True))
class CLIP(Method):
    """Contrast images with their captions; zero-shot classification from prompts afterwards."""

    def __init__(self, encoder: nn.Module, cfg: CLIPConfig = CLIPConfig(), ctx: BuildContext = BuildContext()):
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        self.text = TextTransformer(cfg.text_width, cfg.text_layers, cfg.text_heads, cfg.context)
        self.image_proj = nn.Linear(cast(int, encoder.num_features), cfg.embed_dim, bias=False)
        self.text_proj = nn.Linear(cfg.text_width, cfg.embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / cfg.init_temperature)))

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_proj(self.encoder(x)).float(), dim=1)

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_proj(self.text(ids)).float(), dim=1)

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode_image(x)

    def training_step(self, batch) -> StepOutput:
        if batch.texts is None:
            raise SelfsupError(
                "clip needs captions: train on captioned-fashion-mnist / captioned-digits, or an image "
                "folder with a captions.tsv"
            )
        img = dist.gather_with_grad(self.encode_image(batch.views[0]))  # [N_all, D]: negatives from every process
        txt = dist.gather_with_grad(self.encode_text(batch.texts))
        scale = self.logit_scale.exp().clamp(max=self.cfg.max_logit_scale)
        loss, logits = clip_loss(img, txt, scale)
        acc = (logits.argmax(1) == torch.arange(len(img), device=img.device)).float().mean().detach()
        return StepOutput(loss, {"logit_scale": scale.detach(), "pretext/clip_acc": acc})

    def on_step_end(self, progress: float) -> None:
        with torch.no_grad():  # the paper clips the parameter itself, so exp(t) never passes the cap
            self.logit_scale.clamp_(max=math.log(self.cfg.max_logit_scale))
