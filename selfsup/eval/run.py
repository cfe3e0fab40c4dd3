"""Evaluate a run directory: rebuild the method, load its weights, evaluate ``method.evaluated_encoder``
(``method.encoder``, or the EMA target encoder where the paper evaluates that: I-JEPA, MSN).

Every protocol is one function here taking the run directory, registered by name in ``PROTOCOLS``
with its options, its one-line summary and where it applies (``@protocol``, a ``Protocol``); each
writes its result to RUN_DIR/eval_<protocol>[_<variant>].json and its pictures next to it. Features of the
train and test splits are extracted once per checkpoint and cached in RUN_DIR/features/ (keyed
by the checkpoint's step and file time, so a continued run gets fresh features), so knn, linear,
cluster, embed2d, semi and robustness share one extraction.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any, Callable, cast

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from selfsup import dist
from selfsup.config import ConfigError, RunConfig, eval_size, load_run_config
from selfsup.data import DatasetError, ImageDataset
from selfsup.data.labelled import load_labelled
from selfsup.engine import Run, dataset_split, labelled_splits, load_run, read_metrics, run_split
from selfsup.methods.base import EncodesText, FinetunesOwnEncoder, encoder_to_finetune
from selfsup.errors import SelfsupError
from selfsup.eval.labelled import DEFAULT_FOLDS, evaluate_labelled, plot_confusion
from selfsup.nn.features import extract_features
from selfsup.nn.runtime import Runtime
from selfsup.eval.features import raw_pixel_features
from selfsup.eval.knn import knn_accuracy, knn_predict
from selfsup.eval.linear import fit_probe, linear_probe
from selfsup.transforms import Views, eval_view
from selfsup.transforms.views import view_config
from selfsup.data import load_dataset
from selfsup.data.dataset import balanced_indices
from selfsup.data.text import tokenize
from selfsup.eval.clip import class_prompts, encode_images, encode_texts, retrieval, zero_shot
from selfsup.eval.cluster import cluster_scores
from selfsup.eval.dense import dense_report, has_dense_truth
from selfsup.eval.diagnostics import (
    alignment,
    effective_rank,
    embedding_std,
    infonce_bound_curve,
    per_dimension_std,
    uniformity,
)
from selfsup.eval.efficiency import efficiency
from selfsup.eval.embed import embed_2d, plot_embedding
from selfsup.eval.finetune import finetune, finetune_classifier, run_finetune_config
from selfsup.eval.pretext import correlation, heldout_metrics, pretext_metrics
from selfsup.eval.robustness import CORRUPTIONS, SEVERITIES, plot_robustness, robustness_curves
from selfsup.eval.semi import per_class_fraction, plot_semi, semi_supervised
from selfsup.eval.transfer import transfer_scores
from selfsup.eval.protocol import FOLDS, LABELS, SEED, USER_LABELS, Option, Protocol, comma_list, pct, plus_minus
from selfsup.registry import Registry, get_method_spec

PROTOCOLS: Registry[Protocol] = Registry("evaluation protocol")


def protocol(name: str, summary: Callable[[dict], str], options: tuple[Option, ...] = (), **kw):
    """Registers the decorated ``evaluate_<name>(run_dir, device, **options)`` as the protocol ``name``:
    ``summary(result)`` is its human line, ``options`` its flags of ``selfsup eval`` (each an ``Option``, whose
    keyword the function must take); ``kw``: the other ``Protocol`` fields (applies, note, bench, sharded,
    progress)."""

    def wrap(fn: Callable[..., dict]) -> Callable[..., dict]:
        params = inspect.signature(fn).parameters
        takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())  # **changes: e.g. FinetuneConfig fields
        missing = [o.keyword or o.name for o in options if (o.keyword or o.name) not in params and not takes_any]
        if missing:
            raise TypeError(f"protocol {name!r}: {fn.__name__} takes no {', '.join(missing)} (its options' keywords)")
        PROTOCOLS.add(name, Protocol(name, fn, summary, tuple(options), **kw))
        return fn

    return wrap


# the options one or two protocols take, declared once (LABELS, TEST, FOLDS, SEED: selfsup.eval.protocol)
FRACTION = Option("fraction", "fraction of the training labels (default 0.1)", type=float)
EPOCHS = Option("epochs", "fine-tuning epochs over the labelled subset (default 60 at 1 %, else 30)", type=int)
STEPS = Option("steps", "a fixed number of fine-tuning steps instead of epochs", type=int)
FROM_SCRATCH = Option("from_scratch", "random init, the supervised baseline", switch=True)
FRACTIONS = Option("fractions", "label fractions (default 0.01,0.1,1)", type=comma_list(float))
PER_CLASS = Option("per_class", "also N labels of every class (e.g. 10), first", type=int)
FINETUNE_UP_TO = Option(
    "finetune_up_to",
    "fine-tune (and train from scratch) only at fractions up to this one (default 1; 0: linear probes only)",
    type=float,
)
SEMI_METHODS = Option(
    "semi_methods",
    "also these semi-supervised methods (fixmatch, mixmatch, vat, pseudolabel, "
    "supervised), from the encoder and from scratch, where fine-tuning runs",
    type=comma_list(),
)
SEMI_STEPS = Option("semi_steps", "steps of each --semi-methods run (default 1000)", type=int)
DISTILL_EPOCHS = Option(
    "distill_epochs",
    "also SimCLR v2's distillation where fine-tuning runs: the fine-tuned classifier teaches a new network of the "
    "same architecture on every training image without labels, for N epochs (e.g. 10; default 0: off)",
    type=int,
)
CLUSTERS = Option("clusters", "k of k-means (default: the number of classes)", keyword="num_clusters", type=int)
EMBED = Option("embed", "tsne and/or umap (default tsne, and umap if installed)", keyword="kinds", type=comma_list())
MAX_POINTS = Option("max_points", "test images embedded (default 3000, class-balanced)", type=int)
CORRUPTION_KINDS = Option(
    "corruptions", f"any of {','.join(CORRUPTIONS)} (default all)", keyword="kinds", type=comma_list()
)
TARGET = Option("target", "the labelled dataset to probe on (default digits)")
TARGET_DIR = Option("target_dir", "where the target dataset is (as --data-dir)")
PROMPTS = Option(
    "prompts",
    "prompt templates with {label}, several separated by | and averaged (default 'a photo of a {label}')",
    type=lambda t: [p.strip() for p in t.split("|") if p.strip()],
)


def _runtime(cfg: RunConfig, device: str | torch.device) -> Runtime:
    """How evaluation runs a trained network: the run's precision, on ``device``, contiguous inputs (the
    network is not moved to channels_last here)."""
    return Runtime(device, cfg.train.precision)


def run_features(
    run_dir: str | Path, device: str = "cpu", loaded: tuple | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, RunConfig]:
    """(train features, train labels, test features, test labels, config), cached per checkpoint.
    ``loaded``: the run's ``load_run`` result when the caller has it already (not built twice)."""
    cfg, method, meta = loaded or load_run(run_dir)
    train, test = labelled_splits(cfg)
    assert train.labels is not None and test.labels is not None  # labelled_splits: both labelled
    stamp = (Path(meta["checkpoint_dir"]) / "model.safetensors").stat().st_mtime_ns
    size = eval_size(cfg, train.image_size)
    # keyed by the side too: eval.size may be edited after training
    cache = Path(run_dir) / "features" / f"step{meta.get('step')}-{stamp:x}-{size}px.safetensors"
    if cache.is_file():
        try:
            f = load_file(cache)
            return f["train"], train.labels, f["test"], test.labels, cfg
        except Exception as e:  # truncated or damaged (safetensors' own error types): extract again
            warnings.warn(f"the feature cache {cache} is unreadable ({e}); extracting the features again", stacklevel=2)
    kw: dict[str, Any] = dict(
        mean=cfg.data.mean,
        std=cfg.data.std,
        size=size,
        runtime=_runtime(cfg, device),
        batch_size=cfg.eval.batch_size,
    )
    ftr = extract_features(method.evaluated_encoder, train.images, **kw)
    fte = extract_features(method.evaluated_encoder, test.images, **kw)
    if dist.is_main():  # under torchrun every process extracted its shard and holds all rows; one writes
        tmp = cache.with_name(f".{cache.name}.tmp{os.getpid()}")
        try:  # temp file + rename: a kill or a full disk never leaves a half-written cache
            cache.parent.mkdir(exist_ok=True)
            for old in cache.parent.glob("step*.safetensors"):  # an older checkpoint's features
                old.unlink()
            save_file({"train": ftr.contiguous(), "test": fte.contiguous()}, tmp)
            tmp.replace(cache)
        except (OSError, SafetensorError) as e:  # the features are computed: evaluation goes on without the cache
            tmp.unlink(missing_ok=True)
            warnings.warn(
                f"could not write the feature cache {cache} ({e}); the next evaluation extracts the features again",
                stacklevel=2,
            )
    return ftr, train.labels, fte, test.labels, cfg


