"""Trigger representation shared by every method, the store and the metrics.

Two stamping families cover all methods of METHODS.md §1:

* ``additive``: x' = clamp(x + delta, 0, 1); ``array`` is delta, C×H×W (ours, UAP, ablations).
* ``blend``: x' = (1 - m) * x + m * p; ``array`` is [m; p], (1+C)×H×W with m broadcast over
  channels (NC, ABS, and CW whose replacement x' = v*q + (1-v)*x is a blend with binary m).

Keeping one array per trigger lets the store persist any method's output as one float16
blob and lets every later metric (size, ASR, robustness, alignment) be recomputed from it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

TAU = 1.0 / 255.0  # size threshold, METHODS.md §1 ([PB] clip_max/255)
TriggerKind = Literal["additive", "blend"]


@dataclass(frozen=True)
class Trigger:
    """One pair's trigger in input space ([0,1] pixels)."""

    kind: TriggerKind
    array: torch.Tensor  # additive: C×H×W delta; blend: (1+C)×H×W = mask row 0, pattern rows 1..

    @property
    def delta(self) -> torch.Tensor:
        assert self.kind == "additive"
        return self.array

    @property
    def mask(self) -> torch.Tensor:
        assert self.kind == "blend"
        return self.array[0]

    @property
    def pattern(self) -> torch.Tensor:
        assert self.kind == "blend"
        return self.array[1:]

    def to(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> "Trigger":
        return Trigger(self.kind, self.array.to(device=device, dtype=dtype))

    # ---- persistence -------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """Compact float16 blob; shape and kind are stored in their own columns."""
        return self.array.detach().to("cpu", torch.float16).contiguous().numpy().tobytes()

    @staticmethod
    def from_bytes(kind: str, shape: list[int] | tuple[int, ...], blob: bytes) -> "Trigger":
        arr = np.frombuffer(blob, dtype=np.float16).reshape(tuple(shape)).astype(np.float32)
        return Trigger(kind, torch.from_numpy(arr.copy()))  # type: ignore[arg-type]


def trigger_shape(kind: TriggerKind, image_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """The array shape of a ``kind`` trigger for C×H×W images (a blend adds the mask row)."""
    c, h, w = image_shape
    return (c, h, w) if kind == "additive" else (1 + c, h, w)


def threshold_additive(delta: torch.Tensor, tau: float = TAU) -> torch.Tensor:
    """Zero every |delta| < tau (METHODS.md §1); works on any leading batch dims."""
    return torch.where(delta.abs() < tau, torch.zeros_like(delta), delta)


def additive_size(delta: torch.Tensor, tau: float = TAU) -> torch.Tensor:
    """#{(h,w): sum_c |thr(delta)| > 0} for ...×C×H×W deltas (returns ... shaped counts)."""
    thr = threshold_additive(delta, tau)
    return (thr.abs().sum(dim=-3) > 0).flatten(-2).sum(-1)


def mask_size(mask: torch.Tensor, tau: float = TAU) -> torch.Tensor:
    """#{(h,w): m >= tau} for ...×H×W masks ([REC] METHODS.md §1)."""
    return (mask >= tau).flatten(-2).sum(-1)


def trigger_size(trigger: Trigger, tau: float = TAU) -> int:
    if trigger.kind == "additive":
        return int(additive_size(trigger.array, tau))
    return int(mask_size(trigger.array[0], tau))


def stamp(x: torch.Tensor, trigger: Trigger) -> torch.Tensor:
    """Apply one trigger to a batch N×C×H×W in [0,1]."""
    a = trigger.array.to(device=x.device, dtype=x.dtype)
    if trigger.kind == "additive":
        return (x + a).clamp(0.0, 1.0)
    m, p = a[0:1], a[1:]
    return (1 - m) * x + m * p


def pixel_scores(trigger: Trigger) -> torch.Tensor:
    """Per-pixel importance used for pruning/alignment (METHODS.md §2(g)).

    additive: sum_c |delta|; blend: m.
    """
    if trigger.kind == "additive":
        return threshold_additive(trigger.array).abs().sum(0)
    return trigger.array[0]


def prune(trigger: Trigger, k: int) -> Trigger:
    """Keep the k highest-scoring pixels (ties: lower flat index), zero the rest."""
    scores = pixel_scores(trigger).flatten()
    h, w = trigger.array.shape[-2:]
    keep = torch.zeros(h * w, dtype=torch.bool)
    if k > 0:
        # Stable descending order: sort by (-score, index).
        order = np.lexsort((np.arange(h * w), -scores.detach().cpu().double().numpy()))
        keep[torch.from_numpy(order[:k].copy())] = True
    keep = keep.view(h, w).to(trigger.array.device)
    arr = trigger.array.clone()
    if trigger.kind == "additive":
        arr = threshold_additive(arr) * keep
    else:
        arr[0] = arr[0] * keep
    return Trigger(trigger.kind, arr)
