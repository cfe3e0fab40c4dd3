"""Running a module over stored images: uint8 [N,C,H,W] through the deterministic evaluation view
(resize, normalise) in batches. Evaluation, the training loop's monitor, a method's epoch hook
(DeepCluster's k-means) and a loaded run's feature cache all read features this way."""

from __future__ import annotations

import torch
from torch import nn

from selfsup import dist
from selfsup.nn.runtime import Runtime
from selfsup.transforms import eval_view


@torch.no_grad()
def extract_features(
    encoder: nn.Module,
    images: torch.Tensor,
    mean,
    std,
    size: int,
    batch_size: int = 512,
    runtime: Runtime | str | torch.device = "cpu",
    forward=None,
    shard: bool | None = None,
) -> torch.Tensor:
    """uint8 images [N,C,H,W] -> float32 features [N, F] from the encoder in eval mode.
    ``runtime``: the device, precision and memory format (a device alone: fp32, contiguous).
    ``forward``: another function of the normalised views to read instead of ``encoder(x)`` (a
    method's projection ``method.embedding``, CLIP's ``encode_image``), with ``encoder`` the module
    it belongs to (put in eval mode for the extraction).
    ``shard`` (default: in a process group): every process extracts a contiguous 1/world of the
    images and the shards are gathered, so every process returns all N rows in order. All processes
    must then call it together."""
    was_training = encoder.training
    encoder.eval()
    rt = Runtime.coerce(runtime)
    shard = dist.is_dist() if shard is None else shard
    lo, hi = 0, len(images)
    if shard:
        per = -(-len(images) // dist.world_size())  # ceil: the last shard may be shorter (or empty)
        lo, hi = min(len(images), dist.rank() * per), min(len(images), (dist.rank() + 1) * per)
    out = []
    try:
        for i in range(lo, hi, batch_size):
            x = rt.inputs(eval_view(images[i : min(hi, i + batch_size)].to(rt.device), mean, std, size))
            with rt.autocast():
                out.append((forward or encoder)(x).float())
        if not out:  # an empty shard still has to know the feature width for the gather
            with rt.autocast():
                out = [(forward or encoder)(eval_view(images[:1].to(rt.device), mean, std, size)).float()[:0]]
    finally:
        encoder.train(was_training)
    feats = torch.cat(out)
    if shard:
        feats = dist.gather_uneven(feats)  # [N, F] in image order on every process
    return feats.cpu()


@torch.no_grad()
def recalibrate_batchnorm(
    encoder: nn.Module,
    images: torch.Tensor,
    mean,
    std,
    size: int,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """Set every BatchNorm's running statistics of ``encoder`` (in place) to the exact averages over
    ``images`` (uint8 [N,C,H,W]); no weight changes. A random-init encoder evaluated with BN's
    initial statistics (0 and 1) is a handicapped baseline: any training, even at learning rate 0,
    replaces them with the data's. Returns the encoder in eval mode."""
    bns = [m for m in encoder.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all batches
    encoder.train()
    for i in range(0, len(images), batch_size):
        encoder(eval_view(images[i : i + batch_size].to(device), mean, std, size))
    for m, momentum in zip(bns, momenta):
        m.momentum = momentum
    return encoder.eval()
