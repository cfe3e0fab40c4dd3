"""DINO's attention maps, measured: the [CLS] token's self-attention in the last block of a ViT,
per head, and how well it segments the object.

Caron et al. 2021 (sec. 4.2.1, fig. 1 and 3) show that a self-supervised ViT's [CLS] attention
falls on the foreground object, without any segmentation label: "emergent segmentation". Their
measure thresholds each head's map to keep the patches holding 60 % of its attention mass and
compares with ground-truth masks (Jaccard). Here the ground truth is simple and honest for
Fashion-MNIST-like data: an item's foreground is its non-background pixels (grey level above a
small threshold). The IoU is reported for the trained encoder next to the same architecture at its
random initialisation, so "emergent" is a measured difference, not a picture.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn.functional as F

from selfsup.config import eval_size
from selfsup.engine import labelled_splits, load_run
from selfsup.errors import SelfsupError
from selfsup.nn.classifier import reinitialise
from selfsup.transforms import eval_view


def cls_attention(vit, x: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] -> the [CLS] row of the last block's attention over patches, [N, heads, g, g]."""
    if not hasattr(vit, "last_attention"):
        raise SelfsupError("attention maps need a ViT encoder (e.g. --backbone vit_tiny); this run's encoder has none")
    a = vit.last_attention(x)[:, :, 0, 1:]  # [N, heads, P]
    g = int(round(a.shape[-1] ** 0.5))
    return a.reshape(*a.shape[:2], g, g)


def mass_mask(attn: torch.Tensor, mass: float = 0.6) -> torch.Tensor:
    """Per map, the smallest set of patches holding ``mass`` of the attention (DINO's thresholding):
    [..., g, g] -> bool [..., g, g]."""
    flat = attn.flatten(-2)
    val, idx = flat.sort(-1, descending=True)
    cum = val.cumsum(-1) / val.sum(-1, keepdim=True)
    keep_sorted = (cum - val / val.sum(-1, keepdim=True)) < mass  # include the patch that crosses the mass
    keep = torch.zeros_like(keep_sorted).scatter(-1, idx, keep_sorted)
    return keep.view_as(attn)


def foreground(images: torch.Tensor, threshold: int = 25) -> torch.Tensor:
    """uint8 [N, C, H, W] -> bool [N, H, W]: pixels brighter than ``threshold`` in any channel."""
    return (images > threshold).any(1)


def iou(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Per-sample Jaccard of bool masks [N, H, W] -> [N]."""
    inter = (pred & true).flatten(1).sum(1).float()
    union = (pred | true).flatten(1).sum(1).float().clamp_min(1)
    return inter / union


def attention_iou(vit, x: torch.Tensor, images: torch.Tensor, mass: float = 0.6) -> dict:
    """IoU of each head's thresholded [CLS] attention (upsampled to the image) with the foreground,
    and of the union over heads. x: the evaluation views; images: the same images in uint8."""
    attn = cls_attention(vit, x).float()  # [N, h, g, g]
    keep = mass_mask(attn, mass).float()
    up = F.interpolate(keep, size=images.shape[-2:], mode="nearest").bool()  # [N, h, H, W]
    fg = foreground(images)
    per_head = torch.stack([iou(up[:, h], fg) for h in range(up.shape[1])], 1)  # [N, h]
    return {
        "per_head": per_head.mean(0).tolist(),
        "best_head": per_head.mean(0).max().item(),
        "mean_head": per_head.mean().item(),
        "union_of_heads": iou(up.any(1), fg).mean().item(),
    }


def attention_report(
    run_dir: str | Path, num_images: int = 500, show: int = 6, mass: float = 0.6, device: str = "cpu"
) -> dict:
    """For a run with a ViT encoder: IoU of the attention masks with the foreground (trained and
    random-init), written to RUN_DIR/eval_attention.json, and RUN_DIR/attention.png showing, for
    ``show`` test images, the image, each head's [CLS] attention overlaid, and the thresholded mask."""
    import json

    cfg, method, _ = load_run(run_dir)
    _, test = labelled_splits(cfg)
    size = eval_size(cfg, test.image_size)
    vit = method.evaluated_encoder.to(device).eval()
    images = test.images[:num_images]
    x = eval_view(images, cfg.data.mean, cfg.data.std, size).to(device)
    with torch.no_grad():
        trained = attention_iou(vit, x, images, mass)
        random = attention_iou(reinitialise(copy.deepcopy(vit), 0).eval(), x, images, mass)
    # the floor to read both against: a "mask" of the whole image scores the foreground's area fraction
    fg = foreground(images)
    whole = iou(torch.ones_like(fg), fg).mean().item()
    result = {
        "protocol": "attention",
        "images": len(images),
        "mass": mass,
        "foreground": "grey level > 25 of 255",
        "trained": trained,
        "random_init": random,
        "whole_image": whole,
        "method": cfg.method_name,
        "run": str(run_dir),
    }
    result["picture"] = str(
        _plot(
            vit,
            x[:show],
            images[:show],
            mass,
            Path(run_dir) / "attention.png",
            f"{cfg.method_name}: last-block [CLS] attention per head",
        )
    )
    (Path(run_dir) / "eval_attention.json").write_text(json.dumps(result, indent=1))
    return result


def _plot(vit, x, images, mass, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with torch.no_grad():
        attn = cls_attention(vit, x).float().cpu()  # [n, h, g, g]
    keep = mass_mask(attn, mass).any(1, keepdim=True).float()
    n, h = attn.shape[:2]
    fig, axes = plt.subplots(n, h + 2, figsize=(1.3 * (h + 2), 1.35 * n), squeeze=False)
    for i in range(n):
        img = images[i].float().permute(1, 2, 0).squeeze(-1).numpy() / 255
        norm = lambda a: (a - a.min()) / (a.max() - a.min()).clamp_min(1e-12)  # noqa: E731  each head's own range
        panels = [("image", img, None)] + [(f"head {j}", img, norm(attn[i, j])) for j in range(h)]
        panels.append((f"{100 * mass:g} % mass", img, keep[i, 0]))  # 1 inside the mask, 0 outside
        for ax, (_, im, overlay) in zip(axes[i], panels):
            ax.imshow(im, cmap="gray", vmin=0, vmax=1)
            if overlay is not None:
                ov = F.interpolate(overlay[None, None], size=im.shape[:2], mode="nearest")[0, 0].numpy()
                ax.imshow(ov, cmap="inferno", alpha=0.6, vmin=0, vmax=1)
    return save_grid(fig, axes, [name for name, _, _ in panels], title, path)


def save_grid(fig, axes, titles, title: str, path):
    """A grid of image panels finished the same way (attention.png, dense.png): no ticks, ``titles`` over the
    first row, ``title`` over the figure; saved to ``path`` and closed. Returns ``path``."""
    import matplotlib.pyplot as plt

    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax, name in zip(axes[0], titles):
        ax.set_title(name, fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
