"""Jigsaw — Noroozi & Favaro. "Unsupervised Learning of Visual Representations by Solving Jigsaw
Puzzles", ECCV 2016.

Idea: cut the image into a 3x3 grid of tiles, shuffle them by one of a fixed set of permutations,
and ask the network which permutation it was. Putting a shirt back together needs to know what a
collar and a sleeve are. Details (sec. 3): the permutation set is chosen once for maximal Hamming
distance between its members (``maximal_hamming_permutations``, the paper's algorithm 1: the largest
summed distance; the paper's 100 of 9! = 362,880)
and kept as a buffer, so it is saved with every checkpoint; each tile is a random crop inside its
cell (gaps and jitter stop edge matching) and is standardised on its own (no brightness or
contrast cue, the paper's per-tile normalisation); the tiles go through one shared encoder
independently (the "context-free network") and only their concatenated features meet, in the
classifier. Logged: ``pretext/jigsaw_acc``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.methods.base import Method, Picture, StepOutput
from selfsup.nn.heads import mlp
from selfsup.registry import BuildContext, Needs, register
from selfsup.transforms.pretext import jigsaw_tiles, maximal_hamming_permutations, resize
from selfsup.transforms import eval_view


@dataclass
class JigsawConfig:
    num_permutations: int = 100  # the paper's default set size (its table 3 compares 100-1000)
    permutation_seed: int = 0
    permutation_criterion: str = "sum"  # sum: the paper's algorithm 1 (largest mean distance); min: maximin
    tile: int | None = None  # px; None: 85 % of the cell (the paper's 64-px tiles in 75-px cells)
    resize: int | None = None  # enlarge the view first (28-px images leave 9-px cells)
    head_hidden: int = 512  # the paper: 9 x fc6 (1024) concatenated -> fc7 (4096) -> fc8; scaled down


@register("jigsaw", config=JigsawConfig, views="pretext", needs=Needs(views=1))
class Jigsaw(Method):
    """Predict which permutation shuffled the 3x3 tiles."""

    perms: torch.Tensor  # a buffer: the permutations [P, 9]

    def __init__(self, encoder: nn.Module, cfg: JigsawConfig = JigsawConfig(), ctx: BuildContext = BuildContext()):
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        self.register_buffer(
            "perms",
            maximal_hamming_permutations(cfg.num_permutations, 9, cfg.permutation_seed, cfg.permutation_criterion),
        )
        self.head = mlp(9 * cast(int, encoder.num_features), cfg.head_hidden, cfg.num_permutations, 2)

    def _tiles(self, x: torch.Tensor, gen: torch.Generator | None = None):
        x = resize(x, self.cfg.resize)
        cell = x.shape[-1] // 3
        tile = self.cfg.tile or max(1, round(0.85 * cell))
        return jigsaw_tiles(x, self.perms, tile, gen)  # [N, 9, C, t, t], [N]

    def _logits(self, tiles: torch.Tensor) -> torch.Tensor:
        n = tiles.shape[0]
        f = self.encoder(tiles.flatten(0, 1))  # every tile alone through the shared encoder: [9N, F]
        return self.head(f.view(n, -1))  # concatenated in slot order: [N, 9F] -> [N, P]

    def training_step(self, batch) -> StepOutput:
        tiles, y = self._tiles(batch.views[0])  # labels from the global RNG (seeded and checkpointed)
        logits = self._logits(tiles)
        loss = F.cross_entropy(logits.float(), y)
        return StepOutput(loss, {"pretext/jigsaw_acc": (logits.argmax(1) == y).float().mean().detach()})

    def pictures(self, images, data) -> dict:
        x = eval_view(images[:6], data.mean, data.std, data.size)
        tiles, y = self._tiles(x, torch.Generator().manual_seed(0))
        pred = self._logits(tiles).argmax(1).cpu()
        # one fixed scale for every tile (standardised values -3..3 -> black..white), so the picture shows
        # what the network sees: a per-tile min-max stretch would turn a nearly blank tile, which the std
        # floor keeps nearly flat, into salt-and-pepper noise
        shown = (tiles.float() / 6 + 0.5).clamp(0, 1)
        rows, caps = [], []
        for i in range(len(y)):
            verdict = "✓" if int(pred[i]) == int(y[i]) else f"✗ pred #{int(pred[i])}"
            rows.append((f"perm #{int(y[i])} {verdict}", shown[i]))
            caps.append([f"tile {int(t)}" for t in self.perms[y[i]].cpu()])
        return {
            "jigsaw": Picture(
                rows,
                caps,
                "Jigsaw: shuffled, per-tile normalised tiles (slot order); under each, the original tile it holds",
            )
        }
