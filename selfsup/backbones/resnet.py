"""ResNets (He et al. 2016) sized for small images and small machines.

torchvision's ``BasicBlock``/``Bottleneck`` are reused; what torchvision lacks and we add is a
width multiplier for BasicBlock networks, any input channel count, and the small-image stem
(3x3 stride-1 conv, no max-pool — the CIFAR variant SimCLR uses at 32 px). Module names match
torchvision's ResNet (conv1, bn1, layer1..4) so weights export to it.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from selfsup.backbones.tap_conv import use_tap_convs

RESNET_LAYERS = {
    "resnet10": (BasicBlock, [1, 1, 1, 1]),
    "resnet18": (BasicBlock, [2, 2, 2, 2]),
    "resnet34": (BasicBlock, [3, 4, 6, 3]),
    "resnet50": (Bottleneck, [3, 4, 6, 3]),
}


class ResNet(nn.Module):
    """ResNet trunk without the classifier: images [B,C,H,W] -> pooled features [B, num_features]."""

    def __init__(
        self,
        depth: str = "resnet18",
        in_channels: int = 3,
        width: float = 1.0,
        small_stem: bool = True,
        stem_stride: int = 1,
    ):
        super().__init__()
        block, layers = RESNET_LAYERS[depth]
        widths = [max(8, int(round(64 * width * 2**i))) for i in range(4)]
        self.inplanes = widths[0]
        if small_stem:
            # stem_stride 2 halves the resolution at once: 4x fewer FLOPs in layer1 for 28-px inputs
            self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stem_stride, 1, bias=False)
            self.maxpool: nn.Module = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_channels, widths[0], 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(block, widths[0], layers[0], 1)
        self.layer2 = self._make_layer(block, widths[1], layers[1], 2)
        self.layer3 = self._make_layer(block, widths[2], layers[2], 2)
        self.layer4 = self._make_layer(block, widths[3], layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.num_features = widths[3] * block.expansion
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        # zero-init the last BN of each residual branch: each block starts as identity (Goyal et al. 2017)
        for m in self.modules():
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)
            elif isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)
        # the last stages' maps are 1x1-2x2 on small images, where oneDNN's weight gradient is slow on the CPU
        use_tap_convs(self)

    def _make_layer(self, block, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward_maps(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))  # [B, F, H/8, W/8]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.avgpool(self.forward_maps(x)), 1)
