"""The fifteen claims of the field's study notes, each as a small experiment: arms, a measure, a rule.

Measures reuse the evaluation suite (selfsup.eval.run) and cache in the run directory. Accuracies
are in percent; margins (the difference that counts with one seed) are in the same units.
"""
from __future__ import annotations

from pathlib import Path

from selfsup.engine import labelled_splits, run_split
from selfsup.bench import mean_std
from selfsup.claims.experiment import Arm, Claim, compare, verdict_from
from selfsup.errors import SelfsupError
from selfsup.config import eval_size, load_run_config
from selfsup.eval.finetune import FinetuneConfig
from selfsup.eval.linear import linear_probe
from selfsup.eval.run import evaluate, load_run, run_features
from selfsup.nn.features import extract_features

MARGIN = 1.0  # accuracy points that count as a difference with one seed


# ---------------------------------------------------------------- measures


def _eval(run: Path, protocol: str, **opts) -> dict:
    import json

    cached = run / f"eval_{protocol}.json"
    if cached.is_file() and not opts:
        return json.loads(cached.read_text())
    return evaluate(run, protocol, **opts)


def linear(run: Path) -> dict:
    return {"linear": 100 * _eval(run, "linear")["top1"]}


def linear_knn(run: Path) -> dict:
    return {**linear(run), "knn200": 100 * _eval(run, "knn")["top1_k200"]}


def collapse(run: Path) -> dict:
    import json

    s = json.loads((run / "summary.json").read_text())
    return {**linear(run), "embedding_rank": s.get("diag/embedding_rank"), "embedding_std": s.get("diag/embedding_std")}


def teacher_entropy(run: Path) -> dict:
    """``collapse`` plus the two collapse modes of DINO (sec. 5.3, fig. 7): the entropy of the teacher's
    output distribution over the last logged steps, in nats — near 0 when one dimension dominates
    (sharpening alone), near log K when the output is uniform (centering alone)."""
    import json
    import math

    import yaml

    logs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    ent = [r["teacher_entropy"] for r in logs if isinstance(r.get("teacher_entropy"), (int, float))][-5:]
    k = yaml.safe_load((run / "config.yaml").read_text())["method"]["out_dim"]
    return {**collapse(run), "teacher_entropy": sum(ent) / len(ent), "log_K": math.log(k)}


def head_vs_features(run: Path) -> dict:
    """Linear probe on the encoder's features h and on the projection head's output z = g(h)."""
    cfg, method, _ = load_run(run)
    train, test = labelled_splits(cfg)
    kw = dict(mean=cfg.data.mean, std=cfg.data.std, size=eval_size(cfg, train.image_size), forward=method.embedding)
    ztr, zte = extract_features(method, train.images, **kw), extract_features(method, test.images, **kw)
    return {"linear_h": 100 * _eval(run, "linear")["top1"],
            "linear_z": 100 * linear_probe(ztr, train.labels, zte, test.labels)["top1"]}


def negatives(run: Path) -> dict:
    d = _eval(run, "diagnostics")
    bound = d.get("infonce_bound", {}).get("nats", {})
    return {**linear(run), **{f"bound_N{n}": v for n, v in bound.items()}}


def label_efficiency(run: Path) -> dict:
    """Linear probe, fine-tuning and a supervised model from scratch at 1 / 10 / 100 % of the labels, each
    trained for the same optimiser steps: as many as 2 epochs of all labels take. (At 300 steps the 100 %
    scratch model saw a third of an epoch, and the gap at 100 % measured its underfitting.)"""
    import math

    n = len(run_split(load_run_config(run), "train"))
    res = _eval(run, "semi", steps=math.ceil(2 * n / FinetuneConfig.batch_size))
    out = {}
    for r in res["rows"]:
        pct = f"{100 * r['fraction']:g}pct"
        out.update({f"pretrained_{pct}": 100 * max(r["linear"], r["finetune"]), f"scratch_{pct}": 100 * r["scratch"]})
    return out


