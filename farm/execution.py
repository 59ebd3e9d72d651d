"""What both executors of ``farm run`` share, without importing Ray.

``cluster.executor: ray`` (farm.cluster) spreads shards over actors; ``local`` (farm.local)
runs them one after another in this process. Both take the same work items, the same job
contexts, the same retry policy and report through the same callbacks, so the run folder
(Parquet rows, manifest, progress) does not depend on which one ran it.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from farm.config import FAULT_INJECTION, ClusterSpec, ConfigError
from farm.grid import Shard
from farm.worker import ModelPayload, PairImages

log = logging.getLogger("farm.execution")

FAULT_ENV = "FARM_FAULT_INJECTION"


def fault_setting(spec: ClusterSpec) -> str | None:
    """``cluster.fault_injection``, else ``$FARM_FAULT_INJECTION`` (to exercise the retry path
    of a deployed cluster without editing its config); off by default."""
    value = spec.fault_injection or os.environ.get(FAULT_ENV) or None
    if value and not FAULT_INJECTION.match(value):
        raise ConfigError([f"${FAULT_ENV}: expected 'exit:<n>', 'raise:<n>' or 'nan:<n>', got {value!r}; "
                           f"unset it for a normal run"])
    return value


@dataclass
class JobContext:
    """What an executor of a job needs: payload and images (Ray object refs, or the objects
    themselves in-process), the method's parameters and the rows' ground-truth columns."""

    payload_ref: Any
    images_ref: Any
    params: dict[str, Any]
    payload_info: dict[str, Any]
    image_shape: tuple[int, int, int]


@dataclass
class WorkItem:
    shard: Shard
    shard_no: int  # position in the run's full shard list (fault injection, logs)
    attempt: int = 1


RowsCallback = Callable[[WorkItem, list[dict[str, Any]]], None]
FailedCallback = Callable[[WorkItem, str], None]


def next_attempt(item: WorkItem, reason: str, max_attempts: int, on_failed: FailedCallback) -> WorkItem | None:
    """The retry policy of both executors: the item to try again, or None once ``max_attempts``
    are spent, after its pairs were stored as failed (a bad pair neither hangs nor aborts a run)."""
    if item.attempt >= max_attempts:
        log.warning("shard %s failed %d time(s), storing its pairs as failed: %s",
                    item.shard.shard_id, item.attempt, reason)
        on_failed(item, reason)
        return None
    log.warning("shard %s attempt %d failed (%s); retrying", item.shard.shard_id, item.attempt, reason)
    return WorkItem(item.shard, item.shard_no, item.attempt + 1)


def short_reason(exc: BaseException | None) -> str:
    """The last line of an error, for a failed row's ``reason``."""
    text = str(exc).strip().splitlines()
    return (text[-1] if text else type(exc).__name__)[:300]


class Executor(Protocol):
    """How ``farm.runner`` places work; implemented by ``farm.cluster.RayExecutor`` and
    ``farm.local.LocalExecutor``."""

    detail: str  # one line for the run's log: where the pairs run
    resources: dict[str, float]  # CPU/GPU seen, logged as MLflow params
    train_device: str  # where missing zoo models train when trainer() is None (or one is missing)

    def trainer(self) -> Callable | None:
        """A zoo trainer for several missing models at once (farm.models.zoo_jobs), or None."""

    def share(self, obj: Any) -> Any:
        """Make ``obj`` reachable by every worker (``ray.put``, or ``obj`` itself)."""

    def measure_pairs_per_batch(self, payload: ModelPayload, method: str, params: dict[str, Any],
                                images: PairImages, pairs: list, batch_size: int) -> int:
        """``cluster.pairs_per_batch: auto``: measured on the device the shards will use."""

    def run_shards(self, items: list[WorkItem], contexts: dict[tuple[str, str, str], JobContext], batch_size: int,
                   run_id: str, config_hash: str, on_rows: RowsCallback, on_failed: FailedCallback) -> None:
        """Run every item to completion: ``on_rows`` with its rows, or ``on_failed`` after the
        last attempt."""


class Progress:
    """pairs done / total, pairs/s and ETA on stderr (a plain line per update without a TTY,
    or without tqdm: a bare GPU box running ``--local`` may not have it)."""

    def __init__(self, total: int, already: int = 0, desc: str = "pairs"):
        self.total, self.already, self.done, self.start = total, already, already, time.perf_counter()
        self.desc = desc
        try:
            from tqdm import tqdm
        except ImportError:
            self.bar = None
            return
        self.bar = tqdm(total=total, initial=already, unit="pair", dynamic_ncols=True, file=sys.stderr,
                        desc=desc, mininterval=0.5, disable=None if sys.stderr.isatty() else False)

    def update(self, n: int, note: str = "") -> None:
        if self.bar is None:
            self.done += n
            rate = (self.done - self.already) / max(time.perf_counter() - self.start, 1e-9)
            print(f"{self.desc} {self.done}/{self.total} {note} ({rate:.2f} pairs/s)", file=sys.stderr, flush=True)
            return
        if note:
            self.bar.set_postfix_str(note, refresh=False)
        self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


__all__ = ["Executor", "JobContext", "WorkItem", "Progress", "next_attempt", "short_reason", "fault_setting", "FAULT_ENV"]
