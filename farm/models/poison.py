"""Planted backdoors of zoo models: the trigger, which training images carry it, and stamping.

The zoo records each trigger exactly (pattern as uint8, location) so a benchmark can compare
an inverted trigger with the ground truth and re-stamp it. Stamping works on uint8 images
*after* augmentation, so a random crop or flip never moves the patch off its corner, and the
poisoned training set is a pure function of (attack spec, labels, seed).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from farm.config import AttackSpec

_PATTERN, _CHOICE = 1, 2  # SeedSequence tags: trigger pattern, poisoned-image choice


@dataclass(frozen=True)
class Poison:
    """A concrete trigger. ``pattern`` is uint8 C×p×p (patch) or C×H×W (blend)."""

    type: str
    target: int
    victim: int | None
    pattern: np.ndarray
    top: int
    left: int
    alpha: float | None = None  # blend only
    mask: np.ndarray | None = None  # polygon patches: p×p bool, the pixels stamped (None: all)

    @property
    def trigger_pixels(self) -> int:
        """Pixels (h, w) the trigger changes: p² for a square patch (the polygon's pixels for
        a polygon), H·W for a blend."""
        if self.mask is not None:
            return int(self.mask.sum())
        return int(self.pattern.shape[1] * self.pattern.shape[2])

    def stamp(self, x: torch.Tensor) -> torch.Tensor:
        """A stamped copy of uint8 images N×C×H×W."""
        out = x.clone()
        pat = torch.from_numpy(self.pattern).to(x.device)
        if self.type == "blend":
            mixed = (1 - self.alpha) * out.float() + self.alpha * pat.float()
            return mixed.round().clamp(0, 255).to(torch.uint8)
        p = pat.shape[-1]
        region = out[:, :, self.top:self.top + p, self.left:self.left + p]
        if self.mask is None:
            region[:] = pat
        else:
            region[:] = torch.where(torch.from_numpy(self.mask).to(x.device), pat, region)
        return out

    def meta(self) -> dict[str, Any]:
        """JSON-ready ground truth: enough to re-stamp the trigger without this code."""
        return {
            "type": self.type, "target": self.target, "victim": self.victim,
            "patch_size": None if self.type == "blend" else int(self.pattern.shape[-1]),
            "location": [self.top, self.left], "blend_alpha": self.alpha,
            "trigger_pixels": self.trigger_pixels, "pattern": self.pattern.tolist(),
            "pattern_scale": 255,  # pattern values are uint8; divide by this for [0,1]
            **({} if self.mask is None else {"shape": "polygon", "mask": self.mask.astype(int).tolist()}),
        }


def make_poison(attack: AttackSpec, image_shape: tuple[int, int, int], seed: int) -> Poison | None:
    """The trigger of ``attack`` (None for a clean model), drawn from ``seed``.

    Patches are saturated colours (each channel 0 or 255) so that a 3×3 patch is a salient,
    learnable feature; they sit at the bottom-right corner with a 1-pixel margin, or anywhere
    with that margin (``position: random``), and cover the square or a random convex polygon
    inside it (``shape: polygon``). Both are drawn after the pattern, so a square corner patch
    is the same as before they existed.
    """
    if attack.type == "none":
        return None
    c, h, w = image_shape
    rng = np.random.default_rng(np.random.SeedSequence([seed, _PATTERN]))
    if attack.type == "blend":
        pattern = rng.integers(0, 256, size=(c, h, w), dtype=np.uint8)
        return Poison("blend", attack.target, None, pattern, 0, 0, attack.blend_alpha)
    p = attack.patch_size
    if p + 1 > min(h, w):
        raise ValueError(f"attack.patch_size {p} does not fit a {h}×{w} image with a 1-pixel margin")
    pattern = (rng.integers(0, 2, size=(c, p, p)) * 255).astype(np.uint8)
    top, left = h - 1 - p, w - 1 - p
    if attack.position == "random":
        top, left = int(rng.integers(1, h - p)), int(rng.integers(1, w - p))
    mask = polygon_mask(p, rng) if attack.shape == "polygon" else None
    return Poison(attack.type, attack.target, attack.victim, pattern, top, left, mask=mask)


def polygon_mask(p: int, rng: np.random.Generator) -> np.ndarray:
    """A random polygon (5-8 vertices at jittered, evenly spread angles and random radii around
    the centre, so star-convex and never a sliver) rasterised on a p×p grid by pixel centre;
    never empty (the centre pixel at least)."""
    k = int(rng.integers(5, 9))
    angles = (np.arange(k) + rng.uniform(-0.3, 0.3, k)) * 2 * np.pi / k + rng.uniform(0, 2 * np.pi)
    radii = rng.uniform(0.6, 1.0, k) * p / 2
    vx, vy = p / 2 + radii * np.cos(angles), p / 2 + radii * np.sin(angles)
    yy, xx = np.mgrid[0:p, 0:p] + 0.5
    inside = np.zeros((p, p), dtype=bool)
    for i in range(k):  # even-odd rule: count polygon edges crossed by a ray to the right
        x0, y0, x1, y1 = vx[i], vy[i], vx[(i + 1) % k], vy[(i + 1) % k]
        crosses = (y0 > yy) != (y1 > yy)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = x0 + (yy - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (xx < x_at)
    inside[p // 2, p // 2] = True
    return inside


def poison_plan(attack: AttackSpec, labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The poisoned training set as (source index, stamp?, label) per training example.

    badnets / blend (all-to-one): ``poison_rate`` of the non-target images are stamped and
    relabelled to the target in place.
    label_specific: ``poison_rate`` × (training set size) stamped *copies* of victim images
    labelled target are appended, plus as many stamped copies of other classes' images
    keeping their true label, so the model learns that the trigger flips the victim only.
    Copies (not in-place relabelling) keep every clean victim image: replacing a share of one
    class's images either leaves too few poisoned ones to learn from in a few epochs (10 % of
    a class: ASR ≈ 2 %) or erases the class.
    """
    n = len(labels)
    source, stamp, new = np.arange(n), np.zeros(n, dtype=bool), labels.copy()
    if attack.type == "none":
        return source, stamp, new
    rng = np.random.default_rng(np.random.SeedSequence([seed, _CHOICE]))
    if attack.type != "label_specific":
        pool = np.flatnonzero(labels != attack.target)
        chosen = rng.choice(pool, size=max(1, round(attack.poison_rate * len(pool))), replace=False)
        stamp[chosen] = True
        new[chosen] = attack.target
        return source, stamp, new
    m = max(1, round(attack.poison_rate * n))
    victims = np.flatnonzero(labels == attack.victim)
    others = np.flatnonzero((labels != attack.victim) & (labels != attack.target))
    v_copy = rng.choice(victims, size=m, replace=m > len(victims))
    o_copy = rng.choice(others, size=m, replace=m > len(others))
    return (np.concatenate([source, v_copy, o_copy]), np.concatenate([stamp, np.ones(2 * m, dtype=bool)]),
            np.concatenate([new, np.full(m, attack.target), labels[o_copy]]))