def evaluate(run_dir: str | Path, protocol: str, device: str = "cpu", **options) -> dict:
    """Run ``protocol`` (one of ``PROTOCOLS``) on a run's encoder with the protocol's ``options``;
    the result is also written to RUN_DIR/eval_<protocol>[_<variant>].json."""
    if protocol not in PROTOCOLS:
        raise SelfsupError(f"unknown evaluation protocol {protocol!r}: choose from {', '.join(PROTOCOLS)}")
    return PROTOCOLS[protocol](run_dir, device=device, **options)


def _save(run_dir, name: str, result: dict, cfg: RunConfig | None = None) -> dict:
    if cfg is not None:
        result.update({"run": str(run_dir), "method": cfg.method_name, "data": cfg.data.name})
    if dist.is_main():
        (Path(run_dir) / f"eval_{name}.json").write_text(json.dumps(result, indent=1))
    return result


def user_sets(run: Run, labels, test=None):
    """(labelled set, test set or None) from the user's --labels and --test (a folder of class
    sub-folders or a CSV of path,label rows), decoded for the run's encoder; the test set takes the
    labelled set's class list, so that a label means the same class in both."""
    lab = load_labelled(labels, run.spec.channels, run.spec.stored_size, search=run.label_search())
    tst = (
        None
        if test is None
        else load_labelled(test, run.spec.channels, run.spec.stored_size, lab.classes, run.label_search())
    )
    return lab, tst


def _variant(labels) -> str:
    """The result-file suffix of an evaluation on a user's labels: labels-<folder or CSV name>."""
    return f"labels-{Path(labels).expanduser().resolve().stem}"


def user_features(
    run_dir, labels, test, device
) -> tuple[Run, ImageDataset, ImageDataset | None, torch.Tensor, torch.Tensor]:
    """(run, labelled set, test set or None, features [N, F] and labels [N] of both, labelled rows first)."""
    run = Run(run_dir)
    lab, tst = user_sets(run, labels, test)
    images = lab.images if tst is None else torch.cat([lab.images, tst.images])
    y = lab.labels if tst is None else torch.cat([lab.labels, tst.labels])
    return run, lab, tst, run.features(images, device), y


def _on_user_labels(run_dir, protocol: str, labels, test, folds: int, seed: int, device: str, fit_predicts) -> dict:
    return score_user_labels(
        *user_features(run_dir, labels, test, device), protocol, labels, test, folds, seed, fit_predicts
    )


