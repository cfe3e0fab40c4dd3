"""Losses compute in float32 even inside a bf16 autocast region.

``.float()`` on the inputs is not enough: under autocast a matmul of two float32 tensors still
runs in bf16 (8 bits of mantissa). With temperatures of 0.07-0.2 a cosine similarity rounded to
~3 significant digits becomes a logit error of several hundredths, which is the whole signal
between hard negatives. The encoders keep running in bf16; only the loss leaves autocast.
"""

from __future__ import annotations

import functools

import torch


def float32_loss(fn):
    """Decorator: run ``fn`` with autocast disabled on the device of its first tensor argument."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        t = next((a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)), None)
        device = t.device.type if t is not None else "cpu"
        with torch.autocast(device, enabled=False):
            return fn(*args, **kwargs)

    return wrapper
