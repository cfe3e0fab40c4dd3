"""Helper for the CPC / DIM learning tests: like learning.trained_vs_random, but for any dataset and
for recipes that resize on load (data.image_size), so the kNN sees what the encoder trained on.

Usage from a test module in tests/methods/:  ``from mi_learning import recipe_layers, trained_vs_random_on``.
"""

from __future__ import annotations

import torch
from safetensors.torch import load_file

from selfsup.config import load_yaml, recipe_path, resolve
from selfsup.data import load_dataset
from selfsup.eval import extract_features, knn_accuracy
from selfsup.train import fit
from selfsup.train.loop import build_method


def recipe_layers(method: str, data: str, overrides: dict | None = None) -> list[dict]:
    """The shipped recipe configs/<method>_<data>.yaml plus test ``overrides`` ({section: {key: value}}),
    run quietly on the CPU without the online monitor."""
    quiet = {"monitor_train": 0, "checkpoint_every": 0, "log_every": 1000, "device": "cpu"}
    layer = {"method": {"name": method}, "data": {"name": data}, "train": quiet}
    for key, value in (overrides or {}).items():
        layer.setdefault(key, {}).update(value)
    return [load_yaml(recipe_path(method, data)), layer]


def trained_vs_random_on(tmp_path, layers) -> tuple[dict, dict]:
    """Pretrain, then kNN (k 200 and 20) of the trained encoder and of the same initialisation."""
    cfg = resolve(layers)
    fit(cfg, tmp_path / "run", progress_bar=False)
    train = load_dataset(cfg.data.name, "train", image_size=cfg.data.image_size)
    test = load_dataset(cfg.data.name, "test", image_size=cfg.data.image_size)
    n = min(cfg.data.limit or len(train), len(train))
    torch.manual_seed(cfg.train.seed)  # the very initialisation the run started from
    random_init = build_method(cfg, train.channels, n)
    trained = build_method(cfg, train.channels, n)
    trained.load_state_dict(load_file(tmp_path / "run" / "checkpoints" / "last" / "model.safetensors"))
    kw = dict(mean=cfg.data.mean, std=cfg.data.std, size=train.image_size)

    def knn(method):
        ftr = extract_features(method.evaluated_encoder, train.images, **kw)
        fte = extract_features(method.evaluated_encoder, test.images, **kw)
        return knn_accuracy(ftr, train.labels, fte, test.labels, ks=(200, 20))

    return knn(trained), knn(random_init)
