"""Self-distillation losses (BYOL, SimSiam, DINO)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


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


def dino_loss(student: torch.Tensor, teacher: torch.Tensor, center: torch.Tensor, student_temp: float = 0.1,
              teacher_temp: float = 0.04) -> torch.Tensor:
    """DINO's self-distillation cross-entropy (Caron et al. 2021, eq. 2-3 and Algorithm 1).

    student: [V, B, K] student logits of every crop (the G globals first); teacher: [G, B, K]
    teacher logits of the global crops; center: [K]. The teacher's distribution is centred and
    sharpened, P_t = softmax((t - c) / tau_t), and gets no gradient; the student's is
    P_s = softmax(s / tau_s). The loss is -sum_k P_t(x_i) log P_s(x_j) averaged over the batch and
    over the pairs (teacher global i, student crop j != i) — the official code's mean over terms.
    """
    v, b, _ = student.shape
    g = teacher.shape[0]
    # float32 throughout: under autocast the einsum (a batched matmul) would otherwise run in bf16
    with torch.autocast(student.device.type, enabled=False):
        p_t = F.softmax((teacher.float() - center.float()) / teacher_temp, dim=-1).detach()  # [G, B, K], a target
        log_p_s = F.log_softmax(student.float() / student_temp, dim=-1)  # [V, B, K]
        ce = -torch.einsum("ibk,jbk->ij", p_t, log_p_s) / b  # [G, V]: mean over the batch
    off_diagonal = ~torch.eye(g, v, dtype=torch.bool, device=ce.device)  # never the same crop
    return ce[off_diagonal].mean()