def finetune_vs_linear(run: Path) -> dict:
    """Linear probe (converged, on cached features) against fine-tuning on all labels for 2 epochs: 500 steps
    (half an epoch) left every fine-tune underfit — train top-1 no higher than test — and below its probe."""
    ft = _eval(run, "finetune", fraction=1.0, epochs=2)
    return {**linear(run), "finetune": 100 * ft["top1"]}


def rotation_sensitivity(run: Path) -> dict:
    r = _eval(run, "robustness", kinds=("rotation",))["encoder"]
    return {"clean": 100 * r["clean"], "rotated_45": 100 * r["rotation"][3],
            "relative_drop": 100 * (r["clean"] - r["rotation"][3]) / r["clean"]}


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
        idx = torch.cat([torch.nonzero(ytr == c).flatten()[torch.randperm(int((ytr == c).sum()), generator=g)[:k]]
                         for c in range(int(ytr.max()) + 1)])
        out[f"{k}_shot"] = 100 * linear_probe(ftr[idx], ytr[idx], fte, yte, val_fraction=0.0 if k < 4 else 0.25,
                                              l2_grid=(1e-3,) if k < 4 else (1e-4, 1e-3, 1e-2))["top1"]
    return out


# ---------------------------------------------------------------- rules


def _vals(per_arm, arm, key):
    return [m[key] for m in per_arm[arm] if isinstance(m.get(key), (int, float))]


def higher(arm_a: str, arm_b: str, key: str, margin: float = MARGIN, what: str = ""):
    def decide(per_arm):
        outcome, d = compare(_vals(per_arm, arm_a, key), _vals(per_arm, arm_b, key), margin)
        return verdict_from(outcome), f"{what or key}: {arm_a} − {arm_b} = {d:+.2f}"
    return decide


def collapses(normal: str, ablated: list[str], key: str = "embedding_rank", factor: float = 0.25):
    """Holds when each ablated arm's effective rank falls below ``factor`` x the normal arm's. The linear
    probes are reported beside it: a collapse of the embedding (what the loss sees) need not take the
    encoder's features down to a random encoder's (the page's reference row)."""
    def decide(per_arm):
        base = mean_std(_vals(per_arm, normal, key))[0]
        parts, ok = [], True
        for a in ablated:
            v = mean_std(_vals(per_arm, a, key))[0]
            parts.append(f"{a} {key} {v:.1f} vs {base:.1f}")
            ok &= v < factor * base
        probes = {a: mean_std(_vals(per_arm, a, "linear"))[0] for a in [normal, *ablated]}
        linear = ", ".join(f"{a} {v:.1f}" for a, v in probes.items() if v is not None)
        return ("holds" if ok else "does not hold"), ("; ".join(parts) + f" (collapse: below {factor:g}x)"
                                                      + (f"; linear {linear}" if linear else ""))
    return decide


def increasing(arms: list[str], key: str, margin: float = MARGIN):
    def decide(per_arm):
        first, last = arms[0], arms[-1]
        outcome, d = compare(_vals(per_arm, last, key), _vals(per_arm, first, key), margin)
        means = ", ".join(f"{a} {mean_std(_vals(per_arm, a, key))[0]:.2f}" for a in arms)
        return verdict_from(outcome), f"{key} across arms: {means}"
    return decide


def _negatives_rule(per_arm):
    """The verdict is the first half of the claim: does the linear probe rise from the smallest training
    batch to the largest (at equal wall-clock time, so a larger batch takes fewer steps)? The second half
    is reported: the bound log N - L measured at N = 32 and N = 512 candidates, for every arm."""
    arms = ["b64", "b128", "b256", "b512"]
    verdict, why = increasing(arms, "linear")(per_arm)
    b32 = {a: mean_std(_vals(per_arm, a, "bound_N32"))[0] for a in arms}
    b512 = {a: mean_std(_vals(per_arm, a, "bound_N512"))[0] for a in arms}
    if all(v is not None for v in [*b32.values(), *b512.values()]):
        grows = all(b512[a] > b32[a] for a in arms)
        why += (f"; the bound (nats) {'grows' if grows else 'does not grow'} with the N it is measured at "
                f"(N = 32 -> 512: " + ", ".join(f"{a} {b32[a]:.2f} -> {b512[a]:.2f}" for a in arms)
                + f"), and across training batches from {b512['b64']:.2f} (b64) to {b512['b512']:.2f} (b512) "
                "at N = 512")
    return verdict, why


