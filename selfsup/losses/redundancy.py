"""Redundancy-reduction and whitening losses (Barlow Twins, VICReg, VIbCReg, W-MSE): pure functions.

They act on the statistics of a whole batch of embeddings, so each computes in float32 with
autocast off (a bf16 cross-correlation loses the 1 - C_ii it is trying to drive to zero), and
each says how a batch split over processes is made to behave as one batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from selfsup import dist


def _no_autocast(x: torch.Tensor):
    return torch.autocast(device_type=x.device.type, enabled=False)


def _off_diagonal_sq_sum(c: torch.Tensor) -> torch.Tensor:
    """sum_{i != j} c_ij^2 of a square matrix."""
    return c.pow(2).sum() - c.diagonal().pow(2).sum()


def batch_standardize(z: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """(z - mean) / sqrt(var + eps) per dimension over the batch, with the biased variance: what
    the official code's BatchNorm1d(affine=False) does in training mode. z: [N, D]. Across
    processes the mean and variance are those of the whole (global) batch, summed with
    gradient, as SyncBatchNorm would give (every process holds the same number of rows)."""
    n = z.shape[0] * dist.world_size()
    mean = dist.all_reduce_sum_with_grad(z.sum(0)) / n  # [D]
    zc = z - mean
    var = dist.all_reduce_sum_with_grad(zc.pow(2).sum(0)) / n  # [D]
    return zc / torch.sqrt(var + eps)


def cross_correlation(z1: torch.Tensor, z2: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Barlow Twins' C (Zbontar et al. 2021, eq. 2): C_ij = sum_b a_bi b_bj / N with a, b the
    batch-standardised embeddings of the two views, i.e. the cosine between dimension i of
    view A and dimension j of view B over the batch. z1, z2: [N, D] -> C: [D, D].
    Distributed: each process sums its own rows and the sums are all-reduced (with gradient),
    so C is exactly the one-big-batch matrix — the official code's all_reduce of C."""
    with _no_autocast(z1):
        n = z1.shape[0] * dist.world_size()
        a, b = batch_standardize(z1.float(), eps), batch_standardize(z2.float(), eps)
        return dist.all_reduce_sum_with_grad(a.T @ b) / n


