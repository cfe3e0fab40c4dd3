"""Loss functions by family: pure functions of tensors."""
from selfsup.losses.contrastive import infonce_bound, nt_xent
from selfsup.losses.distillation import normalized_mse

__all__ = ["infonce_bound", "normalized_mse", "nt_xent"]
