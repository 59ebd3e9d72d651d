"""Transformation-augmented variant of any method (METHODS.md §2(a), [S-J], [PB] augment=True).

Wraps the shared loop instead of copying a method: after stamping, each pair's mini-batch is
rotated by a random angle in [-1, +1] degrees and then randomly resized-cropped with scale
(0.99, 1.0) (torchvision's RandomResizedCrop defaults otherwise), one draw per mini-batch per
pair from the pair's own generator. [PB] transforms the *normalised* batch with fill 0; our
models normalise inside, so we transform in pixel space and fill with the dataset mean, which
is the same image after normalisation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torchvision.transforms.v2.functional as TF

from farm.methods.base import Augment


@dataclass(frozen=True)
class AugmentParams:
    max_degrees: float = 1.0
    scale: tuple[float, float] = (0.99, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g, dtype=torch.float64))


def crop_params(g: torch.Generator, h: int, w: int, scale: tuple[float, float],
                ratio: tuple[float, float]) -> tuple[int, int, int, int]:
    """RandomResizedCrop.get_params with an explicit generator (same algorithm and fallback)."""
    area = h * w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * _uniform(g, *scale)
        aspect = math.exp(_uniform(g, *log_ratio))
        cw = int(round(math.sqrt(target_area * aspect)))
        ch = int(round(math.sqrt(target_area / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            i = int(torch.randint(0, h - ch + 1, (1,), generator=g))
            j = int(torch.randint(0, w - cw + 1, (1,), generator=g))
            return i, j, ch, cw
    in_ratio = w / h
    if in_ratio < min(ratio):
        cw, ch = w, int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        ch, cw = h, int(round(h * max(ratio)))
    else:
        cw, ch = w, h
    return (h - ch) // 2, (w - cw) // 2, ch, cw


@dataclass(frozen=True)
class AugmentDraw:
    """One mini-batch's random transform: rotation angle (degrees) and crop box."""

    angle: float
    top: int
    left: int
    height: int
    width: int


def draw(g: torch.Generator, h: int, w: int, params: AugmentParams = AugmentParams()) -> AugmentDraw:
    """Angle first, then the crop (torchvision's RandomRotation/RandomResizedCrop order)."""
    angle = _uniform(g, -params.max_degrees, params.max_degrees)
    return AugmentDraw(angle, *crop_params(g, h, w, params.scale, params.ratio))


def apply(x: torch.Tensor, d: AugmentDraw, fill: list[float]) -> torch.Tensor:
    """Rotate (nearest, torchvision's default; uncovered pixels = ``fill``), then crop and
    resize back bilinearly; x: B×C×H×W, differentiable in x."""
    h, w = x.shape[-2:]
    x = TF.rotate(x, d.angle, interpolation=TF.InterpolationMode.NEAREST, fill=fill)
    return TF.resized_crop(x, d.top, d.left, d.height, d.width, [h, w], antialias=True)


def make_augment(mean: Sequence[float], params: AugmentParams = AugmentParams()) -> Augment:
    """An :data:`Augment` for the shared loop: differentiable, per-pair random draws."""
    fill = [float(m) for m in mean]

    def augment(x: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
        h, w = x.shape[-2:]
        # xi: B×C×H×W, one draw per pair and mini-batch from the pair's own generator
        return torch.stack([apply(xi, draw(g, h, w, params), fill) for xi, g in zip(x, generators)])

    return augment
