"""Self-distillation losses (BYOL, SimSiam, DINO, iBOT) and DINOv2's additions (Sinkhorn-Knopp
teacher, KoLeo)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from selfsup.losses.clustering import sinkhorn


def normalized_mse(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """BYOL's loss ||p/||p|| - z/||z|| ||^2 = 2 - 2 cos(p, z), mean over the batch. z gets no gradient."""
    p = F.normalize(p.float(), dim=-1)
    z = F.normalize(z.detach().float(), dim=-1)
    return (2 - 2 * (p * z).sum(dim=-1)).mean()


def negative_cosine(p: torch.Tensor, z: torch.Tensor, stop_gradient: bool = True) -> torch.Tensor:
    """SimSiam's D(p, z) = -cos(p, stopgrad(z)) = -<p/||p||, z/||z||>, mean over the batch
    (Chen & He 2021, eq. 1-2). p, z: [N, D]. ``stop_gradient=False`` lets the gradient reach z
    too: the paper's ablation (sec. 4.1), under which the representation collapses."""
    p = F.normalize(p.float(), dim=-1)
    z = F.normalize((z.detach() if stop_gradient else z).float(), dim=-1)
    return -(p * z).sum(dim=-1).mean()


def centred_softmax(teacher: torch.Tensor, center: torch.Tensor, teacher_temp: float = 0.04) -> torch.Tensor:
    """DINO's teacher targets P_t = softmax((t - c) / tau_t): centred and sharpened, float32, no gradient.
    teacher: [..., K] logits; center: [K]."""
    with torch.autocast(teacher.device.type, enabled=False):
        return F.softmax((teacher.float() - center.float()) / teacher_temp, dim=-1).detach()


def sinkhorn_knopp_teacher(teacher: torch.Tensor, teacher_temp: float = 0.07, iterations: int = 3) -> torch.Tensor:
    """DINOv2's alternative to centring (Oquab et al. 2023, sec. 4; the official
    ``DINOLoss.sinkhorn_knopp_teacher``, taken from SwAV): the teacher's targets are SwAV's balanced
    codes of its logits at temperature tau_t, Q = exp(t / tau_t) rescaled by 3 rounds of Sinkhorn-Knopp so
    that every prototype gets an equal share of the batch (all processes). teacher: [..., K] logits ->
    [..., K] targets, each row summing to 1, float32, no gradient. Replaces the centre: no EMA to update."""
    shape = teacher.shape
    return sinkhorn(teacher.reshape(-1, shape[-1]), epsilon=teacher_temp, iterations=iterations).view(shape)


def dino_cross_entropy(student: torch.Tensor, targets: torch.Tensor, student_temp: float = 0.1) -> torch.Tensor:
    """DINO's multi-crop cross-entropy given the teacher's target distributions.

    student: [V, B, K] student logits of every crop (the G globals first); targets: [G, B, K] the
    teacher's distributions on the global crops (``centred_softmax`` or ``sinkhorn_knopp_teacher``).
    The loss is -sum_k P_t(x_i) log P_s(x_j), P_s = softmax(s / tau_s), averaged over the batch and over
    the pairs (teacher global i, student crop j != i) — the official code's mean over terms."""
    v, b, _ = student.shape
    g = targets.shape[0]
    # float32 throughout: under autocast the einsum (a batched matmul) would otherwise run in bf16
    with torch.autocast(student.device.type, enabled=False):
        p_t = targets.float().detach()  # [G, B, K], a target
        log_p_s = F.log_softmax(student.float() / student_temp, dim=-1)  # [V, B, K]
        ce = -torch.einsum("ibk,jbk->ij", p_t, log_p_s) / b  # [G, V]: mean over the batch
    off_diagonal = ~torch.eye(g, v, dtype=torch.bool, device=ce.device)  # never the same crop
    return ce[off_diagonal].mean()


def dino_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    center: torch.Tensor,
    student_temp: float = 0.1,
    teacher_temp: float = 0.04,
) -> torch.Tensor:
    """DINO's self-distillation cross-entropy (Caron et al. 2021, eq. 2-3 and Algorithm 1).

    student: [V, B, K] student logits of every crop (the G globals first); teacher: [G, B, K]
    teacher logits of the global crops; center: [K]. The teacher's distribution is centred and
    sharpened, P_t = softmax((t - c) / tau_t), and gets no gradient; the student's is
    P_s = softmax(s / tau_s). The loss is -sum_k P_t(x_i) log P_s(x_j) averaged over the batch and
    over the pairs (teacher global i, student crop j != i) — the official code's mean over terms.
    """
    return dino_cross_entropy(student, centred_softmax(teacher, center, teacher_temp), student_temp)


