"""Ray driver and actors: shards of pairs go to a bounded pool of actors, each holding one job's
(model, method, variant) at a time.

Design choices, and why:

* **Bounded actor pool.** At most ``capacity`` actors exist at once (what the cluster's CPUs
  or GPUs hold at ``cpus_per_actor`` / ``gpus_per_actor``, capped by ``max_actors``). Nothing
  is ever left pending on resources, and the driver, which holds no Ray resources, can always
  submit (no deadlock on small machines).
* **Actors outlive their job.** An actor takes the next shard of the job it holds; when that job
  has no work left it switches to the job with the most waiting shards (loading that job's
  model and method, a fraction of a second) instead of being killed and replaced: a fresh actor
  is a new process that imports torch and the farm again (3-5 s of CPU each on the development
  machine, more with a CUDA context), once per job before. An actor is killed only when no
  work is left for it, or when it died.
* **One shard in flight per actor.** Results stream back shard by shard and are written by
  the driver immediately, so driver memory is bounded by the shards in flight, not the run.
* **Retries at the driver.** A shard whose actor died (node loss, OOM, ``os._exit``) or whose
  call raised is re-submitted with ``attempt + 1`` (to a fresh actor if the old one died);
  after ``max_attempts`` its pairs are stored as ``status=failed`` with the reason, so a bad
  pair can neither hang nor abort the run.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import ray
import torch
from ray.exceptions import RayActorError, RayTaskError, WorkerCrashedError

from farm import ray_safety
from farm.config import ClusterSpec, RunSpec
from farm.execution import (FAULT_ENV, FailedCallback, JobContext, Progress, RowsCallback, WorkItem, fault_setting,
                            next_attempt, short_reason)
from farm.errors import RunError
from farm.grid import Job, Shard
from farm.worker import ExecOptions, ModelPayload, PairImages, ShardExecutor


def connect(address: str | None, num_cpus: int | None = None, ray_auth: str = "token",
            log_fn: Callable[[str], None] = print) -> dict[str, float]:
    """Start a local Ray (address None) or join one ("auto" or "ray://..."); return resources.

    A local Ray gets token auth, metrics off and the driver tag (:mod:`farm.ray_safety`), and
    first ends the Ray processes an earlier, killed farm driver left behind."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray_safety.check_auth_env(ray_auth)  # also when this process's Ray is reused: the setting is refused either way
    if not ray.is_initialized():
        sigterm = signal.getsignal(signal.SIGTERM)
        kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING,
                                  "log_to_driver": True}
        if address:  # the cluster decides its auth; never disable it from here
            _check_reachable(address)
            ray.init(address=address, **kwargs)
        else:
            ray_safety.reap_orphans(log_fn)
            ray_safety.harden_local_env(ray_auth)
            # address="local": without it Ray joins whatever cluster /tmp/ray/ray_current_cluster
            # or $RAY_ADDRESS names (someone else's `ray start --head`) instead of starting one.
            with ray_safety.single_host():  # every Ray port on 127.0.0.1
                ray.init(address="local", num_cpus=num_cpus, _node_ip_address="127.0.0.1", **kwargs)
        _restore_sigterm_handler(sigterm)
    elif address:  # in-process use (a notebook, a test): Ray allows one connection per process
        log_fn(f"ray: this process is already connected to Ray at {ray.get_runtime_context().gcs_address}; "
               f"using it, not {address} (ray.shutdown() first to join another)")
    return {k: float(v) for k, v in ray.cluster_resources().items()}


def _restore_sigterm_handler(handler: Any) -> None:
    """``ray.init`` replaces the SIGTERM handler with its own ``sys.exit``, so the CLI's handler
    (farm.cli: shut Ray down, release the run lock, exit 143) would never run; put it back."""
    if callable(handler) and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


def _check_reachable(address: str) -> None:
    """Fail in seconds, with the fix, when the cluster to join is not there.

    ``ray.init`` retries a dead address for minutes; with ``auto`` that happens whenever
    /tmp/ray/ray_current_cluster names a head that has since stopped.
    """
    if "://" in address:  # ray:// client addresses are checked by Ray itself
        return
    from ray._private.services import canonicalize_bootstrap_address


    try:
        resolved = canonicalize_bootstrap_address(address)
    except ConnectionError:
        resolved = None
    if not resolved:
        raise RunError(f"--address {address}: no running Ray cluster found; start one with `ray start --head` "
                       f"or leave cluster.address empty for a local Ray")
    host, _, port = resolved.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise RunError(f"--address {address}: the Ray cluster at {resolved} does not answer ({exc}); is its head "
                       f"still running? (`ray status`), or pass the head's address explicitly") from None


