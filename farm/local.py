"""``cluster.executor: local`` (``farm run --local``): every shard in this process, one after
another, on one device (CUDA where present, else the CPU).

For a machine that has a GPU but no Ray (or no wish to start one): the shards, the worker code
(:class:`farm.worker.ShardExecutor`), the retry policy and the callbacks that write Parquet are
those of the Ray executor, so the run folder is the same and ``farm compare`` finds the two
identical. Each shard runs with the threads one Ray actor would get (``cluster.cpus_per_actor``
on a CPU, 1 beside a GPU): CPU kernels may sum in another order with another thread count, and
that would make a local run differ from a Ray run of the same config. Unlike Ray, a worker
that kills its process (``os._exit``, a segfault) ends the run; ``farm run --resume`` continues it.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from farm.config import ClusterSpec, RunSpec
from farm.errors import RunError
from farm.execution import (FailedCallback, JobContext, RowsCallback, WorkItem, fault_setting, next_attempt,
                            short_reason)
from farm.threads import config_threads, torch_threads
from farm.worker import ExecOptions, ModelPayload, PairImages, ShardExecutor, pick_device


class LocalExecutor:
    """The in-process :class:`farm.execution.Executor`: one :class:`ShardExecutor` at a time."""

    def __init__(self, spec: ClusterSpec, run: RunSpec):
        self.spec = spec
        if run.device == "cuda" and not torch.cuda.is_available():
            raise RunError("run.device is 'cuda' but this machine has no CUDA device (--local runs here); "
                           "set run.device: auto or cpu")
        self.device = pick_device(run.device)
        self.options = ExecOptions.from_run(run)
        self.train_device = str(self.device)  # zoo training is a GPU's job where there is one
        self.threads = 1 if self.device.type == "cuda" else config_threads(spec.cpus_per_actor)
        self.resources = {"CPU": float(self.threads), "GPU": float(self.device.type == "cuda")}
        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
        self.detail = f"local executor (no Ray): one shard at a time on {name}, {self.threads} thread(s)"

    def trainer(self) -> Callable | None:
        return None  # missing zoo models train one after another in this process

    def share(self, obj: Any) -> Any:
        return obj

    def _executor(self, payload: ModelPayload, method: str, params: dict[str, Any], variant: str,
                  images: PairImages) -> ShardExecutor:
        return ShardExecutor(payload, method, params, variant, images, str(self.device), self.options)

    def measure_pairs_per_batch(self, payload: ModelPayload, method: str, params: dict[str, Any],
                                images: PairImages, pairs: list, batch_size: int) -> int:
        from farm.autotune import measure

        with torch_threads(self.threads):
            return measure(self._executor(payload, method, params, "plain", images), pairs, batch_size)[0]

    def run_shards(self, items: list[WorkItem], contexts: dict[tuple[str, str, str], JobContext], batch_size: int,
                   run_id: str, config_hash: str, on_rows: RowsCallback, on_failed: FailedCallback) -> None:
        """Shards in the order given (``farm.grid.expand`` keeps a job's shards together), so a
        job's model and method are built once and dropped before the next job's."""
        fault = fault_setting(self.spec)
        current: tuple[tuple[str, str, str], ShardExecutor] | None = None
        with torch_threads(self.threads):
            for first in items:
                item: WorkItem | None = first
                while item is not None:
                    job = item.shard.job
                    try:
                        if current is None or current[0] != job.key:
                            current = None  # free the last job's model before building the next
                            ctx = contexts[job.key]
                            current = (job.key, self._executor(ctx.payload_ref, job.method, ctx.params, job.variant,
                                                               ctx.images_ref))
                        rows = current[1].run(item.shard, batch_size, run_id, config_hash, item.attempt, fault,
                                              item.shard_no)
                    except Exception as exc:  # noqa: BLE001 - the retry policy decides, as for a Ray task
                        reason = f"{type(exc).__name__}: {short_reason(exc)}"
                        item = next_attempt(item, reason, self.spec.max_attempts, on_failed)
                        continue
                    on_rows(item, rows)
                    item = None


__all__ = ["LocalExecutor"]
