"""DeepCluster — Caron, Bojanowski, Joulin, Douze. "Deep Clustering for Unsupervised Learning of
Visual Features", ECCV 2018.

Idea: alternate clustering and classification. At the start of each epoch the features f(x) of
the whole training set are PCA-reduced (256 dims), whitened, L2-normalised and clustered with
k-means; the cluster index y_n of image n becomes its pseudo-label (eq. 2). During the epoch the
network f and a linear classifier g_W, re-initialised each epoch because the cluster indices are
arbitrary, minimise the cross-entropy of g_W(f(x_n)) against y_n on augmented images (eq. 1).
Two guards against degenerate solutions (sec. 3.4): empty clusters are refilled by splitting a
non-empty one (selfsup.nn.kmeans.split_empty_clusters), and images are sampled uniformly over
clusters so that a huge cluster cannot dominate the classification (``epoch_order``).

Left out: the Sobel pre-filter, which the paper puts before its AlexNet/VGG to remove colour (an
easy cue for clustering); the ResNet and convnet encoders here take the images as they are (and
the data here is grey-scale). The paper's AlexNet/VGG end in an MLP (fc6-fc7, 4096, dropout) that
is clustered and classified from; for the pooled ResNet features here the default puts the
linear top layer directly on the encoder (``mlp_hidden=0``); ``mlp_hidden>0`` adds that MLP.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from selfsup import dist
from selfsup.methods.base import EpochContext, Method, StepOutput
from selfsup.nn.kmeans import kmeans, pca_whiten, uniform_cluster_order
from selfsup.registry import BuildContext, register


@dataclass
class DeepClusterConfig:
    num_clusters: int = 10000  # k: the paper's best on ImageNet (1.28M images, ~128 per cluster)
    pca_dim: int = 256  # PCA + whitening before k-means (sec. 3.4 / official code)
    kmeans_iters: int = 20  # the official code's faiss niter
    uniform_sampling: bool = True  # sample images uniformly over clusters (sec. 3.4)
    mlp_hidden: int = 0  # 0: linear top layer on the encoder features; 4096: the paper's fc6-fc7 MLP
    dropout: float = 0.5  # in that MLP, as in AlexNet/VGG's classifier


@register("deepcluster", config=DeepClusterConfig, views="simclr")
class DeepCluster(Method):
    """DeepCluster: k-means pseudo-labels of the whole set each epoch, classified by the network."""

    head: nn.Module  # the fc6-fc7 MLP, or the identity
    # buffers: y_n of every training image [N], the k-means runs so far
    pseudo_labels: torch.Tensor
    clusterings: torch.Tensor

    def __init__(
        self, encoder: nn.Module, cfg: DeepClusterConfig = DeepClusterConfig(), ctx: BuildContext = BuildContext()
    ):
        super().__init__()
        num_samples = ctx.require("num_samples")
        self.cfg = cfg
        self.encoder = encoder
        d = cfg.mlp_hidden or cast(int, encoder.num_features)
        if cfg.mlp_hidden:  # fc6-fc7 without the last ReLU: the official code clusters the pre-ReLU fc7 features
            self.head = nn.Sequential(
                nn.Dropout(cfg.dropout),
                nn.Linear(cast(int, encoder.num_features), d),
                nn.ReLU(inplace=True),
                nn.Dropout(cfg.dropout),
                nn.Linear(d, d),
            )
        else:
            self.head = nn.Identity()
        self.classifier = nn.Linear(d, cfg.num_clusters)  # g_W, the "top layer"
        self.reset_classifier()
        # y_n for every training image. Until the first k-means (which the loop always runs before the
        # first step) they are n mod k: valid targets, so a training_step outside the loop still works.
        self.register_buffer("pseudo_labels", torch.arange(num_samples) % cfg.num_clusters)
        self.register_buffer("clusterings", torch.zeros((), dtype=torch.long))  # k-means runs so far

    def reset_classifier(self) -> None:
        """The official code's top-layer initialisation: weights N(0, 0.01), bias 0 (in place, so the
        optimiser keeps the same parameters)."""
        nn.init.normal_(self.classifier.weight, 0.0, 0.01)
        nn.init.zeros_(self.classifier.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """What is clustered: f(x) [B, F], or the MLP's pre-ReLU output [B, mlp_hidden]."""
        return self.head(self.encoder(x))

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    @torch.no_grad()
    def on_epoch_start(self, epoch: int, data: EpochContext) -> dict[str, float]:
        t = time.perf_counter()
        feats = data.features(nn.Sequential(self.encoder, self.head))  # [N, F], eval view, eval mode
        x = pca_whiten(feats, self.cfg.pca_dim)  # [N, 256]: PCA, whitening, L2 normalisation
        seed = int(torch.randint(0, 2**31 - 1, ()))  # the global RNG: seeded by the run, checkpointed
        res = kmeans(x, self.cfg.num_clusters, self.cfg.kmeans_iters, seed)
        y = res.assign.to(self.pseudo_labels.device)
        if dist.is_dist():  # every process trains on rank 0's clustering
            torch.distributed.broadcast(y, 0)
        logs = {
            "kmeans/loss": res.loss,
            "kmeans/empty_split": res.empty_split,
            "kmeans/largest_cluster": float(torch.bincount(y).max()) / len(y),
        }
        if self.clusterings > 0:  # NMI(y^{t-1}, y^t): how much the clustering still moves (paper fig. 2b)
            from sklearn.metrics import normalized_mutual_info_score

            logs["kmeans/nmi_prev"] = normalized_mutual_info_score(self.pseudo_labels.cpu().numpy(), y.cpu().numpy())
        self.pseudo_labels.copy_(y)
        self.clusterings += 1
        self.reset_classifier()  # cluster indices are arbitrary each epoch: the old W means nothing now
        logs["kmeans/seconds"] = time.perf_counter() - t
        return logs

    def epoch_order(self, epoch: int, generator: torch.Generator) -> torch.Tensor | None:
        if not self.cfg.uniform_sampling or self.clusterings == 0:
            return None
        return uniform_cluster_order(self.pseudo_labels, generator)  # [N], ~N/k images of each cluster

    def training_step(self, batch) -> StepOutput:
        x = batch.views[0]  # one augmented view (random resized crop + flip): [B, C, H, W]
        z = self.features(x)  # [B, D]
        if self.cfg.mlp_hidden:
            z = F.relu(z)
        logits = self.classifier(z)  # g_W(f(x_n)): [B, k]
        y = self.pseudo_labels[batch.index]  # y_n: [B]
        loss = F.cross_entropy(logits.float(), y)  # eq. (1)
        acc = (logits.detach().argmax(1) == y).float().mean()
        return StepOutput(loss, {"pseudo_acc": acc})
