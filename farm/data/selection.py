"""Which images each (victim, target) pair is optimised on and evaluated on.

The choice is a pure function of (dataset, victim, target, seed) so that every method, every
shard and every resumed run sees exactly the same images for a pair. For a concrete victim
the attack set does not depend on the target: all K-1 pairs of one victim share their
images, which makes their triggers comparable and lets a method cache them. In all-to-one
mode (victim None) the pool is every class but the target, so the draw depends on the target.
"""
from __future__ import annotations

import numpy as np
import torch

from farm.data.base import Dataset, Split


def _pool(ds: Dataset, split: Split, victim: int | None, target: int) -> np.ndarray:
    labels = ds.labels(split)
    return np.flatnonzero(labels == victim if victim is not None else labels != target)


_ANY = 2**32 - 1  # stands for victim None (-1 as uint32: SeedSequence takes no negatives)


def _rng(seed: int, victim: int | None, target: int, *stream: int) -> np.random.Generator:
    key = [seed, _ANY if victim is None else victim, target if victim is None else 0, *stream]
    return np.random.default_rng(np.random.SeedSequence(key))


def attack_indices(ds: Dataset, victim: int | None, target: int, n: int, seed: int) -> np.ndarray:
    """Indices into split "train" of ``n`` images of class ``victim`` (None: any class but
    ``target``), drawn without replacement. Returns fewer than ``n`` (all there are) when the
    class is smaller; the caller logs that."""
    pool = _pool(ds, "train", victim, target)
    if len(pool) <= n:
        return pool
    return _rng(seed, victim, target).choice(pool, size=n, replace=False)


def heldout_indices(ds: Dataset, victim: int | None, target: int, max_n: int | None, seed: int) -> np.ndarray:
    """Sorted indices into split "test" of the held-out images of ``victim`` (None: all but
    ``target``), capped to a seeded subset of ``max_n``. Disjoint from the attack set because it
    is another split."""
    pool = _pool(ds, "test", victim, target)
    if max_n is not None and len(pool) > max_n:
        pool = _rng(seed, victim, target, 1).choice(pool, size=max_n, replace=False)
    return np.sort(pool)


def gather(ds: Dataset, split: Split, indices: np.ndarray) -> torch.Tensor:
    """uint8 images N×C×H×W of a split, in the order of ``indices``."""
    return ds.images(split, np.asarray(indices, dtype=np.int64))
