"""Intra-op thread counts that follow the config, not the process that happens to run the code.

CPU kernels may sum in another order with another thread count (oneDNN splits reductions by
thread), so a model trained or a shard run with 2 threads can differ in the last bits from the
same work with 1. Work whose result is stored therefore runs with the count the config gives
(``cluster.cpus_per_actor``), wherever it runs: a Ray actor or task, the driver, ``--local``.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run a block with ``n`` intra-op threads, then give the process its own count back."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def config_threads(cpus_per_actor: float) -> int:
    """The intra-op threads of one actor's share of a CPU machine (at least 1)."""
    return max(1, int(cpus_per_actor))
