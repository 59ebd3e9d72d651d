"""Built-in synthetic RGB dataset: the default needs nothing downloaded.

Each class is a smooth low-frequency colour texture plus a few coloured shapes at
class-specific places. A sample shifts that prototype by a few pixels, blends in part of
another class's texture, pastes shapes borrowed from other classes at random places, jitters
the colours and adds pixel noise. The nuisances are there so that a small CNN lands around
90-98 % test accuracy instead of a trivial 100 %: a benchmark of trigger inversion needs
classes with realistic margins (some pairs close, some far), not a lookup table.

Everything is drawn from numpy Generators seeded by ``Params.seed`` (prototypes, train and
test from separate child seeds, so resizing one split never changes the other).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from farm.data.registry import register
from farm.data.base import Dataset, Split

if TYPE_CHECKING:
    from farm.config import DatasetSpec

_SIZE = 32
_FREQS = 4  # random Fourier components per texture channel
_BYTES = 3 * _SIZE * _SIZE  # one uint8 image
MAX_IMAGES = 2_000_000  # about 6 GiB of images: beyond that, generation dies with MemoryError


@dataclass(frozen=True)
class SyntheticParams:
    seed: int = 0
    num_classes: int = 10
    train_per_class: int = 500
    test_per_class: int = 100
    noise: float = 0.06  # std of Gaussian pixel noise, in [0,1] units
    shift: int = 3  # max per-sample translation of the class prototype, pixels
    shapes: int = 3  # class-specific shapes per prototype
    distractors: int = 2  # shapes pasted from other classes at random places
    mix: float = 0.6  # max share of another class's texture blended in
    jitter: float = 0.2  # per-channel colour gain / offset jitter
    radius: tuple[float, float] = (3.0, 3.0)  # range of class-shape radii, pixels

    def check(self) -> list[str]:
        out = []
        if self.num_classes < 2:
            out.append(f"num_classes: must be >= 2, got {self.num_classes}")
        if self.train_per_class < 1 or self.test_per_class < 1:
            out.append("train_per_class, test_per_class: must be >= 1")
        images = (self.train_per_class + self.test_per_class) * self.num_classes
        if images > MAX_IMAGES:
            out.append(f"train_per_class, test_per_class: {images} images in all ({images * _BYTES / 2**30:.1f} GiB "
                       f"as uint8) exceed the {MAX_IMAGES} this generator holds in memory; lower them")
        if not 0 <= self.mix < 1:
            out.append(f"mix: must be in [0, 1), got {self.mix}")
        if not 0 < self.radius[0] <= self.radius[1]:
            out.append(f"radius: expected 0 < low <= high, got {list(self.radius)}")
        if self.noise < 0 or self.jitter < 0 or self.shift < 0 or self.shapes < 1 or self.distractors < 0:
            out.append("noise, jitter, shift, distractors: must be >= 0; shapes >= 1")
        return out


@dataclass(frozen=True)
class _Shapes:
    """Parametric shapes, arrays of equal leading shape: kind 0 square, 1 disc, 2 bar."""

    kind: np.ndarray
    cy: np.ndarray
    cx: np.ndarray
    r: np.ndarray
    colour: np.ndarray  # (..., 3)

    def take(self, idx: tuple) -> "_Shapes":
        return _Shapes(self.kind[idx], self.cy[idx], self.cx[idx], self.r[idx], self.colour[idx])


def _render(shapes: _Shapes, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """Alpha masks N×H×W of one shape per sample, centres moved by (dy, dx)."""
    grid = np.arange(_SIZE, dtype=np.float32)
    y = grid[None, :, None] - (shapes.cy + dy)[:, None, None]
    x = grid[None, None, :] - (shapes.cx + dx)[:, None, None]
    r = shapes.r[:, None, None]
    kind = shapes.kind[:, None, None]
    square = (np.abs(y) <= r) & (np.abs(x) <= r)
    disc = y * y + x * x <= r * r
    bar = (np.abs(y) <= r / 3) & (np.abs(x) <= r * 1.5)
    return np.where(kind == 0, square, np.where(kind == 1, disc, bar)).astype(np.float32)


@register
class Synthetic(Dataset):
    """See the module docstring; ``params`` are :class:`SyntheticParams`."""

    name = "synthetic"
    Params = SyntheticParams
    version = 2  # 2: fixed class-shape radius (homogeneous class difficulty, see docs/methods.md)
    uap_eps = 0.05  # not in the paper: chosen by the rule of docs/methods.md ("uap"), measured there

    @classmethod
    def known_num_classes(cls, spec: "DatasetSpec") -> int | None:
        return int(spec.params.get("num_classes", SyntheticParams.num_classes))

    def __init__(self, spec: "DatasetSpec", params: SyntheticParams):
        self.params = p = params
        self.num_classes = p.num_classes
        self.class_names = [f"c{k}" for k in range(p.num_classes)]
        self.image_shape = (3, _SIZE, _SIZE)
        proto_ss, train_ss, test_ss = np.random.SeedSequence(p.seed).spawn(3)
        self._make_prototypes(np.random.default_rng(proto_ss))
        self._data = {
            "train": self._sample(np.random.default_rng(train_ss), p.train_per_class),
            "test": self._sample(np.random.default_rng(test_ss), p.test_per_class),
        }
        x = self._data["train"][0].astype(np.float64) / 255.0
        self.mean = tuple(float(v) for v in x.mean(axis=(0, 2, 3)))
        self.std = tuple(float(v) for v in x.std(axis=(0, 2, 3)))

    # ---- Dataset interface -------------------------------------------------------------
    def labels(self, split: Split) -> np.ndarray:
        return self._data[split][1]

    def images(self, split: Split, indices: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self._data[split][0][np.asarray(indices, dtype=np.int64)])

    # ---- generation ----------------------------------------------------------------------
    def _make_prototypes(self, rng: np.random.Generator) -> None:
        k, p = self.num_classes, self.params
        # Texture: per class and channel, a few cosines of frequency <= 2 cycles per image.
        self._freq = rng.integers(-2, 3, size=(k, 3, _FREQS, 2)).astype(np.float32) * (2 * np.pi / _SIZE)
        self._phase = rng.uniform(0, 2 * np.pi, size=(k, 3, _FREQS)).astype(np.float32)
        self._amp = rng.uniform(0.05, 0.15, size=(k, 3, _FREQS)).astype(np.float32)
        self._base = rng.uniform(0.25, 0.75, size=(k, 3)).astype(np.float32)
        self._shapes = _Shapes(
            kind=rng.integers(0, 3, size=(k, p.shapes)),
            cy=rng.uniform(5, _SIZE - 6, size=(k, p.shapes)).astype(np.float32),
            cx=rng.uniform(5, _SIZE - 6, size=(k, p.shapes)).astype(np.float32),
            r=rng.uniform(*p.radius, size=(k, p.shapes)).astype(np.float32),
            colour=rng.uniform(0, 1, size=(k, p.shapes, 3)).astype(np.float32),
        )

    def _texture(self, cls: np.ndarray, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
        """N×3×H×W textures of classes ``cls`` translated by (dy, dx)."""
        grid = np.arange(_SIZE, dtype=np.float32)
        f, ph, amp = self._freq[cls], self._phase[cls], self._amp[cls]  # N×3×F(×2)
        # cos(a + b) = cos a cos b - sin a sin b: two batched matmuls over F, no N×F×H×W array.
        a = f[..., 0, None] * (grid - dy[:, None, None, None]) + ph[..., None]  # N×3×F×H
        b = f[..., 1, None] * (grid - dx[:, None, None, None])  # N×3×F×W
        ca, sa = np.cos(a) * amp[..., None], np.sin(a) * amp[..., None]
        waves = np.swapaxes(ca, -1, -2) @ np.cos(b) - np.swapaxes(sa, -1, -2) @ np.sin(b)
        return self._base[cls][..., None, None] + waves

    def _sample(self, rng: np.random.Generator, per_class: int) -> tuple[np.ndarray, np.ndarray]:
        p, k = self.params, self.num_classes
        y = np.repeat(np.arange(k), per_class)
        n = len(y)

        def other() -> np.ndarray:  # a class different from each sample's own
            return (y + rng.integers(1, k, size=n)) % k

        dy, dx = (rng.integers(-p.shift, p.shift + 1, size=n).astype(np.float32) for _ in range(2))
        m = rng.uniform(0, p.mix, size=n).astype(np.float32)[:, None, None, None]
        o = other()
        ody, odx = (rng.uniform(-_SIZE / 2, _SIZE / 2, size=n).astype(np.float32) for _ in range(2))
        x = (1 - m) * self._texture(y, dy, dx) + m * self._texture(o, ody, odx)
        layers = [(self._shapes.take((y, np.full(n, j))), dy, dx) for j in range(p.shapes)]
        for _ in range(p.distractors):
            src = self._shapes.take((other(), rng.integers(0, p.shapes, size=n)))
            layers.append((src, rng.uniform(-8, 8, size=n).astype(np.float32),
                           rng.uniform(-8, 8, size=n).astype(np.float32)))
        for shapes, sy, sx in layers:
            alpha = _render(shapes, sy, sx)[:, None]
            x = (1 - alpha) * x + alpha * shapes.colour[:, :, None, None]
        gain = rng.uniform(1 - p.jitter, 1 + p.jitter, size=(n, 3, 1, 1)).astype(np.float32)
        shift = rng.uniform(-p.jitter / 2, p.jitter / 2, size=(n, 3, 1, 1)).astype(np.float32)
        x = x * gain + shift + p.noise * rng.standard_normal(size=x.shape, dtype=np.float32)
        images = np.clip(np.rint(x * 255), 0, 255).astype(np.uint8)
        return images, y.astype(np.int64)