def score_user_labels(
    run: Run, lab, tst, feats, y, protocol: str, labels, test, folds: int, seed: int, fit_predicts
) -> dict:
    """A frozen-feature protocol on the user's labels (``user_features``' outputs): ``fit_predicts(features,
    labels, num_classes, cfg)`` -> {name: fit_predict}; the first name is the headline (its confusion
    matrix is drawn), every other one is reported beside it (kNN's other k). Written to the run's
    eval_<protocol>_labels-<name>.json."""
    run_dir = run.dir
    results = {
        name: evaluate_labelled(fp, lab, tst, folds, seed, offset=len(lab))
        for name, fp in fit_predicts(feats, y, len(lab.classes), run.cfg).items()
    }
    head_name = next(iter(results))
    res = {
        "protocol": protocol,
        **results[head_name],
        "labels": str(Path(labels).expanduser().resolve()),
        "test": None if test is None else str(Path(test).expanduser().resolve()),
        "seed": seed,
        "checkpoint_step": run.meta.get("step"),
    }
    for name, r in results.items():
        res[f"top1_{name}"] = r["top1"]
        if "top1_std" in r:
            res[f"top1_std_{name}"] = r["top1_std"]
    variant = f"{protocol}_{_variant(labels)}"
    how = ("on " + Path(test).name) if test else f"{res.get('folds')}-fold cross-validation"
    what = protocol if head_name == protocol else f"{protocol} ({head_name})"
    title = f"{run.cfg.method_name}: {what} on {len(lab)} labels, {how}: top-1 {100 * res['top1']:.1f} %"
    res["picture"] = str(
        plot_confusion(res["confusion"], lab.classes, Path(run_dir) / f"eval_{variant}_confusion.png", title)
    )
    return _save(run_dir, variant, res, run.cfg)


def _knn_summary(res: dict) -> str:
    return "kNN " + ", ".join(
        f"k={k[6:]} {pct(res[k])}{plus_minus(res, 'top1_std_' + k[5:])}" for k in res if k.startswith("top1_k")
    )


@protocol("knn", _knn_summary, (*USER_LABELS, FOLDS, SEED), sharded=True)
def evaluate_knn(
    run_dir, device: str = "cpu", labels=None, test=None, folds: int = DEFAULT_FOLDS, seed: int = 0
) -> dict:
    """Weighted kNN. ``labels`` (a folder of class sub-folders or a CSV of path,label): on the user's
    labels instead of the run's dataset, tested on ``test`` or cross-validated over ``folds``."""
    if labels is None:
        ftr, ytr, fte, yte, cfg = run_features(run_dir, device)
        return _save(run_dir, "knn", _protocol("knn", ftr, ytr, fte, yte, cfg), cfg)

    def fit_predicts(f, y, num_classes, cfg):
        return {
            f"k{k}": (
                lambda tr, te, k=k: knn_predict(f[tr], y[tr], f[te], k, cfg.eval.knn_temperature, num_classes).argmax(1)
            )
            for k in cfg.eval.knn_k
        }

    return _on_user_labels(run_dir, "knn", labels, test, folds, seed, device, fit_predicts)


def _linear_summary(res: dict) -> str:
    return f"linear top-1 {pct(res['top1'])}{plus_minus(res, 'top1_std')}" + (
        f" (l2 {res['l2']:g})" if "l2" in res else ""
    )


@protocol("linear", _linear_summary, (*USER_LABELS, FOLDS, SEED), sharded=True)
def evaluate_linear(
    run_dir, device: str = "cpu", labels=None, test=None, folds: int = DEFAULT_FOLDS, seed: int = 0
) -> dict:
    """Linear probe (L2 strength chosen on a validation part of each training fold). ``labels``: as kNN's."""
    if labels is None:
        ftr, ytr, fte, yte, cfg = run_features(run_dir, device)
        return _save(run_dir, "linear", _protocol("linear", ftr, ytr, fte, yte, cfg), cfg)
    return _on_user_labels(run_dir, "linear", labels, test, folds, seed, device, linear_fit_predicts(seed))


def linear_fit_predicts(seed: int = 0):
    """``fit_predicts`` of the linear probe for ``score_user_labels``: the run's L2 grid and validation share."""

    def fit_predicts(f, y, num_classes, cfg):
        def fp(tr, te):
            return fit_probe(f[tr], y[tr], num_classes, cfg.eval.linear_l2, cfg.eval.linear_val_fraction, seed).predict(
                f[te]
            )

        return {"linear": fp}

    return fit_predicts


def evaluate_raw_pixels(cfg: RunConfig, protocol: str) -> dict:
    """The same protocol on flattened raw pixels: the reference row every table carries."""
    train, test = labelled_splits(cfg)
    result = _protocol(
        protocol, raw_pixel_features(train.images), train.labels, raw_pixel_features(test.images), test.labels, cfg
    )
    result.update({"method": "raw pixels", "data": cfg.data.name})
    return result


def _protocol(protocol: str, ftr, ytr, fte, yte, cfg: RunConfig) -> dict:
    if protocol == "knn":
        return knn_accuracy(ftr, ytr, fte, yte, ks=cfg.eval.knn_k, temperature=cfg.eval.knn_temperature)
    if protocol == "linear":
        return linear_probe(ftr, ytr, fte, yte, l2_grid=cfg.eval.linear_l2, val_fraction=cfg.eval.linear_val_fraction)
    raise SelfsupError(f"unknown evaluation protocol {protocol!r}: choose knn or linear")


def _finetune_summary(res: dict) -> str:
    what = "from scratch" if res["from_scratch"] else f"from the pretrained {res['encoder']}"
    if "labels" not in res:  # a fraction of the run's own labels
        return (
            f"finetune top-1 {100 * res['top1']:.2f} %  ({what}; {100 * res['fraction']:g} % of the labels = "
            f"{res['num_labelled']} images, {res['steps']} steps)"
        )
    return f"finetune top-1 {pct(res['top1'])}{plus_minus(res, 'top1_std')} ({what}, {res['epochs']} epochs)"


