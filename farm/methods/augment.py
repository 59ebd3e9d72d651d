"""Transformation-augmented variant of any method (METHODS.md §2(a), [S-J], [PB] augment=True).

Wraps the shared loop instead of copying a method: after stamping, each pair's mini-batch is
rotated by a random angle in [-1, +1] degrees and then randomly resized-cropped with scale
(0.99, 1.0) (torchvision's RandomResizedCrop defaults otherwise), one draw per mini-batch per
pair from the pair's own generator. [PB] transforms the *normalised* batch with fill 0; our
models normalise inside, so we transform in pixel space and fill with the dataset mean, which
is the same image after normalisation. The draws are per pair (Python, from each pair's
generator); the transform itself runs for all pairs at once (:func:`transform`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from farm.host_copy import to_device
from farm.methods.base import Augment
from farm.rotation import rotation_grid


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


def _rotation(angles: Sequence[float], h: int, w: int,
              dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(grid, outside) of the pairs' rotations, on the CPU: the P×H×W×2 grid and which output
    pixels have no source pixel (P×H×W); None when every rotation is the identity (always the
    case for +-1 degree on 32x32 images: no pixel centre crosses a border). Found by rotating an
    image of pixel indices with torchvision's grid (farm.rotation) and kernel: 2 planes per pair, not B·C."""
    p = len(angles)
    grid = rotation_grid(angles, h, w, dtype)
    index = torch.arange(h * w, dtype=dtype).view(1, 1, h, w).expand(p, 1, h, w)
    out = F.grid_sample(torch.cat((index, torch.ones_like(index)), dim=1), grid, mode="nearest",
                        padding_mode="zeros", align_corners=False)
    outside = out[:, 1] < 0.5
    if not bool(outside.any()) and torch.equal(out[:, 0], index[:, 0]):
        return None
    return grid, outside


def _rotate(x: torch.Tensor, angles: Sequence[float], fill: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour rotation of each pair's images by its own angle in one grid_sample
    (a pair's B·C planes share its grid); uncovered pixels become ``fill`` (C values)."""
    p, b, c, h, w = x.shape
    rotation = _rotation(angles, h, w, x.dtype)
    if rotation is None:
        return x
    grid, outside = (to_device(t, x.device) for t in rotation)
    out = F.grid_sample(x.reshape(p, b * c, h, w), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    # zero padding leaves exactly 0 where a pixel has no source: adding the fill there is exact
    return out.view(p, b, c, h, w) + outside.view(p, 1, 1, h, w) * fill.view(1, 1, c, 1, 1)


def _crop_axis(starts: list[int], lengths: list[int], size: int, dtype: torch.dtype) -> torch.Tensor:
    """P×size grid coordinates along one axis: output pixel i reads crop coordinate
    (i + 0.5) * length / size - 0.5 clamped to the crop, as torch's bilinear resize does (its
    antialiased weights are exactly these when enlarging, and crops never exceed the image)."""
    start = torch.tensor(starts, dtype=dtype).view(-1, 1)
    length = torch.tensor(lengths, dtype=dtype).view(-1, 1)
    i = torch.arange(size, dtype=dtype)
    u = torch.minimum(((i + 0.5) * (length / size) - 0.5).clamp(min=0), length - 1) + start
    return (2 * u + 1) / size - 1


def _resized_crop(x: torch.Tensor, draws: Sequence[AugmentDraw]) -> torch.Tensor:
    """Each pair's crop box resized back to H×W (bilinear) in one grid_sample whose grid maps
    each pair's output pixels into its own box. Pairs whose box is the whole image (most of them
    on small images) are left as they are, as torchvision's resize does."""
    _, b, c, h, w = x.shape
    cropped = [i for i, d in enumerate(draws) if (d.height, d.width) != (h, w)]
    if not cropped:
        return x
    sel = [draws[i] for i in cropped]
    gx = _crop_axis([d.left for d in sel], [d.width for d in sel], w, x.dtype)
    gy = _crop_axis([d.top for d in sel], [d.height for d in sel], h, x.dtype)
    grid = torch.stack((gx[:, None, :].expand(-1, h, -1), gy[:, :, None].expand(-1, -1, w)), dim=-1)
    index = to_device(torch.tensor(cropped), x.device)
    k = len(cropped)
    y = F.grid_sample(x[index].reshape(k, b * c, h, w), to_device(grid, x.device), mode="bilinear",
                      padding_mode="border", align_corners=False)
    return x.index_copy(0, index, y.view(k, b, c, h, w))


def transform(x: torch.Tensor, draws: Sequence[AugmentDraw], fill: Sequence[float]) -> torch.Tensor:
    """Rotate (nearest, torchvision's default; uncovered pixels = ``fill``), then crop and
    resize back bilinearly, pair p of x (P×B×C×H×W) with ``draws[p]``; differentiable in x.

    Equal to ``TF.rotate`` then ``TF.resized_crop`` per pair (the same pixels chosen by the
    rotation; the resize's weights up to the rounding of its coordinates: ~1e-14 in float64,
    ~1e-5 at 224 px in float32), computed for all pairs in two grid_samples, in the images'
    dtype whatever the autocast precision.
    """
    if x.shape[0] != len(draws):
        raise ValueError(f"augment: {x.shape[0]} pairs of images but {len(draws)} draws")
    with torch.autocast(x.device.type, enabled=False):
        fill_t = to_device(torch.tensor(list(fill), dtype=x.dtype), x.device)
        return _resized_crop(_rotate(x, [d.angle for d in draws], fill_t), draws)


def make_augment(mean: Sequence[float], params: AugmentParams = AugmentParams()) -> Augment:
    """An :data:`Augment` for the shared loop: differentiable, per-pair random draws."""
    fill = [float(m) for m in mean]

    def augment(x: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
        h, w = x.shape[-2:]
        # x: P×B×C×H×W; one draw per pair and mini-batch from the pair's own generator
        return transform(x, [draw(g, h, w, params) for g in generators], fill)

    return augment
