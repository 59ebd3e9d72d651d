"""Architectures by name, apart from ``farm.models`` so that ``archs`` can register into it
without importing the package that imports it.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from farm.models.wrapper import NormalizedModel

ArchBuilder = Callable[[int, tuple[int, int, int]], nn.Module]
ARCHS: dict[str, ArchBuilder] = {}


def register_arch(name: str) -> Callable[[ArchBuilder], ArchBuilder]:
    """Decorator: make ``builder`` available as ``arch: <name>`` in configs."""

    def deco(builder: ArchBuilder) -> ArchBuilder:
        if name in ARCHS:
            raise ValueError(f"architecture {name!r} registered twice")
        ARCHS[name] = builder
        return builder

    return deco


def build_net(arch: str, num_classes: int, image_shape: tuple[int, int, int]) -> nn.Module:
    """The bare network (inputs already normalised), as stored under ``net.`` in checkpoints."""
    if arch.startswith("torchvision:"):
        import torchvision

        name = arch.split(":", 1)[1]
        try:
            return torchvision.models.get_model(name, weights=None, num_classes=num_classes)
        except ValueError as exc:
            raise ValueError(f"arch {arch!r}: {exc}") from None
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {', '.join(sorted(ARCHS))} "
                         "or 'torchvision:<name>'")
    return ARCHS[arch](num_classes, tuple(image_shape))


def build_model(arch: str, num_classes: int, image_shape: tuple[int, int, int],
                mean: Sequence[float], std: Sequence[float]) -> NormalizedModel:
    """A freshly initialised ``arch`` that takes [0,1] images and returns K logits."""
    return NormalizedModel(build_net(arch, num_classes, image_shape), mean, std)