@ray.remote(max_restarts=0, max_task_retries=0)
class MethodActor:
    """Shards of one job at a time on one device (see :class:`farm.worker.ShardExecutor`)."""

    def __init__(self, device: str, threads: int, options: ExecOptions = ExecOptions()):
        torch.set_num_threads(threads)
        self.device, self.exec_options = device, options
        self.key: tuple[str, str, str] | None = None
        self.executor: ShardExecutor | None = None
        # Hostnames repeat across containers and test clusters; the Ray node id does not.
        self.node = ray.get_runtime_context().get_node_id()[:8]

    def run(self, key: tuple[str, str, str], job: list[Any], shard: Shard, batch_size: int, run_id: str,
            config_hash: str, attempt: int, fault: str | None, shard_no: int) -> list[dict[str, Any]]:
        """``job`` is ``[payload_ref, method, params, variant, images_ref]``, fetched only when
        ``key`` is not the job this actor holds (refs inside a list are not resolved by Ray)."""
        if key != self.key or self.executor is None:
            payload_ref, method, params, variant, images_ref = job
            self.executor, self.key = None, None  # the previous job's model is freed first
            payload, images = ray.get([payload_ref, images_ref])
            self.executor = ShardExecutor(payload, method, params, variant, images, self.device, self.exec_options)
            self.executor.worker += f"@{self.node}"
            self.key = key
        return self.executor.run(shard, batch_size, run_id, config_hash, attempt, fault, shard_no)


def measure_pairs_per_batch(place: Placement, payload: ModelPayload, method: str, params: dict[str, Any],
                            images: PairImages, pairs: list, batch_size: int) -> int:
    """``cluster.pairs_per_batch: auto``: the measured P of one model, swept in a task with an
    actor's resources so that it runs on the device (and thread count) the shards will use."""

    @ray.remote(max_retries=0)
    def sweep() -> int:
        from farm.autotune import measure

        torch.set_num_threads(place.threads)
        executor = ShardExecutor(payload, method, params, "plain", images, place.device, place.execution)
        return measure(executor, pairs, batch_size)[0]

    return ray.get(sweep.options(**place.options).remote())


@dataclass
class _Slot:
    actor: Any
    job: Job
    busy: bool = False


@dataclass
class Placement:
    """Per-actor resource request and how many actors fit."""

    options: dict[str, float]
    capacity: int
    device: str
    threads: int
    detail: str = field(default="")
    execution: ExecOptions = field(default_factory=ExecOptions)  # run.precision etc., for every actor


def placement(spec: ClusterSpec, resources: dict[str, float], device_pref: str,
              execution: ExecOptions = ExecOptions()) -> Placement:
    gpus = resources.get("GPU", 0.0)
    cpus = resources.get("CPU", 1.0)
    if gpus > 0 and device_pref != "cpu":
        cap = int(gpus / spec.gpus_per_actor + 1e-9)
        # A GPU actor still needs a little CPU to drive the GPU; fractional to pack several.
        opts = {"num_gpus": spec.gpus_per_actor, "num_cpus": min(spec.cpus_per_actor, cpus / max(cap, 1))}
        threads, device = 1, "cuda"
        detail = f"{cap} GPU actor(s) at {spec.gpus_per_actor} GPU each"
    else:
        if device_pref == "cuda":
            raise RuntimeError("run.device is 'cuda' but the Ray cluster reports no GPU")
        cap = int(cpus / spec.cpus_per_actor + 1e-9)
        opts = {"num_cpus": spec.cpus_per_actor}
        threads, device = max(1, int(spec.cpus_per_actor)), "cpu"
        detail = f"{cap} CPU actor(s) at {spec.cpus_per_actor} CPU each"
    if spec.max_actors is not None:
        cap = min(cap, spec.max_actors)
    return Placement(opts, max(cap, 1), device, threads, detail, execution)


