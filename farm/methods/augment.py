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

import functools
import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

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


def _rotation_grid(angles: Sequence[float], h: int, w: int, dtype: torch.dtype,
                   device: torch.device) -> torch.Tensor:
    """P×H×W×2 sampling grid (grid_sample's normalised coordinates) of each pair's rotation
    about the image centre: torchvision's ``rotate_image`` grid (inverse matrix of a rotation
    by -(angle mod 360), pixel centres at half-integer offsets), one per pair."""
    rad = torch.tensor([math.radians(-(a % 360)) for a in angles], dtype=torch.float64)
    cos, sin = rad.cos().to(device, dtype).view(-1, 1, 1), rad.sin().to(device, dtype).view(-1, 1, 1)
    xs = torch.linspace((1 - w) * 0.5, (w - 1) * 0.5, w, dtype=dtype, device=device).view(1, 1, w)
    ys = torch.linspace((1 - h) * 0.5, (h - 1) * 0.5, h, dtype=dtype, device=device).view(1, h, 1)
    gx = (cos * xs + sin * ys) / (0.5 * w)
    gy = (cos * ys - sin * xs) / (0.5 * h)
    return torch.stack((gx, gy), dim=-1)


def _rotate(x: torch.Tensor, angles: Sequence[float], fill: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour rotation of each pair's images by its own angle in ONE grid_sample
    (the pair's B·C planes share its grid); uncovered pixels become ``fill`` (C values)."""
    p, b, c, h, w = x.shape
    planes = torch.cat((x.reshape(p, b * c, h, w), torch.ones_like(x[:, 0, :1])), dim=1)  # + coverage mask
    out = F.grid_sample(planes, _rotation_grid(angles, h, w, x.dtype, x.device), mode="nearest",
                        padding_mode="zeros", align_corners=False)
    covered = out[:, -1:].unsqueeze(1) >= 0.5  # P×1×1×H×W
    return torch.where(covered, out[:, :-1].view(p, b, c, h, w), fill.view(1, 1, c, 1, 1))


@functools.lru_cache(maxsize=None)
def _resize_weights(size_in: int, size_out: int) -> torch.Tensor:
    """size_out×size_in weights of torch's bilinear antialiased resize (what TF.resize calls),
    read off by resizing one-hot rows, so they are torch's own weights, float64. (Rows, not
    columns: this torch's antialiased kernel ignores the height of a one-pixel-wide image.)"""
    onehots = torch.eye(size_in, dtype=torch.float64).view(1, size_in, 1, size_in)
    return F.interpolate(onehots, size=(1, size_out), mode="bilinear", align_corners=False,
                         antialias=True)[0, :, 0, :].T


@functools.lru_cache(maxsize=None)
def _crop_resize_matrix(start: int, length: int, size: int) -> torch.Tensor:
    """size×size matrix that keeps [start, start+length) of an axis and resizes it to size."""
    m = torch.zeros(size, size, dtype=torch.float64)
    m[:, start:start + length] = _resize_weights(length, size)
    return m


def _resized_crop(x: torch.Tensor, draws: Sequence[AugmentDraw]) -> torch.Tensor:
    """Each pair's crop box resized back to H×W (bilinear, antialiased) as two batched matrix
    products, rows then columns: out_p = Y_p · x_p · X_pᵀ. Crop boxes differ in size per pair,
    so slicing cannot be batched; a matrix per pair can."""
    h, w = x.shape[-2:]
    rows = torch.stack([_crop_resize_matrix(d.top, d.height, h) for d in draws]).to(x.device, x.dtype)
    cols = torch.stack([_crop_resize_matrix(d.left, d.width, w) for d in draws]).to(x.device, x.dtype)
    return rows[:, None, None] @ x @ cols.transpose(1, 2)[:, None, None]


def transform(x: torch.Tensor, draws: Sequence[AugmentDraw], fill: Sequence[float]) -> torch.Tensor:
    """Rotate (nearest, torchvision's default; uncovered pixels = ``fill``), then crop and
    resize back bilinearly, pair p of x (P×B×C×H×W) with ``draws[p]``; differentiable in x.

    Equal (up to float rounding) to ``TF.rotate`` then ``TF.resized_crop`` per pair, computed
    for all pairs in a few tensor ops; in the images' dtype whatever the autocast precision.
    """
    if x.shape[0] != len(draws):
        raise ValueError(f"augment: {x.shape[0]} pairs of images but {len(draws)} draws")
    with torch.autocast(x.device.type, enabled=False):
        fill_t = torch.tensor(list(fill), dtype=x.dtype, device=x.device)
        return _resized_crop(_rotate(x, [d.angle for d in draws], fill_t), draws)


def make_augment(mean: Sequence[float], params: AugmentParams = AugmentParams()) -> Augment:
    """An :data:`Augment` for the shared loop: differentiable, per-pair random draws."""
    fill = [float(m) for m in mean]

    def augment(x: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
        h, w = x.shape[-2:]
        # x: P×B×C×H×W; one draw per pair and mini-batch from the pair's own generator
        return transform(x, [draw(g, h, w, params) for g in generators], fill)

    return augment
