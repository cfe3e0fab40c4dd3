"""Building blocks two or more methods share."""

from selfsup.nn.ema import cosine_momentum, ema_update, frozen_copy
from selfsup.nn.heads import mlp
from selfsup.nn.queue import MemoryBank, Queue, SupportSet

__all__ = ["MemoryBank", "Queue", "SupportSet", "cosine_momentum", "ema_update", "frozen_copy", "mlp"]