def run_shards(items: list[WorkItem], contexts: dict[tuple[str, str, str], JobContext], spec: ClusterSpec,
               place: Placement, batch_size: int, run_id: str, config_hash: str,
               on_rows: RowsCallback, on_failed: FailedCallback) -> None:
    """Run every work item to completion (success or stored failure)."""
    fault = fault_setting(spec)
    pending: dict[tuple[str, str, str], deque[WorkItem]] = {}
    for item in items:
        pending.setdefault(item.shard.job.key, deque()).append(item)
    slots: list[_Slot] = []
    in_flight: dict[Any, tuple[_Slot, WorkItem]] = {}

    def new_actor(job: Job) -> _Slot:
        actor = MethodActor.options(**place.options).remote(place.device, place.threads, place.execution)
        slot = _Slot(actor, job)
        slots.append(slot)
        return slot

    def submit(slot: _Slot, item: WorkItem) -> None:
        job = item.shard.job
        ctx = contexts[job.key]
        ref = slot.actor.run.remote(job.key, [ctx.payload_ref, job.method, ctx.params, job.variant, ctx.images_ref],
                                    item.shard, batch_size, run_id, config_hash, item.attempt, fault, item.shard_no)
        slot.job, slot.busy = job, True
        in_flight[ref] = (slot, item)

    def neediest() -> tuple[str, str, str] | None:
        """The job with the most waiting shards per actor already serving it, if any shard of
        it has no actor yet."""
        waiting = {k: len(q) for k, q in pending.items() if q}
        if not waiting:
            return None
        serving = {k: sum(1 for s in slots if s.job.key == k) for k in waiting}
        key = max(waiting, key=lambda k: (waiting[k] / (serving[k] + 1), -serving[k]))
        return None if serving[key] >= waiting[key] else key

    def retire(slot: _Slot) -> None:
        slots.remove(slot)
        ray.kill(slot.actor, no_restart=True)

    def retry_or_fail(item: WorkItem, reason: str) -> None:
        again = next_attempt(item, reason, spec.max_attempts, on_failed)
        if again is not None:
            pending.setdefault(again.shard.job.key, deque()).appendleft(again)

    while any(pending.values()) or in_flight:
        # Idle actors take the next shard of their own job, else switch to the neediest job,
        # else give their slot back.
        for slot in [s for s in slots if not s.busy]:
            queue = pending.get(slot.job.key)
            if not queue:
                key = neediest()
                queue = pending[key] if key is not None else None
            if queue:
                submit(slot, queue.popleft())
            else:
                retire(slot)
        # Free slots get a new actor for the neediest job.
        while len(slots) < place.capacity and (key := neediest()) is not None:
            submit(new_actor(pending[key][0].shard.job), pending[key].popleft())
        if not in_flight:
            continue
        ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=5.0)
        for ref in ready:
            slot, item = in_flight.pop(ref)
            slot.busy = False
            try:
                rows = ray.get(ref)
            except (RayActorError, WorkerCrashedError) as exc:
                if slot in slots:
                    retire(slot)
                retry_or_fail(item, f"worker died: {short_reason(exc)}")
                continue
            except RayTaskError as exc:
                retry_or_fail(item, f"{type(exc.cause).__name__}: {short_reason(exc.cause)}")
                continue
            on_rows(item, rows)
    for slot in list(slots):
        retire(slot)


class RayExecutor:
    """``cluster.executor: ray``: shards on a pool of actors of a local or joined Ray cluster
    (the :class:`farm.execution.Executor` of ``farm.runner``)."""

    def __init__(self, spec: ClusterSpec, run: RunSpec, log_fn: Callable[[str], None] = print):
        self.spec = spec
        self.train_device = "cpu"  # several missing models: Ray tasks on CPUs (farm.models.zoo_jobs)
        self.resources = connect(spec.address, spec.num_cpus, spec.ray_auth, log_fn)
        self.place = placement(spec, self.resources, run.device, ExecOptions.from_run(run))
        seen = ", ".join(f"{k}={v:g}" for k, v in sorted(self.resources.items()) if k in ("CPU", "GPU"))
        self.detail = f"Ray {seen}; {self.place.detail}"

    def trainer(self) -> Callable | None:
        from farm.models.zoo_jobs import ray_trainer

        return ray_trainer(self.place.options.get("num_cpus", 1.0))

    def share(self, obj: Any) -> Any:
        return ray.put(obj)

    def measure_pairs_per_batch(self, payload: ModelPayload, method: str, params: dict[str, Any],
                                images: PairImages, pairs: list, batch_size: int) -> int:
        return measure_pairs_per_batch(self.place, payload, method, params, images, pairs, batch_size)

    def run_shards(self, items: list[WorkItem], contexts: dict[tuple[str, str, str], JobContext], batch_size: int,
                   run_id: str, config_hash: str, on_rows: RowsCallback, on_failed: FailedCallback) -> None:
        run_shards(items, contexts, self.spec, self.place, batch_size, run_id, config_hash, on_rows, on_failed)


__all__ = ["connect", "placement", "run_shards", "RayExecutor", "WorkItem", "JobContext", "Progress", "FAULT_ENV",
           "fault_setting"]
