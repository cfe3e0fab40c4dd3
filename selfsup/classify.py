"""A classifier a user can keep and use: a run's encoder plus a head trained on the user's labels.

``train_classifier`` (``selfsup classify``) fits a linear head on the frozen encoder's features
(the linear probe, its feature standardisation folded into the head) or fine-tunes encoder and head
together (``finetune=True``, the fine-tuning protocol's recipe on all the labels), and first
measures what to expect from it: cross-validated over the labels, or on a test set when one is
given. ``predict`` (``selfsup predict``) applies it to a folder of new images and writes a CSV.

A classifier directory holds ``classifier.safetensors`` (encoder and head weights) and
``classifier.json`` (how to rebuild the encoder, the class names, the input spec, the expected
accuracy and where it came from); it needs neither the run directory nor selfsup's method code.
SimCLR v2's distilled students (``selfsup distill``) are read the same way.
"""

from __future__ import annotations

import copy
import csv
import json
import time
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from selfsup import create_backbone
from selfsup.data import DatasetError
from selfsup.data.labelled import image_batches
from selfsup.data.decode import warn_skipped
from selfsup.engine import InputSpec, Run
from selfsup.errors import SelfsupError
from selfsup.eval.finetune import finetune_classifier, run_finetune_config
from selfsup.nn.classifier import Classifier
from selfsup.eval.labelled import DEFAULT_FOLDS
from selfsup.eval.linear import fit_probe
from selfsup.eval.run import evaluate_finetune, linear_fit_predicts, score_user_labels, user_features, user_sets
from selfsup.transforms import eval_view
from selfsup.config import compose
from selfsup.data import load_dataset
from selfsup.data.labelled import load_labelled
from selfsup.data.dataset import balanced_indices
from selfsup.engine import build_method, dataset_split
from selfsup.methods.base import encoder_to_finetune
from selfsup.eval.distill import load_student
from selfsup.eval.semi import per_class_fraction
from selfsup.export import image_files
from selfsup.semi import create_semi_method
from selfsup.semi.train import train_semi
from selfsup.train.loop import load_data

WEIGHTS, INFO = "classifier.safetensors", "classifier.json"


def _backbone_args(module: nn.Module, run: Run) -> dict:
    args = getattr(module, "backbone_args", None)
    if args is None:
        raise SelfsupError(
            f"the {run.cfg.method_name} encoder is a {type(module).__name__} that combines several networks, "
            f"not one backbone, so a classifier file cannot rebuild it; classify the features of "
            f"`selfsup embed` instead, or pretrain a method with a single backbone"
        )
    return dict(args)


def train_classifier(
    run_dir: str | Path,
    labels: str | Path,
    out: str | Path,
    finetune: bool = False,
    test: str | Path | None = None,
    folds: int = DEFAULT_FOLDS,
    epochs: int | None = None,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
) -> dict:
    """Train a classifier on the user's ``labels`` (folder of class sub-folders or CSV of path,label)
    from the run's encoder, save it to ``out`` (see the module docstring) and return its info, with
    ``estimate``: the same recipe cross-validated over ``folds`` (or tested on ``test``)."""
    t0 = time.time()
    out = Path(out)
    if (out / WEIGHTS).exists():
        raise SelfsupError(f"{out} already holds a classifier: choose another --out, or delete it first")
    if finetune:
        run = Run(run_dir)
        lab, _ = user_sets(run, labels)
        spec = run.spec
        encoder = encoder_to_finetune(run.method)
        args = _backbone_args(encoder, run)
        est = evaluate_finetune(
            run_dir, epochs=epochs, device=device, progress=progress, labels=labels, test=test, folds=folds, seed=seed
        )
        ft = run_finetune_config(run.cfg, fraction=1.0, epochs=epochs, seed=seed)
        model, fit = finetune_classifier(encoder, lab, lab, spec.mean, spec.std, spec.size, ft, device, progress)
        how = {"kind": "finetune", "epochs": fit["epochs"], "steps": fit["steps"], "train_top1": fit["train_top1"]}
    else:  # one decoding and one feature extraction serve the estimate and the classifier
        run, lab, tst, both, y = user_features(run_dir, labels, test, device)
        spec = run.spec
        args = _backbone_args(run.encoder, run)
        est = score_user_labels(run, lab, tst, both, y, "linear", labels, test, folds, seed, linear_fit_predicts(seed))
        feats = both[: len(lab)]  # the labelled rows come first
        assert lab.labels is not None and lab.classes is not None  # load_labelled sets both
        probe = fit_probe(
            feats, lab.labels, len(lab.classes), run.cfg.eval.linear_l2, run.cfg.eval.linear_val_fraction, seed
        )
        model = Classifier(copy.deepcopy(run.encoder), len(lab.classes))
        model.head = probe.as_linear()  # reads raw features: the standardisation is folded in
        how = {"kind": "linear", "l2": probe.l2, "train_top1": probe.accuracy(feats, lab.labels)}
    info = {
        "classes": list(lab.classes),
        "num_classes": len(lab.classes),
        "backbone": args,
        "input": spec.as_dict(),
        **how,
        "num_labelled": len(lab),
        "labels": est["labels"],
        "estimate": {k: est.get(k) for k in ("evaluation", "top1", "top1_std", "folds", "num_test", "per_class")},
        "run": str(Path(run_dir).resolve()),
        "method": run.cfg.method_name,
        "checkpoint_step": run.meta.get("step"),
        "seconds": time.time() - t0,
    }
    return save_classifier(model, info, out)


