"""Multi-crop bookkeeping shared by the methods (Caron et al. 2020, SwAV sec. 3.2; DINO's MultiCropWrapper).

``selfsup.transforms.Views`` returns [global_1, ..., global_G, local_1, ..., local_L]; the local
crops are smaller. A method needs two things from that list: how many leading views are global
(SwAV computes codes and DINO's teacher runs only on those) and the features of all views, which
cannot go through the encoder as one batch because the sizes differ.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn


def num_global_crops(views: list[torch.Tensor]) -> int:
    """How many leading views have the first view's spatial size: the global crops.

    ``Views`` refuses local crops as large as the global ones, so the size tells them apart."""
    size = views[0].shape[-2:]
    g = 0
    while g < len(views) and views[g].shape[-2:] == size:
        g += 1
    return g


def encode_crops(encoder: nn.Module, views: list[torch.Tensor]) -> torch.Tensor:
    """Features of every view, [V*B, F] in view order (rows v*B .. (v+1)*B - 1 are view v).

    One encoder pass per run of consecutive views of the same size, as the official SwAV/DINO
    code does: the crops of one resolution share a forward (and BatchNorm statistics). With
    two same-size views this is exactly ``encoder(torch.cat(views))``.
    """
    out, start = [], 0
    while start < len(views):
        end = start + 1
        while end < len(views) and views[end].shape[-2:] == views[start].shape[-2:]:
            end += 1
        with running_stats_frozen(encoder, start > 0):
            out.append(encoder(torch.cat(views[start:end])))  # [(end - start) * B, F]
        start = end
    return out[0] if len(out) == 1 else torch.cat(out)


@contextmanager
def running_stats_frozen(module: nn.Module, frozen: bool = True):
    """BatchNorm layers keep normalising with the batch's statistics but do not update their
    running estimates (momentum 0) inside the block.

    Why: evaluation runs the encoder in eval mode on full images at the global size, with the
    running statistics. Updated by the local-crop pass too, they would end up half local-crop
    statistics (the last pass weighs most) — a mismatch that costs kNN accuracy at small image
    sizes (8 px digits with 5 px locals). The official code lets the locals update them; at 224/96
    px the mismatch is milder there.
    """
    bns = [
        m
        for m in module.modules()
        if frozen and isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats
    ]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch statistics
    try:
        yield
    finally:
        for m, momentum in zip(bns, saved):
            m.momentum = momentum
