"""Linear probe on frozen, cached features: multinomial logistic regression.

Features are standardised (train mean/std); the L2 strength is chosen on a held-out
validation split of the training set, then the probe is refitted on the whole training set.
Solved full-batch with L-BFGS in torch rather than scikit-learn: on cached features this
converges in a few seconds, several times faster than sklearn's solver on this CPU, which
matters because a regularisation search fits it several times.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def fit_logistic(x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float, max_iter: int = 300) -> torch.nn.Linear:
    """Minimise mean cross-entropy + l2 * ||W||^2 by L-BFGS; x [N, D] standardised, y [N]."""
    lin = torch.nn.Linear(x.shape[1], num_classes)
    torch.nn.init.zeros_(lin.weight)
    torch.nn.init.zeros_(lin.bias)
    opt = torch.optim.LBFGS(
        lin.parameters(),
        lr=1,
        max_iter=max_iter,
        history_size=20,
        tolerance_grad=1e-6,
        tolerance_change=1e-9,
        line_search_fn="strong_wolfe",
    )

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(lin(x), y) + l2 * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return lin


def holdout_split(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = max(1, int(round(n * fraction)))
    return perm[n_val:], perm[:n_val]


class Probe:
    """A fitted linear probe: standardisation with the training features' statistics + logistic regression."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, lin: torch.nn.Linear, l2: float, val: dict):
        self.mean, self.std, self.lin, self.l2, self.val = mean, std, lin, l2, val

    @torch.no_grad()
    def predict(self, features: torch.Tensor) -> torch.Tensor:
        """[N, D] features -> [N] predicted classes."""
        return self.lin((features.float() - self.mean) / self.std).argmax(1)

    def accuracy(self, features: torch.Tensor, labels: torch.Tensor) -> float:
        return (self.predict(features) == labels).float().mean().item()

    def as_linear(self) -> torch.nn.Linear:
        """The probe as one layer on raw features, its standardisation folded in:
        W ((f - m) / s) + b = (W / s) f + (b - (W / s) m)."""
        lin = torch.nn.Linear(self.lin.in_features, self.lin.out_features)
        with torch.no_grad():
            w = self.lin.weight / self.std  # [K, F]
            lin.weight.copy_(w)
            lin.bias.copy_(self.lin.bias - w @ self.mean)
        return lin


def fit_probe(
    train_f: torch.Tensor,
    train_y: torch.Tensor,
    num_classes: int | None = None,
    l2_grid=(1e-6, 1e-5, 1e-4, 1e-3, 1e-2),
    val_fraction: float = 0.1,
    seed: int = 0,
    max_iter: int = 300,
) -> Probe:
    """Standardise, choose the L2 strength on a held-out ``val_fraction`` of the training features,
    refit on all of them."""
    train_f = train_f.float()
    num_classes = num_classes or int(train_y.max()) + 1
    mean, std = train_f.mean(0), train_f.std(0).clamp_min(1e-6)
    xs = (train_f - mean) / std
    tr, va = holdout_split(len(xs), val_fraction, seed)
    val = {}
    with torch.enable_grad():
        for l2 in l2_grid:
            lin = fit_logistic(xs[tr], train_y[tr], num_classes, l2, max_iter)
            with torch.no_grad():
                val[l2] = (lin(xs[va]).argmax(1) == train_y[va]).float().mean().item()
        best = max(val, key=lambda k: (val[k], k))  # ties -> the stronger regularisation
        lin = fit_logistic(xs, train_y, num_classes, best, max_iter)
    return Probe(mean, std, lin, best, val)


def linear_probe(
    train_f: torch.Tensor,
    train_y: torch.Tensor,
    test_f: torch.Tensor,
    test_y: torch.Tensor,
    l2_grid=(1e-6, 1e-5, 1e-4, 1e-3, 1e-2),
    val_fraction: float = 0.1,
    seed: int = 0,
    max_iter: int = 300,
) -> dict:
    """Returns {"top1": test accuracy (fraction), "l2": chosen strength, "val": {l2: val acc}, ...}."""
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    probe = fit_probe(train_f, train_y, num_classes, l2_grid, val_fraction, seed, max_iter)
    return {
        "protocol": "linear",
        "top1": probe.accuracy(test_f, test_y),
        "l2": probe.l2,
        "val": {str(k): v for k, v in probe.val.items()},
        "train_top1": probe.accuracy(train_f, train_y),
        "val_fraction": val_fraction,
        "standardised": True,
        "solver": f"lbfgs(max_iter={max_iter})",
    }
