"""``cluster.pairs_per_batch: auto``: pick P per device and model from a short measured sweep.

The best P is a property of the device and the model, not of the method's algorithm: a CPU
is fastest around P = 10 for small_cnn (larger P leaves the caches), a GPU needs hundreds
of pairs to fill it (docs/benchmarks.md). So P is measured, never assumed: P doubles from 1
while pair-epochs/s still improves, memory allows, and there are pairs to fill the batch.
On a GPU each step is bounded by free memory, extrapolated from the last peak; an
out-of-memory error backs off to the last P that ran instead of failing the run.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from farm.methods import Method, PairBatch, create_method
from farm.worker import ShardExecutor, image_key, precision_context

MEMORY_SHARE = 0.8  # never plan to use more than this share of the free GPU memory
PLATEAU = 1.05  # doubling P must gain more than 5% pair-epochs/s to continue


@dataclass(frozen=True)
class SweepPoint:
    pairs: int
    pair_epochs_per_s: float
    peak_bytes: int | None  # GPU only


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def _time(method: Method, model: torch.nn.Module, batch: PairBatch, epochs: int) -> tuple[float, int | None]:
    """Seconds for ``epochs`` epochs of ``batch`` and the GPU peak memory (None on CPU)."""
    cuda = batch.images.is_cuda
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    method(model, batch)
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start, torch.cuda.max_memory_allocated() if cuda else None


def sweep_pairs_per_batch(method: Method, model: torch.nn.Module, images: torch.Tensor, targets: list[int],
                          max_pairs: int, batch_size: int, epochs: int = 3, cap: int = 4096) -> list[SweepPoint]:
    """Measured pair-epochs/s at P = 1, 2, 4, ... (≤ ``max_pairs``, ≤ ``cap``) until it stops improving.

    ``images`` (n×N×C×H×W, [0,1], on the compute device) and ``targets`` are recycled to
    fill P rows, so a sweep needs only a few distinct pairs. ``epochs`` of the method run per
    point (one warm-up run at P = 1 first: lazy initialisation is not speed).
    """
    method = create_method(method.name, {**method.params_dict(), "epochs": epochs}, method.augment)
    device = images.device

    def batch_of(p: int) -> PairBatch:
        rows = [i % len(images) for i in range(p)]
        return PairBatch([None] * p, [targets[i] for i in rows], images[rows], list(range(p)), batch_size)

    _time(method, model, batch_of(1), 1)
    points: list[SweepPoint] = []
    p, best_rate, stale = 1, 0.0, 0
    while p <= min(max_pairs, cap):
        if device.type == "cuda" and points and points[-1].peak_bytes:
            free, _total = torch.cuda.mem_get_info(device)
            if points[-1].peak_bytes * (p / points[-1].pairs) > MEMORY_SHARE * (free + points[-1].peak_bytes):
                break
        try:
            seconds, peak = _time(method, model, batch_of(p), epochs)
        except RuntimeError as exc:
            if not _is_oom(exc):
                raise
            torch.cuda.empty_cache()
            break
        points.append(SweepPoint(p, p * epochs / seconds, peak))
        if points[-1].pair_epochs_per_s > best_rate * PLATEAU:
            best_rate, stale = points[-1].pair_epochs_per_s, 0
        else:
            stale += 1
            if stale == 2:
                break  # two doublings without a real gain
        p *= 2
    return points


def measure(executor: ShardExecutor, pairs: list, batch_size: int, epochs: int = 3) -> tuple[int, list[SweepPoint]]:
    """The P to use for ``executor``'s job (device, model, method, precision) over ``pairs``."""
    keys = list(dict.fromkeys(image_key(p) for p in pairs))[:8]
    images = torch.stack([executor.images.attack[k] for k in keys]).to(executor.device).float() / 255.0
    targets = [next(p.target for p in pairs if image_key(p) == k) for k in keys]
    with precision_context(executor.device, executor.options.precision):
        points = sweep_pairs_per_batch(executor.method, executor.step_model, images, targets, len(pairs), batch_size,
                                       epochs)
    return best_pairs_per_batch(points), points


def best_pairs_per_batch(points: list[SweepPoint]) -> int:
    """The smallest P within 5% of the fastest: fewer pairs per shard means finer load balancing."""
    if not points:
        return 1
    top = max(pt.pair_epochs_per_s for pt in points)
    return min(pt.pairs for pt in points if pt.pair_epochs_per_s * PLATEAU >= top)
