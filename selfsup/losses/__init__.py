"""Loss functions by family: pure functions of tensors.

Import a family's functions from its module (selfsup.losses.contrastive, .distillation,
.redundancy, .clustering, .mutual_info, .reconstruction); the most used are re-exported here.
"""

from selfsup.losses.contrastive import info_nce, infonce_bound, nt_xent
from selfsup.losses.distillation import normalized_mse

__all__ = ["info_nce", "infonce_bound", "normalized_mse", "nt_xent"]
