"""Building blocks two or more methods share."""
from selfsup.nn.ema import cosine_momentum, ema_update, frozen_copy
from selfsup.nn.heads import mlp

__all__ = ["cosine_momentum", "ema_update", "frozen_copy", "mlp"]
