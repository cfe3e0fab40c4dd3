"""The conv1d backbone: CPC's strided 1-D encoder, reading [B,C,H,W] as the sequence x.flatten(2)."""

from __future__ import annotations

import torch

from selfsup.backbones import create_backbone, list_backbones


def test_conv1d_is_listed_and_maps_1xT_and_folded_layouts_alike():
    assert "conv1d" in list_backbones()
    torch.manual_seed(0)
    net = create_backbone("conv1d", in_channels=1, width=0.125).eval()
    assert net.num_features == 64 and net.sequence_input
    x = torch.randn(3, 1, 1, 1024)  # [B, 1, 1, T]
    with torch.no_grad():
        y = net(x)
        assert y.shape == (3, 64) and torch.isfinite(y).all()
        # the signals dataset stores T = 1024 samples row-major as 32x32: the same sequence
        torch.testing.assert_close(net(x.view(3, 1, 32, 32)), y)
        assert net.forward_maps(x).shape == (3, 64, 1, 1024 // 16)  # default small stem: 16x down-sampling
        torch.testing.assert_close(net.forward_maps(x).mean((2, 3)), y)


def test_conv1d_paper_layout_downsamples_160x_and_short_inputs_still_work():
    net = create_backbone("conv1d", in_channels=1, width=0.125, small_stem=False)  # 10/5, 8/4, 4/2 x3
    assert net.forward_maps(torch.randn(2, 1, 1, 16000)).shape[-1] == 100  # 1 s of 16 kHz -> 100 frames (10 ms each)
    assert net(torch.randn(2, 1, 1, 7)).shape == (2, 64)  # fewer samples than one stride: still one frame
    strided = create_backbone("conv1d", in_channels=1, width=0.125, stem_stride=2)
    assert strided.forward_maps(torch.randn(2, 1, 1, 1024)).shape[-1] == 1024 // 32


def test_conv1d_normalises_per_sample_so_batch_mates_do_not_leak():
    torch.manual_seed(0)
    net = create_backbone("conv1d", in_channels=1, width=0.125).train()  # train mode: BatchNorm would mix
    x = torch.randn(4, 1, 1, 256)
    torch.testing.assert_close(net(x)[:1], net(x[:1]))
    y = net(x)
    y.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
