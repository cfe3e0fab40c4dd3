"""Features for evaluation: evaluation only ever sees ``method.evaluated_encoder`` (``encoder``, or
the EMA target where the paper evaluates it) (read through
``selfsup.nn.features.extract_features``), and raw pixels are the reference row every table carries."""

from __future__ import annotations

import torch


def raw_pixel_features(images: torch.Tensor) -> torch.Tensor:
    """The reference row: flattened pixels in [0, 1], [N, C*H*W]. A streamed folder's images
    (selfsup.data.stream.LazyImages) are decoded here: raw pixels are the whole set in memory."""
    if not isinstance(images, torch.Tensor):
        images = images[:]
    return images.flatten(1).float() / 255.0
