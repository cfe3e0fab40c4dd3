"""Working with the unlabelled images through a run's embeddings: which images to label next, and
which images are near each other (neighbours a person can look at, near-duplicates to remove).

Which to label (``select_images``), from the L2-normalised features of the pool:

- ``kcenter``: greedy k-center, the core-set selection of Sener & Savarese 2018 ("Active Learning
  for Convolutional Neural Networks: A Core-Set Approach"): each pick is the image farthest from
  every image picked so far, so the picks cover the embedding space (diverse; outliers included).
- ``kmeans``: k-means with k = n, then the image nearest each centroid (representative picks, in
  proportion to where the data is dense; the "typical" images of ProbCover/TypiClust's spirit).
- ``random``: a seeded uniform sample, the baseline both must beat (benchmarks/selection.py).

Measured on Fashion-MNIST (docs/benchmarks.md, benchmarks/selection.py; validation accuracy of a
linear probe on the picks): k-means representatives beat random by 2.8 points at 100 labels and
matched it at 500; k-center greedy fell 12 and 6 points below random, because the farthest images
are the atypical ones — the low-budget finding of Hacohen et al. 2022 ("Active Learning on a
Budget"). ``kmeans`` is therefore the default.

k-means is scikit-learn's (k-means++ seeding); k-center greedy is a dozen lines of torch
here (no maintained library ships it for plain tensors).
"""

from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from selfsup.data import DatasetError, ImageDataset
from selfsup.engine import Run
from selfsup.errors import SelfsupError
from selfsup.methods.base import Picture
from selfsup.train.pictures import draw
from selfsup.data.labelled import decode_files
from selfsup.data.folder import load_imagefolder

STRATEGIES = ("kmeans", "kcenter", "random")


def kcenter_greedy(x: torch.Tensor, n: int, chunk: int = 8192) -> torch.Tensor:
    """Indices [n] of a greedy k-center cover of x [N, D] (Euclidean): start at the point nearest
    the mean, then repeatedly take the point farthest from its nearest chosen one (deterministic)."""
    x = x.float()
    first = int(((x - x.mean(0)) ** 2).sum(1).argmin())
    chosen = [first]
    dist = torch.full((len(x),), math.inf)
    for _ in range(n - 1):
        c = x[chosen[-1]]
        for i in range(0, len(x), chunk):  # min distance to the chosen set, updated with the newest pick
            dist[i : i + chunk] = torch.minimum(dist[i : i + chunk], ((x[i : i + chunk] - c) ** 2).sum(1))
        chosen.append(int(dist.argmax()))
    return torch.tensor(chosen)


