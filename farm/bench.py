"""Run a method over pairs in-process (no Ray, no MLflow) and time batch sizes.

``farm bench`` answers DESIGN.md's "the number of pairs per batch is measured, not assumed":
it runs the actor's own code (:class:`farm.worker.ShardExecutor`) over the same pairs with
several P and reports seconds per pair. It imports neither Ray nor MLflow, so it runs as is
on a GPU box that has only torch, pandas, pyarrow and pyyaml.
"""
from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from farm.config import Config, MethodSpec
from farm.grid import Job, Pair, Shard, resolved_params, select_pairs, shard_id
from farm.runner import PreparedModel, RunError, pair_images, prepare_models
from farm.worker import ShardExecutor, pick_device


def method_spec(cfg: Config, method: str, epochs: int | None = None) -> MethodSpec:
    """The config's entry for ``method`` (or its defaults), optionally with fewer epochs."""
    spec = next((m for m in cfg.methods if m.name == method), MethodSpec(method))
    if epochs is not None:
        spec = replace(spec, params={**spec.params, "epochs": epochs})
    return spec


def run_pairs(cfg: Config, model: PreparedModel, spec: MethodSpec, pairs: list[Pair], pairs_per_batch: int,
              variant: str = "plain", device: str = "cpu") -> list[dict[str, Any]]:
    """Rows of ``pairs`` computed in this process, ``pairs_per_batch`` pairs at a time.

    Uses the run's own seeds and image selection, so rows equal what ``farm run`` stores.
    """
    images = pair_images(model.dataset, pairs, cfg.pairs, cfg.run.seed, lambda _m: None)
    params = resolved_params(spec, cfg.datasets[model.spec.dataset].name)
    job = Job(model.spec.id, spec.name, variant, json.dumps(params, sort_keys=True))
    executor = ShardExecutor(model.payload, spec.name, params, variant, images, device)
    rows: list[dict[str, Any]] = []
    batch = min(cfg.pairs.batch_size, cfg.pairs.victim_images)
    for i in range(0, len(pairs), pairs_per_batch):
        chunk = tuple(pairs[i:i + pairs_per_batch])
        shard = Shard(job, i // pairs_per_batch, chunk, cfg.run.seed, shard_id(job, chunk, cfg.run.seed))
        rows += executor.run(shard, batch, "local", cfg.hash())
    return rows


def bench(cfg: Config, model_id: str | None, method: str, batch_sizes: list[int], pairs: int, epochs: int,
          device: str = "auto", out: str | None = None) -> pd.DataFrame:
    """Seconds per pair for each P over the same ``pairs`` pairs; printed and returned."""
    models = prepare_models(cfg, print)
    if model_id and model_id not in models:
        raise RunError(f"--model {model_id}: not in the config (have {', '.join(models)})")
    model = models[model_id] if model_id else next(iter(models.values()))
    chosen = select_pairs(replace(cfg.pairs, universal=False), model.num_classes, cfg.run.seed)[:pairs]
    spec = method_spec(cfg, method, epochs)
    dev = str(pick_device(device))
    records = []
    for p in batch_sizes:
        start = time.perf_counter()
        rows = run_pairs(cfg, model, spec, chosen, p, device=dev)
        total = time.perf_counter() - start
        records.append({"device": dev, "model": model.spec.id, "arch": model.spec.arch, "method": method,
                        "P": p, "pairs": len(rows), "epochs": epochs,
                        "s_per_pair": sum(r["wall_s"] for r in rows) / len(rows),
                        "s_per_pair_step": sum(r["wall_s"] for r in rows) / len(rows) / epochs,
                        "total_s": total})
        print(f"P={p:4d}: {records[-1]['s_per_pair']:.4f} s/pair (optimisation), {total:.1f} s with evaluation",
              flush=True)
    df = pd.DataFrame(records)
    print(df.to_string(index=False))
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(out, index=False)
    return df
