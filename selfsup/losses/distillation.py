"""Self-distillation losses (BYOL, SimSiam, DINO)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def normalized_mse(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """BYOL's loss ||p/||p|| - z/||z|| ||^2 = 2 - 2 cos(p, z), mean over the batch. z gets no gradient."""
    p = F.normalize(p.float(), dim=-1)
    z = F.normalize(z.detach().float(), dim=-1)
    return (2 - 2 * (p * z).sum(dim=-1)).mean()
