"""Classifier architectures a SafeView checkpoint can name, all built locally with no weight download.

The paper fine-tunes torchvision's ResNet-50; ``resnet18``/``resnet34`` are cheaper options, and
``small`` is a narrow residual CNN for the synthetic demo models (trains in minutes on two cores).
Every architecture keeps its BatchNorm/conv biases, which FullGrad's bias-gradients need.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn


class _Block(nn.Module):
    """Two 3×3 conv-BN-ReLU layers with a residual shortcut (projected when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=False)
        self.shortcut = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class SmallResNet(nn.Module):
    """A narrow four-stage ResNet (stem stride 2, stages at strides 1,2,2,2). Its head sees global
    average and global max pooling side by side: max pooling keeps the signal of a small local
    pattern (a stand-in covering 1 % of the image) that averaging would dilute."""

    def __init__(self, num_classes: int, width: int = 24) -> None:
        super().__init__()
        widths = [width, width * 2, width * 4, width * 8]
        self.stem = nn.Sequential(
            nn.Conv2d(3, widths[0], 3, 2, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=False)
        )
        stages, cin = [], widths[0]
        for i, w in enumerate(widths):
            stages.append(_Block(cin, w, 1 if i == 0 else 2))
            cin = w
        self.layers = nn.Sequential(*stages)
        self.avg = nn.AdaptiveAvgPool2d(1)
        self.max = nn.AdaptiveMaxPool2d(1)
        self.fc = nn.Linear(2 * cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.layers(self.stem(x))
        return self.fc(torch.cat([torch.flatten(self.avg(features), 1), torch.flatten(self.max(features), 1)], 1))


def _torchvision(name: str) -> Callable[..., nn.Module]:
    def build(num_classes: int, **kwargs) -> nn.Module:
        import torchvision.models as tvm

        return getattr(tvm, name)(weights=None, num_classes=num_classes, **kwargs)

    return build


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "small": SmallResNet,
    "resnet18": _torchvision("resnet18"),
    "resnet34": _torchvision("resnet34"),
    "resnet50": _torchvision("resnet50"),
    "mobilenet_v3_small": _torchvision("mobilenet_v3_small"),
}


def build(arch: str, num_classes: int, **kwargs) -> nn.Module:
    """Build architecture ``arch`` with freshly initialised weights and ``num_classes`` outputs."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[arch](num_classes=num_classes, **kwargs)