def kmeans_representatives(x: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """Indices [n] of the image nearest each of n k-means centroids of x [N, D] (distinct images)."""
    from sklearn.cluster import KMeans

    # k-means++ seeding (not DeepCluster's random init, selfsup.nn.kmeans): a selection wants every
    # dense region to get a centroid, and random init leaves some with two and others with none
    km = KMeans(n, init="k-means++", n_init=1, max_iter=50, random_state=seed).fit(x.float().numpy())
    d = torch.cdist(torch.from_numpy(km.cluster_centers_).float(), x.float())  # [n, N]
    picked: list[int] = []
    taken = torch.zeros(len(x), dtype=torch.bool)
    for row in d:  # a centroid's nearest image, or its next nearest when another centroid took it
        row = row.masked_fill(taken, math.inf)
        j = int(row.argmin())
        taken[j] = True
        picked.append(j)
    return torch.tensor(picked)


def select_indices(features: torch.Tensor, n: int, strategy: str = "kmeans", seed: int = 0) -> torch.Tensor:
    """The ``n`` images of the pool (features [N, F]) to label first, by ``strategy`` (STRATEGIES)."""
    if strategy not in STRATEGIES:
        raise SelfsupError(f"--strategy {strategy!r}: choose {', '.join(STRATEGIES)}")
    if not 1 <= n <= len(features):
        raise SelfsupError(f"--n {n}: give 1 to {len(features)} (the pool has {len(features)} images)")
    if strategy == "random":
        return torch.randperm(len(features), generator=torch.Generator().manual_seed(seed))[:n]
    x = F.normalize(features.float(), dim=1)
    return kcenter_greedy(x, n) if strategy == "kcenter" else kmeans_representatives(x, n, seed)


def pool_of(run: Run, images: str | Path | None) -> ImageDataset:
    """The images to choose from: ``images`` (a folder) or the run's own training images."""
    if images is None:
        return run.split("train")

    ds = load_imagefolder("train", Path(images), run.spec.stored_size)
    return dataclasses.replace(ds, images=run.spec.prepare(ds.images))  # the encoder's channels


def contact_sheet(
    images: torch.Tensor,
    path: str | Path,
    title: str = "",
    captions: list[str] | None = None,
    columns: int = 20,
    row_names: list[str] | None = None,
) -> Path:
    """uint8 images [N, C, H, W] as a PNG grid of ``columns`` per row (selfsup.train.pictures.draw),
    with an optional caption under each image and a name for each row."""
    x = images.float() / 255
    starts = range(0, len(x), columns)
    rows = [((row_names[r] if row_names else ""), x[i : i + columns]) for r, i in enumerate(starts)]
    caps = [captions[i : i + columns] for i in starts] if captions else None
    fig = draw(Picture(rows, caps, title))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    return path


def _files(pool) -> list[str] | None:
    """The file of every row: an image folder's (in memory or streamed), None for other data sets."""
    files = getattr(pool, "files", None) or getattr(pool.images, "files", None)
    return [str(f) for f in files] if files else None


def _root(run: Run, images: str | Path | None) -> Path | None:
    """What CSV paths are relative to: the folder searched, else the pretraining folder."""
    if images is not None:
        return Path(images).resolve()
    return Path(run.cfg.data.dir).resolve() if run.cfg.data.dir else None


def _names(pool, idx: torch.Tensor, root: Path | None) -> list[str]:
    """How a row is named in a CSV: its file (relative to ``root`` when below it), else its index."""
    files = _files(pool)
    if files is None:
        return [str(int(i)) for i in idx]
    out = []
    for i in idx:
        f = Path(files[int(i)])
        out.append(f.relative_to(root).as_posix() if root and f.is_relative_to(root) else str(f))
    return out


def select_images(
    run_dir: str | Path,
    n: int,
    out: str | Path,
    strategy: str = "kmeans",
    images: str | Path | None = None,
    seed: int = 0,
    device: str = "cpu",
) -> dict:
    """Write ``out`` (CSV: path,label with the label left empty, in pick order, to fill in and pass
    to ``--labels``; ``index`` instead of ``path`` for data sets that are not folders) and a contact
    sheet of the picks beside it."""
    out = Path(out)
    if out.suffix.lower() != ".csv":
        raise SelfsupError(f"--out {out}: the selection is written as a .csv file (path,label) to fill in")
    run = Run(run_dir)
    pool = pool_of(run, images)
    feats = run.features(pool.images, device)
    idx = select_indices(feats, n, strategy, seed)
    names = _names(pool, idx, _root(run, images))
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        csv.writer(f).writerows([["path" if _files(pool) else "index", "label"], *([p, ""] for p in names)])
    shown = idx[:200]
    picture = contact_sheet(
        torch.stack([pool.images[int(i)] for i in shown]),
        out.with_suffix(".png"),
        f"{len(idx)} images to label ({strategy})"
        + (f", the first {len(shown)} in pick order" if len(shown) < len(idx) else ""),
    )
    return {
        "out": str(out),
        "picture": str(picture),
        "strategy": strategy,
        "n": len(idx),
        "pool": len(pool),
        "indices": idx.tolist(),
    }


def neighbors(
    run_dir: str | Path,
    queries: list[str | Path],
    k: int = 8,
    out: str | Path | None = None,
    images: str | Path | None = None,
    device: str = "cpu",
) -> dict:
    """For each query image file, its ``k`` nearest images of the pool (cosine similarity of the
    encoder's features) drawn as one row of a PNG grid: the query, then its neighbours, nearest first."""
    run = Run(run_dir)
    if k < 1:
        raise SelfsupError(f"--k {k}: give at least 1")
    missing = [str(q) for q in queries if not Path(q).is_file()]
    if missing:
        raise DatasetError(f"--query: {', '.join(missing[:3])} not found; pass image files")
    q_images, q_files = decode_files([Path(q) for q in queries], run.spec.channels, run.spec.stored_size)
    pool = pool_of(run, images)
    bank = F.normalize(run.features(pool.images, device), dim=1)
    q = F.normalize(run.features(q_images, device), dim=1)
    sim, idx = (q @ bank.T).topk(min(k, len(bank)), dim=1)  # [Q, k]
    grid, captions = [], []
    for qi in range(len(q)):  # one row a query: the query, then its neighbours with their similarity
        grid.append(q_images[qi])
        captions.append("query")
        for s, j in zip(sim[qi].tolist(), idx[qi].tolist()):
            grid.append(pool.images[j])
            captions.append(f"{s:.3f}")
    out = Path(out or Path(run_dir) / "neighbors.png")
    picture = contact_sheet(
        torch.stack(grid),
        out,
        f"{run.cfg.method_name}: {idx.shape[1]} nearest images per query (cosine similarity)",
        captions,
        columns=idx.shape[1] + 1,
        row_names=[Path(f).name[:18] for f in q_files],
    )
    root = _root(run, images)
    return {
        "picture": str(picture),
        "queries": q_files,
        "neighbors": [
            [{"image": name, "similarity": s} for name, s in zip(_names(pool, row, root), srow)]
            for row, srow in zip(idx, sim.tolist())
        ],
    }


def near_duplicates(
    run_dir: str | Path,
    threshold: float = 0.98,
    out: str | Path | None = None,
    images: str | Path | None = None,
    device: str = "cpu",
    chunk: int = 2048,
) -> dict:
    """Pairs of pool images whose features' cosine similarity is at least ``threshold`` (each image
    paired with its nearest other image; a pair listed once), most similar first, to ``out`` (CSV)."""
    if not -1.0 <= threshold <= 1.0:
        raise SelfsupError(f"--threshold {threshold}: a cosine similarity, in [-1, 1]")
    run = Run(run_dir)
    pool = pool_of(run, images)
    x = F.normalize(run.features(pool.images, device), dim=1)
    pairs = {}
    for i in range(0, len(x), chunk):
        s = x[i : i + chunk] @ x.T  # [c, N]
        rows = torch.arange(i, min(i + chunk, len(x)))
        s[torch.arange(len(rows)), rows] = -2.0  # not itself
        best, j = s.max(1)
        for a, b, v in zip(rows.tolist(), j.tolist(), best.tolist()):
            if v >= threshold:
                pairs[(min(a, b), max(a, b))] = v
    ranked = sorted(pairs.items(), key=lambda t: -t[1])
    root = _root(run, images)
    out = Path(out or Path(run_dir) / "duplicates.csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["first", "second", "similarity"])
        for (a, b), v in ranked:
            na, nb = _names(pool, torch.tensor([a, b]), root)
            w.writerow([na, nb, f"{v:.4f}"])
    return {"out": str(out), "pairs": len(ranked), "threshold": threshold, "pool": len(pool)}


__all__ = [
    "STRATEGIES",
    "contact_sheet",
    "kcenter_greedy",
    "kmeans_representatives",
    "near_duplicates",
    "neighbors",
    "select_indices",
    "select_images",
]
