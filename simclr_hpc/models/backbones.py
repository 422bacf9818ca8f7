"""torchvision ResNets as SimCLR encoders: optional CIFAR stem and a channel-width multiplier.

With ``width=1`` and ``cifar_stem=False`` the module tree and parameter names are exactly torchvision's, so torchvision
weights load into it; the classification layer is dropped (``fc`` is Identity) and the encoder returns ``h`` of
shape ``[B, feat_dim]`` after global average pooling.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, conv1x1

DEPTHS = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
    "resnet152": (Bottleneck, (3, 8, 36, 3)),
}


class ResNetEncoder(nn.Module):
    """ResNet trunk with torchvision's module names (conv1, bn1, layer1..layer4), ending in global average pooling."""

    def __init__(self, block: type[nn.Module], layers: tuple[int, ...], width: float = 1.0, cifar_stem: bool = False):
        super().__init__()
        widths = [max(8, int(round(64 * width * 2**i))) for i in range(4)]
        self.inplanes = widths[0]
        if cifar_stem:
            # 32 px images: a 7x7 stride-2 conv plus max-pool would leave 8x8 maps after the stem (SimCLR appendix B.9).
            self.conv1 = nn.Conv2d(3, widths[0], kernel_size=3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(3, widths[0], kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(block, widths[0], layers[0], stride=1)
        self.layer2 = self._make_layer(block, widths[1], layers[1], stride=2)
        self.layer3 = self._make_layer(block, widths[2], layers[2], stride=2)
        self.layer4 = self._make_layer(block, widths[3], layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Identity()
        self.feat_dim = widths[3] * block.expansion
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, block, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride), nn.BatchNorm2d(planes * block.expansion)
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def build_backbone(name: str, cifar_stem: bool = False, width: float = 1.0) -> ResNetEncoder:
    """A ResNet encoder by torchvision name (``resnet18`` ... ``resnet152``); ``.feat_dim`` is the width of ``h``."""
    if name not in DEPTHS:
        raise ValueError(f"unknown backbone {name!r}; allowed: {', '.join(DEPTHS)}")
    block, layers = DEPTHS[name]
    return ResNetEncoder(block, layers, width=width, cifar_stem=cifar_stem)
