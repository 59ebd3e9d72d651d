"""``farm run`` end to end: open/resume the run, build models, expand shards, hand them to the
executor (Ray actors, or in-process with ``cluster.executor: local``), then log to MLflow and
summarise. Each step lives in its own module; this one only orders them.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pandas as pd
import yaml

from farm import failpoints
from farm.config import Config, config_from_dict
from farm.errors import ConfigError, RunError
from farm.execution import Executor, JobContext, Progress, WorkItem
from farm.grid import Shard, expand, resolved_params, select_pairs
from farm.prepare import Log, pair_images, prepare_models
from farm.resume import complete_rows
from farm.rows import ShardAttempt, failed_rows
from farm.runlock import RunLock
from farm.store import SCALAR_COLUMNS, RunStore


@dataclass
class RunResult:
    run_id: str
    store: RunStore
    frame: pd.DataFrame
    mlflow_run_id: str | None
    tracking_uri: str | None
    wall_s: float
    num_classes: dict[str, int]


def new_run_id(cfg: Config) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return cfg.run.id or f"{cfg.run.name}-{stamp}-{cfg.hash()[:6]}"


def open_run(cfg: Config, resume: str | None) -> tuple[RunStore, RunLock | None]:
    """Create the run folder, or check that a resumed one belongs to this config; either way
    take the run's lock, so no second process writes the same run (farm.runlock)."""
    store = RunStore(cfg.run.output, resume if resume is not None else new_run_id(cfg))
    _check_open(store, cfg, resume)  # refusals first: they must leave nothing behind
    lock = store.lock()
    try:
        _check_open(store, cfg, resume)  # again under the lock: another process may have won
        if resume is None:
            store.ensure_writable()
    except BaseException:
        if lock is not None:
            lock.release()
        if resume is None:
            store.remove_if_unstarted()
        raise
    return store, lock


def _check_open(store: RunStore, cfg: Config, resume: str | None) -> None:
    if resume is not None:
        if not store.exists():
            raise RunError(f"--resume {resume}: no run {resume!r} under {cfg.run.output!r}")
        stored = store.manifest().get("config_hash")
        if stored != cfg.hash():
            raise RunError(f"--resume {resume}: that run was made with config hash {stored}, this config has "
                           f"{cfg.hash()}. Resume with the run's own config (omit CONFIG) or start a new run.")
    elif store.exists():
        same = store.manifest().get("config_hash") == cfg.hash()
        raise RunError(f"run {store.run_id!r} already exists under {cfg.run.output!r}" +
                       (f"; continue it with --resume {store.run_id}" if same else
                        " and belongs to a different config; choose another run.id"))


def stored_config(output: str, run_id: str, overrides: list[str] | None = None) -> Config:
    """The resolved config a run was started with (for ``--resume`` without CONFIG), pointed at
    ``output``, the results root it was found under, with ``--set`` overrides applied (the
    config hash check then refuses any that would change the results)."""
    store = RunStore(output, run_id)
    if not store.exists():
        raise RunError(f"no run {run_id!r} under {output!r}")
    data = yaml.safe_load(store.config_yaml())
    if not isinstance(data, dict):
        raise RunError(f"{store.run_dir}/config.yaml: not a mapping; the run folder is damaged")
    data.setdefault("run", {})["output"] = output
    return config_from_dict(data, overrides, source=f"{store.run_dir}/config.yaml")


def execute(cfg: Config, resume: str | None = None, log_fn: Log = print) -> RunResult:
    """Run (or resume) a whole benchmark under the run's lock; returns the stored rows and
    where they are. Resuming a complete run only says so: no Ray, no MLflow, no rewrite."""
    from farm.preflight import file_problems

    started = time.perf_counter()
    problems = file_problems(cfg)  # before the run folder, Ray or any model exists
    if problems:
        raise ConfigError(problems)
    store, lock = open_run(cfg, resume)
    try:
        if resume is not None:
            for path in store.sweep():
                log_fn(f"resume: {path} is truncated or corrupt; moved aside (.corrupt-*), its pairs are computed again")
            finished = complete_rows(store)
            if finished is not None:
                log_fn(f"run {store.run_id} is already complete ({len(finished)} pairs stored); nothing to do")
                models = store.manifest().get("models", {})
                return RunResult(store.run_id, store, finished, None, None, time.perf_counter() - started,
                                 {m: int(v["num_classes"]) for m, v in models.items()})
        return _run(cfg, store, resume, log_fn, started)
    finally:
        if lock is not None:
            lock.release()
        if resume is None:
            store.remove_if_unstarted()


