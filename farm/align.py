"""Alignment of stored triggers between methods, as Ray tasks over a finished run.

For every (model, variant, victim->target) pair where the reference method (``ours``) and
another method both stored a trigger, METHODS.md §2(g) compares them two ways, without
re-optimising anything (the triggers are decoded from the Parquet rows):

* **align by size** (Fig 9/13, NC Prune): the other trigger is cut to size(ours) and the
  held-out ASR of the cut trigger is measured;
* **align by ASR** (Fig 10/14): k* is the size ours needs to be no better than the other
  method's held-out ASR.

The models and held-out images are rebuilt exactly as the run built them (its stored config,
``farm.prepare.prepare_models`` and ``pair_images``), so the numbers are those of the run.
One Ray task per shard of pairs of one model; the model and images go to the object store
once per model. The driver writes one atomic Parquet file per shard under
``<run_id>/align/model_id=<m>/method=<other>/variant=<v>/<shard>.parquet``, so an interrupted
alignment resumes by skipping shards already written.

Columns (:data:`ALIGN_SCHEMA`): ``victim``, ``target``, ``ref_method``; ``k_ref`` = size of
the reference trigger (pixels, recomputed from the stored float16 trigger), ``asr_ref`` its
held-out ASR; ``size_other``, ``asr_other`` the other trigger's size and held-out ASR;
``asr_other_cut`` the ASR of the other trigger cut to ``k_ref`` pixels (uncut when it is
already no larger); ``k_star`` the align-by-ASR size of the reference; ``size_ratio`` =
size_other / k_star (the ratio map of Fig 10/14); ``converged_ref`` / ``converged_other``
as stored; ``status`` ok | failed and ``reason``. Partition columns: model_id, method
(the *other* method) and variant.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import replace
from typing import Any, Callable

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs

from farm.config import trusting_code
from farm.report import paper
from farm.store import PARTITIONS, RunStore, read_partitioned, shard_files

ALIGN_SCHEMA_VERSION = 1
REF_METHOD = paper.OURS
SHARD_PAIRS = 40  # pairs per Ray task: a few seconds of forward passes on a CPU
ALIGN_SCHEMA = pa.schema([
    ("schema_version", pa.int32()),
    ("run_id", pa.string()),
    ("shard_id", pa.string()),
    ("ref_method", pa.string()),
    ("victim", pa.int32()),
    ("target", pa.int32()),
    ("k_ref", pa.float64()),
    ("asr_ref", pa.float64()),
    ("size_other", pa.float64()),
    ("asr_other", pa.float64()),
    ("asr_other_cut", pa.float64()),
    ("k_star", pa.float64()),
    ("size_ratio", pa.float64()),
    ("converged_ref", pa.bool_()),
    ("converged_other", pa.bool_()),
    ("status", pa.string()),
    ("reason", pa.string()),
])
TRIGGER_COLUMNS = ["model_id", "method", "variant", "victim", "target", "status", "converged",
                   "trigger_kind", "trigger_shape", "trigger"]
Log = Callable[[str], None]


def align_dir(store: RunStore) -> str:
    return f"{store.run_dir}/align"


def plan(df: pd.DataFrame, ref: str = REF_METHOD) -> dict[str, list[dict[str, Any]]]:
    """Alignment items per model: one per (other method, variant, pair) whose reference and
    other rows both hold a trigger (failed or empty rows cannot be aligned)."""
    rows = df[(df["victim"] >= 0) & (df["status"] == "ok") & (df["trigger"].map(len) > 0)]
    refs = rows[rows["method"] == ref].set_index(["model_id", "variant", "victim", "target"])
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows[rows["method"] != ref].itertuples(index=False):
        key = (r.model_id, r.variant, r.victim, r.target)
        if key not in refs.index:
            continue
        o = refs.loc[key]
        out.setdefault(r.model_id, []).append({
            "method": r.method, "variant": r.variant, "victim": int(r.victim), "target": int(r.target),
            "ref": (o["trigger_kind"], list(o["trigger_shape"]), o["trigger"]), "converged_ref": bool(o["converged"]),
            "other": (r.trigger_kind, list(r.trigger_shape), r.trigger), "converged_other": bool(r.converged),
        })
    return out


def shards(items: list[dict[str, Any]], model_id: str, ref: str,
           size: int = SHARD_PAIRS) -> list[tuple[str, str, str, list[dict[str, Any]]]]:
    """(shard_id, method, variant, items) in a stable order; ids hash what determines the rows."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for it in sorted(items, key=lambda i: (i["method"], i["variant"], i["victim"], i["target"])):
        groups.setdefault((it["method"], it["variant"]), []).append(it)
    out = []
    for (method, variant), group in groups.items():
        for i in range(0, len(group), size):
            chunk = group[i:i + size]
            blob = json.dumps([model_id, method, variant, ref, [(c["victim"], c["target"]) for c in chunk],
                               [hashlib.sha256(c["ref"][2] + c["other"][2]).hexdigest() for c in chunk]])
            out.append((hashlib.sha256(blob.encode()).hexdigest()[:20], method, variant, chunk))
    return out


