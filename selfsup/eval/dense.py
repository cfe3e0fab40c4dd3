"""Dense evaluation: a linear probe on the frozen encoder's feature *map*, per pixel (linear segmentation).

Global methods learn one vector per image; dense methods (DenseCL, VICRegL) claim better features at
every location. VICRegL (Bardes et al. 2022, sec. 4.2) measures that by "linear segmentation": the
backbone is frozen, a linear layer maps each location of its last feature map to class scores, the
scores are upsampled bilinearly to the image and trained with per-pixel cross-entropy; the score is the
mean IoU. Here the same probe. A 1x1 linear map commutes with bilinear interpolation, so the scores are
computed at the map's resolution ([N, K, g, g]) and then upsampled ([N, K, H, W]): the same probe as a
linear layer on upsampled features, at g^2 / (H W) of its cost (written here: no library has it).

Ground truth without segmentation labels: the images are single objects on a dark background
(Fashion-MNIST, digits), so a pixel is background when its grey level is at most 25 of 255 in every
channel (``attention.foreground``, the mask of DINO's attention IoU) and otherwise carries the image's
class: K = classes + 1 labels. Scores: mean IoU over the K labels (each label's intersection and union
summed over the test images), the foreground IoU (background against any class) and pixel accuracy.
Read against two floors measured by the same probe: the same architecture at random initialisation
(what the architecture alone gives) and raw pixels (a linear layer on each pixel's own channels, which
separates the object by brightness and knows no class).

The L2 strength is chosen on a held-out tenth of the probe's training images, then the probe is refitted
on all of them (as the global linear probe does); full-batch L-BFGS.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from selfsup.engine import Run, labelled_splits
from selfsup.errors import SelfsupError
from selfsup.eval.attention import foreground, save_grid
from selfsup.eval.linear import holdout_split
from selfsup.nn.classifier import reinitialise
from selfsup.nn.features import extract_features
from selfsup.nn.runtime import Runtime

L2_GRID = (1e-5, 1e-4, 1e-3)
# single objects on a dark background: the sets whose foreground mask is the object
DENSE_DATA = ("fashion-mnist", "digits")


def has_dense_truth(data_name: str) -> bool:
    """Whether the per-pixel ground truth (dark background, one object of the image's class) holds."""
    return any(data_name == d or data_name.endswith("-" + d) for d in DENSE_DATA)


def pixel_labels(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """uint8 [N, C, H, W] and classes [N] -> int64 [N, H, W]: 0 background, class + 1 on the object."""
    return foreground(images).long() * (labels.long() + 1).view(-1, 1, 1)


def feature_maps(encoder, images: torch.Tensor, mean, std, size: int, runtime, batch_size: int) -> torch.Tensor:
    """float32 [N, D, g, g]: ``encoder.forward_maps`` of the evaluation views (frozen, eval mode)."""
    if not callable(getattr(encoder, "forward_maps", None)):
        raise SelfsupError(
            f"the dense probe reads the encoder's feature map (forward_maps), which {type(encoder).__name__} "
            "lacks: train with a selfsup backbone (resnet*, convnet, vit_*)"
        )
    # extract_features keeps each batch's shape: [N, D, g, g]; unsharded (a probe fits on one process)
    return extract_features(
        encoder,
        images,
        mean,
        std,
        size,
        batch_size=batch_size,
        runtime=runtime,
        forward=encoder.forward_maps,
        shard=False,
    )


class DenseProbe:
    """Standardisation per channel + a linear map D -> K at each location, scores upsampled to ``side``;
    ``l2`` its chosen strength, ``val`` {l2: validation mIoU}."""

    def __init__(self, mean, std, lin: torch.nn.Conv2d, side: int, l2: float = 0.0, val: dict | None = None):
        self.mean, self.std, self.lin, self.side, self.l2, self.val = mean, std, lin, side, l2, val or {}

    def scores(self, maps: torch.Tensor) -> torch.Tensor:
        """[N, D, g, g] -> [N, K, side, side]."""
        x = (maps.float() - self.mean.view(1, -1, 1, 1)) / self.std.view(1, -1, 1, 1)
        return _upsample(self.lin(x), self.side)

    @torch.no_grad()
    def predict(self, maps: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        """[N, D, g, g] -> int64 [N, side, side]."""
        return torch.cat([self.scores(maps[i : i + batch_size]).argmax(1) for i in range(0, len(maps), batch_size)])


def _upsample(s: torch.Tensor, side: int) -> torch.Tensor:
    if s.shape[-1] == side:
        return s
    return F.interpolate(s, size=(side, side), mode="bilinear", align_corners=False)


def _fit(x: torch.Tensor, y: torch.Tensor, k: int, l2: float, max_iter: int) -> torch.nn.Conv2d:
    """Minimise per-pixel cross-entropy of upsampled scores + l2 ||W||^2; x standardised [N, D, g, g]."""
    lin = torch.nn.Conv2d(x.shape[1], k, 1)
    assert lin.bias is not None  # built with a bias
    torch.nn.init.zeros_(lin.weight)
    torch.nn.init.zeros_(lin.bias)
    opt = torch.optim.LBFGS(
        lin.parameters(), lr=1, max_iter=max_iter, history_size=20, tolerance_grad=1e-6, line_search_fn="strong_wolfe"
    )

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(_upsample(lin(x), y.shape[-1]), y) + l2 * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return lin


def fit_dense_probe(
    maps: torch.Tensor, y: torch.Tensor, num_labels: int, seed: int = 0, l2_grid=L2_GRID, max_iter: int = 100
) -> DenseProbe:
    """Choose L2 on a seeded tenth of the images (validation mean IoU), refit on all of them."""
    maps = maps.float()
    mean = maps.mean((0, 2, 3))
    std = maps.std(dim=(0, 2, 3)).clamp_min(1e-6)
    x = (maps - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
    tr, va = holdout_split(len(x), 0.1, seed)  # the global linear probe's validation share
    side = y.shape[-1]
    val = {}
    for l2 in l2_grid:
        lin = _fit(x[tr], y[tr], num_labels, l2, max_iter)
        probe = DenseProbe(torch.zeros_like(mean), torch.ones_like(std), lin, side)  # x is standardised already
        val[l2] = segmentation_scores(probe.predict(x[va]), y[va], num_labels)["miou"]
    best = max(val, key=lambda k: (val[k], k))  # ties -> the stronger regularisation
    return DenseProbe(mean, std, _fit(x, y, num_labels, best, max_iter), side, best, val)


def segmentation_scores(pred: torch.Tensor, true: torch.Tensor, num_labels: int) -> dict:
    """Dataset-level scores of int64 label maps [N, H, W]: mIoU over the labels present (in truth or
    prediction), per-label IoU, foreground IoU (label 0 against the rest) and pixel accuracy."""
    conf = torch.bincount((true * num_labels + pred).flatten(), minlength=num_labels**2).view(num_labels, num_labels)
    inter = conf.diag().double()
    union = conf.sum(0).double() + conf.sum(1).double() - inter
    per = torch.where(union > 0, inter / union.clamp_min(1), torch.full_like(union, float("nan")))
    fg_t, fg_p = true > 0, pred > 0
    return {
        "miou": per[union > 0].mean().item(),
        "per_label_iou": [None if v != v else v for v in per.tolist()],
        "foreground_iou": ((fg_t & fg_p).sum() / (fg_t | fg_p).sum().clamp_min(1)).item(),
        "pixel_accuracy": (pred == true).double().mean().item(),
    }


def dense_scores(
    maps_of: Callable[[torch.Tensor], torch.Tensor],
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
    num_classes: int,
    seed: int = 0,
) -> tuple[dict, DenseProbe]:
    """Fit the dense probe on ``maps_of(train_images)`` and score it on the test images."""
    k = num_classes + 1
    train_maps = maps_of(train_images)
    probe = fit_dense_probe(train_maps, pixel_labels(train_images, train_labels), k, seed)
    scores = segmentation_scores(probe.predict(maps_of(test_images)), pixel_labels(test_images, test_labels), k)
    val = {str(l2): v for l2, v in probe.val.items()}
    return {**scores, "l2": probe.l2, "val_miou": val, "map_side": train_maps.shape[-1]}, probe


def dense_report(run: Run, train_images: int = 2000, seed: int = 0, device: str = "cpu", show: int = 6) -> dict:
    """The dense probe of a loaded ``Run`` (selfsup.engine) next to its architecture at random init and raw
    pixels: ``train_images`` training images (a seeded sample) fit each probe, every test image scores it."""
    cfg, spec = run.cfg, run.spec
    if not has_dense_truth(cfg.data.name):
        raise SelfsupError(
            f"the dense probe's ground truth (object = pixels brighter than 25 of 255, labelled with the image's "
            f"class) holds for single objects on a dark background: {', '.join(DENSE_DATA)} and their colour "
            f"variants, not {cfg.data.name!r}; measure this run with knn or linear instead"
        )
    train, test = labelled_splits(cfg)
    assert train.labels is not None and test.labels is not None  # labelled_splits: both labelled
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(train), generator=g)[: min(train_images, len(train))]
    tr_x, tr_y = spec.prepare(train.images[idx]), train.labels[idx]
    te_x, te_y = spec.prepare(test.images), test.labels
    num_classes = int(max(tr_y.max(), te_y.max())) + 1
    rt = Runtime(device, cfg.train.precision)
    encoder = run.encoder.to(rt.device)
    random = reinitialise(copy.deepcopy(encoder), seed)

    def maps_of(enc):
        return lambda images: feature_maps(enc, images, spec.mean, spec.std, spec.size, rt, cfg.eval.batch_size)

    def raw(images):  # each pixel's own channels in [0, 1]: a "map" at the image's resolution
        return images.float() / 255

    inputs = {"trained": maps_of(encoder), "random_init": maps_of(random), "raw_pixels": raw}
    rows, probes = {}, {}
    for name, fn in inputs.items():
        rows[name], probes[name] = dense_scores(fn, tr_x, tr_y, te_x, te_y, num_classes, seed)
    g_side = rows["trained"]["map_side"]
    result = {
        "protocol": "dense",
        "probe": "linear per location, scores upsampled bilinearly; L2 chosen on a tenth of the probe's images",
        "ground_truth": "background: grey level <= 25 of 255; else the image's class",
        "map": f"{g_side}x{g_side}",
        "train_images": len(idx),
        "test_images": len(te_x),
        "seed": seed,
        **rows,
    }
    if show:
        pred = {name: probes[name].predict(fn(te_x[:show])) for name, fn in inputs.items()}
        result["picture"] = str(
            plot_dense(
                te_x[:show],
                pixel_labels(te_x[:show], te_y[:show]),
                pred,
                num_classes + 1,
                Path(run.dir) / "dense.png",
                f"{cfg.method_name}: linear segmentation of test images",
            )
        )
    return result


def plot_dense(images, truth, preds: dict, k: int, path: Path, title: str) -> Path:
    """Rows of test images: the image, its label map, and each probe's predicted map (one colour a label)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(images)
    cols = [("image", None), ("truth", truth)] + [(name.replace("_", " "), p) for name, p in preds.items()]
    fig, axes = plt.subplots(n, len(cols), figsize=(1.4 * len(cols), 1.4 * n), squeeze=False)
    for i in range(n):
        img = images[i].float().permute(1, 2, 0).squeeze(-1).numpy() / 255
        for ax, (_, maps) in zip(axes[i], cols):
            if maps is None:
                ax.imshow(img, cmap="gray", vmin=0, vmax=1)
            else:
                ax.imshow(maps[i].numpy(), cmap="tab20", vmin=0, vmax=max(k - 1, 1), interpolation="nearest")
    return save_grid(fig, axes, [name for name, _ in cols], title, path)
