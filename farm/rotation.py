"""Rotation about the image centre, pixel for pixel what torchvision's ``rotate`` computes.

The robustness columns (METHODS.md §2(f)) and the augmentation (§2(a)) are defined by
torchvision's rotation: its inverse affine matrix, its sampling grid and its fill rule. They
are rebuilt here from torch alone because importing torchvision costs every process that
evaluates a trigger (the driver, each actor, each CLI call) about 2 s of CPU (it imports
``torch._dynamo`` through ``torchvision.ops``), which on a 2-core box is most of an actor's
start-up. tests/test_rotation.py holds both functions equal to torchvision's.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F


def rotation_grid(angles: Sequence[float], h: int, w: int, dtype: torch.dtype,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """P×H×W×2 sampling grid (grid_sample's normalised coordinates) of each angle's rotation by
    ``+angle`` degrees about the image centre: torchvision's ``rotate_image`` grid (inverse
    rotation by -(angle mod 360), pixel centres at half-integer offsets), for all angles at once."""
    theta = []
    for a in angles:
        rad = math.radians(-(a % 360))
        cos, sin = math.cos(rad), math.sin(rad)
        theta.append([[cos, sin, 0.0], [-sin, cos, 0.0]])
    base = torch.empty(1, h, w, 3, dtype=dtype, device=device)
    base[..., 0].copy_(torch.linspace((1.0 - w) * 0.5, (w - 1.0) * 0.5, steps=w, device=device))
    base[..., 1].copy_(torch.linspace((1.0 - h) * 0.5, (h - 1.0) * 0.5, steps=h, device=device).unsqueeze(-1))
    base[..., 2].fill_(1)
    scaled = (torch.tensor(theta, dtype=dtype, device=device).transpose(1, 2)
              / torch.tensor([0.5 * w, 0.5 * h], dtype=dtype, device=device))
    return base.view(1, h * w, 3).expand(len(angles), h * w, 3).bmm(scaled).view(-1, h, w, 2)


def rotate_bilinear(x: torch.Tensor, deg: float) -> torch.Tensor:
    """Rotate images (…×C×H×W, floating point) by ``+deg`` degrees about the centre, bilinear,
    zero fill: ``torchvision.transforms.v2.functional.rotate(x, deg, BILINEAR, fill=0.0)``.

    Positive angles turn the image counter-clockwise as displayed. As torchvision does, the
    multiples of 90° that keep the shape are exact transposes, and the image is sampled together
    with a plane of ones whose interpolated value weights each output pixel, so a pixel half
    outside the source fades towards the fill instead of meeting zero padding abruptly.
    """
    angle = deg % 360
    h, w = x.shape[-2:]
    if angle == 0:
        return x.clone()
    if angle == 180:
        return torch.rot90(x, k=2, dims=(-2, -1))
    if h == w and angle in (90, 270):
        return torch.rot90(x, k=1 if angle == 90 else 3, dims=(-2, -1))
    c = x.shape[-3]
    flat = x.reshape(-1, c, h, w)
    grid = rotation_grid([deg], h, w, x.dtype, x.device).expand(len(flat), -1, -1, -1)
    with_mask = torch.cat((flat, torch.ones_like(flat[:, :1])), dim=1)
    out = F.grid_sample(with_mask, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return (out[:, :c] * out[:, c:]).reshape(x.shape)