@protocol(
    "finetune",
    _finetune_summary,
    (FRACTION, EPOCHS, STEPS, FROM_SCRATCH, SEED, *USER_LABELS, FOLDS),
    bench=False,
    progress=True,
)
def evaluate_finetune(
    run_dir: str | Path,
    fraction: float | None = None,
    epochs: int | None = None,
    steps: int | None = None,
    from_scratch: bool = False,
    device: str = "cpu",
    progress: bool = False,
    labels=None,
    test=None,
    folds: int = DEFAULT_FOLDS,
    **changes,
) -> dict:
    """Fine-tune the run's ``finetune_encoder`` (or ``encoder``) + a linear head on ``fraction`` of
    the training labels (default 0.1; selfsup.eval.finetune); ``changes``: other FinetuneConfig
    fields. The result is also written to RUN_DIR/eval_finetune_<pct>pct.json (eval_scratch_...
    from scratch). ``labels``: fine-tune on the user's labels instead (all of them unless
    ``fraction``), tested on ``test`` or cross-validated over ``folds`` (one fine-tune per fold)."""
    if fraction is not None and not 0.0 < fraction <= 1.0:
        raise ConfigError(f"--fraction {fraction} is not a fraction of the labels: use e.g. 0.01, 0.1 or 1.0")
    run = Run(run_dir)
    cfg, method, meta = run.cfg, run.method, run.meta
    encoder = encoder_to_finetune(method)
    kind = "finetune_encoder" if isinstance(method, FinetunesOwnEncoder) else "encoder"
    name = "scratch" if from_scratch else "finetune"
    if labels is not None:
        lab, tst = user_sets(run, labels, test)
        ft = run_finetune_config(
            cfg, fraction=fraction or 1.0, epochs=epochs, steps=steps, from_scratch=from_scratch, **changes
        )
        both = (
            lab
            if tst is None
            else dataclasses.replace(
                lab, images=torch.cat([lab.images, tst.images]), labels=torch.cat([lab.labels, tst.labels]), files=None
            )
        )
        spec = run.spec

        def fit_predict(tr, te):
            model, _ = finetune_classifier(
                encoder, both.subset(tr), both.subset(te), spec.mean, spec.std, spec.size, ft, device, progress
            )
            return extract_features(model, both.images[te], spec.mean, spec.std, spec.size, runtime=device).argmax(1)

        res = evaluate_labelled(fit_predict, lab, tst, folds, ft.seed, offset=len(lab))
        res.update(
            {
                "protocol": "finetune",
                "from_scratch": from_scratch,
                "fraction": ft.fraction,
                "epochs": ft.num_epochs(),
                "labels": str(Path(labels).expanduser().resolve()),
                "test": None if test is None else str(Path(test).expanduser().resolve()),
                "encoder": kind,
                "checkpoint_step": meta.get("step"),
                "settings": dataclasses.asdict(ft),
            }
        )
        variant = f"{name}_{_variant(labels)}"
        res["picture"] = str(
            plot_confusion(
                res["confusion"],
                lab.classes,
                Path(run_dir) / f"eval_{variant}_confusion.png",
                f"{cfg.method_name}: {name} on {len(lab)} labels: top-1 {100 * res['top1']:.1f} %",
            )
        )
        return _save(run_dir, variant, res, cfg)
    fraction = 0.1 if fraction is None else fraction
    train, test_split = labelled_splits(cfg)
    ft = run_finetune_config(cfg, fraction=fraction, epochs=epochs, steps=steps, from_scratch=from_scratch, **changes)
    result = finetune(
        encoder, train, test_split, cfg.data.mean, cfg.data.std, eval_size(cfg, train.image_size), ft, device, progress
    )
    result.update(
        {
            "run": str(run_dir),
            "method": cfg.method_name,
            "data": cfg.data.name,
            "encoder": kind,
            "checkpoint_step": meta.get("step"),
        }
    )
    (Path(run_dir) / f"eval_{name}_{100 * fraction:g}pct.json").write_text(json.dumps(result, indent=1))
    return result


def _cluster_summary(res: dict) -> str:
    return f"k-means (k={res['k']}): NMI {res['nmi']:.3f}, ARI {res['ari']:.3f}, accuracy {pct(res['accuracy'])}"


@protocol("cluster", _cluster_summary, (CLUSTERS, SEED, *USER_LABELS))
def evaluate_cluster(
    run_dir, device: str = "cpu", num_clusters: int | None = None, seed: int = 0, labels=None, test=None
) -> dict:
    """k-means on the test features (k = the number of classes unless given) -> NMI, ARI, Hungarian
    accuracy; with ``labels`` (and ``test``), on the user's labelled images."""
    if labels is not None:
        run, _, _, f, y = user_features(run_dir, labels, test, device)
        res = {**cluster_scores(f, y, num_clusters, seed), "labels": str(Path(labels).expanduser().resolve())}
        return _save(run_dir, f"cluster_{_variant(labels)}", res, run.cfg)
    _, _, fte, yte, cfg = run_features(run_dir, device)
    return _save(run_dir, "cluster", cluster_scores(fte, yte, num_clusters, seed), cfg)


def _embed2d_summary(res: dict) -> str:
    return "pictures: " + ", ".join(res["pictures"].values())


@protocol("embed2d", _embed2d_summary, (EMBED, MAX_POINTS, SEED, *USER_LABELS))
def evaluate_embed2d(
    run_dir, device: str = "cpu", kinds=None, max_points: int = 3000, seed: int = 0, labels=None, test=None
) -> dict:
    """t-SNE (and UMAP when umap-learn is installed) of up to ``max_points`` test features, a
    class-balanced seeded sample, coloured by label: RUN_DIR/embed2d_<kind>.png; with ``labels``,
    of the user's labelled images (RUN_DIR/embed2d_<kind>_labels-<name>.png)."""
    if labels is not None:
        run, lab, _, fte, yte = user_features(run_dir, labels, test, device)
        cfg, classes, suffix, what = run.cfg, lab.classes, f"_{_variant(labels)}", "labelled"
    else:
        _, _, fte, yte, cfg = run_features(run_dir, device)
        classes, suffix, what = getattr(labelled_splits(cfg)[1], "classes", None), "", "test"
    if kinds is None:
        import importlib.util

        kinds = ["tsne"] + (["umap"] if importlib.util.find_spec("umap") else [])
    idx = balanced_indices(yte, min(1.0, max_points / len(yte)), seed)
    pictures = {}
    for kind in kinds:
        xy = embed_2d(fte[idx], kind, seed)
        title = (
            f"{cfg.method_name} on {cfg.data.name}: {kind.upper() if kind == 'umap' else 't-SNE'} of {len(idx)} "
            f"{what} images"
        )
        pictures[kind] = str(
            plot_embedding(xy, yte[idx].numpy(), Path(run_dir) / f"embed2d_{kind}{suffix}.png", title, classes)
        )
    return _save(run_dir, f"embed2d{suffix}", {"protocol": "embed2d", "points": len(idx), "pictures": pictures}, cfg)


