"""The fifteen claims of the field's study notes, each a pre-registered experiment: arms, a measure, a rule
(selfsup.experiments.claims.rules) with its direction, margin and seeds, all fixed here before any run.

Measures reuse the evaluation suite (selfsup.eval.run) and cache in the run directory. Accuracies are in
percent and margins in the same absolute points (a Diff on another unit states its own margin).
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import yaml

from selfsup.engine import labelled_splits, run_split
from selfsup.experiments.claims.experiment import Arm, Claim
from selfsup.experiments.claims.rules import All, Diff
from selfsup.errors import SelfsupError
from selfsup.config import eval_size, load_run_config
from selfsup.eval.finetune import FinetuneConfig
from selfsup.eval.linear import linear_probe
from selfsup.eval.run import evaluate, load_run, run_features
from selfsup.nn.features import extract_features

# ---------------------------------------------------------------- measures


def _eval(run: Path, protocol: str, **opts) -> dict:
    cached = run / f"eval_{protocol}.json"
    if cached.is_file() and not opts:
        return json.loads(cached.read_text())
    return evaluate(run, protocol, **opts)


def linear(run: Path) -> dict:
    return {"linear": 100 * _eval(run, "linear")["top1"]}


def linear_knn(run: Path) -> dict:
    return {**linear(run), "knn200": 100 * _eval(run, "knn")["top1_k200"]}


def collapse(run: Path) -> dict:
    s = json.loads((run / "summary.json").read_text())
    return {**linear(run), "embedding_rank": s.get("diag/embedding_rank"), "embedding_std": s.get("diag/embedding_std")}


def teacher_entropy(run: Path) -> dict:
    """``collapse`` plus the two collapse modes of DINO (sec. 5.3, fig. 7): the entropy of the teacher's
    output distribution over the last logged steps, in nats — near 0 when one dimension dominates
    (sharpening alone), near log K when the output is uniform (centering alone)."""
    logs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    ent = [r["teacher_entropy"] for r in logs if isinstance(r.get("teacher_entropy"), (int, float))][-5:]
    k = yaml.safe_load((run / "config.yaml").read_text())["method"]["out_dim"]
    return {**collapse(run), "teacher_entropy": sum(ent) / len(ent), "log_K": math.log(k)}


def head_vs_features(run: Path) -> dict:
    """Linear probe on the encoder's features h and on the projection head's output z = g(h)."""
    cfg, method, _ = load_run(run)
    train, test = labelled_splits(cfg)
    assert train.labels is not None and test.labels is not None  # labelled_splits refuses unlabelled splits
    features = functools.partial(
        extract_features,
        method,
        mean=cfg.data.mean,
        std=cfg.data.std,
        size=eval_size(cfg, train.image_size),
        forward=method.embedding,
    )
    ztr, zte = features(train.images), features(test.images)
    return {
        "linear_h": 100 * _eval(run, "linear")["top1"],
        "linear_z": 100 * linear_probe(ztr, train.labels, zte, test.labels)["top1"],
    }


def negatives(run: Path) -> dict:
    d = _eval(run, "diagnostics")
    bound = d.get("infonce_bound", {}).get("nats", {})
    return {**linear(run), **{f"bound_N{n}": v for n, v in bound.items()}}


def label_efficiency(run: Path) -> dict:
    """Linear probe, fine-tuning and a supervised model from scratch at 1 / 10 / 100 % of the labels, each
    trained for the same optimiser steps: as many as 2 epochs of all labels take. (At 300 steps the 100 %
    scratch model saw a third of an epoch, and the gap at 100 % measured its underfitting.)"""
    n = len(run_split(load_run_config(run), "train"))
    res = _eval(run, "semi", steps=math.ceil(2 * n / FinetuneConfig.batch_size))
    out = {}
    for r in res["rows"]:
        pct = f"{100 * r['fraction']:g}pct"
        # the pretrained arm is the fine-tuned encoder: the same recipe as scratch, from other weights (not
        # the better of fine-tuning and the probe, picked on test)
        out.update(
            {
                f"linear_{pct}": 100 * r["linear"],
                f"finetune_{pct}": 100 * r["finetune"],
                f"scratch_{pct}": 100 * r["scratch"],
                f"gap_{pct}": 100 * (r["finetune"] - r["scratch"]),
            }
        )
    return out


def finetune_vs_linear(run: Path) -> dict:
    """Linear probe (converged, on cached features) against fine-tuning on all labels for 2 epochs: 500 steps
    (half an epoch) left every fine-tune underfit — train top-1 no higher than test — and below its probe."""
    ft = _eval(run, "finetune", fraction=1.0, epochs=2)
    lin = linear(run)["linear"]
    return {"linear": lin, "finetune": 100 * ft["top1"], "gain": 100 * ft["top1"] - lin}


def rotation_sensitivity(run: Path) -> dict:
    r = _eval(run, "robustness", kinds=("rotation",))["encoder"]
    # the drop in absolute points: a relative drop near chance inflates small differences
    return {
        "clean": 100 * r["clean"],
        "rotated_45": 100 * r["rotation"][3],
        "drop": 100 * (r["clean"] - r["rotation"][3]),
    }


def efficiency_linear(run: Path) -> dict:
    e = _eval(run, "efficiency")
    return {**linear(run), "images_per_s": e["images_per_s"]}


def zero_vs_few_shot(run: Path) -> dict:
    """CLIP's zero-shot top-1 and k-shot linear probes (k labelled images per class) on its image features."""
    import torch

    zs = _eval(run, "zeroshot")
    ftr, ytr, fte, yte, _ = run_features(run)
    out = {"zero_shot": 100 * zs["top1"]}
    g = torch.Generator().manual_seed(0)
    for k in (1, 2, 4, 16):
        idx = torch.cat(
            [
                torch.nonzero(ytr == c).flatten()[torch.randperm(int((ytr == c).sum()), generator=g)[:k]]
                for c in range(int(ytr.max()) + 1)
            ]
        )
        out[f"{k}_shot"] = (
            100
            * linear_probe(
                ftr[idx],
                ytr[idx],
                fte,
                yte,
                val_fraction=0.0 if k < 4 else 0.25,
                l2_grid=(1e-3,) if k < 4 else (1e-4, 1e-3, 1e-2),
            )["top1"]
        )
    return out


