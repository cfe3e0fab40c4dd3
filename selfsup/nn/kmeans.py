"""k-means for clustering-based methods (DeepCluster): feature pre-processing, the clustering
itself, the paper's empty-cluster rule, and an epoch order that samples clusters uniformly.

Caron et al. 2018 (sec. 3.4, and the official ``clustering.py``): features of the whole set are
PCA-reduced to 256 dimensions, whitened and L2-normalised, then clustered with k-means (faiss,
20 iterations, random initial centroids drawn from the data). faiss is used when it is
importable; otherwise scikit-learn's KMeans with the same initialisation and iteration budget.
Tensors in, tensors out (CPU); the libraries see numpy float32 arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from selfsup.errors import SelfsupError


def pca_whiten(x: torch.Tensor, dim: int = 256, eps: float = 1e-5) -> torch.Tensor:
    """[N, F] -> [N, d] (d = min(dim, F)): projection on the top-d principal axes, whitened, then
    each row L2-normalised — the official code's faiss ``PCAMatrix(F, d, eigen_power=-0.5)``.

    Written by hand (a covariance eigendecomposition, F x F, cheap for F <= a few thousand) rather
    than sklearn's PCA(whiten=True) because whitening divides by sqrt(eigenvalue): a freshly
    initialised ReLU network has dead, zero-variance feature directions, and sklearn would divide by
    zero. ``eps`` (relative to the largest eigenvalue) bounds that gain; faiss has the same knob.
    """
    x = x.double()
    x = x - x.mean(0)  # [N, F]
    cov = x.T @ x / max(1, x.shape[0] - 1)  # [F, F]
    evals, evecs = torch.linalg.eigh(cov)  # ascending
    d = min(dim, x.shape[1])
    evals, evecs = evals.flip(0)[:d].clamp_min(0), evecs.flip(1)[:, :d]  # top-d: [d], [F, d]
    y = x @ evecs / (evals + eps * evals[0].clamp_min(1e-12)).sqrt()  # whitened: [N, d]
    return torch.nn.functional.normalize(y, dim=1).float()


@dataclass
class KMeansResult:
    assign: torch.Tensor  # int64 [N], cluster of each point, every cluster non-empty
    centroids: torch.Tensor  # float32 [k, d]
    loss: float  # mean squared distance of a point to its centroid
    empty_split: int  # clusters that were empty after k-means and got a split of another one


def kmeans(
    x: torch.Tensor, k: int, iters: int = 20, seed: int = 0, n_init: int = 1, threads: int | None = None
) -> KMeansResult:
    """Lloyd's k-means of x [N, d] into k clusters, random initial centroids (points of x), ``iters``
    iterations; then any cluster still empty is filled by ``split_empty_clusters`` (the paper's rule),
    so every one of the k pseudo-labels has images. ``n_init`` > 1 keeps the best of several runs
    (faiss's nredo; the paper uses one). ``threads`` caps the library's thread pool (default: torch's
    intra-op thread count, so clustering uses what training was given)."""
    n, d = x.shape
    if n < k:
        raise SelfsupError(
            f"k-means with k={k} clusters needs at least k points, got {n}: lower "
            f"method.num_clusters (the paper uses ~1 cluster per 128 images)"
        )
    data = np.ascontiguousarray(x.float().numpy())
    threads = threads or torch.get_num_threads()
    from threadpoolctl import threadpool_limits

    with threadpool_limits(threads):
        try:
            import faiss
        except ImportError:
            faiss = None
        if faiss is not None:
            faiss.omp_set_num_threads(threads)
            # max_points_per_centroid as in the official code: cluster every point, no subsampling
            km = faiss.Kmeans(
                d, k, niter=iters, nredo=n_init, seed=seed, max_points_per_centroid=10_000_000, verbose=False
            )
            km.train(data)
            _, assign = km.index.search(data, 1)
            assign, centroids = torch.from_numpy(assign[:, 0]).long(), torch.from_numpy(km.centroids).float()
        else:
            from sklearn.cluster import KMeans

            # init="random" (k points of the data) is faiss's and the paper's; it is also 5-7x faster
            # than k-means++ seeding at k=100-500 on 60k x 256 (measured). tol=0: a fixed iteration
            # budget like faiss (sklearn still stops early when no assignment changes).
            km = KMeans(k, init="random", n_init=n_init, max_iter=iters, tol=0.0, random_state=seed).fit(data)
            assign, centroids = torch.from_numpy(km.labels_).long(), torch.from_numpy(km.cluster_centers_).float()
    g = torch.Generator().manual_seed(seed)
    centroids, assign, n_split = split_empty_clusters(x.float(), centroids, assign, g)
    loss = float(((x.float() - centroids[assign]) ** 2).sum(1).mean())
    return KMeansResult(assign, centroids, loss, n_split)


def split_empty_clusters(
    x: torch.Tensor, centroids: torch.Tensor, assign: torch.Tensor, generator: torch.Generator, eps: float = 1e-3
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The paper's rule for empty clusters (sec. 3.4, "Empty clusters"): pick a non-empty cluster at
    random, give the empty one its centroid with a small random perturbation (the other keeps the
    opposite perturbation), and split the chosen cluster's points between the two.

    x [N, d], centroids [k, d], assign [N] -> (centroids, assign, number of clusters filled). As in
    faiss, the donor is drawn with probability proportional to (size - 1): clusters of one point
    cannot be split, big clusters are split first. Its points go to the nearer of the two centroids
    (a split by the hyperplane through the old centroid); if that leaves a side empty (all points
    identical), a random half of the points moves. Assumes N >= k.
    """
    centroids, assign = centroids.clone(), assign.clone()
    k = centroids.shape[0]
    counts = torch.bincount(assign, minlength=k)
    empty = (counts == 0).nonzero().flatten().tolist()
    for j in empty:
        i = int(torch.multinomial((counts - 1).clamp_min(0).double(), 1, generator=generator))
        sign = torch.randint(0, 2, (centroids.shape[1],), generator=generator).float() * 2 - 1  # [d] of +-1
        c = centroids[i].clone()
        centroids[i], centroids[j] = c - eps * sign, c + eps * sign
        members = (assign == i).nonzero().flatten()  # [m], m >= 2
        to_j = ((x[members] - centroids[j]) ** 2).sum(1) < ((x[members] - centroids[i]) ** 2).sum(1)
        if to_j.all() or not to_j.any():
            to_j = torch.zeros_like(to_j)
            to_j[torch.randperm(len(members), generator=generator)[: len(members) // 2]] = True
        assign[members[to_j]] = j
        counts[j], counts[i] = int(to_j.sum()), int((~to_j).sum())
    return centroids, assign, len(empty)


def uniform_cluster_order(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """An epoch's sample order that is uniform over clusters (DeepCluster sec. 3.4, "Trivial
    parametrization"; the official ``UnifLabelSampler``): each of the K' non-empty clusters contributes
    m = N // K' + 1 images (without replacement when it has more than m, with replacement otherwise),
    the K'*m >= N picks are shuffled and the first N kept. labels int64 [N] -> indices int64 [N].

    Vectorised rather than a Python loop over clusters: a random permutation grouped by cluster
    (stable sort) gives each cluster its members in random order; the first m of them are a sample
    without replacement, uniform positions below the cluster's size one with replacement.
    """
    labels = labels.cpu().long()
    n = labels.shape[0]
    counts = torch.bincount(labels)
    starts = counts.cumsum(0) - counts  # [k]: where each cluster begins once grouped
    shuffled = torch.randperm(n, generator=generator)
    grouped = shuffled[torch.sort(labels[shuffled], stable=True).indices]  # [N], by cluster, random within
    nonempty = (counts > 0).nonzero().flatten()  # [K']
    size = counts[nonempty]  # [K']
    m = n // len(nonempty) + 1
    slots = torch.arange(m).expand(len(nonempty), m)  # [K', m]
    with_repl = (torch.rand(len(nonempty), m, generator=generator) * size[:, None]).long().clamp_max(size[:, None] - 1)
    pos = torch.where(size[:, None] > m, slots, with_repl)  # [K', m], positions inside each cluster
    picks = grouped[starts[nonempty][:, None] + pos].flatten()  # [K' * m]
    return picks[torch.randperm(len(picks), generator=generator)[:n]]


def spherical_kmeans(
    x: torch.Tensor, k: int, iters: int = 10, generator: torch.Generator | None = None, init: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """DeepCluster-v2's k-means on the unit sphere (Caron et al. 2020, SwAV paper sec. 4 and appendix;
    the official ``cluster_memory``): x [N, d] unit rows; k initial centroids drawn from x (or ``init``
    [k, d]); each iteration assigns every point to the centroid of largest dot product, moves each
    non-empty cluster's centroid to its points' mean and back onto the sphere (an empty cluster keeps
    its centroid); a last assignment after ``iters`` moves. Returns (assign int64 [N], centroids [k, d]).

    Written here (a dozen tensor ops) rather than with faiss or scikit-learn: neither is spherical by
    default and the official algorithm is this one, run on whatever device the memory lives on."""
    n, d = x.shape
    if n < k:
        raise SelfsupError(
            f"spherical k-means with k={k} needs at least k points, got {n}: lower method.num_prototypes"
        )
    x = x.float()
    c = init.float().clone() if init is not None else x[torch.randperm(n, generator=generator)[:k].to(x.device)].clone()
    assign = (x @ c.T).argmax(1)  # the E step: [N]
    for _ in range(iters):
        sums = torch.zeros_like(c).index_add_(0, assign, x)  # [k, d]
        counts = torch.bincount(assign, minlength=k)  # [k]
        filled = counts > 0
        c[filled] = torch.nn.functional.normalize(sums[filled] / counts[filled, None], dim=1)
        assign = (x @ c.T).argmax(1)
    return assign, c


@torch.no_grad()
def momentum_grouping(groups: torch.Tensor, z: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """SMoG's synchronous momentum grouping (Pang et al. 2022, sec. 3.2): each of the N embeddings z
    [N, D] (unit rows, every process's) joins the group of largest cosine among ``groups`` [K, D], and
    every group that received members moves towards their mean,

        g_k <- beta g_k + (1 - beta) mean_{i : a_i = k} z_i,

    the others staying where they are: a clustering that advances one step per training step instead of
    DeepCluster's epoch-long k-means. Returns (the moved groups [K, D] float32, the assignment a [N])."""
    k = groups.shape[0]
    g, z = groups.float(), z.float()
    assign = (z @ torch.nn.functional.normalize(g, dim=1).T).argmax(1)  # [N]
    sums = torch.zeros_like(g).index_add_(0, assign, z)  # [K, D]
    counts = torch.bincount(assign, minlength=k)  # [K]
    moved, filled = g.clone(), counts > 0
    moved[filled] = beta * g[filled] + (1 - beta) * sums[filled] / counts[filled, None]
    return moved, assign
