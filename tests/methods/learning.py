"""Helpers for the "a method learns on digits" tests: a seconds-long pretraining on scikit-learn's
digits, then kNN of the trained encoder against the same architecture at its random initialisation.

Usage from a test module in tests/methods/:  ``from learning import digits_recipe, trained_vs_random``.
"""

from __future__ import annotations

import torch
from safetensors.torch import load_file

from selfsup.config import resolve, view_size
from selfsup.data import load_dataset
from selfsup.eval import extract_features, knn_accuracy
from selfsup.train import fit
from selfsup.train.loop import build_method


def digits_recipe(method: str, epochs: int, heads: dict) -> list[dict]:
    return [
        {
            "method": {"name": method, **heads},
            "data": {"name": "digits"},
            "backbone": {"name": "convnet", "width": 0.5},
            "views": {"crop_scale": [0.3, 1.0], "flip_p": 0.0, "blur_p": [0.0, 0.0]},
            "optim": {"name": "lars", "lr": 1.0, "scale_lr": False},
            "train": {
                "batch_size": 128,
                "epochs": epochs,
                "monitor_train": 0,
                "checkpoint_every": 0,
                "log_every": 1000,
                "seed": 0,
                "device": "cpu",
            },
        }
    ]


def vit_digits_recipe(method: str, epochs: int, heads: dict | None = None) -> list[dict]:
    """A masked-modelling ViT on digits: vit_micro with 2-px patches (a 4 x 4 grid), AdamW, light crops."""
    return [
        {
            "method": {"name": method, **(heads or {})},
            "data": {"name": "digits"},
            "backbone": {"name": "vit_micro", "patch_size": 2},
            "views": {"crop_scale": [0.6, 1.0], "flip_p": 0.0},
            "optim": {"name": "adamw", "lr": 2e-3, "weight_decay": 0.05, "scale_lr": False, "warmup": 0.1},
            "train": {
                "batch_size": 128,
                "epochs": epochs,
                "monitor_train": 0,
                "checkpoint_every": 0,
                "log_every": 1000,
                "seed": 0,
                "device": "cpu",
            },
        }
    ]


def knn(method, cfg, train, test, size: int | None = None) -> dict:
    kw = dict(mean=cfg.data.mean, std=cfg.data.std, size=size or train.image_size)
    ftr = extract_features(method.evaluated_encoder, train.images, **kw)
    fte = extract_features(method.evaluated_encoder, test.images, **kw)
    return knn_accuracy(ftr, train.labels, fte, test.labels, ks=(200, 20))


def trained_vs_random(tmp_path, layers) -> tuple[dict, dict]:
    cfg = resolve(layers)
    summary = fit(cfg, tmp_path / "run", progress_bar=False)
    assert summary["steps"] == cfg.train.epochs * (1437 // cfg.train.batch_size)
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    torch.manual_seed(cfg.train.seed)  # the very initialisation the run started from
    n = min(cfg.data.limit or len(train), len(train))
    size = view_size(cfg, train.image_size)  # views.size (upsampled digits) or the images' own side
    random_init = build_method(cfg, train.channels, n, size)
    trained = build_method(cfg, train.channels, n, size)
    trained.load_state_dict(load_file(tmp_path / "run" / "checkpoints" / "last" / "model.safetensors"))
    return knn(trained, cfg, train, test, size), knn(random_init, cfg, train, test, size)