def _diagnostics_summary(res: dict) -> str:
    f, z = res["features"], res["embedding"]
    lines = [
        f"features  (d={f['dim']}): effective rank {f['effective_rank']:.1f}, alignment {f['alignment']:.3f}, "
        f"uniformity {f['uniformity']:.3f}, dead dims {pct(f['std']['dead_fraction'])}",
        f"embedding (d={z['dim']}): effective rank {z['effective_rank']:.1f}, alignment {z['alignment']:.3f}, "
        f"uniformity {z['uniformity']:.3f}, mean std {z['mean_std']:.4f} (ideal {z['std']['ideal']:.4f})",
    ]
    if "infonce_bound" in res:
        b = res["infonce_bound"]
        lines.append(
            "InfoNCE bound log N - L: "
            + ", ".join(f"N={n} {v:.2f} (<= {b['log_n'][n]:.2f})" for n, v in b["nats"].items())
        )
    return "\n  " + "\n  ".join(lines)


@protocol("diagnostics", _diagnostics_summary, (SEED, LABELS))
def evaluate_diagnostics(run_dir, device: str = "cpu", num_images: int = 2048, seed: int = 0, labels=None) -> dict:
    """Representation diagnostics: effective rank (RankMe), per-dimension std, alignment and uniformity
    (Wang & Isola 2020) of the encoder's features and of the method's embedding (what its loss sees);
    for InfoNCE methods, the bound log N - L at several N on pairs of augmented views. Images: up to
    ``num_images`` of the run's test split, else (an unlabelled folder has none) of its training
    split, or of the user's ``labels`` set (a folder or CSV; only its images are used)."""
    run = Run(run_dir)
    cfg, method, spec = run.cfg, run.method, run.spec
    if labels is not None:
        pool, source = user_sets(run, labels)[0].images, f"labels:{Path(labels).name}"
    else:
        try:
            pool, source = dataset_split(cfg, "test").images, "test"
        except DatasetError:
            pool, source = run.split("train").images, "train"
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(pool), generator=g)[:num_images]
    images = pool[idx]
    # two global views even for single-view methods: alignment compares two views of each image
    vcfg = view_config(cfg)
    views = Views(dataclasses.replace(vcfg, num_global=max(2, vcfg.num_global)), spec.mean, spec.std, spec.stored_size)
    v1, v2 = views(images, g)[:2]  # two augmented (global) views of each image, as in training
    sub = run.features(images, device)
    method.eval()
    with (
        torch.no_grad(),
        _runtime(cfg, device).autocast(),
    ):
        method.to(device)
        h1, h2 = (method.evaluated_encoder(v.to(device)).float().cpu() for v in (v1, v2))
        z = method.embedding(eval_view(images, spec.mean, spec.std, spec.size).to(device)).float().cpu()
        z1, z2 = (method.embedding(v.to(device)).float().cpu() for v in (v1, v2))
    result = {
        "protocol": "diagnostics",
        "num_images": len(idx),
        "images": source,
        "features": {
            "dim": sub.shape[1],
            "effective_rank": effective_rank(sub),
            "std": per_dimension_std(sub),
            "alignment": alignment(h1, h2),
            "uniformity": uniformity(sub),
        },
        "embedding": {
            "dim": z.shape[1],
            "effective_rank": effective_rank(z),
            "std": per_dimension_std(z),
            "mean_std": embedding_std(z),
            "alignment": alignment(z1, z2),
            "uniformity": uniformity(z),
        },
    }
    temperature = getattr(getattr(method, "cfg", None), "temperature", None)
    if temperature is not None and any("infonce_bound" in r for r in read_metrics(run_dir)):
        curve = infonce_bound_curve(
            z1, z2, temperature, ns=tuple(n for n in (2, 8, 32, 128, 512, 2048) if n <= len(idx))
        )
        result["infonce_bound"] = {
            "temperature": temperature,
            "nats": {str(n): b for n, b in curve.items()},
            "log_n": {str(n): math.log(n) for n in curve},
        }
    return _save(run_dir, "diagnostics" if labels is None else f"diagnostics_{_variant(labels)}", result, cfg)


def _held_out(run: Run, labels, test, protocol: str, why: str, device, test_features: bool = True):
    """(train set, test set, train features, test features or None, result-name suffix, "on ...") for a
    protocol that needs held-out images: the user's ``labels`` with ``test`` (required, because ``why``),
    else the run's own splits with their cached features."""
    fte: torch.Tensor | None  # None: test_features=False
    if labels is None:
        ftr, _, fte, _, _ = run_features(run.dir, device, (run.cfg, run.method, run.meta))
        train, test_set = labelled_splits(run.cfg)
        return train, test_set, ftr, fte, "", f"on {run.cfg.data.name}"
    if test is None:
        raise SelfsupError(f"{protocol} on your labels needs --test DIR|FILE.csv: {why}")
    train, test_set = user_sets(run, labels, test)
    fte = run.features(test_set.images, device) if test_features else None
    return train, test_set, run.features(train.images, device), fte, f"_{_variant(labels)}", "on your labels"


def _semi_summary(res: dict) -> str:
    def semi(r):
        return "".join(
            f", {m} {pct(r.get(m))} (from scratch {pct(r.get(m + '_scratch'))})" for m in res.get("semi_methods", [])
        )

    return (
        "\n  "
        + "\n  ".join(
            f"{100 * r['fraction']:.3g} % of labels ({r['num_labelled']}): linear "
            f"{pct(r['linear'])} (raw pixels {pct(r.get('raw_pixels'))}), "
            f"fine-tune {pct(r['finetune'])}, from scratch {pct(r['scratch'])}{semi(r)}"
            + (f", distilled {pct(r['distill'])}" if "distill" in r else "")
            for r in res["rows"]
        )
        + f"\n  picture: {res['picture']}"
    )


