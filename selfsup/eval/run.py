"""Evaluate a run directory: rebuild the method, load its weights, evaluate ``method.encoder``.

Features of the train and test splits are extracted once per checkpoint and cached in
RUN_DIR/features/ (keyed by the checkpoint's step), so knn and linear share one extraction.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from selfsup.config import RunConfig, load_run_config
from selfsup.eval.features import extract_features, raw_pixel_features
from selfsup.eval.knn import knn_accuracy
from selfsup.eval.linear import linear_probe


def load_run(run_dir: str | Path):
    """(config, method with the last checkpoint's weights, checkpoint meta)."""
    from selfsup.train.checkpoint import load_weights
    from selfsup.train.loop import build_method

    cfg = load_run_config(run_dir)
    from selfsup.data import load_dataset

    train = load_dataset(cfg.data.name, "train", cfg.data.dir, cfg.data.image_size)
    n = min(cfg.data.limit, len(train)) if cfg.data.limit else len(train)  # as the run saw it (memory banks)
    method = build_method(cfg, train.channels, n)
    meta = load_weights(Path(run_dir) / "checkpoints" / "last", method, expect={"method": cfg.method_name})
    return cfg, method, meta


def _splits(cfg: RunConfig):
    from selfsup.data import load_dataset

    train = load_dataset(cfg.data.name, "train", cfg.data.dir, cfg.data.image_size)
    test = load_dataset(cfg.data.name, "test", cfg.data.dir, cfg.data.image_size)
    if train.labels is None or test.labels is None:
        raise ValueError(f"dataset {cfg.data.name!r} has no labels: kNN and linear evaluation need a labelled "
                         f"train and test split (an image folder with class sub-folders under train/ and test/)")
    return train, test


def run_features(run_dir: str | Path, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, RunConfig]:
    """(train features, train labels, test features, test labels, config), cached per checkpoint."""
    cfg, method, meta = load_run(run_dir)
    train, test = _splits(cfg)
    cache = Path(run_dir) / "features" / f"step{meta.get('step')}.safetensors"
    if cache.is_file():
        f = load_file(cache)
        return f["train"], train.labels, f["test"], test.labels, cfg
    size = cfg.views.get("size") or train.image_size
    kw = dict(mean=cfg.data.mean, std=cfg.data.std, size=size, device=device,
              precision=cfg.train.precision, batch_size=cfg.eval.batch_size)
    ftr = extract_features(method.encoder, train.images, **kw)
    fte = extract_features(method.encoder, test.images, **kw)
    cache.parent.mkdir(exist_ok=True)
    save_file({"train": ftr.contiguous(), "test": fte.contiguous()}, cache)
    return ftr, train.labels, fte, test.labels, cfg


def evaluate(run_dir: str | Path, protocol: str, device: str = "cpu") -> dict:
    """Run ``protocol`` ('knn' or 'linear') on a run's encoder; the result is also written to
    RUN_DIR/eval_<protocol>.json."""
    ftr, ytr, fte, yte, cfg = run_features(run_dir, device)
    result = _protocol(protocol, ftr, ytr, fte, yte, cfg)
    result.update({"run": str(run_dir), "method": cfg.method_name, "data": cfg.data.name})
    (Path(run_dir) / f"eval_{protocol}.json").write_text(json.dumps(result, indent=1))
    return result


def evaluate_raw_pixels(cfg: RunConfig, protocol: str) -> dict:
    """The same protocol on flattened raw pixels: the reference row every table carries."""
    train, test = _splits(cfg)
    result = _protocol(protocol, raw_pixel_features(train.images), train.labels,
                       raw_pixel_features(test.images), test.labels, cfg)
    result.update({"method": "raw pixels", "data": cfg.data.name})
    return result


def _protocol(protocol: str, ftr, ytr, fte, yte, cfg: RunConfig) -> dict:
    if protocol == "knn":
        return knn_accuracy(ftr, ytr, fte, yte, ks=cfg.eval.knn_k, temperature=cfg.eval.knn_temperature)
    if protocol == "linear":
        return linear_probe(ftr, ytr, fte, yte, l2_grid=cfg.eval.linear_l2, val_fraction=cfg.eval.linear_val_fraction)
    raise ValueError(f"unknown evaluation protocol {protocol!r}: choose knn or linear")


def evaluate_finetune(run_dir: str | Path, fraction: float = 0.1, epochs: int | None = None,
                      steps: int | None = None, from_scratch: bool = False, device: str = "cpu",
                      progress: bool = False, **changes) -> dict:
    """Fine-tune the run's ``finetune_encoder`` (or ``encoder``) + a linear head on ``fraction`` of
    the training labels (selfsup.eval.finetune); ``changes``: other FinetuneConfig fields. The
    result is also written to RUN_DIR/eval_finetune_<pct>pct.json (eval_scratch_... from scratch)."""
    from selfsup.eval.finetune import finetune, run_finetune_config

    cfg, method, meta = load_run(run_dir)
    train, test = _splits(cfg)
    ft = run_finetune_config(cfg, fraction=fraction, epochs=epochs, steps=steps, from_scratch=from_scratch, **changes)
    encoder = getattr(method, "finetune_encoder", method.encoder)
    size = cfg.views.get("size") or train.image_size
    result = finetune(encoder, train, test, cfg.data.mean, cfg.data.std, size, ft, device, progress)
    result.update({"run": str(run_dir), "method": cfg.method_name, "data": cfg.data.name,
                   "encoder": "finetune_encoder" if hasattr(method, "finetune_encoder") else "encoder",
                   "checkpoint_step": meta.get("step")})
    name = f"eval_{'scratch' if from_scratch else 'finetune'}_{100 * fraction:g}pct.json"
    (Path(run_dir) / name).write_text(json.dumps(result, indent=1))
    return result
