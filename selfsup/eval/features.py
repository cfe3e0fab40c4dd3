"""Feature extraction: evaluation only ever sees ``method.encoder``."""
from __future__ import annotations

import torch
from torch import nn

from selfsup.transforms import eval_view


@torch.no_grad()
def extract_features(encoder: nn.Module, images: torch.Tensor, mean, std, size: int,
                     batch_size: int = 512, device: str | torch.device = "cpu",
                     precision: str = "fp32", channels_last: bool = False) -> torch.Tensor:
    """uint8 images [N,C,H,W] -> float32 features [N, F] from the encoder in eval mode."""
    was_training = encoder.training
    encoder.eval()
    device = torch.device(device)
    out = []
    try:
        for i in range(0, len(images), batch_size):
            x = eval_view(images[i:i + batch_size].to(device), mean, std, size)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                out.append(encoder(x).float().cpu())
    finally:
        encoder.train(was_training)
    return torch.cat(out)


def raw_pixel_features(images: torch.Tensor) -> torch.Tensor:
    """The reference row: flattened pixels in [0, 1], [N, C*H*W]."""
    return images.flatten(1).float() / 255.0
