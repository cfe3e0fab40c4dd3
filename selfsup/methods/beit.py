"""BEiT — Bao, Dong, Piao, Wei. "BEiT: BERT Pre-Training of Image Transformers", ICLR 2022.

Idea: BERT's masked-token prediction for images. A discrete visual tokenizer turns an image into a grid of
token ids z (one per ViT patch). The ViT sees the image with ~40 % of its patches, in blocks, replaced by a
learned mask token [M]; a linear head over each masked position's output predicts that position's token:

    max  sum_{i in M} log p(z_i | x^M),    p(z_i | x^M) = softmax(W h_i^L + b)           (eq. 1)

i.e. cross-entropy over the vocabulary at the masked positions only; the tokenizer is frozen (the paper
uses DALL-E's dVAE, trained beforehand on 250M images). Checked against the official code
(microsoft/unilm, beit/modeling_pretrain.py: mask token mixed in after the patch embedding, the head applied
to masked positions only, trunc-normal 0.02 init of the mask token and head; beit/masking_generator.py:
75 of 196 patches in blocks of >= 16, aspect 0.3-3.3, our nn.blockwise_masking).

Departure, as the methods issue asks: no pretrained tokenizer can be downloaded, so BEiT trains its own on
the same images, a small VQ-VAE (van den Oord et al. 2017) whose code grid is the ViT's patch grid
(a conv encoder with stride = patch size, a codebook of ``vocab`` vectors updated by EMA with dead codes
restarted, a mirrored decoder, pixel MSE + 0.25 commitment). It trains in the first epoch's hook
(``on_epoch_start``, before any BEiT step; its time counts as training time), then stays frozen; its weights
are in the checkpoint. Not copied (documented in docs/methods/beit.md): relative position bias, layer scale,
the tokenizer's half-resolution second input.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from selfsup import dist
from selfsup.backbones.vit import ViT
from selfsup.errors import SelfsupError
from selfsup.methods.base import EpochContext, Method, Picture, StepOutput
from selfsup.nn.blockwise_masking import blockwise_mask
from selfsup.registry import BuildContext, Needs, register
from selfsup.transforms import eval_view
from selfsup.transforms.ops import denormalize


@dataclass
class BEiTConfig:
    mask_ratio: float = 0.4  # 75 of 196 patches
    min_block: float = 16 / 75  # a masked block holds >= this fraction of the masked patches (16 of 75)
    vocab: int = 8192  # the paper's (DALL-E's); the small-data recipes use a few hundred
    code_dim: int = 32  # the tokenizer's code vectors
    tokenizer_hidden: int = 64  # its conv channels
    tokenizer_steps: int = 2000
    tokenizer_batch: int = 256
    tokenizer_lr: float = 2e-3
    tokenizer_decay: float = 0.99  # EMA of the codebook
    commitment: float = 0.25


class VQTokenizer(nn.Module):
    """A VQ-VAE over patches: [B, C, S, S] -> ids [B, (S/p)^2]. Written here (not a library's): a few layers
    whose grid must equal the ViT's."""

    # buffers (checkpointed): the code vectors [K, D], their EMA usage counts [K] and sums [K, D], whether fitted
    codebook: torch.Tensor
    ema_count: torch.Tensor
    ema_sum: torch.Tensor
    trained: torch.Tensor

    def __init__(self, channels: int, patch: int, vocab: int, dim: int, hidden: int, decay: float = 0.99):
        super().__init__()
        self.decay = decay
        # every layer but the first and last runs on the patch grid (a CPU trains it in a minute); the 3 x 3
        # convolutions give each code its neighbours' context, as the dVAE's
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, hidden, patch, stride=patch),
            nn.ReLU(),  # one cell per ViT patch
            nn.Conv2d(hidden, hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, dim, 1),
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(dim, hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(hidden, channels, patch, stride=patch),
        )
        self.register_buffer("codebook", torch.zeros(vocab, dim))  # [K, D]
        self.register_buffer("ema_count", torch.zeros(vocab))
        self.register_buffer("ema_sum", torch.zeros(vocab, dim))
        self.register_buffer("trained", torch.zeros((), dtype=torch.bool))

    def codes(self, z: torch.Tensor) -> torch.Tensor:
        """Nearest codebook row (L2) of each cell: z [B, D, g, g] -> ids [B, g, g]."""
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]).float()  # [B*g*g, D]
        d = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ self.codebook.T + self.codebook.pow(2).sum(1)
        return d.argmin(1).view(z.shape[0], z.shape[2], z.shape[3])

    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [B, g, g] -> images [B, C, S, S]."""
        return self.decoder(self.codebook[ids].permute(0, 3, 1, 2))

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ids [B, g*g] (row-major, as the ViT's patches)."""
        return self.codes(self.encoder(x.float())).flatten(1)

    def fit(self, images: torch.Tensor, mean, std, size: int, cfg: BEiTConfig, device: torch.device) -> dict:
        """Train on uint8 ``images`` [N, C, H, W] (the evaluation view: resized, normalised) for
        ``cfg.tokenizer_steps`` steps; the codebook by EMA (k-means-like), dead codes restarted from the batch."""
        g = torch.Generator().manual_seed(0)
        params = list(self.encoder.parameters()) + list(self.decoder.parameters())
        opt = torch.optim.Adam(params, lr=cfg.tokenizer_lr)
        bs = min(cfg.tokenizer_batch, len(images))
        with torch.enable_grad():
            for p in params:
                p.requires_grad_(True)
            for step in range(cfg.tokenizer_steps):
                idx = torch.randint(len(images), (bs,), generator=g)
                x = eval_view(images[idx].to(device), mean, std, size)  # [B, C, S, S]
                z = self.encoder(x)  # [B, D, g, g]
                flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])  # [B*g*g, D]
                if step == 0:  # the codebook starts on encoder outputs (random rows), not on noise
                    pick = torch.randint(len(flat), (len(self.codebook),), generator=g).to(device)
                    self.codebook.copy_(flat.detach()[pick])
                    self.ema_sum.copy_(self.codebook)
                    self.ema_count.fill_(1.0)
                ids = self.codes(z)  # [B, g, g]
                zq = self.codebook[ids].permute(0, 3, 1, 2)  # [B, D, g, g]
                x_hat = self.decoder(z + (zq - z).detach())  # straight-through estimator
                rec = F.mse_loss(x_hat, x)
                loss = rec + cfg.commitment * F.mse_loss(z, zq)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                with torch.no_grad():  # EMA codebook (VQ-VAE, appendix A.1), dead codes restarted
                    onehot = F.one_hot(ids.flatten(), len(self.codebook)).float()  # [B*g*g, K]
                    self.ema_count.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
                    self.ema_sum.mul_(self.decay).add_(onehot.T @ flat.detach(), alpha=1 - self.decay)
                    n = self.ema_count.sum()
                    count = (self.ema_count + 1e-5) / (n + len(self.codebook) * 1e-5) * n  # Laplace smoothing
                    self.codebook.copy_(self.ema_sum / count[:, None])
                    dead = self.ema_count < 1.0  # used by less than one cell per step, lately: restart it
                    if dead.any():
                        pick = torch.randint(len(flat), (int(dead.sum()),), generator=g).to(device)
                        self.codebook[dead] = flat.detach()[pick]
                        self.ema_sum[dead] = self.codebook[dead]
                        self.ema_count[dead] = 1.0
            for p in params:
                p.requires_grad_(False)
        self.trained.fill_(True)
        # the last step's, read once here (not a device sync per step)
        return {"tokenizer/recon_mse": rec.item(), "tokenizer/codes_used": int(ids.unique().numel())}