def _label_efficiency_rule(per_arm):
    (arm,) = per_arm
    gap = {p: mean_std(_vals(per_arm, arm, f"pretrained_{p}"))[0] - mean_std(_vals(per_arm, arm, f"scratch_{p}"))[0]
           for p in ("1pct", "10pct", "100pct")}
    holds = gap["1pct"] > MARGIN and gap["1pct"] > gap["100pct"]
    why = ", ".join(f"{p}: pretrained − scratch {g:+.2f}" for p, g in gap.items())
    return ("holds" if holds else "does not hold" if gap["1pct"] < -MARGIN else "inconclusive at this scale"), why


def _finetune_rule(per_arm):
    gaps = {a: mean_std(_vals(per_arm, a, "finetune"))[0] - mean_std(_vals(per_arm, a, "linear"))[0]
            for a in per_arm}
    holds = all(g > 0 for g in gaps.values()) and max(gaps, key=gaps.get) == "mae"
    return ("holds" if holds else "does not hold"), ", ".join(f"{a}: fine-tune − linear {g:+.2f}" for a, g in gaps.items())


def _queue_rule(per_arm):
    a, _ = compare(_vals(per_arm, "mocov2_b64", "linear"), _vals(per_arm, "simclr_b64", "linear"), MARGIN)
    b, d = compare(_vals(per_arm, "mocov2_b64", "linear"), _vals(per_arm, "simclr_b512", "linear"), MARGIN)
    holds = a != "lower" and b != "lower"
    return ("holds" if holds else "does not hold"), (f"MoCo at batch 64 vs SimCLR at 64: {a}; vs SimCLR at 512: {b} "
                                                     f"({d:+.2f} points)")


def _augmentation_rule(per_arm):
    full = mean_std(_vals(per_arm, "all", "linear"))[0]
    drop = {a: full - mean_std(_vals(per_arm, a, "linear"))[0] for a in ("no_crop", "no_colour", "no_blur")}
    holds = min(drop["no_crop"], drop["no_colour"]) > drop["no_blur"] and drop["no_blur"] >= -MARGIN
    return ("holds" if holds else "does not hold"), "linear when one is removed: " + ", ".join(
        f"{a} {-d:+.2f}" for a, d in drop.items())


def _byol_rule(per_arm):
    """No BN in the heads: the embedding collapses (rank). GN + WS: it trains — judged as Richemond et al.
    2020 did, by accuracy: its linear probe within the one-seed margin of BN's (or above)."""
    verdict, why = collapses("byol", ["byol_no_bn"])(per_arm)
    outcome, d = compare(_vals(per_arm, "byol_gn_ws", "linear"), _vals(per_arm, "byol", "linear"), MARGIN)
    trains = outcome != "lower"
    gn = mean_std(_vals(per_arm, "byol_gn_ws", "embedding_rank"))[0]
    return ("holds" if verdict == "holds" and trains else "does not hold"), (
        f"{why}; byol_gn_ws {'trains' if trains else 'falls short'}: linear {d:+.2f} against BN's, "
        f"embedding rank {gn:.1f}")