def barlow_twins_loss(
    z1: torch.Tensor, z2: torch.Tensor, lambd: float = 5e-3, eps: float = 1e-5
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L_BT = sum_i (1 - C_ii)^2 + lambda sum_{i != j} C_ij^2 (Zbontar et al. 2021, eq. 1).

    The invariance term pulls each dimension of the two views to correlate perfectly; the
    redundancy-reduction term decorrelates different dimensions. Returns (loss, terms) with the
    unweighted terms {"on_diag", "off_diag"} detached, for logging.
    """
    with _no_autocast(z1):
        c = cross_correlation(z1, z2, eps)  # [D, D]
        on_diag = (1 - c.diagonal()).pow(2).sum()
        off_diag = _off_diagonal_sq_sum(c)
        return on_diag + lambd * off_diag, {"on_diag": on_diag.detach(), "off_diag": off_diag.detach()}


def vicreg_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    sim_coeff: float = 25.0,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    gamma: float = 1.0,
    eps: float = 1e-4,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """VICReg (Bardes, Ponce, LeCun 2022, eq. 1-6): lambda s + mu v + nu c, with

    - invariance s(Z, Z') = mean over the N x D entries of (z - z')^2 (MSE);
    - variance   v(Z) = (1/D) sum_j max(0, gamma - sqrt(Var(z^j) + eps)), on each branch;
      eq. 6 writes mu [v(Z) + v(Z')], the authors' code — which produced the published results
      with mu = 25 — averages the two branches, (v(Z) + v(Z')) / 2; we follow the code;
    - covariance c(Z) = (1/D) sum_{i != j} Cov(Z)_ij^2, summed over the branches,
    with the unbiased (N - 1) variance and covariance as in the paper.
    z1, z2: [N, D]. Embeddings from all processes are gathered (with gradient) first, so the
    statistics are the whole batch's. Returns (loss, {"invariance", "variance", "covariance"}),
    the unweighted terms as they enter the sum (variance already averaged over the branches).
    """
    with _no_autocast(z1):
        z1, z2 = dist.gather_with_grad(z1.float()), dist.gather_with_grad(z2.float())  # [N', D]
        n, d = z1.shape
        invariance = F.mse_loss(z1, z2)

        def var_cov(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            zc = z - z.mean(0)
            std = torch.sqrt(zc.pow(2).sum(0) / (n - 1) + eps)  # [D]
            cov = zc.T @ zc / (n - 1)  # [D, D]
            return F.relu(gamma - std).mean(), _off_diagonal_sq_sum(cov) / d

        v1, c1 = var_cov(z1)
        v2, c2 = var_cov(z2)
        variance, covariance = (v1 + v2) / 2, c1 + c2
        loss = sim_coeff * invariance + std_coeff * variance + cov_coeff * covariance
        return loss, {
            "invariance": invariance.detach(),
            "variance": variance.detach(),
            "covariance": covariance.detach(),
        }


def normalized_covariance(z: torch.Tensor) -> torch.Tensor:
    """VIbCReg's normalised covariance (Lee & Aune 2021): each dimension of z [N, D] centred over the
    batch and divided by its L2 norm, then Zhat^T Zhat [D, D]: the correlation matrix of the
    dimensions (ones on the diagonal, entries in [-1, 1] whatever the scale of z or D)."""
    zc = z - z.mean(0)
    zn = F.normalize(zc, dim=0)  # columns to unit norm (as the official code, F.normalize(p=2, dim=0))
    return zn.T @ zn


def vibcreg_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    sim_coeff: float = 25.0,
    std_coeff: float = 25.0,
    cov_coeff: float = 200.0,
    gamma: float = 1.0,
    eps: float = 1e-4,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """VIbCReg (Lee & Aune 2021): lambda s(Z, Z') + mu [v(Z) + v(Z')] + nu [c(Z) + c(Z')], with

    - invariance s = mean over the N x D entries of (z - z')^2 (MSE), as VICReg;
    - variance   v(Z) = (1/D) sum_j max(0, gamma - sqrt(Var(z^j) + eps)), unbiased variance, as VICReg's,
      but the two branches are summed (the paper's equation and the official code; VICReg's code averages);
    - better covariance c(Z) = (1/D^2) sum_{i != j} rho_ij^2 with rho = ``normalized_covariance(Z)``, the
      correlation matrix: the mean of the squared off-diagonal entries over all D^2 entries (the official
      code zeroes the diagonal, then takes the mean), so its scale depends on neither D nor the embeddings'
      scale; VICReg's (1/D) sum of squared raw covariances grows with both.
    Defaults lambda 25, mu 25, nu 200, gamma 1 (the paper's and ML4ITS/vibcreg config_vibcreg.yaml).
    z1, z2: [N, D]. Embeddings of all processes are gathered (with gradient) first, so every statistic is
    the whole batch's. Returns (loss, {"invariance", "variance", "covariance"}): the unweighted terms as they
    enter the sum (variance and covariance already summed over the branches), detached.
    """
    with _no_autocast(z1):
        z1, z2 = dist.gather_with_grad(z1.float()), dist.gather_with_grad(z2.float())  # [N', D]
        d = z1.shape[1]
        invariance = F.mse_loss(z1, z2)

        def var_cov(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            std = torch.sqrt(z.var(0) + eps)  # [D], unbiased
            return F.relu(gamma - std).mean(), _off_diagonal_sq_sum(normalized_covariance(z)) / d**2

        v1, c1 = var_cov(z1)
        v2, c2 = var_cov(z2)
        variance, covariance = v1 + v2, c1 + c2
        loss = sim_coeff * invariance + std_coeff * variance + cov_coeff * covariance
        return loss, {
            "invariance": invariance.detach(),
            "variance": variance.detach(),
            "covariance": covariance.detach(),
        }


def whiten(x: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Cholesky whitening of one sub-batch (Ermolov et al. 2021, eq. 4-5): x [M, D] ->
    W (x - mean) with W = L^{-1}, L L^T = (1 - eps) Sigma + eps I, Sigma the unbiased
    covariance of the sub-batch; the result has zero mean and identity covariance (eps = 0).
    Differentiable through the mean, Sigma and the Cholesky factor. Needs M > D unless eps > 0.
    Written with torch.linalg (cholesky, solve_triangular); float32, autocast off."""
    with _no_autocast(x):
        x = x.float()
        m, d = x.shape
        xc = x - x.mean(0)
        cov = xc.T @ xc / (m - 1)  # [D, D]
        if eps:
            cov = (1 - eps) * cov + eps * torch.eye(d, device=x.device)
        chol = torch.linalg.cholesky(cov)  # lower triangular L
        return torch.linalg.solve_triangular(chol, xc.T, upper=False).T  # (L^{-1} xc^T)^T: [M, D]


def normalized_mse_symmetric(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """||a/||a|| - b/||b|| ||^2 = 2 - 2 cos(a, b), mean over rows; gradient to both sides."""
    return (2 - 2 * (F.normalize(a, dim=-1) * F.normalize(b, dim=-1)).sum(-1)).mean()


def wmse_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    w_size: int,
    w_iter: int = 1,
    eps: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """W-MSE with two positives (Ermolov et al. 2021, eq. 6 and algorithm 1).

    z1, z2: [N, D] embeddings of two views of the same N images. The batch is cut at random into
    sub-batches of ``w_size`` images (N // w_size of them; a remainder is spread over them,
    the official code instead requires N to be a multiple); each view's sub-batch is whitened on its own (``whiten``), then the positives are
    compared by the normalised MSE 2 - 2 cos. Repeated ``w_iter`` times with fresh random
    permutations (the paper's "whitening iterations"), averaged. The permutation is drawn on
    the CPU generator (the loop checkpoints its state, so resumed runs draw the same).
    Distributed: sub-batches are drawn within each process's batch; since whitening only
    mixes rows of one sub-batch, that is a one-big-batch run whose split never crosses processes,
    and DDP's average of the per-process means is the mean over the whole batch.
    """
    n = z1.shape[0]
    k = max(1, n // w_size)
    total = z1.new_zeros((), dtype=torch.float32)
    for _ in range(w_iter):
        perm = torch.randperm(n, generator=generator).to(z1.device)
        for idx in perm.tensor_split(k):  # k chunks of w_size .. 2 w_size - 1 rows (all of them if N < w_size)
            w1, w2 = whiten(z1[idx], eps), whiten(z2[idx], eps)
            total = total + normalized_mse_symmetric(w1, w2) * (len(idx) / n)
    return total / w_iter


def tico_loss(
    z1: torch.Tensor, z2: torch.Tensor, c_prev: torch.Tensor, beta: float = 0.9, rho: float = 20.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """TiCo (Zhu, Liu, Wang 2022, Algorithm 1): with unit rows z1, z2 [N, D] and the running covariance
    C_{t-1} [D, D] (no gradient),

        B = z1^T z1 / N,   C_t = beta C_{t-1} + (1 - beta) B,
        L = -1/N sum_i z1_i . z2_i + rho/N sum_i z1_i^T C_t z1_i.

    The first term is transformation invariance; the second pushes z1 away from the directions the
    embeddings have occupied lately (covariance contrast). The gradient flows through B, as in the
    paper's algorithm; z2 (the momentum encoder's) is a target. Across processes B is the global batch's
    (summed with gradient). Returns (loss, C_t detached: the caller stores it after the step)."""
    with _no_autocast(z1):
        z1 = F.normalize(z1.float(), dim=-1)
        z2 = F.normalize(z2.detach().float(), dim=-1)
        n = z1.shape[0] * dist.world_size()
        b = dist.all_reduce_sum_with_grad(z1.T @ z1) / n  # [D, D]
        c = beta * c_prev.detach().float() + (1 - beta) * b
        loss = -(z1 * z2).sum(dim=1).mean() + rho * ((z1 @ c) * z1).sum(dim=1).mean()
        return loss, c.detach()
