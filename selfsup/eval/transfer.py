"""Transfer protocol: an encoder pretrained on one dataset, probed (kNN and linear) on another.

The question every user with their own images asks: do features learned elsewhere help here?
The target's images are resized to the side the encoder was trained on and given its channel
count (grey -> RGB by repetition, RGB -> grey by luminance), then normalised with the *source's*
statistics (what the encoder saw). Two reference rows make the number mean something: the same
architecture with random weights and BatchNorm statistics of the target (what the architecture
alone gives) and the target's raw pixels.
"""
from __future__ import annotations

import copy

import torch

from selfsup.data.sources import match_channels
from selfsup.eval.features import extract_features, raw_pixel_features, recalibrate_batchnorm
from selfsup.eval.knn import knn_accuracy
from selfsup.eval.linear import linear_probe


def transfer_scores(encoder: torch.nn.Module, target_train, target_test, channels: int, mean, std, size: int,
                    ks=(200, 20), knn_temperature: float = 0.07, device="cpu", precision: str = "fp32",
                    batch_size: int = 512, seed: int = 0) -> dict:
    """kNN and linear top-1 on ``target_*`` (labelled ImageDatasets) for the encoder, a random-init
    copy of it and the target's raw pixels. Returns {"pretrained": {...}, "random_init": {...},
    "raw_pixels": {...}}, each with "knn" (top1_k<k>) and "linear" (top1)."""
    from selfsup.eval.finetune import reinitialise

    if target_train.labels is None or target_test.labels is None:
        raise ValueError(f"transfer needs labels on the target dataset {target_train.name!r}")
    kw = dict(mean=mean, std=std, size=size, device=device, precision=precision, batch_size=batch_size)
    xtr, xte = match_channels(target_train.images, channels), match_channels(target_test.images, channels)
    ytr, yte = target_train.labels, target_test.labels
    # random weights, BN statistics of the target images: the architecture's own prior, not a handicap
    random_init = recalibrate_batchnorm(reinitialise(copy.deepcopy(encoder), seed), xtr, mean, std, size,
                                        device=device)
    rows = {"pretrained": (extract_features(encoder, xtr, **kw), extract_features(encoder, xte, **kw)),
            "random_init": (extract_features(random_init, xtr, **kw), extract_features(random_init, xte, **kw)),
            "raw_pixels": (raw_pixel_features(target_train.images), raw_pixel_features(target_test.images))}
    out = {}
    for name, (ftr, fte) in rows.items():
        knn = knn_accuracy(ftr, ytr, fte, yte, ks=ks, temperature=knn_temperature)
        lin = linear_probe(ftr, ytr, fte, yte, seed=seed)
        out[name] = {"knn": {k: v for k, v in knn.items() if k.startswith("top1_k")}, "linear": lin["top1"]}
    return out