def _dino_rule(per_arm):
    """Collapse as the paper measures it (sec. 5.3, fig. 7), on the teacher's output distribution: without
    centering its entropy falls below half of DINO's (one dimension dominates), without sharpening it stays
    above 90 % of log K (uniform). The embedding's effective rank is reported beside it, not judged: a
    uniform teacher output still leaves the student's 256-d bottleneck some rank."""
    ent = {a: mean_std(_vals(per_arm, a, "teacher_entropy"))[0] for a in per_arm}
    rank = {a: mean_std(_vals(per_arm, a, "embedding_rank"))[0] for a in per_arm}
    log_k = mean_std(_vals(per_arm, "dino", "log_K"))[0]
    dominated, uniform = ent["no_centering"] < 0.5 * ent["dino"], ent["no_sharpening"] > 0.9 * log_k
    why = (f"teacher entropy (nats, log K = {log_k:.2f}): dino {ent['dino']:.2f}, no_centering "
           f"{ent['no_centering']:.2f} ({'one dimension dominates' if dominated else 'not dominated'}), "
           f"no_sharpening {ent['no_sharpening']:.2f} ({'uniform' if uniform else 'not uniform'}); embedding rank "
           + ", ".join(f"{a} {r:.1f}" for a, r in rank.items()))
    return ("holds" if dominated and uniform else "does not hold"), why


def _few_shot_rule(per_arm):
    (arm,) = per_arm
    m = {k: mean_std(_vals(per_arm, arm, k))[0] for k in ("zero_shot", "1_shot", "2_shot", "4_shot", "16_shot")}
    holds = m["zero_shot"] > m["1_shot"] and m["zero_shot"] < m["16_shot"]
    return ("holds" if holds else "does not hold"), ", ".join(f"{k} {v:.1f}" for k, v in m.items())


# ---------------------------------------------------------------- the claims

LOW_LABEL = "With few labels, a pretext-trained encoder (rotation) beats a supervised model trained from scratch " \
            "on those labels; the gap closes as labels grow (1 %, 10 %, 100 %)."