# ---------------------------------------------------------------- reported beside a verdict, never judged


def _means(per_arm: dict[str, list[dict]], keys: list[str]) -> str:
    def mean(arm, key):
        v = [m[key] for m in per_arm[arm] if isinstance(m.get(key), (int, float))]
        return f"{sum(v) / len(v):.3g}" if v else "—"

    return "; ".join(f"{key}: " + ", ".join(f"{a} {mean(a, key)}" for a in per_arm) for key in keys)


def _report(*keys: str):
    def report(per_arm):
        return _means(per_arm, list(keys))

    return report


# ---------------------------------------------------------------- the claims
# Each rule below was fixed on 2026-12-07, before any run under it; the verdicts of earlier rules are void
# (their runs had one seed and another fingerprint). Arms a claim compares share one encoder and side.

LOW_LABEL = (
    "With few labels, a pretext-trained encoder (rotation) fine-tuned beats the same network trained "
    "from scratch on those labels (the same recipe); the gap closes as labels grow (1 %, 10 %, 100 %)."
)
# SimCLR's Fashion-MNIST recipe trains a x1.0 ResNet-10 on 16-px views; compared with another method's arm it
# runs that arm's encoder and side (x0.75, whole 28-px images)
LIKE_THE_OTHERS = ("backbone.width=0.75", "views.size=null", "eval.size=null")
# a ViT arm for a method whose recipe is a ResNet's: MoCo v3's ViT optimiser (AdamW, lr 1e-3 x batch/256, wd 0.1)
ON_A_VIT = ("backbone.width=1.0", "optim.name=adamw", "optim.lr=0.001", "optim.weight_decay=0.1")
VOID = "2026-12-07: every verdict before this date was given under another rule, with one seed: void."