def save_classifier(model: Classifier, info: dict, out: Path) -> dict:
    """Write ``out``/classifier.safetensors and classifier.json (``info``: classes, num_classes, backbone
    arguments, input spec, ...); returns the info with ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, out / WEIGHTS)
    (out / INFO).write_text(json.dumps(info, indent=1))
    return {**info, "out": str(out)}


def _semi_data(init: str | Path | None, data: str | None, data_dir: str | None, backbone: str | None):
    """(encoder, its backbone arguments, InputSpec, unlabelled set, the dataset's test split or None,
    train-settings defaults from the run's config, folders a label CSV's paths may be relative to) for
    ``semi_classifier``."""
    if init is not None:
        run = Run(init)
        encoder = encoder_to_finetune(run.method)
        args, spec, cfg = _backbone_args(encoder, run), run.spec, run.cfg
        if data is None:  # the images the run pretrained on
            try:
                unlabelled = dataset_split(cfg, "train")
            except DatasetError as e:
                raise DatasetError(
                    f"semi: the images {init} pretrained on could not be read ({e}); name the unlabelled "
                    f"images: --data NAME, or --data imagefolder --data-dir DIR"
                ) from None
            try:
                test = dataset_split(cfg, "test")
            except DatasetError:
                test = None
        else:
            unlabelled = _prepared(load_dataset(data, "train", data_dir, spec.stored_size), spec)
            try:
                test = _prepared(load_dataset(data, "test", data_dir, spec.stored_size), spec)
            except DatasetError:
                test = None
        search = [Path(data_dir).expanduser()] if data_dir else run.label_search()
    else:  # a fresh encoder: the architecture of selfsup's supervised reference recipe for this data
        if data is None:
            raise SelfsupError("semi: give --data (the unlabelled images) or --init RUN_DIR (a run's encoder and data)")
        flags = {"method": "supcon", "data": {"name": data, **({"dir": data_dir} if data_dir else {})}}
        if backbone:
            flags["backbone"] = {"name": backbone}
        cfg = compose(flags).cfg
        unlabelled, test = load_data(cfg)
        spec = InputSpec.of(cfg, unlabelled.channels, unlabelled.image_size)
        encoder = build_method(cfg, spec.channels, len(unlabelled), spec.size).encoder
        backbone_args = getattr(encoder, "backbone_args", None)
        assert isinstance(backbone_args, dict)  # supcon's encoder is one backbone, built by create_backbone
        args = dict(backbone_args)
        search = [Path(data_dir).expanduser()] if data_dir else []
    defaults = {"flip_p": cfg.views.flip_p, "precision": cfg.train.precision, "channels_last": cfg.train.channels_last}
    return encoder, args, spec, unlabelled, test, defaults, search


def _prepared(ds, spec: InputSpec):
    """``ds`` with its images at the encoder's channels and stored side."""
    from dataclasses import replace

    return replace(ds, images=spec.prepare(ds.images))


