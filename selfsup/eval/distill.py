"""Semi-supervised distillation, the third step of SimCLR v2 (Chen et al. 2020b, section 2).

1. Teacher: the run's encoder (``finetune_encoder`` when the method has one) fine-tuned with a
   linear head on a labelled fraction of the training split (``selfsup.eval.finetune``).
2. Student: a new network (the same backbone by default, or a smaller one), randomly
   initialised, trained on ALL training images WITHOUT their labels to match the teacher's
   temperature-softened predictions, the paper's eq. 2:

       L = - sum_{x in D} sum_y  p^T(y | x; tau) log p^S(y | x; tau),
       p(y | x; tau) = softmax(logits(x) / tau).

   Teacher and student see the same augmented view of each image (crop + flip, as in
   fine-tuning); the teacher is fixed (eval mode, no gradient). The paper also allows adding
   the labelled examples' cross-entropy; its main results use the distillation loss alone, and
   so does this protocol: the student never sees a label.

Reported: teacher and student test top-1, and their agreement (the fraction of test images on
which the student predicts the teacher's class). The student is saved as safetensors with the
description needed to rebuild it (``load_student``).
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.engine import labelled_splits, load_run
from selfsup.methods.base import encoder_to_finetune
from selfsup.config import eval_size
from selfsup.errors import SelfsupError
from selfsup.nn.stepper import Stepper
from selfsup.nn.features import extract_features
from selfsup.nn.runtime import Runtime
from selfsup.eval.finetune import cosine, light_augment
from selfsup.nn.classifier import Classifier, reinitialise
from selfsup.backbones import create_backbone
from selfsup.eval.finetune import finetune_classifier, run_finetune_config


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR v2 eq. 2, mean over the batch: -sum_y softmax(t/tau)_y log softmax(s/tau)_y.

    student_logits, teacher_logits: [B, K]. The teacher gets no gradient. No tau^2 factor
    (Hinton et al. 2015 add one to balance a hard-label term; there is none here).
    """
    p_t = F.softmax(teacher_logits.detach().float() / temperature, dim=1)  # [B, K]
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=1)  # [B, K]
    return -(p_t * log_p_s).sum(1).mean()


@dataclass
class DistillConfig:
    temperature: float = 1.0  # SimCLR v2 distils at tau = 1 on ImageNet
    epochs: int = 10  # over all training images; the paper runs hundreds, a CPU cannot
    steps: int | None = None  # a fixed number of optimiser steps instead of epochs
    batch_size: int = 256
    lr: float = 0.1  # SGD + Nesterov momentum, cosine decay, no warm-up: a from-scratch student
    momentum: float = 0.9
    weight_decay: float = 5e-4  # the student trains from random weights on soft targets: the usual supervised value
    crop_scale: tuple[float, float] = (0.5, 1.0)
    flip_p: float = 0.5
    precision: str = "fp32"
    channels_last: bool = False
    seed: int = 0
    eval_batch_size: int = 512


def build_student(backbone_args: dict, num_classes: int, seed: int = 0) -> Classifier:
    """A randomly initialised ``create_backbone(**backbone_args)`` + linear head, seeded."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Classifier(create_backbone(**backbone_args), num_classes)


def student_like(encoder: nn.Module, num_classes: int, seed: int = 0) -> Classifier:
    """A student of ``encoder``'s architecture from random weights (seeded) with a linear head: SimCLR v2's
    default, "the same architecture" (the paper also distils into smaller ones: ``build_student``)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Classifier(reinitialise(copy.deepcopy(encoder), seed), num_classes)


