"""Architectures of the benchmark, built for any K and C×H×W (32×32 is the design point).

All of them end in global average pooling so one definition serves every image size, and
none couples samples in eval mode (BatchNorm uses running statistics, dropout is off): a
pair's result must not depend on which other pairs share its batch (DESIGN.md, contracts).
"""
from __future__ import annotations

from torch import nn
import torch.nn.functional as F

from farm.models.registry import register_arch

Shape = tuple[int, int, int]


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


@register_arch("small_cnn")
def small_cnn(num_classes: int, image_shape: Shape) -> nn.Module:
    """~47k parameters, strided convs from the first layer on.

    Methods run thousands of forward+backward passes over P·B images per pair batch, so the
    default model is sized for speed on a 2-core CPU: stride 2 in the first conv cuts the
    dominant full-resolution cost by 4× while a 3×3 corner patch still reaches the features.
    """
    c = image_shape[0]
    return nn.Sequential(
        *_conv_bn(c, 16, 3, 2),      # 16×16
        *_conv_bn(16, 32, 3, 2),     # 8×8
        *_conv_bn(32, 48, 3, 2),     # 4×4
        *_conv_bn(48, 64, 3, 1),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes),
    )


class _Basic(nn.Module):
    """He et al. (2016) CIFAR basic block with the parameter-free option-A shortcut."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.stride, self.pad = stride, cout - cin

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        short = x
        if self.stride != 1 or self.pad:
            # Option A: subsample and zero-pad the channels (no extra weights).
            short = F.pad(x[:, :, ::self.stride, ::self.stride], (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return F.relu(out + short)


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32×32 inputs: widths 16/32/64, n basic blocks per stage."""

    def __init__(self, n: int, num_classes: int, in_channels: int):
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(in_channels, 16, 3))
        layers, cin = [], 16
        for i, width in enumerate((16, 32, 64)):
            for j in range(n):
                layers.append(_Basic(cin, width, 2 if i > 0 and j == 0 else 1))
                cin = width
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x):
        x = self.layers(self.stem(x))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


@register_arch("resnet20")
def resnet20(num_classes: int, image_shape: Shape) -> nn.Module:
    return CifarResNet(3, num_classes, image_shape[0])


@register_arch("resnet32")
def resnet32(num_classes: int, image_shape: Shape) -> nn.Module:
    return CifarResNet(5, num_classes, image_shape[0])


@register_arch("nin")
def nin(num_classes: int, image_shape: Shape) -> nn.Module:
    """Network in Network, CIFAR variant (Lin et al. 2014), with BatchNorm for stable training.

    Three mlpconv blocks (192/160/96, 192/192/192, 192/192/K); the last 1×1 conv emits K maps
    that global average pooling turns into logits, as in the original.
    """
    c = image_shape[0]
    return nn.Sequential(
        *_conv_bn(c, 192, 5), *_conv_bn(192, 160, 1), *_conv_bn(160, 96, 1),
        nn.MaxPool2d(3, 2, 1), nn.Dropout(0.5),
        *_conv_bn(96, 192, 5), *_conv_bn(192, 192, 1), *_conv_bn(192, 192, 1),
        nn.AvgPool2d(3, 2, 1), nn.Dropout(0.5),
        *_conv_bn(192, 192, 3), *_conv_bn(192, 192, 1),
        nn.Conv2d(192, num_classes, 1),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    )
