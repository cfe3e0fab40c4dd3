"""A convolution whose weight gradient on the CPU is computed tap by tap when the output map is tiny.

Written by hand because it makes training faster and no library does it: on the CPU, oneDNN's weight
gradient for a convolution whose output map has a handful of positions (a ResNet's last stages on
16-32 px inputs: 1x1 and 2x2 maps) runs 5-40x slower than the same arithmetic as matrix products
(``python benchmarks/levers.py --profile``; docs/benchmarks.md "How fast"). For each kernel tap
(i, j) the gradient is one product over the output positions whose input lies inside the image,

    dL/dW[:, :, i, j] = sum_{n, h, w} g[n, :, h, w]^T  x[n, :, h*s + i - p, w*s + j - p]

so taps that only ever see padding (8 of 9 on a 1x1 map) cost nothing. The forward and the input
gradient stay oneDNN's; everything else (GPU, grouped or dilated convolutions, larger maps) is plain
``nn.Conv2d``. The parameters and their names are nn.Conv2d's, so checkpoints and exports do not change.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# output maps of at most this many positions take the tap-wise weight gradient; chosen by
# ``benchmarks/levers.py --profile`` on the 2-core CPU (faster at 1x1 and 2x2 maps, slower from 4x4 at stride 1)
MAX_POSITIONS = 4


def _valid(k: int, pad: int, stride: int, n_in: int, n_out: int) -> tuple[int, int]:
    """Output positions [lo, hi) whose input position ``o * stride + k - pad`` lies inside [0, n_in)."""
    lo = max(0, -((k - pad) // stride))
    hi = min(n_out, (n_in - 1 - k + pad) // stride + 1)
    return lo, hi


def weight_grad(
    g: torch.Tensor, x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int]
) -> torch.Tensor:
    """dL/dW of a convolution (no groups, no dilation) from its output gradient g [N, Co, Ho, Wo] and its
    input x [N, Ci, H, W], as one matrix product per kernel tap: [Co, Ci, kh, kw]."""
    co, ci = g.shape[1], x.shape[1]
    gt, xt = g.permute(0, 2, 3, 1), x.permute(0, 2, 3, 1)  # [N, Ho, Wo, Co], [N, H, W, Ci]: free in channels_last
    gw = g.new_zeros(co, kernel[0], kernel[1], ci)
    (sh, sw), (ph, pw) = stride, padding
    for i in range(kernel[0]):
        h0, h1 = _valid(i, ph, sh, x.shape[2], g.shape[2])
        for j in range(kernel[1]):
            w0, w1 = _valid(j, pw, sw, x.shape[3], g.shape[3])
            if h0 >= h1 or w0 >= w1:
                continue  # this tap sees only padding
            gs = gt[:, h0:h1, w0:w1].reshape(-1, co)
            xs = xt[
                :,
                h0 * sh + i - ph : (h1 - 1) * sh + i - ph + 1 : sh,
                w0 * sw + j - pw : (w1 - 1) * sw + j - pw + 1 : sw,
            ].reshape(-1, ci)
            gw[:, i, j] = gs.t() @ xs  # [Co, M] @ [M, Ci]
    return gw.permute(0, 3, 1, 2)


class _TapConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, stride, padding):
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding = stride, padding
        return F.conv2d(x, weight, None, stride, padding)

    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        gx = gw = None
        if ctx.needs_input_grad[0]:
            gx = torch.ops.aten.convolution_backward(
                g, x, weight, None, list(ctx.stride), list(ctx.padding), [1, 1], False, [0, 0], 1, [True, False, False]
            )[0]
        if ctx.needs_input_grad[1]:
            gw = weight_grad(g, x, weight.shape[2:], ctx.stride, ctx.padding)
        return gx, gw, None, None


class TapConv2d(nn.Conv2d):
    """nn.Conv2d with the tap-wise weight gradient on the CPU for output maps of <= MAX_POSITIONS positions."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._taps(x):
            return super().forward(x)
        if torch.is_autocast_enabled("cpu"):  # autocast does not reach into a custom Function: cast as it would
            dtype = torch.get_autocast_dtype("cpu")
            x, weight = x.to(dtype), self.weight.to(dtype)
        else:
            weight = self.weight
        return _TapConv.apply(x, weight, self.stride, self.padding)

    def _taps(self, x: torch.Tensor) -> bool:
        if (
            x.device.type != "cpu"
            or not torch.is_grad_enabled()
            or not self.weight.requires_grad
            or self.bias is not None
            or self.groups != 1
            or self.dilation != (1, 1)
            or self.padding_mode != "zeros"
            or isinstance(self.padding, str)
            or x.dim() != 4
        ):
            return False
        ho = (x.shape[2] + 2 * self.padding[0] - self.kernel_size[0]) // self.stride[0] + 1
        wo = (x.shape[3] + 2 * self.padding[1] - self.kernel_size[1]) // self.stride[1] + 1
        return ho * wo <= MAX_POSITIONS


def use_tap_convs(module: nn.Module, on: bool = True) -> nn.Module:
    """Make every plain nn.Conv2d inside ``module`` a TapConv2d, in place (same parameters and names);
    ``on=False`` turns them back into plain nn.Conv2d (the benchmarks' baseline)."""
    old, new = (nn.Conv2d, TapConv2d) if on else (TapConv2d, nn.Conv2d)
    for m in module.modules():
        if type(m) is old:
            m.__class__ = new
    return module
