"""Baselines of Table 8: NC's MAD anomaly index over universal (all-to-one) inversions.

Every label t gets an all-to-one arm; all K arms run as one batched problem of the shared
loop with the chosen core (``nc`` = NC-MAD, ``ours`` = ours-MAD), and the model is flagged
when :func:`farm.metrics.anomaly_index` of the K sizes exceeds NC's threshold of 2.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from farm.data import Dataset
from farm.methods.base import EpochMethod
from farm.metrics import MAD_THRESHOLD, anomaly_index
from farm.scan.arms import arm_batch, arm_size
from farm.scan.prescreen import Arm
from farm.triggers import Trigger


@dataclass
class MadResult:
    trojaned: bool
    score: float  # anomaly index (nan when fewer than 3 labels inverted)
    flagged: list[int]  # labels below the median by more than 2 MADs
    sizes: list[float]  # per target label, share of the image area (nan = failed)
    triggers: list[Trigger]  # per target label
    seconds: float


def mad_scan(model: torch.nn.Module, ds: Dataset, core: EpochMethod, attack_size: int = 50,
             seed: int = 0, model_id: str = "model") -> MadResult:
    t0 = time.perf_counter()
    arms = [Arm(None, t) for t in range(ds.num_classes)]
    outcomes = core(model, arm_batch(ds, arms, attack_size, seed, model_id, core.name))
    sizes = [arm_size(o) for o in outcomes]
    sizes = [math.nan if math.isinf(s) else s for s in sizes]
    index, flagged = anomaly_index(sizes)
    return MadResult(trojaned=bool(index > MAD_THRESHOLD), score=index, flagged=flagged, sizes=sizes,
                     triggers=[o.trigger for o in outcomes], seconds=time.perf_counter() - t0)