def masked_patch_distillation(
    student: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, student_temp: float = 0.1
) -> torch.Tensor:
    """iBOT's masked image modelling loss (Zhou et al. 2022, sec. 3; the official ``iBOTLoss``, and DINOv2's
    ``iBOTPatchLoss.forward_masked``): at each masked patch the student's distribution over K prototypes
    matches the teacher's target for the same patch of the same, unmasked view.

    student: [M, K] student logits at the masked patches, in the order of ``mask.nonzero()`` (row-major
    over images, then patches); targets: [M, K] the teacher's distributions there; mask: [N, P] bool,
    True = masked (N images of all global views). Per image, the mean over its masked patches of
    -sum_k P_t log P_s (P_s = softmax(s / tau_s)); then the mean over the N images, where an image with no
    masked patch contributes 0 (the official ``/ mask.sum(-1).clamp(min=1)``, then ``.mean()``)."""
    with torch.autocast(student.device.type, enabled=False):
        ce = -(targets.float().detach() * F.log_softmax(student.float() / student_temp, dim=-1)).sum(-1)  # [M]
        weight = (1.0 / mask.sum(-1).clamp_min(1).float())[:, None].expand_as(mask)[mask]  # [M]: 1 / |M_n|
        return (ce * weight).sum() / mask.shape[0]


def koleo(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """The Kozachenko-Leonenko differential-entropy regulariser (Sablayrolles et al. 2019, "Spreading
    vectors for similarity search"), which DINOv2 adds on the student's [CLS] features (Oquab et al.
    2023, sec. 4; the official ``KoLeoLoss``): with x_i L2-normalised and
    d_i = min_{j != i} ||x_i - x_j||, L = -1/N sum_i log(d_i + eps). It pushes each feature away from its
    nearest neighbour in the batch, spreading the features uniformly. x: [N, D], N >= 2; float32."""
    with torch.autocast(x.device.type, enabled=False):
        x = F.normalize(x.float(), eps=eps, dim=-1)
        dots = (x @ x.T).detach()  # cosines; the nearest neighbour has the largest
        dots.fill_diagonal_(float("-inf"))  # never itself (the official fills -1)
        nearest = dots.argmax(dim=1)  # [N]
        d = F.pairwise_distance(x, x[nearest], p=2, eps=eps)  # ||x_i - x_nn(i) + eps||, as nn.PairwiseDistance
        return -torch.log(d + eps).mean()


@torch.no_grad()
def mean_shift_neighbours(z: torch.Tensor, bank: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """MSF's NN(z, M, k) (Koohpayegani et al. 2021, sec. 3): the k bank entries closest to each target z
    in Euclidean distance of unit vectors (= largest cosine). z: [N, D]; bank: [M, D], which already
    holds this step's targets (so each z finds itself first, at distance 0, as in the official code).
    Returns (the neighbours [N, k, D], unit length, no gradient; their cosines to z [N, k]);
    k is capped at M."""
    with torch.autocast(z.device.type, enabled=False):
        z = F.normalize(z.float(), dim=-1)
        b = F.normalize(bank.float(), dim=-1)
        cos, idx = (z @ b.T).topk(min(k, b.shape[0]), dim=1)  # [N, k]: smallest distances 2 - 2 cos
        return b[idx], cos


def mean_shift_loss(p: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
    """MSF's loss (Koohpayegani et al. 2021, eq. 1): L = 1/k sum_{b in NN(z, k)} ||p/||p|| - b||^2
    = 1/k sum_b (2 - 2 cos(p, b)), mean over the batch: the online prediction p of one view is pulled
    toward the mean of the target's k nearest neighbours in the memory bank (the target itself among
    them). p: [N, D] (with gradient); neighbours: [N, k, D] unit vectors (no gradient). float32."""
    with torch.autocast(p.device.type, enabled=False):
        p = F.normalize(p.float(), dim=-1)
        cos = torch.einsum("nd,nkd->nk", p, neighbours.detach().float())  # [N, k]
        return (2 - 2 * cos).mean()


def relational_loss(
    q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, student_temp: float = 0.1, teacher_temp: float = 0.04
) -> torch.Tensor:
    """ReSSL's relational cross-entropy (Zheng et al. 2021, eq. 3-5; the official ``ressl.py``).

    q: [N, D] the student's embeddings of the strong view (with gradient); k: [N, D] the teacher's of the
    weak view (no gradient); queue: [K, D] past teacher embeddings. All L2-normalised here. The relation
    of an image to the queue is p^i = softmax_j(q . queue_j / tau_s) for the student and
    softmax_j(k . queue_j / tau_t) for the teacher, tau_t < tau_s sharpening the target; the loss is
    -sum_j p_t^j log p_s^j, mean over the batch. float32."""
    with torch.autocast(q.device.type, enabled=False):
        q = F.normalize(q.float(), dim=-1)
        k = F.normalize(k.detach().float(), dim=-1)
        queue = F.normalize(queue.detach().float(), dim=-1)
        p_t = F.softmax(k @ queue.T / teacher_temp, dim=1)  # [N, K], a target
        log_p_s = F.log_softmax(q @ queue.T / student_temp, dim=1)  # [N, K]
        return -(p_t * log_p_s).sum(dim=1).mean()