def catalog() -> list[Claim]:
    simclr = Arm("simclr", "simclr")
    simclr_like = Arm("simclr", "simclr", LIKE_THE_OTHERS)
    return [
        Claim(
            "label-efficiency",
            LOW_LABEL,
            [Arm("rotation", "rotation")],
            label_efficiency,
            All(Diff("rotation", "gap_1pct", const=0.0), Diff("rotation", "gap_1pct", b_key="gap_100pct")),
            [
                "finetune_1pct",
                "scratch_1pct",
                "finetune_10pct",
                "scratch_10pct",
                "finetune_100pct",
                "scratch_100pct",
                "gap_1pct",
                "gap_100pct",
            ],
            report=_report("linear_1pct", "linear_100pct"),
            history=(
                "until 2026-12-07 the pretrained arm was the better of the linear probe and fine-tuning, "
                "picked on test; now the fine-tuned encoder, the recipe scratch runs.",
                VOID,
            ),
        ),
        Claim(
            "finetune-vs-linear",
            "Fine-tuning beats linear probing; the gap is largest for MAE (all three on the same ViT).",
            [
                Arm("simclr", "simclr", (*ON_A_VIT, "views.size=null", "eval.size=null"), backbone="vit_micro"),
                Arm("mae", "mae"),
                Arm("rotation", "rotation", ON_A_VIT, backbone="vit_micro"),
            ],
            finetune_vs_linear,
            All(
                *(Diff(a, "gain", const=0.0) for a in ("simclr", "mae", "rotation")),
                Diff("mae", "gain", "simclr"),
                Diff("mae", "gain", "rotation"),
            ),
            ["linear", "finetune", "gain"],
            history=("until 2026-12-07 MAE ran a ViT against ResNet arms, and any positive gap counted.", VOID),
        ),
        Claim(
            "more-negatives",
            "More negatives help: SimCLR accuracy and the InfoNCE bound log N − L grow with N (the batch).",
            [Arm(f"b{b}", "simclr", (f"train.batch_size={b}",)) for b in (64, 128, 256, 512)],
            negatives,
            All(Diff("b512", "linear", "b64"), Diff("b512", "bound_N512", "b64", margin=0.1, unit="nats")),
            ["linear", "bound_N32", "bound_N512"],
            report=_report("bound_N32"),
            history=("until 2026-12-07 only the probe was judged; the bound was reported.", VOID),
        ),
        Claim(
            "queue-decouples",
            "MoCo's queue decouples negatives from batch size: MoCo at a small batch with a "
            "large queue matches SimCLR at a large batch.",
            [
                Arm("mocov2_b64", "mocov2", ("train.batch_size=64",)),
                Arm("simclr_b64", "simclr", (*LIKE_THE_OTHERS, "train.batch_size=64")),
                Arm("simclr_b512", "simclr", (*LIKE_THE_OTHERS, "train.batch_size=512")),
            ],
            linear,
            All(
                Diff("mocov2_b64", "linear", "simclr_b512", expect="not_lower"),
                Diff("mocov2_b64", "linear", "simclr_b64", expect="not_lower"),
            ),
            ["linear"],
            history=(VOID,),
        ),
        Claim(
            "projection-head",
            "Features before the projection head (h) probe better than after it (z).",
            [simclr],
            head_vs_features,
            Diff("simclr", "linear_h", b_key="linear_z"),
            ["linear_h", "linear_z"],
            history=(VOID,),
        ),
        Claim(
            "augmentations",
            "Random crop and colour distortion matter most, blur helps a little (SimCLR with its "
            "Fashion-MNIST recipe on the SYNTHETIC tinted set — a random hue per image, independent of the class — "
            "one augmentation removed at a time).",
            [
                Arm(name, "simclr", views, data="tinted-fashion-mnist", recipe_of="fashion-mnist")
                for name, views in (
                    ("all", ("views.blur_p=[0.5,0.5]",)),
                    ("no_crop", ("views.blur_p=[0.5,0.5]", "views.crop_scale=[1.0,1.0]")),
                    ("no_colour", ("views.blur_p=[0.5,0.5]", "views.jitter_p=0.0", "views.gray_p=0.0")),
                    ("no_blur", ("views.blur_p=[0.0,0.0]",)),
                )
            ],
            linear,
            All(
                Diff("no_crop", "linear", "no_blur", expect="lower"),
                Diff("no_colour", "linear", "no_blur", expect="lower"),
                Diff("all", "linear", "no_blur", expect="not_lower"),
            ),
            ["linear"],
            history=("until 2026-12-07 the drops were compared without a margin (0.2 points decided it).", VOID),
        ),
        Claim(
            "byol-needs-bn",
            "BYOL without BatchNorm in its heads collapses; with another normalisation "
            "(GroupNorm + weight standardisation) it trains.",
            [
                Arm("byol", "byol"),
                Arm("byol_no_bn", "byol", ("method.head_bn=false",)),
                Arm("byol_gn_ws", "byol", ("method.head_bn=false", "method.head_gn_ws=true")),
            ],
            collapse,
            All(
                Diff("byol_no_bn", "embedding_rank", "byol", expect="lower", factor=0.25, margin=0.0, unit=""),
                Diff("byol_no_bn", "linear", "byol", expect="lower"),
                Diff("byol_gn_ws", "linear", "byol", expect="not_lower"),
            ),
            ["linear", "embedding_rank", "embedding_std"],
            report=_report("embedding_rank"),
            history=(
                "2026-12-05, commit 0be18e9, after that day's runs: 'GN + WS trains' changed from its "
                "embedding rank (half of BN's) to its linear probe (Richemond et al. 2020's measure).",
                "until 2026-12-07 the collapse was judged by the rank alone; now the probe must fall too.",
                VOID,
            ),
        ),
        Claim(
            "simsiam-stop-gradient",
            "SimSiam without stop-gradient collapses: its embedding's rank and its "
            "linear probe fall (Chen & He 2021, fig. 2).",
            [Arm("simsiam", "simsiam"), Arm("no_stop_gradient", "simsiam", ("method.stop_gradient=false",))],
            collapse,
            All(
                Diff("no_stop_gradient", "embedding_rank", "simsiam", expect="lower", factor=0.25, margin=0.0, unit=""),
                Diff("no_stop_gradient", "linear", "simsiam", expect="lower"),
            ),
            ["linear", "embedding_rank", "embedding_std"],
            history=(
                "until 2026-12-07 the rank alone decided (the probe was higher without stop-gradient at "
                "5 minutes, one seed).",
                VOID,
            ),
        ),
        Claim(
            "dino-centering-sharpening",
            "DINO needs both centering and sharpening: without either the output "
            "collapses (one dimension dominates / the output goes uniform).",
            [
                Arm("dino", "dino"),
                Arm("no_centering", "dino", ("method.center=false",)),
                Arm("no_sharpening", "dino", ("method.teacher_temp=0.1", "method.warmup_teacher_temp=0.1")),
            ],
            teacher_entropy,
            # the paper's fig. 7: entropy of the teacher's output, in nats
            All(
                Diff("no_centering", "teacher_entropy", "dino", expect="lower", factor=0.5, margin=0.0, unit="nats"),
                Diff(
                    "no_sharpening",
                    "teacher_entropy",
                    b_key="log_K",
                    expect="higher",
                    factor=0.9,
                    margin=0.0,
                    unit="nats",
                ),
            ),
            ["linear", "embedding_rank", "embedding_std", "teacher_entropy"],
            report=_report("embedding_rank"),
            history=(
                "2026-12-05, commit bfd11d3, after that day's runs: the embedding-rank requirement was "
                "dropped and the teacher's entropy (the paper's measure) decides.",
                VOID,
            ),
        ),
        Claim(
            "moco-momentum",
            "MoCo with momentum 0 (key encoder = query encoder) trains worse than with 0.99.",
            [Arm("m0.99", "mocov2", ("method.momentum=0.99",)), Arm("m0", "mocov2", ("method.momentum=0.0",))],
            linear,
            Diff("m0.99", "linear", "m0"),
            ["linear"],
            history=(VOID,),
        ),
        Claim(
            "mae-mask-ratio",
            "MAE: a high mask ratio (75 %) beats low ones (25 %, 50 %) downstream.",
            [Arm(f"mask{r}", "mae", (f"method.mask_ratio=0.{r}",)) for r in (25, 50, 75)],
            linear,
            All(Diff("mask75", "linear", "mask25"), Diff("mask75", "linear", "mask50")),
            ["linear"],
            history=("until 2026-12-07 only 75 % against 25 % was judged.", VOID),
        ),
        Claim(
            "multi-crop",
            "Multi-crop improves SwAV at little extra cost (equal training time).",
            [Arm("swav_2x", "swav", ("views.num_local=0",)), Arm("swav_2x+6", "swav", ("views.num_local=6",))],
            efficiency_linear,
            Diff("swav_2x+6", "linear", "swav_2x"),
            ["linear", "images_per_s"],
            history=(VOID,),
        ),
        Claim(
            "contrastive-vs-reconstruction",
            "Contrastive features beat reconstruction (autoencoder) features downstream.",
            [simclr_like, Arm("ae", "ae")],
            linear_knn,
            Diff("simclr", "linear", "ae"),
            ["linear", "knn200"],
            history=("until 2026-12-07 SimCLR ran its own wider encoder on 16-px views.", VOID),
        ),
        Claim(
            "pretext-is-task-specific",
            "A rotation-trained encoder is more sensitive to input rotation than a "
            "contrastive one (the linear probe's drop at 45°, in points).",
            [Arm("rotation", "rotation"), simclr_like],
            rotation_sensitivity,
            Diff("rotation", "drop", "simclr"),
            ["clean", "rotated_45", "drop"],
            history=("until 2026-12-07 the drop was relative (held at 0.8 absolute points, under the margin).", VOID),
        ),
        Claim(
            "clip-zero-shot",
            "CLIP's zero-shot classifier is worth a few labels: it beats 1-shot linear probes on "
            "its own features and is beaten by 16-shot ones (SYNTHETIC captions).",
            [Arm("clip", "clip", data="captioned-fashion-mnist")],
            zero_vs_few_shot,
            All(Diff("clip", "zero_shot", b_key="1_shot"), Diff("clip", "16_shot", b_key="zero_shot")),
            ["zero_shot", "1_shot", "2_shot", "4_shot", "16_shot"],
            history=("until 2026-12-07 no margin was applied.", VOID),
        ),
    ]


def claims_by_name(only: list[str] | None = None) -> list[Claim]:
    cs = catalog()
    if not only:
        return cs
    names = [c.name for c in cs]
    unknown = [o for o in only if o not in names]
    if unknown:
        raise SelfsupError(f"unknown claim {unknown[0]!r}: choose from {', '.join(names)}")
    return [c for c in cs if c.name in only]
