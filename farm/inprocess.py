"""The actor's code in this process: one job's shards through :class:`farm.worker.ShardExecutor`
without Ray, with the run's own seeds and image selection.

``farm bench`` times these, ``farm bench --processes`` runs them in several processes
(farm.bench_procs), and tests and scripts use them to compute exactly the rows ``farm run``
stores for a pair without starting a run.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import replace
from typing import Any

from farm.config import Config, MethodSpec
from farm.grid import Job, Pair, Shard, resolved_params, shard_id
from farm.methods import method_class
from farm.prepare import PreparedModel, pair_images
from farm.worker import ExecOptions, ShardExecutor


def method_spec(cfg: Config, method: str, epochs: int | None = None) -> MethodSpec:
    """The config's entry for ``method`` (or its defaults), optionally with ``epochs`` set
    wherever the method has epochs (both halves of nc_prune; CW has none and keeps its own
    iteration schedule)."""
    spec = next((m for m in cfg.methods if m.name == method), MethodSpec(method))
    if epochs is not None:
        spec = replace(spec, params=with_epochs(method_class(method).Params, spec.params, epochs))
    return spec


def has_epochs(params_cls: type) -> bool:
    """Whether ``--epochs`` means anything to a method (its params, or a nested part, have epochs)."""
    return with_epochs(params_cls, {}, 1) != {}


def with_epochs(params_cls: type, params: dict[str, Any], epochs: int) -> dict[str, Any]:
    """``params`` with ``epochs`` set on the method's params and on each nested params part
    that has the field."""
    out = dict(params)
    for f in dataclasses.fields(params_cls):
        if f.name == "epochs":
            out["epochs"] = epochs
        elif f.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(f.default_factory):
            nested = with_epochs(f.default_factory, dict(params.get(f.name) or {}), epochs)
            if nested != dict(params.get(f.name) or {}):
                out[f.name] = nested
    return out


def make_executor(cfg: Config, model: PreparedModel, spec: MethodSpec, pairs: list[Pair], variant: str = "plain",
                  device: str = "cpu") -> ShardExecutor:
    """The executor an actor would build for this job, with the run's own image selection."""
    images = pair_images(model.dataset, pairs, cfg.pairs, cfg.run.seed, lambda _m: None)
    return ShardExecutor(model.payload, spec.name, job_params(cfg, model, spec), variant, images, device,
                         ExecOptions.from_run(cfg.run))


def run_pairs(cfg: Config, model: PreparedModel, spec: MethodSpec, pairs: list[Pair], pairs_per_batch: int,
              variant: str = "plain", device: str = "cpu") -> list[dict[str, Any]]:
    """Rows of ``pairs`` computed in this process, ``pairs_per_batch`` pairs at a time.

    Uses the run's own seeds and image selection, so rows equal what ``farm run`` stores.
    """
    executor = make_executor(cfg, model, spec, pairs, variant, device)
    return run_shards(cfg, executor, model, spec, pairs, pairs_per_batch, variant)


def job_params(cfg: Config, model: PreparedModel, spec: MethodSpec) -> dict[str, Any]:
    """The method's parameters as a run resolves them for this model's dataset (UAP's eps)."""
    return resolved_params(spec, cfg.datasets[model.spec.dataset].name)


def run_shards(cfg: Config, executor: ShardExecutor, model: PreparedModel, spec: MethodSpec, pairs: list[Pair],
               pairs_per_batch: int, variant: str = "plain") -> list[dict[str, Any]]:
    """Rows of ``pairs`` through an existing executor (the model is loaded once per job)."""
    job = Job(model.spec.id, spec.name, variant, json.dumps(job_params(cfg, model, spec), sort_keys=True))
    rows: list[dict[str, Any]] = []
    batch = min(cfg.pairs.batch_size, cfg.pairs.victim_images)
    for i in range(0, len(pairs), pairs_per_batch):
        chunk = tuple(pairs[i:i + pairs_per_batch])
        shard = Shard(job, chunk, cfg.run.seed, shard_id(job, chunk, cfg.run.seed))
        rows += executor.run(shard, batch, "local", cfg.hash())
    return rows
