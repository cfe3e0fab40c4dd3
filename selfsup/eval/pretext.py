"""Pretext performance and its relation to downstream accuracy.

Pretext-task methods (rotation, jigsaw, relative position, inpainting, colorization, ...) log how
well they solve their own task as ``pretext/<name>`` in metrics.jsonl. The field's early lesson
(Kolesnikov et al. 2019, "Revisiting Self-Supervised Visual Representation Learning") is that
pretext accuracy is a poor predictor of representation quality across architectures and tasks;
across runs of one task it usually correlates. This module reads the metric back, measures it
again on held-out images (``heldout_metrics``: the logged value is one noisy training batch, seen
under training-mode normalisation), and measures its correlation (Pearson and Spearman) with each
run's linear-probe accuracy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from selfsup.engine import read_metrics
from selfsup.data.batch import Batch
from selfsup.nn.runtime import Runtime


def pretext_metrics(run_dir: str | Path) -> dict[str, float]:
    """The last logged value of every ``pretext/*`` key of a run (names without the prefix)."""
    last = {}
    for r in read_metrics(run_dir):
        last.update({k[len("pretext/") :]: v for k, v in r.items() if k.startswith("pretext/")})
    return last


@torch.no_grad()
def heldout_metrics(
    method,
    images: torch.Tensor,
    views,
    texts: torch.Tensor | None = None,
    batch_size: int = 256,
    runtime: Runtime | str | torch.device = "cpu",
    seed: int = 0,
) -> dict[str, float]:
    """Mean of every ``pretext/*`` value the method's own ``training_step`` reports, on ``images``
    (uint8 [N, C, H, W], a held-out split) seen through the run's training ``views``, with the
    network in eval mode (BatchNorm on its running statistics) and no gradient, in batches of
    ``batch_size`` (the training batch size, for metrics computed within a batch). Weighted by batch
    size; the views' random parameters are seeded, so the number is reproducible. Methods that
    measure their task once an epoch instead (BiGAN, video tracking) report nothing here.
    ``texts``: caption tokens [N, L] for image-text methods; ``runtime``: the device and precision (a device
    alone: fp32)."""
    rt = Runtime.coerce(runtime)
    was = method.training
    method.eval()
    gen = torch.Generator().manual_seed(seed)
    sums: dict[str, float] = {}
    # methods draw their own randomness (MAE's masks, inpainting's holes, DAE's noise) from the global
    # RNG: seed it here, and give the caller its state back afterwards
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        try:
            for i in range(0, len(images), batch_size):
                idx = torch.arange(i, min(i + batch_size, len(images)))
                batch = Batch(images[idx], idx, texts=None if texts is None else texts[idx]).to(rt.device)
                batch.views = views(batch.images, gen)
                with rt.autocast():
                    logs = method.training_step(batch).logs
                for k, v in logs.items():
                    if k.startswith("pretext/"):
                        sums[k[len("pretext/") :]] = sums.get(k[len("pretext/") :], 0.0) + float(v) * len(idx)
        finally:
            method.train(was)
    return {k: v / len(images) for k, v in sums.items()}


def correlation(xs, ys) -> dict:
    """Pearson and Spearman correlation of two equal-length sequences (None with fewer than 3 points
    or a constant sequence: no correlation is defined)."""
    from scipy.stats import pearsonr, spearmanr

    x, y = np.asarray(xs, float), np.asarray(ys, float)
    if len(x) < 3 or x.std() == 0 or y.std() == 0:
        return {"pearson": None, "spearman": None, "n": len(x)}
    return {"pearson": float(pearsonr(x, y)[0]), "spearman": float(spearmanr(x, y)[0]), "n": len(x)}
