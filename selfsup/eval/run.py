"""Evaluate a run directory: rebuild the method, load its weights, evaluate ``method.encoder``.

Every protocol (``PROTOCOLS``) is one function here taking the run directory; each writes its
result to RUN_DIR/eval_<protocol>[_<variant>].json and its pictures next to it. Features of the
train and test splits are extracted once per checkpoint and cached in RUN_DIR/features/ (keyed
by the checkpoint's step and file time, so a continued run gets fresh features), so knn, linear,
cluster, embed2d, semi and robustness share one extraction.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from selfsup import dist

from selfsup.config import RunConfig, eval_size, load_run_config, view_size
from selfsup.eval.features import extract_features, raw_pixel_features
from selfsup.eval.knn import knn_accuracy
from selfsup.eval.linear import linear_probe


@functools.lru_cache(maxsize=4)
def _dataset(name: str, split: str, root, image_size, stream: bool = False):
    """A split, loaded once per process: one evaluation reads the same split several times (building
    the method, its features, the protocol), and the synthetic sets are generated, not just read.
    ``stream`` (a run trained with data.stream=true): the training split stays a listed folder whose
    images are decoded batch by batch where they are used; test splits are read into memory, as
    training reads them."""
    if stream and split == "train":
        from selfsup.data.stream import load_imagefolder_stream

        return load_imagefolder_stream(split, Path(root).expanduser() if root else None, image_size)
    from selfsup.data import load_dataset

    return load_dataset(name, split, root, image_size)


def _train_split(cfg: RunConfig):
    return _dataset(cfg.data.name, "train", cfg.data.dir, cfg.data.image_size, cfg.data.stream)


def load_run(run_dir: str | Path):
    """(config, method with the last checkpoint's weights, checkpoint meta)."""
    from selfsup.train.checkpoint import load_checkpoint
    from selfsup.train.loop import build_method

    cfg = load_run_config(run_dir)
    train = _train_split(cfg)
    n = min(cfg.data.limit, len(train)) if cfg.data.limit else len(train)  # as the run saw it (memory banks)
    method = build_method(cfg, train.channels, n, view_size(cfg, train.image_size))
    meta, _, used = load_checkpoint(Path(run_dir) / "checkpoints" / "last", method, {"method": cfg.method_name},
                                    with_state=False)  # checkpoints/previous when last is damaged
    return cfg, method, {**meta, "checkpoint_dir": str(used)}


def _splits(cfg: RunConfig):
    train = _train_split(cfg)
    test = _dataset(cfg.data.name, "test", cfg.data.dir, cfg.data.image_size)
    if train.labels is None or test.labels is None:
        raise ValueError(f"dataset {cfg.data.name!r} has no labels: kNN and linear evaluation need a labelled "
                         f"train and test split (an image folder with class sub-folders under train/ and test/)")
    return train, test


def run_features(run_dir: str | Path, device: str = "cpu", loaded: tuple | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, RunConfig]:
    """(train features, train labels, test features, test labels, config), cached per checkpoint.
    ``loaded``: the run's ``load_run`` result when the caller has it already (not built twice)."""
    cfg, method, meta = loaded or load_run(run_dir)
    train, test = _splits(cfg)
    stamp = (Path(meta["checkpoint_dir"]) / "model.safetensors").stat().st_mtime_ns
    size = _size(cfg, train)
    # keyed by the side too: eval.size may be edited after training
    cache = Path(run_dir) / "features" / f"step{meta.get('step')}-{stamp:x}-{size}px.safetensors"
    if cache.is_file():
        f = load_file(cache)
        return f["train"], train.labels, f["test"], test.labels, cfg
    kw = dict(mean=cfg.data.mean, std=cfg.data.std, size=size, device=device,
              precision=cfg.train.precision, batch_size=cfg.eval.batch_size)
    ftr = extract_features(method.encoder, train.images, **kw)
    fte = extract_features(method.encoder, test.images, **kw)
    if dist.is_main():  # under torchrun every process extracted its shard and holds all rows; one writes
        cache.parent.mkdir(exist_ok=True)
        for old in cache.parent.glob("step*.safetensors"):  # an older checkpoint's features
            old.unlink()
        save_file({"train": ftr.contiguous(), "test": fte.contiguous()}, cache)
    return ftr, train.labels, fte, test.labels, cfg


def evaluate(run_dir: str | Path, protocol: str, device: str = "cpu", **options) -> dict:
    """Run ``protocol`` (one of ``PROTOCOLS``) on a run's encoder with the protocol's ``options``;
    the result is also written to RUN_DIR/eval_<protocol>[_<variant>].json."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown evaluation protocol {protocol!r}: choose from {', '.join(PROTOCOLS)}")
    return PROTOCOLS[protocol](run_dir, device=device, **options)


def _save(run_dir, name: str, result: dict, cfg: RunConfig | None = None) -> dict:
    if cfg is not None:
        result.update({"run": str(run_dir), "method": cfg.method_name, "data": cfg.data.name})
    if dist.is_main():
        (Path(run_dir) / f"eval_{name}.json").write_text(json.dumps(result, indent=1))
    return result


def evaluate_knn(run_dir, device: str = "cpu") -> dict:
    ftr, ytr, fte, yte, cfg = run_features(run_dir, device)
    return _save(run_dir, "knn", _protocol("knn", ftr, ytr, fte, yte, cfg), cfg)


def evaluate_linear(run_dir, device: str = "cpu") -> dict:
    ftr, ytr, fte, yte, cfg = run_features(run_dir, device)
    return _save(run_dir, "linear", _protocol("linear", ftr, ytr, fte, yte, cfg), cfg)


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
    size = _size(cfg, train)
    result = finetune(encoder, train, test, cfg.data.mean, cfg.data.std, size, ft, device, progress)
    result.update({"run": str(run_dir), "method": cfg.method_name, "data": cfg.data.name,
                   "encoder": "finetune_encoder" if hasattr(method, "finetune_encoder") else "encoder",
                   "checkpoint_step": meta.get("step")})
    name = f"eval_{'scratch' if from_scratch else 'finetune'}_{100 * fraction:g}pct.json"
    (Path(run_dir) / name).write_text(json.dumps(result, indent=1))
    return result


def _size(cfg: RunConfig, train) -> int:
    """Side of the images the encoder is evaluated at (eval.size, else the views')."""
    return eval_size(cfg, train.image_size)


def evaluate_cluster(run_dir, device: str = "cpu", num_clusters: int | None = None, seed: int = 0) -> dict:
    """k-means on the test features (k = the number of classes unless given) -> NMI, ARI, Hungarian accuracy."""
    from selfsup.eval.cluster import cluster_scores

    _, _, fte, yte, cfg = run_features(run_dir, device)
    return _save(run_dir, "cluster", cluster_scores(fte, yte, num_clusters, seed), cfg)


def evaluate_embed2d(run_dir, device: str = "cpu", kinds=None, max_points: int = 3000, seed: int = 0) -> dict:
    """t-SNE (and UMAP when umap-learn is installed) of up to ``max_points`` test features, a
    class-balanced seeded sample, coloured by label: RUN_DIR/embed2d_<kind>.png."""
    from selfsup.data.sources import balanced_indices
    from selfsup.eval.embed import embed_2d, plot_embedding

    _, _, fte, yte, cfg = run_features(run_dir, device)
    if kinds is None:
        import importlib.util

        kinds = ["tsne"] + (["umap"] if importlib.util.find_spec("umap") else [])
    idx = balanced_indices(yte, min(1.0, max_points / len(yte)), seed)
    test = _splits(cfg)[1]
    pictures = {}
    for kind in kinds:
        xy = embed_2d(fte[idx], kind, seed)
        title = f"{cfg.method_name} on {cfg.data.name}: {kind.upper() if kind == 'umap' else 't-SNE'} of {len(idx)} test images"
        pictures[kind] = str(plot_embedding(xy, yte[idx].numpy(), Path(run_dir) / f"embed2d_{kind}.png", title,
                                            getattr(test, "classes", None)))
    return _save(run_dir, "embed2d", {"protocol": "embed2d", "points": len(idx), "pictures": pictures}, cfg)


def evaluate_diagnostics(run_dir, device: str = "cpu", num_images: int = 2048, seed: int = 0) -> dict:
    """Representation diagnostics: effective rank (RankMe), per-dimension std, alignment and uniformity
    (Wang & Isola 2020) of the encoder's features and of the method's embedding (what its loss sees);
    for InfoNCE methods, the bound log N - L at several N on pairs of augmented test views."""
    from selfsup.config import view_config
    from selfsup.eval.diagnostics import (alignment, effective_rank, embedding_std, infonce_bound_curve,
                                          per_dimension_std, uniformity)
    from selfsup.report.plots import read_metrics
    from selfsup.transforms import Views, eval_view

    loaded = load_run(run_dir)
    _, _, fte, _, cfg = run_features(run_dir, device, loaded)
    method = loaded[1]
    train, test = _splits(cfg)
    size = _size(cfg, train)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(test), generator=g)[:num_images]
    images = test.images[idx]
    # two global views even for single-view methods: alignment compares two views of each image
    vcfg = view_config(cfg)
    views = Views(dataclasses.replace(vcfg, num_global=max(2, vcfg.num_global)), cfg.data.mean, cfg.data.std,
                  train.image_size)
    v1, v2 = views(images, g)[:2]  # two augmented (global) views of each image, as in training
    method.eval()
    with torch.no_grad(), torch.autocast(torch.device(device).type, dtype=torch.bfloat16,
                                         enabled=cfg.train.precision == "bf16"):
        method.to(device)
        h1, h2 = (method.encoder(v.to(device)).float().cpu() for v in (v1, v2))
        z = method.embedding(eval_view(images, cfg.data.mean, cfg.data.std, size).to(device)).float().cpu()
        z1, z2 = (method.embedding(v.to(device)).float().cpu() for v in (v1, v2))
    sub = fte[idx]
    result = {"protocol": "diagnostics", "num_images": len(idx),
              "features": {"dim": fte.shape[1], "effective_rank": effective_rank(sub), "std": per_dimension_std(sub),
                           "alignment": alignment(h1, h2), "uniformity": uniformity(sub)},
              "embedding": {"dim": z.shape[1], "effective_rank": effective_rank(z), "std": per_dimension_std(z),
                            "mean_std": embedding_std(z), "alignment": alignment(z1, z2), "uniformity": uniformity(z)}}
    temperature = getattr(getattr(method, "cfg", None), "temperature", None)
    if temperature is not None and any("infonce_bound" in r for r in read_metrics(run_dir)):
        curve = infonce_bound_curve(z1, z2, temperature, ns=tuple(n for n in (2, 8, 32, 128, 512, 2048) if n <= len(idx)))
        result["infonce_bound"] = {"temperature": temperature, "nats": {str(n): b for n, b in curve.items()},
                                   "log_n": {str(n): math.log(n) for n in curve}}
    return _save(run_dir, "diagnostics", result, cfg)


def evaluate_semi(run_dir, device: str = "cpu", fractions=(0.01, 0.1, 1.0), epochs: int | None = None,
                  steps: int | None = None, seed: int = 0, progress: bool = False) -> dict:
    """Label efficiency: linear probe, fine-tuning and supervised-from-scratch at each fraction of the
    labels (selfsup.eval.semi); RUN_DIR/semi.png plots them."""
    from selfsup.eval.finetune import run_finetune_config
    from selfsup.eval.semi import plot_semi, semi_supervised

    loaded = load_run(run_dir)
    ftr, _, fte, _, cfg = run_features(run_dir, device, loaded)
    method = loaded[1]
    train, test = _splits(cfg)
    ft = run_finetune_config(cfg, epochs=epochs, steps=steps, seed=seed)
    res = semi_supervised(method.encoder, train, test, ftr, fte, cfg.data.mean, cfg.data.std, _size(cfg, train),
                          fractions, ft, device, progress, finetune_encoder=getattr(method, "finetune_encoder", None))
    res["picture"] = str(plot_semi(res["rows"], Path(run_dir) / "semi.png",
                                   f"{cfg.method_name} on {cfg.data.name}: label efficiency"))
    return _save(run_dir, "semi", res, cfg)


def evaluate_robustness(run_dir, device: str = "cpu", kinds=None, seed: int = 0) -> dict:
    """Linear probe fitted on clean features, accuracy under each corruption at severities 1-5, for
    the encoder and for raw pixels; RUN_DIR/robustness.png plots both with example images."""
    from selfsup.eval.linear import fit_probe
    from selfsup.eval.robustness import CORRUPTIONS, SEVERITIES, plot_robustness, robustness_curves

    kinds = tuple(kinds or CORRUPTIONS)
    loaded = load_run(run_dir)
    ftr, ytr, fte, yte, cfg = run_features(run_dir, device, loaded)
    method = loaded[1]
    train, test = _splits(cfg)
    kw = dict(mean=cfg.data.mean, std=cfg.data.std, size=_size(cfg, train), device=device,
              precision=cfg.train.precision, batch_size=cfg.eval.batch_size)
    probe = fit_probe(ftr, ytr, l2_grid=cfg.eval.linear_l2, val_fraction=cfg.eval.linear_val_fraction, seed=seed)
    raw_probe = fit_probe(raw_pixel_features(train.images), ytr, l2_grid=cfg.eval.linear_l2,
                          val_fraction=cfg.eval.linear_val_fraction, seed=seed)
    curves = {cfg.method_name: robustness_curves(probe, lambda x: extract_features(method.encoder, x, **kw),
                                                 test.images, yte, kinds, seed),
              "raw pixels": robustness_curves(raw_probe, raw_pixel_features, test.images, yte, kinds, seed)}
    picture = plot_robustness(curves, test.images[0], Path(run_dir) / "robustness.png",
                              f"{cfg.method_name} on {cfg.data.name}: linear probe under corruptions")
    res = {"protocol": "robustness", "encoder": curves[cfg.method_name], "raw_pixels": curves["raw pixels"],
           "severities": {k: SEVERITIES[k] for k in kinds}, "seed": seed, "picture": str(picture)}
    return _save(run_dir, "robustness", res, cfg)


def evaluate_transfer(run_dir, target: str = "digits", target_dir: str | None = None, device: str = "cpu",
                      seed: int = 0) -> dict:
    """The run's encoder probed on another labelled dataset ``target`` (resized to the run's image
    side), next to a random-init encoder and the target's raw pixels: RUN_DIR/eval_transfer_<target>.json."""
    from selfsup.data import load_dataset
    from selfsup.eval.transfer import transfer_scores

    cfg, method, _ = load_run(run_dir)
    train = _splits(cfg)[0]
    size = _size(cfg, train)
    tgt_train = load_dataset(target, "train", target_dir, train.image_size)
    tgt_test = load_dataset(target, "test", target_dir, train.image_size)
    res = transfer_scores(method.encoder.to(device), tgt_train, tgt_test, train.channels, cfg.data.mean, cfg.data.std,
                          size, ks=cfg.eval.knn_k, knn_temperature=cfg.eval.knn_temperature, device=device,
                          precision=cfg.train.precision, batch_size=cfg.eval.batch_size, seed=seed)
    res.update({"protocol": "transfer", "source": cfg.data.name, "target": target, "image_size": size})
    return _save(run_dir, f"transfer_{target}", res, cfg)


def evaluate_efficiency(run_dir, device: str = "cpu") -> dict:
    """images/s, training time, peak memory and time to each kNN-monitor accuracy, from the run's logs."""
    from selfsup.eval.efficiency import efficiency

    cfg = load_run_config(run_dir)
    return _save(run_dir, "efficiency", efficiency(run_dir), cfg)


def evaluate_pretext(run_dir, device: str = "cpu", max_images: int = 2000) -> dict:
    """The run's pretext metrics next to its linear-probe top-1 (computed if missing). ``pretext``:
    each metric measured on up to ``max_images`` held-out test images (a seeded sample) through the
    run's training views, in eval mode (``heldout_metrics``); metrics a method measures once an epoch
    (BiGAN's G(E(x)), video tracking IoU) are their last logged value. ``train_last``: the last value
    logged during training (one training batch). Across runs: ``pretext_correlation``."""
    from selfsup.config import view_config
    from selfsup.eval.pretext import heldout_metrics, pretext_metrics
    from selfsup.transforms import Views

    cfg, method, _ = load_run(run_dir)
    logged = pretext_metrics(run_dir)
    if not logged:
        raise ValueError(f"{run_dir} ({cfg.method_name}) logged no pretext metric: the pretext protocol is for "
                         f"pretext-task methods (rotation, jigsaw, relative position, inpainting, colorization, ...)")
    train = _train_split(cfg)
    test = _dataset(cfg.data.name, "test", cfg.data.dir, cfg.data.image_size)
    pick = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[:max_images]
    texts = None
    if method.uses_text:
        from selfsup.data.text import tokenize

        texts = tokenize([test.captions[int(i)] for i in pick], method.cfg.context)
    views = Views(view_config(cfg), cfg.data.mean, cfg.data.std, train.image_size, method.min_views)
    # batches of the training size: in-batch metrics (CLIP's caption accuracy, counting's contrast) depend on it
    heldout = heldout_metrics(method.to(device), test.images[pick], views, texts, cfg.train.batch_size, device,
                              cfg.train.precision)
    lin = Path(run_dir) / "eval_linear.json"
    linear = json.loads(lin.read_text())["top1"] if lin.is_file() else evaluate_linear(run_dir, device)["top1"]
    return _save(run_dir, "pretext", {"protocol": "pretext", "pretext": {**logged, **heldout}, "heldout": sorted(heldout),
                                      "heldout_images": len(pick), "train_last": logged, "linear_top1": linear}, cfg)


def pretext_correlation(run_dirs, device: str = "cpu") -> dict:
    """Per pretext metric shared by the runs, its correlation with linear-probe top-1 across them."""
    from selfsup.eval.pretext import correlation

    results = [evaluate_pretext(r, device) for r in run_dirs]
    names = sorted(set.intersection(*(set(r["pretext"]) for r in results)))
    return {"protocol": "pretext", "runs": [{"run": r["run"], "method": r["method"], **r["pretext"],
                                             "linear_top1": r["linear_top1"]} for r in results],
            "correlation": {n: correlation([r["pretext"][n] for r in results], [r["linear_top1"] for r in results])
                            for n in names}}


def _clip_run(run_dir, device):
    cfg, method, _ = load_run(run_dir)
    if not hasattr(method, "encode_text"):
        raise ValueError(f"{run_dir} ({cfg.method_name}) has no text encoder: zero-shot and retrieval are for "
                         f"image-text methods (--method clip)")
    return cfg, method.to(device)


def evaluate_zeroshot(run_dir, device: str = "cpu", prompts=("a photo of a {label}",), dataset: str | None = None,
                      data_dir: str | None = None) -> dict:
    """Classify the test split by text prompts alone (CLIP): top-1 / top-5 against chance."""
    from selfsup.data import load_dataset
    from selfsup.eval.clip import class_prompts, encode_images, encode_texts, zero_shot

    cfg, method = _clip_run(run_dir, device)
    test = load_dataset(dataset, "test", data_dir) if dataset else _splits(cfg)[1]
    if not test.classes:
        raise ValueError(f"{test.name} has no class names to put into prompts")
    names = [c.lower().replace("/", " or ") for c in test.classes]  # "T-shirt/top" -> "t-shirt or top"
    per_class = class_prompts(names, list(prompts))
    text = encode_texts(method, [p for ps in per_class for p in ps], device).view(len(names), len(prompts), -1)
    img = encode_images(method, test.images, cfg.data.mean, cfg.data.std, _size(cfg, test), device)
    res = {"protocol": "zeroshot", "prompts": list(prompts), "classes": names, "test_set": test.name,
           **zero_shot(img, test.labels, text)}
    return _save(run_dir, "zeroshot", res, cfg)


def evaluate_retrieval(run_dir, device: str = "cpu", max_pairs: int = 1000) -> dict:
    """Recall@1/5 image -> text and text -> image on test images and their own captions."""
    from selfsup.eval.clip import encode_images, encode_texts, retrieval

    cfg, method = _clip_run(run_dir, device)
    _, test = _splits(cfg)
    if test.captions is None:
        raise ValueError(f"{test.name}'s test split has no captions to retrieve")
    n = min(max_pairs, len(test))
    img = encode_images(method, test.images[:n], cfg.data.mean, cfg.data.std, _size(cfg, test), device)
    captions = list(test.captions[:n])
    txt = encode_texts(method, captions, device)
    labels = test.labels[:n] if test.labels is not None else None
    res = {"protocol": "retrieval", "pairs": n, "distinct_captions": len(set(captions)),
           **retrieval(img, txt, labels=labels, captions=captions)}
    return _save(run_dir, "retrieval", res, cfg)


PROTOCOLS = {"knn": evaluate_knn, "linear": evaluate_linear, "finetune": evaluate_finetune,
             "semi": evaluate_semi, "cluster": evaluate_cluster, "embed2d": evaluate_embed2d,
             "diagnostics": evaluate_diagnostics, "robustness": evaluate_robustness,
             "transfer": evaluate_transfer, "pretext": evaluate_pretext, "efficiency": evaluate_efficiency,
             "zeroshot": evaluate_zeroshot, "retrieval": evaluate_retrieval}
