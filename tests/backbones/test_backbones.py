"""Encoders: output shapes, names, torchvision compatibility."""

from __future__ import annotations

import pytest
import torch
import torchvision

import selfsup
from selfsup.backbones import create_backbone, list_backbones

CASES = [
    ("convnet", 0.25, 64),
    ("resnet10", 0.125, 64),
    ("resnet18", 0.125, 64),
    ("resnet18", 0.5, 256),
    ("resnet34", 0.125, 64),
    ("resnet50", 0.125, 256),
]


@pytest.mark.parametrize("name,width,features", CASES)
@pytest.mark.parametrize("in_channels", [1, 3])
def test_output_is_batch_by_num_features(name, width, features, in_channels):
    net = create_backbone(name, in_channels=in_channels, width=width)
    assert net.num_features == features
    x = torch.randn(3, in_channels, 16, 16)
    y = net(x)
    assert y.shape == (3, features)
    assert torch.isfinite(y).all()
    y.sum().backward()
    assert all(p.grad is not None for p in net.parameters())


@pytest.mark.parametrize("name", ["convnet", "resnet18"])
def test_large_stem_and_other_sizes(name):
    net = create_backbone(name, in_channels=3, width=0.125, small_stem=False)
    for side in (32, 40):
        assert net(torch.randn(2, 3, side, side)).shape == (2, net.num_features)


def test_every_listed_backbone_builds():
    assert {"convnet", "resnet10", "resnet18", "resnet34", "resnet50"} <= set(list_backbones())
    assert {"vit_micro", "vit_tiny", "vit_small", "vit_base"} <= set(list_backbones())
    for name in list_backbones():
        vit = name.startswith("vit")  # ViTs take an image side and a patch size, not a width
        net = create_backbone(name, in_channels=1, **({"image_size": 8} if vit else {"width": 0.125}))
        assert net(torch.randn(2, 1, 8, 8)).shape == (2, net.num_features)


def test_unknown_backbone_suggests_the_close_name():
    with pytest.raises(KeyError) as e:
        create_backbone("resnet81")
    msg = e.value.args[0]
    assert "resnet81" in msg and "'resnet18'" in msg
    assert selfsup.create_backbone is create_backbone


def test_resnet18_matches_torchvision_names_shapes_and_function():
    ours = create_backbone("resnet18", in_channels=3, width=1.0, small_stem=False)
    tv = torchvision.models.resnet18(weights=None)
    tv_sd = {k: v for k, v in tv.state_dict().items() if not k.startswith("fc.")}
    our_sd = ours.state_dict()
    assert list(our_sd) == list(tv_sd)
    assert {k: tuple(v.shape) for k, v in our_sd.items()} == {k: tuple(v.shape) for k, v in tv_sd.items()}
    assert ours.num_features == tv.fc.in_features
    # our weights in torchvision's network compute the same features
    tv.fc = torch.nn.Identity()
    tv.load_state_dict(our_sd)
    with torch.no_grad():
        ours.bn1.running_mean.uniform_()  # non-trivial statistics so eval mode is exercised
        tv.bn1.running_mean.copy_(ours.bn1.running_mean)
        x = torch.randn(2, 3, 64, 64)
        torch.testing.assert_close(ours.eval()(x), tv.eval()(x))


def test_residual_branches_start_as_identity():
    # zero-init of each block's last BN (Goyal et al.): an initial block adds nothing to its shortcut
    net = create_backbone("resnet18", in_channels=3, width=0.125)
    block = net.layer1[1]
    x = torch.relu(torch.randn(2, block.conv1.in_channels, 8, 8))
    torch.testing.assert_close(block.eval()(x), x)
