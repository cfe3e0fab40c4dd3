"""Transfer protocol: an encoder pretrained on one dataset, probed (kNN and linear) on another.

The question every user with their own images asks: do features learned elsewhere help here?
The target's images are resized to the side the encoder was trained on and given its channel
count (grey -> RGB by repetition, RGB -> grey by luminance), then normalised with the *source's*
statistics (what the encoder saw). Two reference rows make the number mean something: the same
architecture with random weights and BatchNorm statistics of the target (what the architecture
alone gives) and the target's raw pixels.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from selfsup.data.dataset import match_channels
from selfsup.errors import SelfsupError
from selfsup.nn.features import extract_features, recalibrate_batchnorm
from selfsup.nn.runtime import Runtime
from selfsup.eval.features import raw_pixel_features
from selfsup.eval.knn import knn_predict
from selfsup.eval.labelled import DEFAULT_FOLDS, evaluate_labelled
from selfsup.eval.linear import fit_probe
from selfsup.nn.classifier import reinitialise


def transfer_scores(
    encoder: torch.nn.Module,
    target_train,
    target_test,
    channels: int,
    mean,
    std,
    size: int,
    ks=(200, 20),
    knn_temperature: float = 0.07,
    runtime: Runtime | str | torch.device = "cpu",
    batch_size: int = 512,
    seed: int = 0,
    folds: int = DEFAULT_FOLDS,
) -> dict:
    """kNN and linear top-1 on ``target_*`` (labelled ImageDatasets; ``target_test`` None: stratified
    k-fold cross-validation over ``target_train``) for the encoder, a random-init copy of it and the
    target's raw pixels. Returns {"pretrained": {...}, "random_init": {...}, "raw_pixels": {...}},
    each with "knn" (top1_k<k>) and "linear" (top1) (cross-validated: "knn_std" and "linear_std" over the
    folds too), "evaluation" (test set or cross-validation), and the pretrained encoder's linear probe
    class by class: "classes", "per_class" (accuracy) and "confusion" (rows true, columns predicted)."""
    if target_train.labels is None or (target_test is not None and target_test.labels is None):
        raise SelfsupError(f"transfer needs labels on the target dataset {target_train.name!r}")
    rt = Runtime.coerce(runtime)
    kw = dict(mean=mean, std=std, size=size, runtime=rt, batch_size=batch_size)
    both = target_train.images if target_test is None else torch.cat([target_train.images, target_test.images])
    y = target_train.labels if target_test is None else torch.cat([target_train.labels, target_test.labels])
    x = match_channels(both, channels)
    num_classes = int(y.max()) + 1
    # random weights, BN statistics of the target images: the architecture's own prior, not a handicap
    random_init = recalibrate_batchnorm(
        reinitialise(copy.deepcopy(encoder), seed), x[: len(target_train)], mean, std, size, device=rt.device
    )
    rows = {
        "pretrained": extract_features(encoder, x, **kw),
        "random_init": extract_features(random_init, x, **kw),
        "raw_pixels": raw_pixel_features(both),
    }
    out: dict[str, Any]
    out, how = {}, None
    for name, f in rows.items():

        def knn(tr, te, k):
            return knn_predict(f[tr], y[tr], f[te], k, knn_temperature, num_classes).argmax(1)

        def linear(tr, te):
            return fit_probe(f[tr], y[tr], num_classes, seed=seed).predict(f[te])

        scored = {
            f"top1_k{k}": evaluate_labelled(
                lambda tr, te, k=k: knn(tr, te, k),  # type: ignore[misc]  # k=k binds the loop's k
                target_train,
                target_test,
                folds,
                seed,
                offset=len(target_train),
            )
            for k in ks
        }
        lin = evaluate_labelled(linear, target_train, target_test, folds, seed, offset=len(target_train))
        out[name] = {"knn": {k: r["top1"] for k, r in scored.items()}, "linear": lin["top1"]}
        if "top1_std" in lin:  # cross-validated: the spread over the folds
            out[name]["knn_std"] = {k: r["top1_std"] for k, r in scored.items()}
            out[name]["linear_std"] = lin["top1_std"]
        if name == "pretrained":  # the encoder's linear probe, class by class (the other rows are references)
            out.update({"classes": lin["classes"], "per_class": lin["per_class"], "confusion": lin["confusion"]})
        how = lin["evaluation"]
    out["evaluation"] = how
    return out
