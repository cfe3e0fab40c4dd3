"""Building blocks two or more methods share."""

from selfsup.nn.ema import cosine_momentum, ema_update, frozen_copy
from selfsup.nn.heads import mlp
from selfsup.nn.queue import MemoryBank, Queue, SupportSet
from selfsup.nn.runtime import Runtime

__all__ = ["MemoryBank", "Queue", "Runtime", "SupportSet", "cosine_momentum", "ema_update", "frozen_copy", "mlp"]
