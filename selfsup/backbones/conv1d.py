"""A strided 1-D convolutional encoder for sequences: CPC's audio encoder (van den Oord et al. 2018).

CPC encodes raw 16 kHz audio with five strided 1-D convolutions (filters 10, 8, 4, 4, 4,
strides 5, 4, 2, 2, 2, 512 channels, ReLU; a 160x down-sampling). That is ``small_stem=False``
here. The default ``small_stem=True`` keeps the five layers but uses kernel 4 and stride 2
(stride ``stem_stride`` for the first), a 16x down-sampling that suits the short segments CPC's
sequence mode cuts from a 1024-sample signal.

Input: ``[B, C, H, W]`` read as the sequence ``x.flatten(2)`` of length H*W — so ``[B, 1, 1, T]``
and the ``signals`` dataset's row-major ``[B, 1, 32, 32]`` layout both work — and the output,
like every backbone's, is ``[B, num_features]`` (the mean over time of the last layer).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_PAPER = ((10, 5), (8, 4), (4, 2), (4, 2), (4, 2))  # (kernel, stride), van den Oord et al. 2018, sec. 3.1


class _SameConv1d(nn.Conv1d):
    """Conv1d with TensorFlow's "SAME" padding: ceil(L / stride) outputs for any length L >= 1, so the
    down-sampling is exact (16000 samples -> 100 frames with the paper's layers) and a segment
    shorter than the total stride still gives one frame. torch's padding="same" allows stride 1 only."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length, k, s = x.shape[-1], self.kernel_size[0], self.stride[0]
        pad = max((-(-length // s) - 1) * s + k - length, 0)
        return super().forward(F.pad(x, (pad // 2, pad - pad // 2)))


class Conv1dEncoder(nn.Module):
    """Five strided conv1d-norm-ReLU layers, then the mean over time: [B,C,H,W] -> [B, num_features]."""

    sequence_input = True  # tells CPC (mode "auto") to cut segments along time rather than image patches

    def __init__(self, in_channels: int = 1, width: float = 1.0, small_stem: bool = True, stem_stride: int = 1):
        super().__init__()
        c = max(8, int(round(512 * width)))
        spec = _PAPER if not small_stem else ((4, stem_stride),) + ((4, 2),) * 4
        layers, prev = [], in_channels
        for k, s in spec:
            layers += [
                _SameConv1d(prev, c, k, s, bias=False),
                # a per-sample norm: no statistics shared between the segments and images of a
                # batch, which a contrastive task could read (Henaff et al. 2019 replace
                # BatchNorm by LayerNorm in CPC's encoder for this reason)
                nn.GroupNorm(1, c),
                nn.ReLU(inplace=True),
            ]
            prev = c
        self.features = nn.Sequential(*layers)
        self.num_features = c

    def forward_maps(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, F, 1, L]: the local features along time (a 1-row map, as Deep InfoMax reads)."""
        return self.features(x.flatten(2)).unsqueeze(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_maps(x).mean((2, 3))