def distill(
    teacher: nn.Module,
    student: nn.Module,
    train_images: torch.Tensor,
    test,
    mean,
    std,
    size: int,
    cfg: DistillConfig = DistillConfig(),
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> dict:
    """Train ``student`` (in place) on unlabelled ``train_images`` (uint8 [N,C,H,W]) to match
    ``teacher``'s softened predictions; both map normalised images to logits [B, K].
    ``test``: an ImageDataset with labels, for the reported accuracies. Returns the result dict."""
    if cfg.temperature <= 0:
        raise SelfsupError(f"temperature must be positive, got {cfg.temperature}")
    if cfg.precision not in ("fp32", "bf16"):
        raise SelfsupError(f"precision {cfg.precision!r}: choose fp32 or bf16")
    t0 = time.time()
    rt = Runtime.of(cfg, device)
    device = rt.device
    teacher, student = rt.module(teacher).eval(), rt.module(student)
    decay = [p for p in student.parameters() if p.ndim > 1]
    no_decay = [p for p in student.parameters() if p.ndim <= 1]  # norms and biases: no weight decay
    groups: list[dict[str, Any]] = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
    opt = torch.optim.SGD(
        groups,
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=cfg.momentum > 0,
        weight_decay=cfg.weight_decay,
    )
    n = len(train_images)
    bs = min(cfg.batch_size, n)
    steps_per_epoch = n // bs  # drop the last incomplete batch, as pretraining does
    total = cfg.steps if cfg.steps is not None else cfg.epochs * steps_per_epoch
    gen = torch.Generator().manual_seed(cfg.seed + 2)
    steps = Stepper(
        opt,
        total,
        cosine,
        rt,
        "distillation",
        f"lower the learning rate (now {cfg.lr}) or use fp32",
        progress,
        "distil",
    )
    student.train()
    while steps.left:
        for idx in torch.randperm(n, generator=gen)[: steps_per_epoch * bs].split(bs):
            if not steps.left:
                break
            x = rt.inputs(light_augment(train_images[idx].to(device), mean, std, size, cfg.crop_scale, cfg.flip_p, gen))
            with steps.autocast():
                with torch.no_grad():
                    t_logits = teacher(x)  # [B, K], same view as the student's
                s_logits = student(x)  # [B, K]
            steps.update(distillation_loss(s_logits, t_logits, cfg.temperature))
    steps.close()

    kw = dict(mean=mean, std=std, size=size, batch_size=cfg.eval_batch_size, runtime=rt)
    t_pred = extract_features(teacher, test.images, **kw).argmax(1)
    s_pred = extract_features(student, test.images, **kw).argmax(1)
    settings = asdict(cfg)
    settings.update(steps=total, batch_size=bs, crop_scale=list(cfg.crop_scale), epochs=total / max(1, steps_per_epoch))
    return {
        "protocol": "distill",
        "top1": (s_pred == test.labels).float().mean().item(),
        "student_top1": (s_pred == test.labels).float().mean().item(),
        "teacher_top1": (t_pred == test.labels).float().mean().item(),
        "agreement": (s_pred == t_pred).float().mean().item(),
        **settings,
        "num_unlabelled": n,
        "final_loss": steps.loss.item(),
        "loss": "-sum p_T(y|x;tau) log p_S(y|x;tau)",
        "seconds": time.time() - t0,
    }


def save_student(student: Classifier, spec: dict, path: str | Path) -> Path:
    """student.safetensors: the weights, with ``spec`` (how to rebuild it) as JSON metadata."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in student.state_dict().items()}
    save_file(tensors, path, metadata={"selfsup_student": json.dumps(spec)})
    return path


def load_student(path: str | Path) -> tuple[Classifier, dict]:
    """(the student classifier with its weights, its spec: backbone, classes, mean/std/size)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if path.is_dir():
        path = path / "student.safetensors"
    if not path.is_file():
        raise SelfsupError(f"{path} does not exist: pass the --out directory of `selfsup distill`")
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    if "selfsup_student" not in meta:
        raise SelfsupError(f"{path} is not a student saved by `selfsup distill` (no selfsup_student metadata)")
    spec = json.loads(meta["selfsup_student"])
    student = build_student(spec["backbone"], spec["num_classes"])
    student.load_state_dict(load_file(path))
    return student.eval(), spec


def distill_run(
    run_dir: str | Path,
    fraction: float = 0.1,
    out: str | Path | None = None,
    student: str = "same",
    student_width: float | None = None,
    teacher_epochs: int | None = None,
    device: str = "cpu",
    progress: bool = False,
    **changes,
) -> dict:
    """The whole semi-supervised step for a pretraining run: fine-tune the teacher on ``fraction``
    of the labels, distil it into a new student on every training image without labels, save
    the student under ``out`` (default RUN_DIR/distill_<pct>pct/). ``changes``: DistillConfig
    fields (None ignored). The result is also written to OUT/result.json."""
    cfg, method, meta = load_run(run_dir)
    train, test = labelled_splits(cfg)
    assert train.labels is not None and test.labels is not None  # labelled_splits: both labelled
    size = eval_size(cfg, train.image_size)
    num_classes = int(max(train.labels.max(), test.labels.max())) + 1
    b = cfg.backbone
    name = b.name if student.lower() == "same" else student
    backbone_args = dict(
        name=name,
        in_channels=train.channels,
        width=student_width or b.width,
        small_stem=b.small_stem,
        stem_stride=b.stem_stride,
    )
    dcfg = DistillConfig(flip_p=cfg.views.flip_p, precision=cfg.train.precision, channels_last=cfg.train.channels_last)
    dcfg = DistillConfig(**{**asdict(dcfg), **{k: v for k, v in changes.items() if v is not None}})
    if dcfg.temperature <= 0:
        raise SelfsupError(f"--temperature must be positive, got {dcfg.temperature}")
    student_net = build_student(backbone_args, num_classes, dcfg.seed)  # an unknown backbone fails here, early

    ft_cfg = run_finetune_config(cfg, fraction=fraction, epochs=teacher_epochs, seed=dcfg.seed)
    encoder = encoder_to_finetune(method)
    teacher, teacher_res = finetune_classifier(
        encoder, train, test, cfg.data.mean, cfg.data.std, size, ft_cfg, device, progress
    )
    res = distill(teacher, student_net, train.images, test, cfg.data.mean, cfg.data.std, size, dcfg, device, progress)

    pct = f"{100 * fraction:g}"
    out = Path(out) if out else Path(run_dir) / f"distill_{pct}pct"
    spec = {
        "backbone": backbone_args,
        "num_classes": num_classes,
        "mean": cfg.data.mean,
        "std": cfg.data.std,
        "size": size,
        "classes": train.classes,
        "teacher_run": str(run_dir),
        "fraction": fraction,
    }
    weights = save_student(student_net.cpu(), spec, out / "student.safetensors")
    res.update(
        {
            "run": str(run_dir),
            "method": cfg.method_name,
            "data": cfg.data.name,
            "fraction": fraction,
            "student": backbone_args,
            "teacher": {
                k: teacher_res[k]
                for k in ("top1", "num_labelled", "epochs", "steps", "lr", "encoder_lr", "num_features", "batch_size")
            },
            "teacher_encoder": "finetune_encoder" if hasattr(method, "finetune_encoder") else "encoder",
            "weights": str(weights),
            "checkpoint_step": meta.get("step"),
        }
    )
    (out / "result.json").write_text(json.dumps(res, indent=1))
    return res


__all__ = [
    "DistillConfig",
    "build_student",
    "distill",
    "distill_run",
    "distillation_loss",
    "load_student",
    "save_student",
    "student_like",
]
