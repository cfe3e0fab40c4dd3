"""A character tokenizer for captions: fixed, so nothing is learned from the data or downloaded,
and a run needs no vocabulary file to read new prompts (zero-shot) later.

Printable ASCII (32..126) maps to ids 2..96, anything else to the id of "?"; 0 pads and 1 is the
[BOS] token whose output a text encoder reads (selfsup.methods.clip). Text is lower-cased.
"""

from __future__ import annotations

import torch

PAD, BOS = 0, 1
VOCAB_SIZE = 97


def tokenize(texts: list[str], length: int = 64) -> torch.Tensor:
    """Captions -> int64 [N, length]: [BOS] then characters, cut or zero-padded to ``length``."""
    out = torch.zeros(len(texts), length, dtype=torch.int64)
    for i, t in enumerate(texts):
        ids = [BOS] + [(ord(c) if 32 <= ord(c) <= 126 else ord("?")) - 30 for c in t.lower()][: length - 1]
        out[i, : len(ids)] = torch.tensor(ids)
    return out


def detokenize(ids: torch.Tensor) -> list[str]:
    """The inverse for display: [N, L] -> strings (padding and [BOS] dropped)."""
    return ["".join(chr(int(i) + 30) for i in row if int(i) > BOS) for row in ids]
