"""Fine-tuning protocol: the encoder plus a new linear head, trained end to end on a labelled
subset of the training split (1 %, 10 % or 100 % of the labels, class-balanced and seeded).

This is the semi-supervised evaluation of SimCLR (Chen et al. 2020, section 6 and appendix B.5)
and SimCLR v2 (Chen et al. 2020b, section 2): unlike the linear probe, the encoder's weights
move too, so it measures how good a starting point the pretraining is when a few labels exist.

What it sees: one module mapping normalised images [B,C,H,W] to [B, num_features], which the
caller picks as ``getattr(method, "finetune_encoder", method.evaluated_encoder)`` (SimCLR v2 fine-tunes
from the middle of its projection head; every other method from its encoder). It trains a deep
copy, so the method is never touched. ``from_scratch=True`` re-initialises the copy: the same
architecture trained on the same labels from random weights, the supervised baseline.

Recipe: SGD with Nesterov momentum, a lower learning rate for the encoder than for the new head
(the head starts from nothing, the encoder from something worth keeping), cosine decay over a
fixed number of steps, no warm-up; light augmentation only (random resized crop + flip, batched
on the device, as SimCLR's fine-tuning), optional bf16 autocast. A ViT encoder is fine-tuned the
way BEiT and MAE (He et al. 2022, appendix A.3) fine-tune ViTs instead (``optimizer="auto"``):
AdamW with layer-wise learning-rate decay, each block's rate ``layer_decay`` times the rate of the
block above it, so the early blocks move least; SGD at one encoder rate is what the ResNet papers use.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.engine import InputSpec
from selfsup.errors import SelfsupError
from selfsup.nn.stepper import Stepper
from selfsup.nn.classifier import Classifier, reinitialise
from selfsup.nn.features import extract_features
from selfsup.nn.runtime import Runtime
from selfsup.eval.linear import fit_probe
from selfsup.semi import create_semi_method
from selfsup.semi.train import train_semi
from selfsup.transforms import ops


# The fine-tuning recipe for CNN encoders, chosen on validation by the rule fixed in benchmarks/few_labels.py
# (results: docs/benchmarks.md, "The fine-tuning recipe, chosen on validation").
RECIPE = "crop"


@dataclass
class FinetuneConfig:
    fraction: float = 0.1  # of the training labels, class-balanced (ImageDataset.labelled_subset)
    epochs: int | None = None  # None: 60 at <= 1 % of the labels, else 30 (SimCLR v2's ImageNet schedule)
    steps: int | None = None  # a fixed number of optimiser steps instead of epochs
    batch_size: int = 64  # small: 1 % of a 60k set is 600 images, and few labels want many steps (capped at n)
    lr: float = 0.1  # the new linear head
    encoder_lr: float = 0.01  # the pretrained encoder: 10x lower, so a noisy new head cannot wreck it
    # (from_scratch trains the encoder at ``lr``: a random encoder has nothing to protect, and a
    # handicapped baseline would flatter the pretraining)
    momentum: float = 0.9
    weight_decay: float = 0.0  # few steps on few labels; the cosine schedule and crops regularise enough
    optimizer: str = "auto"  # auto: adamw for a ViT encoder (one with ``blocks``), sgd otherwise | sgd | adamw
    adamw_lr: float = 5e-4  # the head and the final norm (MAE's base rate, unscaled at this batch)
    layer_decay: float = 0.75  # MAE's ViT-B/L value; from_scratch uses 1 (nothing to protect)
    adamw_weight_decay: float = 0.05  # MAE's fine-tuning decay
    crop_scale: tuple[float, float] = (0.5, 1.0)  # light: the object stays mostly in view
    flip_p: float = 0.5  # run-level callers take the pretraining's views.flip_p (0 for digits)
    precision: str = "fp32"  # fp32 | bf16 (autocast)
    channels_last: bool = False
    seed: int = 0  # picks the labelled subset, the head's initialisation and the augmentation draws
    # random: the head starts at N(0, 0.01^2) (SimCLR); probe: at the linear probe fitted on the frozen
    # features of the labelled images, then everything is fine-tuned (LP-FT, Kumar et al. 2022, "Fine-Tuning
    # can Distort Pretrained Features and Underperform Out-of-Distribution": a random head's large early
    # gradients distort the pretrained features; a fitted head leaves them little to undo)
    head_init: str = "random"
    from_scratch: bool = False  # re-initialise the encoder: the supervised baseline
    eval_batch_size: int = 512
    # crop: the recipe above (random resized crop, Nesterov SGD, the head at 10x the encoder's rate, cosine);
    # semi-loop: the labels alone in the semi-supervised loop (selfsup.semi's "supervised": weak flip-and-
    # shift views, SGD 0.03 with weight decay 5e-4 for head and encoder alike, FixMatch's schedule, the
    # EMA of the weights kept), ``semi_steps`` steps (``steps`` when given). ViT encoders always take the
    # crop recipe's AdamW with layer decay (the semi-loop recipe was compared on a ResNet only).
    recipe: str = RECIPE
    semi_steps: int = 1000

    def num_epochs(self) -> int:
        if self.epochs is not None:
            return self.epochs
        return 60 if self.fraction <= 0.01 else 30


def layer_id(name: str, depth: int) -> int:
    """Depth of a ViT encoder parameter for layer-wise decay (BEiT's rule): the patch embedding, [CLS]
    and positions 0, block i i + 1, the final norm depth + 1 (it feeds the head)."""
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return depth + 1 if name.startswith("norm.") else 0


def optimizer_for(model: "Classifier", cfg: FinetuneConfig) -> tuple[torch.optim.Optimizer, str]:
    """The fine-tuning optimiser and its description: SGD (Nesterov) at ``encoder_lr`` for the encoder
    and ``lr`` for the head, or for a ViT (``optimizer`` auto/adamw) AdamW with layer-wise decay: the
    head at ``adamw_lr``, encoder parameters at ``adamw_lr * layer_decay ** (depth + 1 - layer_id)``;
    no weight decay on biases, norms, [CLS] and positions (1-d parameters), as MAE."""
    if cfg.optimizer not in ("auto", "sgd", "adamw"):
        raise SelfsupError(f"optimizer {cfg.optimizer!r}: choose auto, sgd or adamw")
    blocks = getattr(model.encoder, "blocks", None)
    use_adamw = cfg.optimizer == "adamw" or (cfg.optimizer == "auto" and blocks is not None)
    if not use_adamw:
        encoder_lr = cfg.lr if cfg.from_scratch else cfg.encoder_lr
        sgd_groups = [
            {"params": list(model.encoder.parameters()), "lr": encoder_lr},
            {"params": list(model.head.parameters()), "lr": cfg.lr},
        ]
        return (
            torch.optim.SGD(
                sgd_groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0, weight_decay=cfg.weight_decay
            ),
            "sgd(nesterov)",
        )
    depth = len(blocks) if blocks is not None else 0
    decay = 1.0 if cfg.from_scratch else cfg.layer_decay
    groups: dict[tuple[int, bool], dict] = {}
    named = [
        (f"encoder.{n}", depth + 1 if blocks is None else layer_id(n, depth), p)
        for n, p in model.encoder.named_parameters()
    ]
    named += [(f"head.{n}", depth + 1, p) for n, p in model.head.named_parameters()]
    for name, layer, p in named:
        no_wd = p.ndim <= 1 or name.endswith(("cls_token", "pos_embed"))
        g = groups.setdefault(
            (layer, no_wd),
            {
                "params": [],
                "lr": cfg.adamw_lr * decay ** (depth + 1 - layer),
                "weight_decay": 0.0 if no_wd else cfg.adamw_weight_decay,
            },
        )
        g["params"].append(p)
    opt = torch.optim.AdamW(list(groups.values()), lr=cfg.adamw_lr, betas=(0.9, 0.999))
    return opt, f"adamw(lr {cfg.adamw_lr:g}, layer decay {decay:g}, wd {cfg.adamw_weight_decay:g})"


def light_augment(
    images: torch.Tensor,
    mean,
    std,
    size: int,
    crop_scale=(0.5, 1.0),
    flip_p: float = 0.5,
    gen: torch.Generator | None = None,
) -> torch.Tensor:
    """uint8 [B,C,H,W] -> normalised float [B,C,size,size]: random resized crop + flip, per image."""
    x = ops.random_resized_crop(ops.to_float(images), size, tuple(crop_scale), flip_p=flip_p, gen=gen)
    return ops.normalize(x, mean, std)


def cosine(step: int, total: int) -> float:
    """Learning-rate factor: cosine from 1 to 0 over ``total`` steps, no warm-up."""
    return 0.5 * (1 + math.cos(math.pi * min(step, total) / max(1, total)))


def finetune_classifier(
    encoder: nn.Module,
    train,
    test,
    mean,
    std,
    size: int,
    cfg: FinetuneConfig = FinetuneConfig(),
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> tuple[Classifier, dict]:
    """Fine-tune a copy of ``encoder`` + a linear head on ``cfg.fraction`` of ``train``'s labels.

    train, test: ImageDataset with labels (uint8 images [N,C,H,W]); mean, std, size: the
    normalisation and input side the encoder was trained with. Returns (the trained classifier,
    a result dict: test "top1" as a fraction, and every setting that produced it).
    """
    if train.labels is None or test.labels is None:
        raise SelfsupError("fine-tuning needs labelled train and test splits")
    if cfg.precision not in ("fp32", "bf16"):
        raise SelfsupError(f"precision {cfg.precision!r}: choose fp32 or bf16")
    if not 0.0 < cfg.fraction <= 1.0:
        raise SelfsupError(f"fraction must be in (0, 1], e.g. 0.01, 0.1 or 1.0; got {cfg.fraction}")
    t0 = time.time()
    rt = Runtime.of(cfg, device)
    device = rt.device
    labelled = train.labelled_subset(cfg.fraction, cfg.seed)
    n = len(labelled)
    if n < 2:
        raise SelfsupError(
            f"{cfg.fraction} of the labels is {n} image(s): batch norm needs at least 2; raise --fraction"
        )
    num_classes = int(max(train.labels.max(), test.labels.max())) + 1
    if cfg.recipe not in ("crop", "semi-loop"):
        raise SelfsupError(f"recipe {cfg.recipe!r}: choose crop or semi-loop")
    vit = getattr(encoder, "blocks", None) is not None or cfg.optimizer == "adamw"
    if cfg.recipe == "semi-loop" and not vit:
        return _semi_loop(
            encoder,
            labelled,
            test,
            InputSpec(labelled.channels, size, size, tuple(mean), tuple(std)),
            num_classes,
            cfg,
            device,
            progress,
        )

    enc = copy.deepcopy(encoder)  # the caller's encoder is never touched
    if cfg.from_scratch:
        reinitialise(enc, cfg.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = Classifier(enc, num_classes)
    model = rt.module(model)
    if cfg.head_init not in ("random", "probe"):
        raise SelfsupError(f"head_init {cfg.head_init!r}: choose random or probe")
    if cfg.head_init == "probe" and not cfg.from_scratch:  # LP-FT: start from the probe on frozen features
        feats = extract_features(  # contiguous inputs here, as this start has always read them
            model.encoder, labelled.images, mean, std, size, cfg.eval_batch_size, Runtime(device, cfg.precision)
        )
        model.head = fit_probe(feats, labelled.labels, num_classes, seed=cfg.seed).as_linear().to(device)
    for p in model.encoder.parameters():  # fine-tuning trains every encoder weight, even ones a method froze
        p.requires_grad_(True)
    opt, optimizer = optimizer_for(model, cfg)
    lrs = [g["lr"] for g in opt.param_groups]
    # reported: SGD's encoder group (the first), or AdamW's lowest layer (layer decay makes it the smallest)
    encoder_lr = lrs[0] if optimizer.startswith("sgd") else min(lrs)

    bs = min(cfg.batch_size, n)
    steps_per_epoch = math.ceil(n / bs)
    epochs = cfg.num_epochs()
    total = cfg.steps if cfg.steps is not None else epochs * steps_per_epoch
    gen = torch.Generator().manual_seed(cfg.seed + 1)  # subset order and augmentation draws
    # in memory: the labelled images move to the device once; a streamed folder's (LazyImages) are
    # decoded batch by batch below. Batch indices stay on the CPU, which indexes both.
    images, labels = labelled.images, labelled.labels.to(device)
    if isinstance(images, torch.Tensor):
        images = images.to(device)
    steps = Stepper(
        opt,
        total,
        cosine,
        rt,
        "fine-tuning",
        f"lower the learning rates (now {optimizer}, lr/encoder_lr {cfg.lr}/{cfg.encoder_lr} for sgd) or use fp32",
        progress,
        "fine-tune" + (" (from scratch)" if cfg.from_scratch else ""),
    )
    model.train()
    while steps.left:
        # nearly equal batches (tensor_split) so that no batch is a lone image batch norm cannot use
        for idx in torch.randperm(n, generator=gen).tensor_split(steps_per_epoch):
            if not steps.left:
                break
            x = rt.inputs(light_augment(images[idx].to(device), mean, std, size, cfg.crop_scale, cfg.flip_p, gen))
            with steps.autocast():
                logits = model(x)  # [B, K]
            steps.update(F.cross_entropy(logits.float(), labels[idx]))
    steps.close()

    kw = dict(mean=mean, std=std, size=size, batch_size=cfg.eval_batch_size, runtime=rt)
    top1 = (extract_features(model, test.images, **kw).argmax(1) == test.labels).float().mean().item()
    train_top1 = (extract_features(model, labelled.images, **kw).argmax(1) == labelled.labels).float().mean().item()
    per_class = torch.bincount(labelled.labels, minlength=num_classes)
    settings = asdict(cfg)
    settings.update(
        epochs=epochs if cfg.steps is None else total / steps_per_epoch,
        steps=total,
        batch_size=bs,
        crop_scale=list(cfg.crop_scale),
        encoder_lr=encoder_lr,
    )
    result = {
        "protocol": "finetune",
        "top1": top1,
        "train_top1": train_top1,
        **settings,
        "num_labelled": n,
        "labelled_per_class": [int(c) for c in per_class],
        "num_features": int(cast(int, enc.num_features)),
        "final_loss": steps.loss.item(),
        "optimizer": optimizer,
        "schedule": "cosine, no warm-up",
        "augmentation": "random resized crop + flip",
        "seconds": time.time() - t0,
    }
    return model, result


def _semi_loop(
    encoder: nn.Module,
    labelled,
    test,
    spec: InputSpec,
    num_classes: int,
    cfg: FinetuneConfig,
    device: torch.device,
    progress: bool,
) -> tuple[Classifier, dict]:
    """The semi-loop recipe: the labels alone through selfsup.semi's loop (its unlabelled draws are never
    looked at), the classifier kept is the EMA of the weights; the result carries the protocol's keys."""
    method, scfg = create_semi_method(
        "supervised",
        {
            "steps": cfg.steps or cfg.semi_steps,
            "seed": cfg.seed,
            "flip_p": cfg.flip_p,
            "precision": cfg.precision,
            "channels_last": cfg.channels_last,
        },
    )
    model, res = train_semi(
        method,
        scfg,
        encoder,
        labelled,
        labelled,
        spec,
        num_classes,
        test=test,
        from_scratch=cfg.from_scratch,
        device=device,
        progress=progress,
    )
    per_class = torch.bincount(labelled.labels, minlength=num_classes)
    result = {
        "protocol": "finetune",
        "top1": res["top1"],
        "train_top1": res["train_top1"],
        **asdict(cfg),
        "crop_scale": list(cfg.crop_scale),
        "steps": scfg.steps,
        "batch_size": scfg.batch_size,
        "epochs": scfg.steps * scfg.batch_size / len(labelled),
        "lr": scfg.lr,
        "encoder_lr": scfg.lr,
        "weight_decay": scfg.weight_decay,
        "num_labelled": len(labelled),
        "labelled_per_class": [int(c) for c in per_class],
        "num_features": int(cast(int, encoder.num_features)),
        "final_loss": res["final"].get("loss"),
        "optimizer": "sgd(nesterov), EMA of the weights kept",
        "schedule": "cos(7 pi k / 16 K)",
        "augmentation": "flip + shift (the semi loop's weak views)",
        "seconds": res["seconds"],
    }
    return model.to(device), result


def finetune(
    encoder: nn.Module,
    train,
    test,
    mean,
    std,
    size: int,
    cfg: FinetuneConfig = FinetuneConfig(),
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> dict:
    """Fine-tune a copy of ``encoder`` with a new linear head; returns {"top1": ..., settings}."""
    return finetune_classifier(encoder, train, test, mean, std, size, cfg, device, progress)[1]


def run_finetune_config(cfg, **changes) -> FinetuneConfig:
    """The protocol's settings for a pretraining run (a RunConfig): its flip probability (0 where
    mirror images are other classes, like digits), precision and memory format; ``changes``
    (None values ignored) override any field."""
    base = FinetuneConfig(flip_p=cfg.views.flip_p, precision=cfg.train.precision, channels_last=cfg.train.channels_last)
    return FinetuneConfig(**{**asdict(base), **{k: v for k, v in changes.items() if v is not None}})
