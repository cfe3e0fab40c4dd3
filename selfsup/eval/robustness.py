"""Robustness protocol: a linear probe fitted on clean features, tested on corrupted test images.

The corruptions follow the spirit of ImageNet-C (Hendrycks & Dietterich 2019, "Benchmarking Neural
Network Robustness to Common Corruptions and Perturbations"): five graded severities of additive
Gaussian noise, Gaussian blur, contrast reduction, occlusion by a grey square, and rotation. The
ImageNet-C parameters are for 224-px photographs; the ones below are scaled for 28-32 px images
(blur sigma and the occluder grow with the image side). Severity 0 is the clean image.

Each corruption maps uint8 images [N,C,H,W] to uint8 images of the same shape, deterministically
for a seed, so every method is tested on exactly the same corrupted images.
"""

from __future__ import annotations

import math

import torch
import torchvision.transforms.v2.functional as TF

from selfsup.errors import SelfsupError
from selfsup.transforms.pretext import block_masks

# per severity 1..5; noise std and contrast factor in [0, 1] intensity units, blur sigma in pixels
# of a 28-px image, occlusion as the fraction of the image area covered, rotation in degrees
SEVERITIES = {
    "noise": (0.04, 0.08, 0.12, 0.18, 0.26),  # ImageNet-C gaussian_noise: .08 ... .38
    "blur": (0.5, 0.75, 1.0, 1.5, 2.0),
    "contrast": (0.6, 0.45, 0.3, 0.2, 0.1),  # ImageNet-C: .4 ... .05 (28-px items lose all shape below ~.1)
    "occlusion": (0.05, 0.1, 0.2, 0.3, 0.4),
    "rotation": (10.0, 20.0, 30.0, 45.0, 90.0),
}
CORRUPTIONS = tuple(SEVERITIES)


def corrupt(images: torch.Tensor, kind: str, severity: int, seed: int = 0) -> torch.Tensor:
    """uint8 [N,C,H,W] -> uint8 [N,C,H,W]: ``kind`` at ``severity`` (0 = unchanged, 1..5)."""
    if kind not in SEVERITIES:
        raise SelfsupError(f"unknown corruption {kind!r}: choose from {', '.join(CORRUPTIONS)}")
    if not 0 <= severity <= len(SEVERITIES[kind]):
        raise SelfsupError(f"severity must be 0..{len(SEVERITIES[kind])}, got {severity}")
    if severity == 0:
        return images.clone()
    p = SEVERITIES[kind][severity - 1]
    gen = torch.Generator().manual_seed(seed)
    x = images.float() / 255.0
    n, _, h, w = x.shape
    if kind == "noise":
        x = x + p * torch.randn(x.shape, generator=gen)
    elif kind == "blur":
        sigma = p * h / 28
        k = 2 * math.ceil(3 * sigma) + 1
        x = TF.gaussian_blur(x, [k, k], [sigma, sigma])
    elif kind == "contrast":
        mean = x.mean(dim=(1, 2, 3), keepdim=True)  # per image, as ImageNet-C
        x = (x - mean) * p + mean
    elif kind == "occlusion":  # one grey square of area p, anywhere inside the image
        m = block_masks(n, h, "random", round(math.sqrt(p * h * w)) / h, 1, gen)
        x = torch.where(m.bool(), torch.full_like(x, 0.5), x)
    else:  # rotation by +-p degrees (random sign per image), black corners
        sign = torch.randint(0, 2, (n,), generator=gen).bool()
        out = x.clone()
        for s, angle in ((sign, p), (~sign, -p)):
            if s.any():
                out[s] = TF.rotate(x[s], angle, interpolation=TF.InterpolationMode.BILINEAR, fill=0.0)
        x = out
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def robustness_curves(
    probe, features_of, test_images: torch.Tensor, test_labels: torch.Tensor, kinds=CORRUPTIONS, seed: int = 0
) -> dict:
    """Accuracy of a fitted ``probe`` (selfsup.eval.linear.Probe) on features of corrupted test images.

    features_of: uint8 images [N,C,H,W] -> features [N, D] (the frozen encoder, or raw pixels).
    Returns {"clean": acc, "<kind>": [acc at severity 1..5], ..., "mean_corrupted": mean over all}.
    """
    out = {"clean": probe.accuracy(features_of(test_images), test_labels)}
    for kind in kinds:
        out[kind] = [
            probe.accuracy(features_of(corrupt(test_images, kind, s, seed)), test_labels)
            for s in range(1, len(SEVERITIES[kind]) + 1)
        ]
    out["mean_corrupted"] = sum(sum(out[k]) for k in kinds) / sum(len(out[k]) for k in kinds)
    return out


def plot_robustness(results: dict[str, dict], example: torch.Tensor, path, title: str = ""):
    """PNG: accuracy vs severity per corruption (one line per feature set in ``results``, e.g. the
    encoder and raw pixels), and a strip of one test image [C,H,W] under every corruption."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = [k for k in CORRUPTIONS if k in next(iter(results.values()))]
    fig = plt.figure(figsize=(3 * len(kinds), 6.2))
    grid = fig.add_gridspec(2, len(kinds), height_ratios=[1.1, 1])
    for c, kind in enumerate(kinds):
        ax = fig.add_subplot(grid[0, c])
        for (name, res), style in zip(results.items(), ("-o", "--s", ":^")):
            ax.plot(range(6), [100 * res["clean"]] + [100 * a for a in res[kind]], style, label=name, ms=4)
        ax.set(title=kind, xlabel="severity", ylim=(0, 100))
        ax.grid(alpha=0.3)
        if c == 0:
            ax.set_ylabel("linear-probe top-1 (%)")
            ax.legend(fontsize=8)
        sub = grid[1, c].subgridspec(2, 3, wspace=0.05, hspace=0.05)
        for s in range(6):
            a = fig.add_subplot(sub[s // 3, s % 3])
            img = corrupt(example[None], kind, s)[0]
            a.imshow(img.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=255)
            a.set_xticks([])
            a.set_yticks([])
            a.set_title(f"s{s}", fontsize=7, pad=1)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
