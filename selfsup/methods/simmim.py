"""SimMIM — Xie, Zhang, Cao, Lin, Bao, Yao, Dai, Hu. "SimMIM: A Simple Framework for Masked Image
Modeling", CVPR 2022.

Idea: the same task as MAE — predict the pixels of masked patches — made as simple as possible:
the encoder sees *all* patches, the masked ones replaced by a learned mask token (so, unlike MAE,
the encoder pays for every position); a single linear layer maps each output token to its patch's
raw pixels; an L1 loss on the masked patches only. Details (sec. 3): masked patches in blocks
(32-px mask patches on 192-px images, i.e. groups of patches) at a 0.6 ratio, the prediction head
as light as a linear layer (heavier heads did not help), raw-pixel (not normalised) targets.
Logged: ``pretext/recon_l1``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.backbones.vit import ViT, patchify, unpatchify
from selfsup.methods.base import Method, Picture, StepOutput
from selfsup.registry import BuildContext, Needs, register
from selfsup.transforms import eval_view
from selfsup.transforms.ops import denormalize


@dataclass
class SimMIMConfig:
    mask_ratio: float = 0.6
    mask_block: int = 2  # masked blocks of mask_block x mask_block patches (the paper: 32-px mask patches over
    # 16-px ViT patches, i.e. 2)


def block_mask(
    n: int, grid: int, block: int, ratio: float, device=None, generator: torch.Generator | None = None
) -> torch.Tensor:
    """[N, grid*grid] bool, True = masked: a random ``ratio`` of the (grid / block)^2 blocks, each
    covering block x block patches (SimMIM's MaskGenerator). Blocks that do not tile the grid (or
    leave fewer than 2 x 2 of them) fall back to single patches; at least one block is masked and
    at least one is left visible."""
    if grid % block or grid // block < 2:
        block = 1
    cells = grid // block
    k = min(max(1, int(round(cells * cells * ratio))), cells * cells - 1)
    order = torch.rand(n, cells * cells, generator=generator).argsort(1)
    m = torch.zeros(n, cells * cells, dtype=torch.bool)
    m.scatter_(1, order[:, :k], True)
    m = m.view(n, cells, 1, cells, 1).expand(n, cells, block, cells, block).reshape(n, grid * grid)
    return m.to(device)


@register("simmim", config=SimMIMConfig, views="pretext", needs=Needs(views=1, backbone="vit"))
class SimMIM(Method):
    """Masked patches replaced by a mask token in the encoder; a linear head predicts their pixels; L1."""

    encoder: ViT  # the registry gives a ViT-only method a ViT

    def __init__(self, encoder: ViT, cfg: SimMIMConfig = SimMIMConfig(), ctx: BuildContext = BuildContext()):
        super().__init__()
        image_shape = ctx.require("image_shape")
        self.cfg = cfg
        self.encoder = encoder
        d, p, c = encoder.num_features, encoder.patch_size, image_shape[0]
        self.mask_token = nn.Parameter(torch.zeros(d))
        nn.init.normal_(self.mask_token, std=0.02)
        self.head = nn.Linear(d, p * p * c)  # the paper's linear prediction head

    def reconstruct(self, x: torch.Tensor, generator: torch.Generator | None = None):
        """(predicted patches [N, P, p*p*C], mask [N, P] True = masked, target patches)."""
        mask = block_mask(len(x), self.encoder.grid, self.cfg.mask_block, self.cfg.mask_ratio, x.device, generator)
        tokens = self.encoder.tokens(x, mask=mask, mask_token=self.mask_token)[:, 1:]  # [N, P, d]
        return self.head(tokens).float(), mask, patchify(x.float(), self.encoder.patch_size)

    def training_step(self, batch) -> StepOutput:
        pred, mask, target = self.reconstruct(batch.views[0])
        per_patch = F.l1_loss(pred, target, reduction="none").mean(-1)  # [N, P]
        loss = (per_patch * mask).sum() / mask.sum()
        return StepOutput(loss, {"pretext/recon_l1": loss.detach()})

    def pictures(self, images, data) -> dict:
        x = eval_view(images[:12], data.mean, data.std, data.size)
        pred, mask, _ = self.reconstruct(x, torch.Generator().manual_seed(0))
        p, c = self.encoder.patch_size, x.shape[1]
        m = unpatchify(mask[..., None].float().expand(-1, -1, p * p * c), p, c)
        recon = unpatchify(pred, p, c)
        rows = [
            (n, denormalize(v, data.mean, data.std))
            for n, v in (("original", x), ("masked", x * (1 - m)), ("prediction in the mask", x * (1 - m) + recon * m))
        ]
        return {"simmim": Picture(rows, None, f"SimMIM: {100 * self.cfg.mask_ratio:g} % masked in blocks")}
