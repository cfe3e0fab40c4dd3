"""A learning check on digits that a method which learned nothing cannot pass.

Why not only "kNN of the trained encoder beats the random-init encoder": most of that margin is
BatchNorm calibration. The random-init encoder is evaluated with BN running statistics of 0 and 1;
training, even at learning rate 0, replaces them with the data's. Re-estimating the random encoder's
BN statistics on the training images (no training at all) gives kNN-200 0.953 / 0.930 / 0.953 for
seeds 0-2 against 0.880 / 0.844 / 0.827 uncalibrated, about what 15 epochs of MoCo give (0.95-0.96).

So the check here compares with that BN-recalibrated random encoder, on kNN-200 where the test
queries are random crops (scale 0.3-1, the training crops) of the test images and the bank holds the
clean training images: what a contrastive method learns is to map a crop near its image's class.
The recalibrated random encoder scores about 0.55 on it; the trained ones 0.70-0.80.

Usage from a test module in tests/methods/: ``from invariance_knn import train_and_compare``.
"""

from __future__ import annotations

import copy

import torch
from safetensors.torch import load_file

from selfsup.config import resolve
from selfsup.eval import extract_features, knn_accuracy
from selfsup.nn.features import recalibrate_batchnorm
from selfsup.train import fit
from selfsup.train.loop import build_method, load_data
from selfsup.transforms import ops


def bn_recalibrated(method: torch.nn.Module, images: torch.Tensor, cfg, size: int) -> torch.nn.Module:
    """A copy of ``method`` whose encoder BN running statistics are the exact averages over ``images``."""
    m = copy.deepcopy(method)
    recalibrate_batchnorm(m.encoder, images, cfg.data.mean, cfg.data.std, size, batch_size=128)
    return m.eval()


def knn200(method, cfg, train, queries: torch.Tensor, labels: torch.Tensor) -> float:
    kw = dict(mean=cfg.data.mean, std=cfg.data.std, size=train.image_size)
    bank = extract_features(method.encoder, train.images, **kw)
    feats = extract_features(method.encoder, queries, **kw)
    return knn_accuracy(bank, train.labels, feats, labels, ks=(200,))["top1"]


def train_and_compare(tmp_path, layers: list[dict]) -> dict[str, float]:
    """Pretrain, then kNN-200 on clean and on cropped test queries for: the trained encoder, the same
    random initialisation, and that random initialisation with recalibrated BN statistics."""
    cfg = resolve(layers)
    fit(cfg, tmp_path / "run", progress_bar=False)
    train, test = load_data(cfg)
    torch.manual_seed(cfg.train.seed)  # the very initialisation the run started from
    random_init = build_method(cfg, train.channels, len(train))
    trained = build_method(cfg, train.channels, len(train))
    trained.load_state_dict(load_file(tmp_path / "run" / "checkpoints" / "last" / "model.safetensors"))
    recal = bn_recalibrated(random_init, train.images, cfg, train.image_size)
    g = torch.Generator().manual_seed(123)
    crops = ops.random_resized_crop(ops.to_float(test.images), train.image_size, (0.3, 1.0), (3 / 4, 4 / 3), 0.0, g)
    crops = (crops * 255).round().clamp(0, 255).to(torch.uint8)
    out = {}
    for name, m in (("trained", trained), ("random", random_init), ("recalibrated", recal)):
        out[name] = knn200(m, cfg, train, test.images, test.labels)
        out[name + "_crops"] = knn200(m, cfg, train, crops, test.labels)
    print(" ".join(f"{k} {v:.3f}" for k, v in out.items()))
    return out


def digits_recipe_layers(method: str, seed: int = 0) -> list[dict]:
    """The method's own ``configs/<method>_digits.yaml``, with the test settings of learning.py."""
    from selfsup.config import load_yaml, recipe_path

    return [
        {"method": {"name": method}, "data": {"name": "digits"}},
        load_yaml(recipe_path(method, "digits")),
        {"train": {"monitor_train": 0, "checkpoint_every": 0, "log_every": 1000, "seed": seed, "device": "cpu"}},
    ]
