"""TapConv2d: the tap-wise weight gradient equals autograd's through F.conv2d, and the module is nn.Conv2d."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from selfsup.backbones.resnet import ResNet
from selfsup.backbones.tap_conv import TapConv2d, use_tap_convs, weight_grad


@pytest.mark.parametrize(
    "cin,cout,size,k,stride,pad",
    [
        (5, 7, 1, 3, 1, 1),  # 1x1 map: 8 of 9 taps see only padding
        (5, 7, 2, 3, 2, 1),  # 2x2 -> 1x1 at stride 2
        (5, 7, 2, 1, 2, 0),  # a downsampling 1x1 convolution
        (4, 6, 2, 3, 1, 1),
        (3, 4, 5, 3, 2, 1),  # odd input, stride 2
        (3, 4, 4, 2, 1, 0),  # even kernel, no padding
        (2, 3, 6, 5, 1, 2),
    ],
)
def test_weight_grad_matches_autograd(cin, cout, size, k, stride, pad):
    torch.manual_seed(0)
    x = torch.randn(3, cin, size, size + 1, dtype=torch.float64)
    w = torch.randn(cout, cin, k, k, dtype=torch.float64, requires_grad=True)
    y = F.conv2d(x, w, stride=stride, padding=pad)
    g = torch.randn_like(y)
    (ref,) = torch.autograd.grad(y, w, g)
    mine = weight_grad(g, x, (k, k), (stride, stride), (pad, pad))
    torch.testing.assert_close(mine, ref, rtol=1e-12, atol=1e-12)


def test_module_gradients_match_conv2d_and_fall_back_on_large_maps():
    torch.manual_seed(0)
    ref = nn.Conv2d(6, 8, 3, 1, 1, bias=False).double()
    tap = use_tap_convs(nn.Sequential(nn.Conv2d(6, 8, 3, 1, 1, bias=False))).double()[0]
    tap.load_state_dict(ref.state_dict())
    assert type(tap) is TapConv2d and isinstance(tap, nn.Conv2d)
    for size in (1, 2, 8):  # 8x8 output: plain nn.Conv2d
        x1 = torch.randn(4, 6, size, size, dtype=torch.float64, requires_grad=True)
        x2 = x1.detach().clone().requires_grad_()
        assert tap._taps(x2) == (size * size <= 4)
        ref(x1).square().sum().backward()
        tap(x2).square().sum().backward()
        torch.testing.assert_close(x2.grad, x1.grad)
        torch.testing.assert_close(tap.weight.grad, ref.weight.grad)
        ref.zero_grad(), tap.zero_grad()


def test_bf16_autocast_casts_as_conv2d_does():
    torch.manual_seed(0)
    conv = TapConv2d(16, 16, 3, 1, 1, bias=False)
    x = torch.randn(8, 16, 2, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv(x)
        ref = F.conv2d(x, conv.weight, padding=1)
    assert y.dtype == ref.dtype == torch.bfloat16
    torch.testing.assert_close(y, ref)
    y.float().sum().backward()
    assert conv.weight.grad.dtype == torch.float32
    w = conv.weight.detach().bfloat16().requires_grad_()
    F.conv2d(x.bfloat16(), w, padding=1).float().sum().backward()
    torch.testing.assert_close(conv.weight.grad, w.grad.float(), rtol=2e-2, atol=2e-2)


def test_resnet_uses_tap_convs_with_torchvision_names():
    net = ResNet("resnet10", 1, width=0.25)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(type(m) is TapConv2d for m in convs)
    assert "layer4.0.conv2.weight" in net.state_dict() and "layer4.0.downsample.0.weight" in net.state_dict()