def make_executor(cfg: Config, log_fn: Log) -> Executor:
    """``cluster.executor``: Ray is imported only when it is the executor, so ``--local`` runs
    where Ray is not installed."""
    if cfg.cluster.executor == "local":
        from farm.local import LocalExecutor

        return LocalExecutor(cfg.cluster, cfg.run)
    from farm.cluster import RayExecutor

    return RayExecutor(cfg.cluster, cfg.run, log_fn)


def _run(cfg: Config, store: RunStore, resume: str | None, log_fn: Log, started: float) -> RunResult:
    from farm import tracking

    executor = make_executor(cfg, log_fn)
    log_fn(f"run {store.run_id}: {executor.detail}")
    models = prepare_models(cfg, log_fn, parallel_train=executor.trainer(), train_device=executor.train_device)
    num_classes = {mid: m.num_classes for mid, m in models.items()}
    manifest: dict[str, Any] = {
        "run_id": store.run_id, "config_hash": cfg.hash(), "created": datetime.now(timezone.utc).isoformat(),
        "executor": executor.detail,
        "models": {mid: {"dataset": m.spec.dataset, "arch": m.spec.arch, "num_classes": m.num_classes,
                         "class_names": m.dataset.class_names, **m.payload.info,
                         "zoo": {k: v for k, v in m.meta.items() if k in ("key", "clean_acc", "asr")}}
                   for mid, m in models.items()},
    }
    selection: dict[str, dict[str, Any]] = {mid: {} for mid in models}  # recorded in the manifest
    images = {mid: pair_images(m.dataset, select_pairs(cfg.pairs, m.num_classes, cfg.run.seed), cfg.pairs,
                               cfg.run.seed, log_fn, record=selection[mid]) for mid, m in models.items()}
    if cfg.cluster.pairs_per_batch == "auto":
        # A resumed run reuses the P it measured (recorded in the manifest) instead of re-measuring.
        measured = store.manifest().get("pairs_per_batch") if resume else None
        if measured is None:
            first = cfg.methods[0]
            measured = {mid: executor.measure_pairs_per_batch(
                m.payload, first.name, resolved_params(first, cfg.datasets[m.spec.dataset].name), images[mid],
                select_pairs(cfg.pairs, m.num_classes, cfg.run.seed),
                min(cfg.pairs.batch_size, cfg.pairs.victim_images)) for mid, m in models.items()}
        log_fn(f"pairs_per_batch auto: {', '.join(f'{mid}={p}' for mid, p in measured.items())}")
        manifest["pairs_per_batch"] = measured
    pinned_p = manifest.get("pairs_per_batch")  # the measured P of `auto`, else the config's
    job_pairs = pairs_by_job(expand(cfg, num_classes, pinned_p))
    total_pairs = sum(len(p) for p in job_pairs.values())
    if resume is None:  # pairs_total: what `farm ls` shows progress against while it runs
        store.create(cfg.to_yaml(), manifest | {"status": "running", "pairs_total": total_pairs})
    # Done is decided per (job, pair) from the stored rows, so another pairs_per_batch on
    # resume re-chunks only the missing pairs (farm.grid, farm.store).
    shards = expand(cfg, num_classes, pinned_p, done=store.done_pairs() if resume is not None else frozenset())
    items = [WorkItem(s, i) for i, s in enumerate(shards)]
    remaining = pairs_by_job(shards)
    done = {key: len(p) - len(remaining.get(key, [])) for key, p in job_pairs.items()}
    done_pairs = sum(done.values())
    if done_pairs:
        log_fn(f"resume: {done_pairs} of {total_pairs} pairs already stored, skipping them")
    tracker = None
    if cfg.tracking.enabled and not tracking.available():
        log_fn(f"MLflow is not installed here: tracking skipped; results are in Parquet. Log them later on a machine "
               f"with mlflow: farm tables {store.run_id} --output {cfg.run.output}")
    elif cfg.tracking.enabled:  # before the first shard: the runs show in MLflow while they compute
        from farm.mlflow_run import RunTracker

        tracker = RunTracker(cfg, store, num_classes, {mid: m.dataset.class_names for mid, m in models.items()},
                             log_fn).start(job_pairs, done, {f"resources.{k}": v for k, v in executor.resources.items()
                                                             if k in ("CPU", "GPU")})
    contexts = {}
    refs = {mid: executor.share(m.payload) for mid, m in models.items()}
    image_refs = {mid: executor.share(images[mid]) for mid in models}
    manifest["selection"] = selection
    for s in shards:
        if s.job.key not in contexts:
            m = models[s.job.model_id]
            contexts[s.job.key] = JobContext(refs[s.job.model_id], image_refs[s.job.model_id],
                                             json.loads(s.job.params_json), m.payload.info, m.dataset.image_shape)
    progress = Progress(total_pairs, done_pairs)

    def on_rows(item: WorkItem, rows: list[dict[str, Any]]) -> None:
        j = item.shard.job
        store.write_shard(j.model_id, j.method, j.variant, item.shard.shard_id, rows)
        failpoints.hit("run.shard_stored")
        progress.update(len(rows), f"{j.model_id}/{j.method}/{j.variant}")
        if tracker is not None:
            tracker.rows(j.key, rows)

    def on_failed(item: WorkItem, reason: str) -> None:
        ctx = contexts[item.shard.job.key]
        attempt = ShardAttempt(item.shard, ctx.payload_info, store.run_id, cfg.hash(), item.attempt)
        on_rows(item, failed_rows(attempt, ctx.image_shape, reason))

    try:
        executor.run_shards(items, contexts, min(cfg.pairs.batch_size, cfg.pairs.victim_images), store.run_id,
                            cfg.hash(), on_rows, on_failed)
    except BaseException as exc:
        if tracker is not None:  # the MLflow runs end with the run: FAILED, or KILLED when stopped
            tracker.close("FAILED" if isinstance(exc, Exception) else "KILLED")
        raise
    finally:
        progress.close()
    # Scalar columns only: the driver's memory grows by a few numbers per pair, never by
    # triggers or traces (those stay in Parquet for farm tables / later metrics).
    df = store.read(columns=SCALAR_COLUMNS)
    if len(df) != total_pairs:
        raise RunError(f"run {store.run_id}: expected {total_pairs} pair rows, found {len(df)}")
    store.write_manifest(manifest | {"status": "complete", "pairs": total_pairs,
                                     "finished": datetime.now(timezone.utc).isoformat()})
    mlflow_id = tracker.close() if tracker is not None else None
    uri = tracker.uri if tracker is not None else None
    return RunResult(store.run_id, store, df, mlflow_id, uri, time.perf_counter() - started, num_classes)


def pairs_by_job(shards: list[Shard]) -> dict[tuple[str, str, str], list[tuple[int, int]]]:
    """(victim, target) of every pair of the shards, per job, in run order."""
    out: dict[tuple[str, str, str], list[tuple[int, int]]] = {}
    for s in shards:
        out.setdefault(s.job.key, []).extend((p.victim, p.target) for p in s.pairs)
    return out


def format_summary(df: pd.DataFrame) -> str:
    from farm.report.aggregate import summary

    table = summary(df)
    if table.empty:
        return "(no pair results)"
    table = table.assign(**{c: table[c].map(lambda v: "nan" if math.isnan(v) else f"{v:.3g}")
                            for c in ("mean_size", "median_size", "mean_asr_pct", "s_per_pair", "eval_share_pct",
                                      "capped_mean_size", "capped_mean_asr_pct")})
    return table.to_string(index=False)


__all__ = ["execute", "RunResult", "format_summary", "stored_config"]
