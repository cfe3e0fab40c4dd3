"""Evaluation on a labelled set a user brings: a held-out test set, or stratified k-fold cross-validation.

With a few hundred labels and no test split, one random split would give a number that moves by
several points with the split; k-fold cross-validation (every image is tested once, by a model that
never saw it) gives the mean and spread the user needs to trust it. The folds are stratified so that
each keeps the class proportions, and seeded so that the same labels give the same folds.

A protocol here is a function ``fit_predict(train_idx, test_idx) -> predicted classes`` over the
labelled set; this module splits, pools the out-of-fold predictions into per-class accuracy and a
confusion matrix, and draws it (scikit-learn's StratifiedKFold and confusion_matrix, matplotlib).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from selfsup.errors import SelfsupError

DEFAULT_FOLDS = 5

FitPredict = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (train rows, test rows) -> predictions


def folds_for(labels: torch.Tensor, folds: int) -> int:
    """The number of folds the labels allow: every class needs an image in every fold."""
    counts = torch.bincount(labels)
    smallest = int(counts[counts > 0].min())
    if smallest < 2:
        rare = [i for i, c in enumerate(counts.tolist()) if c == 1]
        raise SelfsupError(
            f"cross-validation needs at least 2 labelled images of every class; class(es) {rare} have "
            f"one: label more images of them, or pass --test DIR|FILE.csv"
        )
    if folds < 2:
        raise SelfsupError(f"--folds {folds}: cross-validation needs at least 2 folds")
    return min(folds, smallest)


def cross_validate(fit_predict: FitPredict, labels: torch.Tensor, folds: int = DEFAULT_FOLDS, seed: int = 0) -> dict:
    """Stratified k-fold: {"fold_top1": [...], "top1": mean, "top1_std": std, "folds": k, "predictions": [N]}."""
    from sklearn.model_selection import StratifiedKFold

    k = folds_for(labels, folds)
    pred = torch.full_like(labels, -1)
    accs = []
    for tr, te in StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(labels)), labels.numpy()):
        tr, te = torch.from_numpy(tr), torch.from_numpy(te)
        pred[te] = fit_predict(tr, te)
        accs.append((pred[te] == labels[te]).float().mean().item())
    return {
        "evaluation": f"stratified {k}-fold cross-validation",
        "folds": k,
        "fold_top1": accs,
        "top1": float(np.mean(accs)),
        "top1_std": float(np.std(accs)),
        "predictions": pred,
    }


def per_class(labels: torch.Tensor, pred: torch.Tensor, classes: list[str]) -> dict:
    """{"per_class": {class: accuracy or None}, "confusion": [[count]] (rows true, columns predicted)}."""
    from sklearn.metrics import confusion_matrix

    cm = confusion_matrix(labels.numpy(), pred.numpy(), labels=list(range(len(classes))))
    acc = {c: (float(cm[i, i] / cm[i].sum()) if cm[i].sum() else None) for i, c in enumerate(classes)}
    return {"per_class": acc, "confusion": cm.tolist()}


def plot_confusion(confusion: list[list[int]], classes: list[str], path: str | Path, title: str = "") -> Path:
    """The confusion matrix as a PNG: rows the true class, columns the predicted one, each row
    normalised (the diagonal is the class's accuracy), counts written in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(confusion, dtype=float)
    rows = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    n = len(classes)
    side = min(14.0, 2.5 + 0.55 * n)
    fig, ax = plt.subplots(figsize=(side, side))
    ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), classes, rotation=45, ha="right")
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    ax.text(
                        j,
                        i,
                        f"{int(cm[i, j])}",
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if rows[i, j] > 0.5 else "black",
                    )
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def evaluate_labelled(
    fit_predict: FitPredict, labelled, test=None, folds: int = DEFAULT_FOLDS, seed: int = 0, offset: int = 0
) -> dict:
    """Score ``fit_predict`` on a user's labelled set: trained on all of it and tested on ``test``
    when given (its rows follow the labelled set's, from ``offset`` = len(labelled) on), else
    cross-validated over its ``folds``. Adds per-class accuracy and the confusion matrix."""
    n = len(labelled)
    if test is not None:
        pred = fit_predict(torch.arange(n), torch.arange(offset, offset + len(test)))
        res = {
            "evaluation": "held-out test set",
            "top1": (pred == test.labels).float().mean().item(),
            "num_test": len(test),
        }
        truth = test.labels
    else:
        res = cross_validate(fit_predict, labelled.labels, folds, seed)
        pred, truth = res.pop("predictions"), labelled.labels
    res.update({"num_labelled": n, "classes": list(labelled.classes), **per_class(truth, pred, labelled.classes)})
    return res
