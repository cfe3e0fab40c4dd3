"""Label efficiency ("semi"): linear probe and fine-tuning on 1 %, 10 % and 100 % of the labels, next
to the same architecture trained from scratch on the same labels, and (``semi_methods``) the
semi-supervised methods of selfsup.semi from the encoder and from scratch, which use the unlabelled
rest of the training split too.

This is the comparison behind the field's first promise (Doersch 2015, Gidaris 2018's rotation vs
supervised curve, SimCLR's semi-supervised table): with few labels a pretrained encoder should beat
supervised training from scratch, and the gap should close as labels grow. Subsets are
class-balanced and seeded (``balanced_indices``), the same for every method and protocol.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from selfsup.data.dataset import balanced_indices
from selfsup.engine import InputSpec
from selfsup.errors import SelfsupError
from selfsup.eval.distill import DistillConfig, distill, student_like
from selfsup.eval.finetune import FinetuneConfig, finetune, finetune_classifier
from selfsup.eval.features import raw_pixel_features
from selfsup.eval.linear import linear_probe
from selfsup.semi import create_semi_method
from selfsup.semi.train import train_semi

FRACTIONS = (0.01, 0.1, 1.0)


def per_class_fraction(labels: torch.Tensor, per_class: int) -> float:
    """The fraction of ``labels`` that ``balanced_indices`` turns into ``per_class`` images of every class."""
    return min(1.0, per_class * (int(labels.max()) + 1) / len(labels))


def semi_supervised(
    encoder: torch.nn.Module,
    train,
    test,
    train_features: torch.Tensor,
    test_features: torch.Tensor,
    mean,
    std,
    size: int,
    fractions=FRACTIONS,
    ft: FinetuneConfig = FinetuneConfig(),
    device="cpu",
    progress: bool = False,
    finetune_encoder: torch.nn.Module | None = None,
    finetune_up_to: float = 1.0,
    semi_methods: tuple[str, ...] = (),
    semi_steps: int = 1000,
    distill_epochs: int = 0,
) -> dict:
    """Per fraction: {"fraction", "num_labelled", "linear", "raw_pixels", "finetune", "scratch"} (test
    top-1, fractions of 1). ``train_features``/``test_features``: the frozen encoder's features of all
    of ``train`` and ``test`` (cached by the caller); the probe sees only the labelled subset's rows,
    and so does the probe on raw pixels (the reference a pretraining must beat). Fine-tuning and the
    from-scratch baseline run at fractions up to ``finetune_up_to`` (None above it: at 100 % of a
    60k set each is hours on a CPU; 0 leaves both out). ``ft`` sets the fine-tuning recipe (its
    ``fraction`` and ``from_scratch`` are set here). ``semi_methods`` (e.g. fixmatch, mixmatch), at the
    same fractions as fine-tuning: each for ``semi_steps`` at its paper's settings, from the encoder
    (key "fixmatch") and from random weights ("fixmatch_scratch"). ``distill_epochs`` > 0 adds SimCLR v2's third
    step where fine-tuning runs (key "distill"): the fine-tuned classifier teaches a new network of the same
    architecture from random weights on every training image without its label (selfsup.eval.distill), for
    that many epochs; "distill_agreement" is the fraction of test images where the student predicts the
    teacher's class."""
    bad = [f for f in fractions if not 0.0 < f <= 1.0]
    if bad:
        raise SelfsupError(f"label fractions must be in (0, 1], e.g. 0.01,0.1,1; got {bad[0]}")
    raw_tr, raw_te = raw_pixel_features(train.images), raw_pixel_features(test.images)
    spec = InputSpec(train.channels, train.image_size, size, tuple(mean), tuple(std))
    rows = []
    num_classes = int(max(train.labels.max(), test.labels.max())) + 1
    start = encoder if finetune_encoder is None else finetune_encoder  # what fine-tuning and the semi methods train
    for f in fractions:
        idx = balanced_indices(train.labels, f, ft.seed)
        lin = linear_probe(train_features[idx], train.labels[idx], test_features, test.labels, seed=ft.seed)
        raw = linear_probe(raw_tr[idx], train.labels[idx], raw_te, test.labels, seed=ft.seed)
        row = {
            "fraction": f,
            "num_labelled": len(idx),
            "linear": lin["top1"],
            "raw_pixels": raw["top1"],
            "finetune": None,
            "scratch": None,
        }
        if f <= finetune_up_to:
            teacher, tuned = finetune_classifier(
                start, train, test, mean, std, size, replace(ft, fraction=f, from_scratch=False), device, progress
            )
            scratch = finetune(
                encoder, train, test, mean, std, size, replace(ft, fraction=f, from_scratch=True), device, progress
            )
            row.update(
                {
                    "finetune": tuned["top1"],
                    "scratch": scratch["top1"],
                    "finetune_epochs": tuned["epochs"],
                    "finetune_steps": tuned["steps"],
                }
            )
            if distill_epochs > 0:
                student = student_like(start, num_classes, ft.seed)
                dcfg = DistillConfig(
                    epochs=distill_epochs,
                    seed=ft.seed,
                    flip_p=ft.flip_p,
                    precision=ft.precision,
                    channels_last=ft.channels_last,
                )
                d = distill(teacher, student, train.images, test, mean, std, size, dcfg, device, progress)
                row.update({"distill": d["student_top1"], "distill_agreement": d["agreement"]})
            for name in semi_methods:
                for key, from_scratch in ((name, False), (f"{name}_scratch", True)):
                    method, cfg = create_semi_method(
                        name,
                        {
                            "steps": semi_steps,
                            "seed": ft.seed,
                            "flip_p": ft.flip_p,
                            "precision": ft.precision,
                            "channels_last": ft.channels_last,
                        },
                    )
                    _, res = train_semi(
                        method,
                        cfg,
                        start,
                        train.subset(idx),
                        train,
                        spec,
                        num_classes,
                        test,
                        from_scratch,
                        device,
                        progress,
                    )
                    row[key] = res["top1"]
        rows.append(row)
    return {
        "protocol": "semi",
        "rows": rows,
        "seed": ft.seed,
        "semi_methods": list(semi_methods),
        "semi_steps": semi_steps if semi_methods else None,
        "distill_epochs": distill_epochs or None,
    }


def plot_semi(rows: list[dict], path, title: str = ""):
    """PNG: test top-1 against the percentage of labels (log axis) for the three protocols."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pct = [100 * r["fraction"] for r in rows]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    extra = [
        k
        for k in rows[0]
        if k not in ("fraction", "num_labelled", "linear", "raw_pixels", "finetune", "scratch")
        and not k.startswith("finetune_")
        and not k.endswith("_agreement")  # a fraction of agreeing predictions, not an accuracy
    ]
    for key, label, style in (
        ("finetune", "fine-tuned (pretrained)", "-o"),
        ("linear", "linear probe (frozen)", "--s"),
        ("scratch", "supervised from scratch", ":^"),
        ("raw_pixels", "linear on raw pixels", ":x"),
        *((k, k.replace("_scratch", " (from scratch)"), ":d" if k.endswith("_scratch") else "-d") for k in extra),
    ):
        pts = [(p, 100 * r[key]) for p, r in zip(pct, rows) if r.get(key) is not None]
        if pts:
            ax.plot(*zip(*pts), style, label=label)
    ax.set_xscale("log")
    ax.set_xticks(pct, [f"{p:g} %" for p in pct])
    ax.set(xlabel="labels used", ylabel="test top-1 (%)", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
