"""Arms as pairs of the shared loop: one batched problem for all arms of one model.

Both scanners (K-Arm and the MAD baselines) invert arms with a pluggable core, ``nc`` or
``ours``; this module builds the :class:`PairBatch` from real clean images and reads an arm's
size the way each core measures it (NC: L1 of the mask; ours: pixels), as a share of the
image area so that decision bounds carry across image sizes.
"""
from __future__ import annotations

import math

import torch

from farm.data import Dataset
from farm.data.selection import attack_indices, gather
from farm.methods import PairBatch, PairOutcome, pair_seed
from farm.scan.prescreen import Arm
from farm.triggers import trigger_size


def arm_batch(ds: Dataset, arms: list[Arm], n: int, seed: int, model_id: str, core: str,
              batch_size: int = 32) -> PairBatch:
    """P = len(arms) pairs with ``n`` clean attack images each (train split, seeded)."""
    imgs = torch.stack([gather(ds, "train", attack_indices(ds, a.victim, a.target, n, seed)) for a in arms])
    seeds = [pair_seed(seed, model_id, f"scan-{core}", -1 if a.victim is None else a.victim, a.target)
             for a in arms]
    return PairBatch([a.victim for a in arms], [a.target for a in arms], imgs.float() / 255, seeds, batch_size)


def arm_size(outcome: PairOutcome) -> float:
    """Trigger size as a share of H×W; inf when the attack never reached its ASR bound."""
    if not outcome.converged:
        return math.inf
    h, w = outcome.trigger.array.shape[-2:]
    raw = outcome.extra.get("mask_l1", trigger_size(outcome.trigger))
    return float(raw) / (h * w)