@protocol(
    "semi",
    _semi_summary,
    (FRACTIONS, EPOCHS, STEPS, SEED, PER_CLASS, FINETUNE_UP_TO, SEMI_METHODS, SEMI_STEPS, DISTILL_EPOCHS, *USER_LABELS),
    bench=False,
)
def evaluate_semi(
    run_dir,
    device: str = "cpu",
    fractions=(0.01, 0.1, 1.0),
    epochs: int | None = None,
    steps: int | None = None,
    seed: int = 0,
    progress: bool = False,
    per_class: int | None = None,
    finetune_up_to: float = 1.0,
    semi_methods=(),
    semi_steps: int = 1000,
    distill_epochs: int = 0,
    labels=None,
    test=None,
) -> dict:
    """Label efficiency: linear probe (and one on raw pixels), fine-tuning and supervised-from-scratch
    at each fraction of the labels (selfsup.eval.semi), and first at ``per_class`` labels of each
    class when given; fine-tuning (and ``semi_methods``, e.g. fixmatch, from the encoder and from
    scratch, ``semi_steps`` each; SimCLR v2's distillation with ``distill_epochs``) only up to ``finetune_up_to``.
    RUN_DIR/semi.png plots them. With
    ``labels`` (and ``test``, required: every fraction is scored on the same held-out images), the
    fractions are of the user's labelled set, whose images are the semi-supervised methods' unlabelled ones."""
    run = Run(run_dir)
    cfg, spec = run.cfg, run.spec
    train, test_set, ftr, fte, suffix, where = _held_out(
        run, labels, test, "semi", "each fraction of the labels is scored on the same held-out images", device
    )
    name, title = f"semi{suffix}", f"{cfg.method_name} {where}: label efficiency"
    if per_class:
        fractions = (per_class_fraction(train.labels, per_class), *fractions)
    ft = run_finetune_config(cfg, epochs=epochs, steps=steps, seed=seed)
    res = semi_supervised(
        run.encoder,
        train,
        test_set,
        ftr,
        fte,
        spec.mean,
        spec.std,
        spec.size,
        fractions,
        ft,
        device,
        progress,
        finetune_encoder=encoder_to_finetune(run.method),
        finetune_up_to=finetune_up_to,
        semi_methods=tuple(semi_methods or ()),
        semi_steps=semi_steps,
        distill_epochs=distill_epochs or 0,
    )
    res["picture"] = str(plot_semi(res["rows"], Path(run_dir) / f"{name}.png", title))
    return _save(run_dir, name if seed == 0 else f"{name}_seed{seed}", res, cfg)


def _dense_summary(res: dict) -> str:
    return (
        f"linear segmentation on the {res['map']} feature map, {res['test_images']} test images: "
        + "; ".join(
            f"{name.replace('_', ' ')} mIoU {pct(res[name]['miou'])} (foreground IoU {pct(res[name]['foreground_iou'])})"
            for name in ("trained", "random_init", "raw_pixels")
        )
        + (f"\n  picture: {res['picture']}" if res.get("picture") else "")
    )


def has_dense_ground_truth(run_dir) -> bool:
    """Whether a run's dataset has the dense probe's ground truth (single objects on a dark background)."""
    return has_dense_truth(load_run_config(run_dir).data.name)


DENSE_IMAGES = Option(
    "train_images", "training images the dense probe fits on (default 2000, a seeded sample)", type=int
)


@protocol(
    "dense",
    _dense_summary,
    (DENSE_IMAGES, SEED),
    applies=has_dense_ground_truth,
    note="single objects on a dark background (fashion-mnist, digits and their colour variants)",
)
def evaluate_dense(run_dir, device: str = "cpu", train_images: int = 2000, seed: int = 0) -> dict:
    """Linear segmentation (VICRegL's dense protocol): a linear layer on each location of the frozen feature map,
    upsampled to pixels, labels object-of-class vs background; mIoU next to random init and raw pixels."""
    run = Run(run_dir)
    return _save(run_dir, "dense", dense_report(run, train_images, seed, device), run.cfg)


def _robustness_summary(res: dict) -> str:
    e, r = res["encoder"], res["raw_pixels"]
    return (
        f"clean {pct(e['clean'])}, mean over corruptions {pct(e['mean_corrupted'])} "
        f"(raw pixels {pct(r['clean'])} -> {pct(r['mean_corrupted'])})\n  "
        + "\n  ".join(f"{k:<10} " + " ".join(f"{100 * a:5.1f}" for a in e[k]) for k in res["severities"])
        + f"\n  picture: {res['picture']}"
    )


@protocol("robustness", _robustness_summary, (CORRUPTION_KINDS, SEED, *USER_LABELS))
def evaluate_robustness(run_dir, device: str = "cpu", kinds=None, seed: int = 0, labels=None, test=None) -> dict:
    """Linear probe fitted on clean features, accuracy under each corruption at severities 1-5, for
    the encoder and for raw pixels; RUN_DIR/robustness.png plots both with example images. With
    ``labels`` (and ``test``, required: corruptions are applied to held-out images), on the user's images."""
    kinds = tuple(kinds or CORRUPTIONS)
    run = Run(run_dir)
    cfg, spec = run.cfg, run.spec
    # the test images' clean features are not needed: every severity is encoded afresh
    train, test_set, ftr, _, suffix, where = _held_out(
        run,
        labels,
        test,
        "robustness",
        "the corruptions are applied to held-out images, which cross-validation folds are too small to be",
        device,
        test_features=False,
    )
    name, title = f"robustness{suffix}", f"{cfg.method_name} {where}"
    ytr, yte = train.labels, test_set.labels
    kw: dict[str, Any] = dict(
        mean=spec.mean,
        std=spec.std,
        size=spec.size,
        runtime=_runtime(cfg, device),
        batch_size=cfg.eval.batch_size,
    )
    probe = fit_probe(ftr, ytr, l2_grid=cfg.eval.linear_l2, val_fraction=cfg.eval.linear_val_fraction, seed=seed)
    raw_probe = fit_probe(
        raw_pixel_features(train.images),
        ytr,
        l2_grid=cfg.eval.linear_l2,
        val_fraction=cfg.eval.linear_val_fraction,
        seed=seed,
    )
    curves = {
        cfg.method_name: robustness_curves(
            probe, lambda x: extract_features(run.encoder, x, **kw), test_set.images, yte, kinds, seed
        ),
        "raw pixels": robustness_curves(raw_probe, raw_pixel_features, test_set.images, yte, kinds, seed),
    }
    picture = plot_robustness(
        curves, test_set.images[0], Path(run_dir) / f"{name}.png", f"{title}: linear probe under corruptions"
    )
    res = {
        "protocol": "robustness",
        "encoder": curves[cfg.method_name],
        "raw_pixels": curves["raw pixels"],
        "severities": {k: SEVERITIES[k] for k in kinds},
        "seed": seed,
        "picture": str(picture),
    }
    return _save(run_dir, name, res, cfg)