@register("beit", config=BEiTConfig, views="pretext", needs=Needs(views=1, backbone="vit"))
class BEiT(Method):
    """Masked patches replaced by [M]; a linear head predicts their visual tokens (a VQ tokenizer it trains)."""

    encoder: ViT  # the registry gives a ViT-only method a ViT

    def __init__(self, encoder: ViT, cfg: BEiTConfig = BEiTConfig(), ctx: BuildContext = BuildContext()):
        super().__init__()
        image_shape = ctx.require("image_shape")
        if cfg.tokenizer_steps < 1 or cfg.vocab < 2:
            raise SelfsupError(
                f"method.tokenizer_steps={cfg.tokenizer_steps}, method.vocab={cfg.vocab}: the tokenizer "
                "needs at least 1 step and 2 tokens"
            )
        self.cfg = cfg
        self.encoder = encoder
        d = encoder.num_features
        # the official init: normal(0, 0.02) truncated at +-0.02 (timm's trunc_normal_ with a=-std, b=std)
        self.mask_token = nn.Parameter(nn.init.trunc_normal_(torch.zeros(d), std=0.02, a=-0.02, b=0.02))
        self.head = nn.Linear(d, cfg.vocab)  # the paper's lm_head
        nn.init.trunc_normal_(self.head.weight, std=0.02, a=-0.02, b=0.02)
        nn.init.zeros_(self.head.bias)
        self.tokenizer = VQTokenizer(image_shape[0], encoder.patch_size, cfg.vocab, cfg.code_dim, cfg.tokenizer_hidden)
        self.tokenizer.requires_grad_(False)  # frozen for BEiT; it trains only in on_epoch_start

    def mask(self, n: int, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
        g = self.encoder.grid
        num = int(round(self.cfg.mask_ratio * g * g))
        return blockwise_mask(
            n, g, num, min_block=max(1, round(self.cfg.min_block * num)), device=device, generator=generator
        )  # [N, P] True = masked

    def predict(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Logits [N, P, vocab] at every position (the loss reads the masked ones)."""
        h = self.encoder.tokens(x, mask=mask, mask_token=self.mask_token)[:, 1:]  # [N, P, d]
        return self.head(h).float()

    def training_step(self, batch) -> StepOutput:
        x = batch.views[0]  # [N, C, S, S]
        z = self.tokenizer(x)  # [N, P] visual tokens, no gradient
        mask = self.mask(len(x), x.device)
        logits = self.predict(x, mask)[mask]  # [M, vocab]: masked positions only
        target = z[mask]  # [M]
        loss = F.cross_entropy(logits, target)
        acc = (logits.argmax(1) == target).float().mean()
        return StepOutput(loss, {"pretext/token_acc": acc.detach()})

    def on_epoch_start(self, epoch: int, data: EpochContext) -> dict[str, float] | None:
        if bool(self.tokenizer.trained):
            return None
        logs = self.tokenizer.fit(data.dataset.images, data.mean, data.std, data.size, self.cfg, data.device)
        if dist.world_size() > 1:  # every process uses rank 0's tokenizer (the same ids for the same image)
            state = dist.broadcast_object({k: v.cpu() for k, v in self.tokenizer.state_dict().items()})
            self.tokenizer.load_state_dict(state)
        return logs

    def pictures(self, images, data) -> dict:
        if not bool(self.tokenizer.trained):
            return {}
        x = eval_view(images[:12], data.mean, data.std, data.size)
        z = self.tokenizer(x)  # [B, P]
        mask = self.mask(len(x), x.device, torch.Generator().manual_seed(0))
        pred = torch.where(mask, self.predict(x, mask).argmax(-1), z)  # the tokens BEiT predicts in the mask
        g, p = self.encoder.grid, self.encoder.patch_size
        m = mask.view(-1, 1, g, g).float().repeat_interleave(p, 2).repeat_interleave(p, 3)
        rows = [
            ("original", x),
            ("tokens, decoded", self.tokenizer.decode(z.view(-1, g, g))),
            ("masked", x * (1 - m)),
            ("BEiT's tokens in the mask, decoded", self.tokenizer.decode(pred.view(-1, g, g))),
        ]
        rows = [(n, denormalize(v.float(), data.mean, data.std).clamp(0, 1)) for n, v in rows]
        return {
            "beit": Picture(
                rows, None, f"BEiT: {100 * self.cfg.mask_ratio:g} % masked in blocks; {self.cfg.vocab} visual tokens"
            )
        }