def semi_classifier(
    method: str,
    out: str | Path,
    labels: str | Path | None = None,
    test: str | Path | None = None,
    init: str | Path | None = None,
    from_scratch: bool = False,
    data: str | None = None,
    data_dir: str | None = None,
    per_class: int | None = None,
    fraction: float | None = None,
    backbone: str | None = None,
    overrides: dict | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> dict:
    """Train a classifier with a semi-supervised ``method`` (fixmatch, mixmatch, vat, pseudolabel) on a
    few labelled and many unlabelled images and save it as ``selfsup classify`` does.

    Unlabelled images: ``data`` (a dataset name; ``data_dir`` its folder), else those ``init`` (a run
    directory) pretrained on. Encoder: ``init``'s (``from_scratch``: its architecture and input spec,
    random weights), else a fresh one of selfsup's supervised reference recipe for ``data``.
    Labels: ``labels`` (a folder of class sub-folders or a CSV of path,label rows; ``test`` likewise),
    or a class-balanced, seeded sample of the unlabelled set's own labels: ``per_class`` images of
    every class or a ``fraction`` of them (then the dataset's test split measures it).
    ``overrides``: the method's and the training's settings (``steps``, ``threshold``, ...)."""
    t0 = time.time()
    out = Path(out)
    if (out / WEIGHTS).exists():
        raise SelfsupError(f"{out} already holds a classifier: choose another --out, or delete it first")
    if (labels is None) == (per_class is None and fraction is None):
        raise SelfsupError(
            "semi: give the labels: --labels DIR|FILE.csv, or --per-class N / --fraction F of a labelled "
            "dataset's own labels"
        )
    create_semi_method(method, overrides)  # a typo in a setting fails before any data is read
    encoder, args, spec, unlabelled, data_test, defaults, search = _semi_data(init, data, data_dir, backbone)
    if labels is not None:
        lab = load_labelled(labels, spec.channels, spec.stored_size, search=search)
        tst = None if test is None else load_labelled(test, spec.channels, spec.stored_size, lab.classes, search)
        assert lab.classes is not None  # load_labelled sets them
        classes = list(lab.classes)
    else:
        if unlabelled.labels is None:
            raise SelfsupError(
                f"--per-class/--fraction sample the dataset's own labels, and {unlabelled.name} has none: "
                f"give --labels DIR|FILE.csv"
            )
        seed = int((overrides or {}).get("seed", 0))
        if fraction is not None:
            frac = fraction
        else:
            assert per_class is not None  # checked above: without --labels, --per-class or --fraction
            frac = per_class_fraction(unlabelled.labels, per_class)
        lab = unlabelled.subset(balanced_indices(unlabelled.labels, frac, seed))
        classes = list(unlabelled.classes or [str(i) for i in range(int(unlabelled.labels.max()) + 1)])
        # the test set's label i is the dataset's class i (named by its index where the dataset names none),
        # and its CSV paths may be relative to the pretraining folder, as with --labels
        tst = data_test if test is None else load_labelled(test, spec.channels, spec.stored_size, classes, search)
    sm, scfg = create_semi_method(method, {**defaults, **(overrides or {})})
    model, res = train_semi(sm, scfg, encoder, lab, unlabelled, spec, len(classes), tst, from_scratch, device, progress)
    info = {
        "classes": classes,
        "num_classes": len(classes),
        "backbone": args,
        "input": spec.as_dict(),
        "kind": method,
        "num_labelled": len(lab),
        "num_unlabelled": len(unlabelled),
        "labels": str(Path(labels).resolve())
        if labels is not None
        else (f"{per_class} per class" if per_class is not None else f"{fraction:g} of the labels"),
        "estimate": {
            "evaluation": "test" if res["top1"] is not None else None,
            "top1": res["top1"],
            "num_test": len(tst) if tst is not None else None,
        },
        "train_top1": res["train_top1"],
        "init": str(Path(init).resolve()) if init else None,
        "from_scratch": from_scratch or init is None,
        "settings": res["settings"],
        "method_settings": res["method_settings"],
        "final": res["final"],
        "train_seconds": res["train_seconds"],
        "seconds": time.time() - t0,
    }
    return save_classifier(model, info, out)


def load_classifier(clf_dir: str | Path) -> tuple[Classifier, dict, InputSpec]:
    """(the classifier in eval mode, its info, its input spec) from a ``selfsup classify`` directory,
    or from a ``selfsup distill`` student directory."""
    d = Path(clf_dir)
    if (d / INFO).is_file() and (d / WEIGHTS).is_file():
        info = json.loads((d / INFO).read_text())
        model = Classifier(create_backbone(**info["backbone"]), info["num_classes"])
        model.load_state_dict(load_file(d / WEIGHTS), strict=True)
        return model.eval(), info, InputSpec.from_dict(info["input"])
    if (d / "student.safetensors").is_file():
        model, info = load_student(d / "student.safetensors")
        spec = InputSpec(
            info["backbone"]["in_channels"], info["size"], info["size"], tuple(info["mean"]), tuple(info["std"])
        )
        classes = info.get("classes") or [str(i) for i in range(info["num_classes"])]
        return model.eval(), {**info, "classes": classes}, spec
    raise SelfsupError(
        f"{d} is not a classifier directory ({INFO} and {WEIGHTS} from `selfsup classify`, or "
        f"student.safetensors from `selfsup distill`)"
    )


@torch.no_grad()
def predict(
    clf_dir: str | Path,
    images: str | Path,
    out: str | Path,
    top_k: int = 1,
    batch_size: int = 256,
    device: str = "cpu",
    progress: bool = True,
) -> dict:
    """Classify every image file below ``images`` (or one file) and write ``out`` (CSV): path
    (relative to ``images``), label, probability, then label_2, probability_2, ... up to ``top_k``.
    Unreadable files are skipped and counted in one warning, as the loaders do."""
    model, info, spec = load_classifier(clf_dir)
    classes = info["classes"]
    if not 1 <= top_k <= len(classes):
        raise SelfsupError(f"--top-k {top_k}: give 1 to {len(classes)} (the classifier knows {len(classes)} classes)")
    if batch_size < 1:
        raise SelfsupError(f"--batch-size {batch_size}: give at least 1")
    out = Path(out)
    if out.suffix.lower() != ".csv":
        raise SelfsupError(f"--out {out}: predictions are written as a .csv file")
    root, files, others = image_files(images)
    if others:
        warnings.warn(
            f"predict: ignored {len(others)} non-image file{'s' * (len(others) != 1)} (by extension)", stacklevel=2
        )
    model.to(device)
    rows, skipped = [], []
    for kept, x, bad in image_batches(files, spec.channels, spec.stored_size, batch_size, "predicting", progress):
        skipped += bad
        if not kept:
            continue
        p = model(eval_view(x.to(device), spec.mean, spec.std, spec.size)).float().softmax(1).cpu()  # [B, K]
        prob, idx = p.topk(top_k, dim=1)
        for f, pr, ix in zip(kept, prob.tolist(), idx.tolist()):
            rows.append(
                [f.relative_to(root).as_posix()] + [v for c, q in zip(ix, pr) for v in (classes[c], f"{q:.4f}")]
            )
    warn_skipped(skipped)
    if not rows:
        raise DatasetError(f"none of the {len(files)} image files in {images} could be decoded")
    out.parent.mkdir(parents=True, exist_ok=True)
    header = ["path", "label", "probability"] + [
        f"{k}_{j}" for j in range(2, top_k + 1) for k in ("label", "probability")
    ]
    with open(out, "w", newline="") as csv_file:
        csv.writer(csv_file).writerows([header, *rows])
    return {"out": str(out), "rows": len(rows), "skipped": len(skipped), "classes": classes}