def align_items(model: Any, images: Any, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The alignment numbers of each item (runs inside a Ray task; plain function for tests)."""
    from farm.grid import Pair
    from farm.metrics import align_by_asr, align_by_size
    from farm.triggers import Trigger
    from farm.worker import image_key

    out = []
    for it in items:
        held = images.heldout[image_key(Pair(it["victim"], it["target"]))]
        row = {"victim": it["victim"], "target": it["target"], "converged_ref": it["converged_ref"],
               "converged_other": it["converged_other"], "status": "ok", "reason": ""}
        try:
            ours = Trigger.from_bytes(*it["ref"])
            other = Trigger.from_bytes(*it["other"])
            by_size = align_by_size(model, ours, other, held, it["target"])
            k_star = align_by_asr(model, ours, float(by_size["asr_other"]), held, it["target"])
            row |= {"k_ref": float(by_size["k"]), "asr_ref": float(by_size["asr_ours"]),
                    "size_other": float(by_size["size_other"]), "asr_other": float(by_size["asr_other"]),
                    "asr_other_cut": float(by_size["asr_other_cut"]), "k_star": float(k_star),
                    "size_ratio": float(by_size["size_other"]) / k_star if k_star > 0 else math.nan}
        except (ValueError, RuntimeError) as exc:  # a corrupt blob fails its pair, not the job
            row |= {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"[:300]}
        out.append(row)
    return out


def _remote_align(payload: Any, images: Any, items: list[dict[str, Any]], threads: int) -> list[dict[str, Any]]:
    import torch

    torch.set_num_threads(threads)
    return align_items(payload.load(torch.device("cpu")), images, items)


def models_missing(cfg: Any) -> list[str]:
    """Why the run's models cannot be rebuilt here (empty when they can), without training."""
    from farm.models.zoo_jobs import is_cached
    from farm.prepare import zoo_dir

    out = []
    for spec in cfg.models:
        if spec.source == "zoo":
            if not is_cached(spec, cfg.datasets[spec.dataset], zoo_dir(cfg)):
                out.append(f"{spec.id}: zoo model not in {zoo_dir(cfg)}")
        elif not pafs.LocalFileSystem().get_file_info(spec.checkpoint or "").is_file:
            out.append(f"{spec.id}: checkpoint {spec.checkpoint!r} not found")
    return out


def run_config(store: RunStore) -> Any:
    """The run's stored config, re-pointed at this results root (a copied folder works too)."""
    import yaml

    from farm.config import config_from_dict

    cfg = config_from_dict(yaml.safe_load(store.config_yaml()))
    return replace(cfg, run=replace(cfg.run, output=store.output))


def align_run(run_id: str, output: str = "results", ref: str = REF_METHOD, log_fn: Log = print,
              address: str | None = None, trust_code: bool = False) -> str:
    """Align every (model, variant, pair) of a run against ``ref``; returns the align folder.

    Holds the run's lock (farm.runlock) while it writes, so it refuses a run still being written."""
    from farm.runner import RunError

    store = RunStore(output, run_id)
    if not store.exists():
        raise RunError(f"no run {run_id!r} under {output!r}")
    lock = store.lock()  # align writes into the run folder: never beside a live run or another align
    try:
        return _align_locked(store, run_id, output, ref, log_fn, address, trust_code)
    finally:
        if lock is not None:
            lock.release()


def _align_locked(store: RunStore, run_id: str, output: str, ref: str, log_fn: Log, address: str | None,
                  trust_code: bool) -> str:
    import ray

    from farm import cluster
    from farm.grid import select_pairs
    from farm.errors import RunError
    from farm.prepare import pair_images, prepare_models

    cfg = run_config(store)
    if trust_code:
        cfg = trusting_code(cfg)
    missing = models_missing(cfg)
    if missing:
        raise RunError("cannot align without the run's models: " + "; ".join(missing) +
                       ". Copy the zoo folder next to the results (or pass --output to where it is).")
    work = plan(store.read(columns=TRIGGER_COLUMNS), ref)
    if not work:
        log_fn(f"align: no pair has both {ref!r} and another method; nothing to do")
        return align_dir(store)
    done = _done(store)
    resources = cluster.connect(_address(address or cfg.cluster.address), cfg.cluster.num_cpus,
                                cfg.cluster.ray_auth, log_fn)
    threads = max(1, int(cfg.cluster.cpus_per_actor))
    task = ray.remote(num_cpus=cfg.cluster.cpus_per_actor, max_retries=2)(_remote_align)
    models = prepare_models(cfg, log_fn)
    in_flight: dict[Any, tuple[str, str, str, str]] = {}
    total = pairs = pairs_done = 0
    for model_id, items in sorted(work.items()):
        m = models[model_id]
        images = pair_images(m.dataset, select_pairs(cfg.pairs, m.num_classes, cfg.run.seed), cfg.pairs,
                             cfg.run.seed, log_fn)
        payload_ref, images_ref = ray.put(m.payload), ray.put(images)
        for shard_id, method, variant, chunk in shards(items, model_id, ref):
            total += 1
            pairs += len(chunk)
            if shard_id in done:
                pairs_done += len(chunk)
            else:
                in_flight[task.remote(payload_ref, images_ref, chunk, threads)] = (model_id, method, variant, shard_id)
    log_fn(f"align {run_id}: {len(in_flight)} of {total} shard(s) to compute against {ref!r} "
           f"(Ray CPU={resources.get('CPU', 0):g})")
    progress = cluster.Progress(pairs, pairs_done, desc="align")  # minutes of work: show it moving
    try:
        while in_flight:
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            model_id, method, variant, shard_id = in_flight.pop(ready[0])
            rows = [r | {"schema_version": ALIGN_SCHEMA_VERSION, "run_id": run_id, "shard_id": shard_id,
                         "ref_method": ref} for r in ray.get(ready[0])]
            table = pa.Table.from_pylist([{f.name: r.get(f.name) for f in ALIGN_SCHEMA} for r in rows],
                                         schema=ALIGN_SCHEMA)
            store.write_parquet(f"align/model_id={model_id}/method={method}/variant={variant}/{shard_id}.parquet",
                                table)
            progress.update(len(rows), f"{model_id}/{method}/{variant}")
    finally:
        progress.close()
    return align_dir(store)


def _address(address: str | None) -> str | None:
    """Inside ``ray job submit`` (RAY_ADDRESS set by Ray) join that cluster instead of starting one."""
    env = os.environ.get("RAY_ADDRESS")
    return address or (env if env and env != "local" else None)


def _done(store: RunStore) -> set[str]:
    """Shard ids already aligned: their files exist (written atomically, so complete)."""
    return {path.rsplit("/", 1)[1][:-len(".parquet")] for path in shard_files(store.fs, align_dir(store))}


def read_align(store: RunStore) -> pd.DataFrame | None:
    """The run's alignment rows (sorted), or None when ``farm align`` has not been run."""
    return read_partitioned(align_dir(store), store.fs, ALIGN_SCHEMA, ALIGN_SCHEMA_VERSION,
                            "Delete the folder and run `farm align` again.", [*ALIGN_SCHEMA.names, *PARTITIONS])