def _transfer_summary(res: dict) -> str:
    def row(name):
        r = res[name]
        k = next(iter(r["knn"]))
        std = {"knn": r.get("knn_std", {}).get(k), "linear": r.get("linear_std")}
        return (
            f"{name.replace('_', ' ')}: kNN-{k[6:]} {pct(r['knn'][k])}{plus_minus(std, 'knn')}, "
            f"linear {pct(r['linear'])}{plus_minus(std, 'linear')}"
        )

    return f"{res['source']} -> {res['target']}: " + "; ".join(
        row(n) for n in ("pretrained", "random_init", "raw_pixels")
    )


@protocol("transfer", _transfer_summary, (TARGET, TARGET_DIR, SEED, *USER_LABELS, FOLDS), bench=False)
def evaluate_transfer(
    run_dir,
    target: str | None = None,
    target_dir: str | None = None,
    device: str = "cpu",
    seed: int = 0,
    labels=None,
    test=None,
    folds: int = DEFAULT_FOLDS,
) -> dict:
    """The run's encoder probed on another labelled dataset ``target`` (resized to the run's image
    side; default digits), or on the user's ``labels`` (and ``test``), next to a random-init encoder
    and the target's raw pixels: RUN_DIR/eval_transfer_<target>.json. A target without a test split
    (an image folder of class sub-folders) is cross-validated over ``folds``."""
    run = Run(run_dir)
    cfg, spec = run.cfg, run.spec
    if labels is not None:
        if target is not None:
            raise SelfsupError("give either --target (a dataset name) or --labels (your own labelled images), not both")
        tgt_train, tgt_test = user_sets(run, labels, test)
        target = _variant(labels)
    else:
        target = target or "digits"
        tgt_train = load_dataset(target, "train", target_dir, spec.stored_size)
        try:
            tgt_test = load_dataset(target, "test", target_dir, spec.stored_size)
        except DatasetError:
            tgt_test = None  # a folder of class sub-folders without train/ and test/: cross-validated
        if tgt_train.labels is None:
            raise DatasetError(
                f"transfer: {target}{' at ' + target_dir if target_dir else ''} has no labels (an image "
                f"folder needs one sub-folder per class); give labels with --labels DIR|FILE.csv"
            )
    res = transfer_scores(
        run.encoder.to(device),
        tgt_train,
        tgt_test,
        spec.channels,
        spec.mean,
        spec.std,
        spec.size,
        ks=cfg.eval.knn_k,
        knn_temperature=cfg.eval.knn_temperature,
        runtime=_runtime(cfg, device),
        batch_size=cfg.eval.batch_size,
        seed=seed,
        folds=folds,
    )
    res.update({"protocol": "transfer", "source": cfg.data.name, "target": target, "image_size": spec.size})
    how = "on its test split" if tgt_test is not None else res["evaluation"]
    res["picture"] = str(
        plot_confusion(
            res["confusion"],
            res["classes"],
            Path(run_dir) / f"eval_transfer_{target}_confusion.png",
            f"{cfg.method_name} -> {target}: linear probe, {how}: top-1 {100 * res['pretrained']['linear']:.1f} %",
        )
    )
    return _save(run_dir, f"transfer_{target}", res, cfg)


def _efficiency_summary(res: dict) -> str:
    t = ", ".join(f"{100 * float(k):g} % at {v / 60:.1f} min" for k, v in res["time_to_knn20"].items() if v is not None)
    mem = f", peak memory {res['peak_rss_mb']:.0f} MiB" if res.get("peak_rss_mb") else ""
    return (
        f"{res['images_per_s']:.0f} img/s, {res['train_seconds'] / 60:.1f} min of training{mem}; "
        f"kNN-20 monitor reached {t or 'no level'}"
    )


@protocol("efficiency", _efficiency_summary)
def evaluate_efficiency(run_dir, device: str = "cpu") -> dict:
    """images/s, training time, peak memory and time to each kNN-monitor accuracy, from the run's logs."""
    cfg = load_run_config(run_dir)
    return _save(run_dir, "efficiency", efficiency(run_dir), cfg)


def _pretext_summary(res: dict) -> str:
    def metric(k, v):
        if k not in res.get("heldout", ()):
            return f"{k} {v:.4g} (last logged)"
        return f"{k} {v:.4g} (on {res['heldout_images']} test images; last training batch {res['train_last'][k]:.4g})"

    return ", ".join(metric(k, v) for k, v in res["pretext"].items()) + f"; linear top-1 {pct(res['linear_top1'])}"


def is_pretext_run(run_dir) -> bool:
    """Whether a run logged pretext metrics (a pretext-task method: rotation, jigsaw, ...)."""
    return bool(pretext_metrics(run_dir))