def catalog() -> list[Claim]:
    simclr = Arm("simclr", "simclr")
    return [
        Claim("label-efficiency", LOW_LABEL, [Arm("rotation", "rotation")], label_efficiency, _label_efficiency_rule,
              ["pretrained_1pct", "scratch_1pct", "pretrained_10pct", "scratch_10pct", "pretrained_100pct",
               "scratch_100pct"]),
        Claim("finetune-vs-linear", "Fine-tuning beats linear probing; the gap is largest for MAE.",
              [simclr, Arm("mae", "mae"), Arm("rotation", "rotation")], finetune_vs_linear, _finetune_rule,
              ["linear", "finetune"]),
        Claim("more-negatives", "More negatives help: SimCLR accuracy and the InfoNCE bound log N − L grow with N "
              "(the batch).", [Arm(f"b{b}", "simclr", (f"train.batch_size={b}",)) for b in (64, 128, 256, 512)],
              negatives, _negatives_rule, ["linear", "bound_N32", "bound_N512"]),
        Claim("queue-decouples", "MoCo's queue decouples negatives from batch size: MoCo at a small batch with a "
              "large queue matches SimCLR at a large batch.",
              [Arm("mocov2_b64", "mocov2", ("train.batch_size=64",)), Arm("simclr_b64", "simclr", ("train.batch_size=64",)),
               Arm("simclr_b512", "simclr", ("train.batch_size=512",))], linear, _queue_rule, ["linear"]),
        Claim("projection-head", "Features before the projection head (h) probe better than after it (z).",
              [simclr], head_vs_features, _head_rule, ["linear_h", "linear_z"]),
        Claim("augmentations", "Random crop and colour distortion matter most, blur helps a little (SimCLR with its "
              "Fashion-MNIST recipe on the SYNTHETIC tinted set — a random hue per image, independent of the class — "
              "one augmentation removed at a time).",
              [Arm(name, "simclr", views, data="tinted-fashion-mnist", recipe_of="fashion-mnist") for name, views in (
                  ("all", ("views.blur_p=[0.5,0.5]",)),
                  ("no_crop", ("views.blur_p=[0.5,0.5]", "views.crop_scale=[1.0,1.0]")),
                  ("no_colour", ("views.blur_p=[0.5,0.5]", "views.jitter_p=0.0", "views.gray_p=0.0")),
                  ("no_blur", ("views.blur_p=[0.0,0.0]",)))],
              linear, _augmentation_rule, ["linear"]),
        Claim("byol-needs-bn", "BYOL without BatchNorm in its heads collapses; with another normalisation "
              "(GroupNorm + weight standardisation) it trains.",
              [Arm("byol", "byol"), Arm("byol_no_bn", "byol", ("method.head_bn=false",)),
               Arm("byol_gn_ws", "byol", ("method.head_bn=false", "method.head_gn_ws=true"))], collapse,
              _byol_rule, ["linear", "embedding_rank", "embedding_std"]),
        Claim("simsiam-stop-gradient", "SimSiam without stop-gradient collapses.",
              [Arm("simsiam", "simsiam"), Arm("no_stop_gradient", "simsiam", ("method.stop_gradient=false",))],
              collapse, collapses("simsiam", ["no_stop_gradient"]), ["linear", "embedding_rank", "embedding_std"]),
        Claim("dino-centering-sharpening", "DINO needs both centering and sharpening: without either the output "
              "collapses (one dimension dominates / the output goes uniform).",
              [Arm("dino", "dino"), Arm("no_centering", "dino", ("method.center=false",)),
               Arm("no_sharpening", "dino", ("method.teacher_temp=0.1", "method.warmup_teacher_temp=0.1"))],
              teacher_entropy, _dino_rule, ["linear", "embedding_rank", "embedding_std", "teacher_entropy"]),
        Claim("moco-momentum", "MoCo with momentum 0 (key encoder = query encoder) trains worse than with 0.99.",
              [Arm("m0.99", "mocov2", ("method.momentum=0.99",)), Arm("m0", "mocov2", ("method.momentum=0.0",))],
              linear, higher("m0.99", "m0", "linear"), ["linear"]),
        Claim("mae-mask-ratio", "MAE: a high mask ratio (75 %) beats low ones (25 %, 50 %) downstream.",
              [Arm(f"mask{r}", "mae", (f"method.mask_ratio=0.{r}",)) for r in (25, 50, 75)], linear,
              increasing(["mask25", "mask50", "mask75"], "linear"), ["linear"]),
        Claim("multi-crop", "Multi-crop improves SwAV at little extra cost (equal training time).",
              [Arm("swav_2x", "swav", ("views.num_local=0",)), Arm("swav_2x+6", "swav", ("views.num_local=6",))],
              efficiency_linear,
              higher("swav_2x+6", "swav_2x", "linear"), ["linear", "images_per_s"]),
        Claim("contrastive-vs-reconstruction", "Contrastive features beat reconstruction (autoencoder) features "
              "downstream.", [simclr, Arm("ae", "ae")], linear_knn, higher("simclr", "ae", "linear"),
              ["linear", "knn200"]),
        Claim("pretext-is-task-specific", "A rotation-trained encoder is more sensitive to input rotation than a "
              "contrastive one (relative accuracy drop at 45°).", [Arm("rotation", "rotation"), simclr],
              rotation_sensitivity, higher("rotation", "simclr", "relative_drop"),
              ["clean", "rotated_45", "relative_drop"]),
        Claim("clip-zero-shot", "CLIP's zero-shot classifier is worth a few labels: it beats 1-shot linear probes on "
              "its own features and is beaten by 16-shot ones (SYNTHETIC captions).",
              [Arm("clip", "clip", data="captioned-fashion-mnist")], zero_vs_few_shot, _few_shot_rule,
              ["zero_shot", "1_shot", "2_shot", "4_shot", "16_shot"]),
    ]


def _head_rule(per_arm):
    outcome, d = compare(_vals(per_arm, "simclr", "linear_h"), _vals(per_arm, "simclr", "linear_z"), MARGIN)
    return verdict_from(outcome), f"linear on h − linear on z = {d:+.2f}"


def claims_by_name(only: list[str] | None = None) -> list[Claim]:
    cs = catalog()
    if not only:
        return cs
    names = [c.name for c in cs]
    unknown = [o for o in only if o not in names]
    if unknown:
        raise SelfsupError(f"unknown claim {unknown[0]!r}: choose from {', '.join(names)}")
    return [c for c in cs if c.name in only]