@protocol("pretext", _pretext_summary, applies=is_pretext_run, note="pretext-task runs only")
def evaluate_pretext(run_dir, device: str = "cpu", max_images: int = 2000) -> dict:
    """The run's pretext metrics next to its linear-probe top-1 (computed if missing). ``pretext``:
    each metric measured on up to ``max_images`` held-out test images (a seeded sample) through the
    run's training views, in eval mode (``heldout_metrics``); metrics a method measures once an epoch
    (BiGAN's G(E(x)), video tracking IoU) are their last logged value. ``train_last``: the last value
    logged during training (one training batch). Across runs: ``pretext_correlation``."""
    cfg, method, _ = load_run(run_dir)
    logged = pretext_metrics(run_dir)
    if not logged:
        raise SelfsupError(
            f"{run_dir} ({cfg.method_name}) logged no pretext metric: the pretext protocol is for "
            f"pretext-task methods (rotation, jigsaw, relative position, inpainting, colorization, ...)"
        )
    train = run_split(cfg, "train")
    test = dataset_split(cfg, "test")
    pick = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[:max_images]
    texts = None
    if method.needs.text:
        texts = tokenize([test.captions[int(i)] for i in pick], method.cfg.context)  # type: ignore[union-attr,arg-type]  # CLIP's config
    views = Views(view_config(cfg), cfg.data.mean, cfg.data.std, train.image_size, method.needs.views)
    # batches of the training size: in-batch metrics (CLIP's caption accuracy, counting's contrast) depend on it
    heldout = heldout_metrics(
        method.to(device), test.images[pick], views, texts, cfg.train.batch_size, _runtime(cfg, device)
    )
    lin = Path(run_dir) / "eval_linear.json"
    linear = json.loads(lin.read_text())["top1"] if lin.is_file() else evaluate_linear(run_dir, device)["top1"]
    return _save(
        run_dir,
        "pretext",
        {
            "protocol": "pretext",
            "pretext": {**logged, **heldout},
            "heldout": sorted(heldout),
            "heldout_images": len(pick),
            "train_last": logged,
            "linear_top1": linear,
        },
        cfg,
    )


def pretext_correlation(run_dirs, device: str = "cpu") -> dict:
    """Per pretext metric shared by the runs, its correlation with linear-probe top-1 across them."""
    results = [evaluate_pretext(r, device) for r in run_dirs]
    names = sorted(set.intersection(*(set(r["pretext"]) for r in results)))
    return {
        "protocol": "pretext",
        "runs": [
            {"run": r["run"], "method": r["method"], **r["pretext"], "linear_top1": r["linear_top1"]} for r in results
        ],
        "correlation": {
            n: correlation([r["pretext"][n] for r in results], [r["linear_top1"] for r in results]) for n in names
        },
    }


def _clip_run(run_dir, device):
    cfg, method, _ = load_run(run_dir)
    if not isinstance(method, EncodesText):
        raise SelfsupError(
            f"{run_dir} ({cfg.method_name}) has no text encoder: zero-shot and retrieval are for "
            f"image-text methods (--method clip)"
        )
    return cfg, method.to(device)


def has_text_encoder(run_dir) -> bool:
    """Whether a run's method has a text encoder (image-text methods: CLIP), from its config alone."""
    return get_method_spec(load_run_config(run_dir).method_name).needs.text


def _zeroshot_summary(res: dict) -> str:
    return (
        f"zero-shot top-1 {pct(res['top1'])}, top-5 {pct(res['top5'])} (chance {pct(res['chance'])}) "
        f"on {res['test_set']}"
    )


@protocol("zeroshot", _zeroshot_summary, (PROMPTS,), applies=has_text_encoder, note="image-text runs only")
def evaluate_zeroshot(
    run_dir,
    device: str = "cpu",
    prompts=("a photo of a {label}",),
    dataset: str | None = None,
    data_dir: str | None = None,
) -> dict:
    """Classify the test split by text prompts alone (CLIP): top-1 / top-5 against chance."""
    cfg, method = _clip_run(run_dir, device)
    test = load_dataset(dataset, "test", data_dir) if dataset else labelled_splits(cfg)[1]
    if not test.classes:
        raise SelfsupError(f"{test.name} has no class names to put into prompts")
    names = [c.lower().replace("/", " or ") for c in test.classes]  # "T-shirt/top" -> "t-shirt or top"
    per_class = class_prompts(names, list(prompts))
    text = encode_texts(method, [p for ps in per_class for p in ps], device).view(len(names), len(prompts), -1)
    img = encode_images(method, test.images, cfg.data.mean, cfg.data.std, eval_size(cfg, test.image_size), device)
    res = {
        "protocol": "zeroshot",
        "prompts": list(prompts),
        "classes": names,
        "test_set": test.name,
        **zero_shot(img, cast(torch.Tensor, test.labels), text),  # a test split with class names is labelled
    }
    return _save(run_dir, "zeroshot", res, cfg)


def _retrieval_summary(res: dict) -> str:
    ks = sorted(int(k[8:]) for k in res if k.startswith("chance_r"))

    def recall(prefix):
        return ", ".join(f"R@{k} {pct(res[f'{prefix}r{k}'])}" for k in ks)

    lines = [
        f"{res['pairs']} test pairs ({res.get('distinct_captions', '?')} distinct captions); chance {recall('chance_')}"
    ]
    for d in ("image_to_text", "text_to_image"):
        extra = [f"{kind} {recall(f'{d}_{kind}_')}" for kind in ("caption", "class") if f"{d}_{kind}_r{ks[0]}" in res]
        lines.append(
            f"{d.replace('_to_', ' -> ')}: {recall(d + '_')}"
            + (f" (a hit if the same {'; '.join(extra)})" if extra else "")
        )
    return "\n".join(lines)


@protocol("retrieval", _retrieval_summary, applies=has_text_encoder, note="image-text runs only")
def evaluate_retrieval(run_dir, device: str = "cpu", max_pairs: int = 1000) -> dict:
    """Recall@1/5 image -> text and text -> image on test images and their own captions."""
    cfg, method = _clip_run(run_dir, device)
    _, test = labelled_splits(cfg)
    if test.captions is None:
        raise SelfsupError(f"{test.name}'s test split has no captions to retrieve")
    n = min(max_pairs, len(test))
    img = encode_images(method, test.images[:n], cfg.data.mean, cfg.data.std, eval_size(cfg, test.image_size), device)
    captions = list(test.captions[:n])
    txt = encode_texts(method, captions, device)
    labels = test.labels[:n] if test.labels is not None else None
    res = {
        "protocol": "retrieval",
        "pairs": n,
        "distinct_captions": len(set(captions)),
        **retrieval(img, txt, labels=labels, captions=captions),
    }
    return _save(run_dir, "retrieval", res, cfg)
