"""Expand a config into jobs (model × method × variant) and deterministic shards of pairs.

A shard is the unit of work and of storage: its id hashes everything that determines its
rows (model, method, its parameters, variant, pair list, seed). Resume is decided per pair,
not per shard: :func:`expand` leaves out the (job, pair)s already stored and chunks only the
rest, so a resumed run with another ``pairs_per_batch`` computes exactly the missing pairs
(the config hash, checked on resume, keeps a changed config from picking up stale results).
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np

from farm.config import Config, MethodSpec, PairsSpec

ANY = -1  # victim id of an all-to-one pair (images of every class but the target)


@dataclass(frozen=True)
class Pair:
    victim: int  # ANY (-1) for all-to-one
    target: int

    @property
    def universal(self) -> bool:
        return self.victim == ANY


@dataclass(frozen=True)
class Job:
    model_id: str
    method: str
    variant: str
    params_json: str  # canonical JSON of the method's hyper-parameters (resolved defaults)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.model_id, self.method, self.variant)


@dataclass(frozen=True)
class Shard:
    job: Job
    pairs: tuple[Pair, ...]
    seed: int
    shard_id: str


def select_pairs(spec: PairsSpec, k: int, seed: int) -> list[Pair]:
    """The pair list of one model with K classes (universal pairs appended last)."""
    every = [Pair(v, t) for v in range(k) for t in range(k) if v != t]
    if spec.mode == "all":
        pairs = every
    elif spec.mode == "sample":
        rng = np.random.default_rng(np.random.SeedSequence([seed, k, 0x5A3B]))
        chosen = sorted(rng.choice(len(every), size=min(spec.sample or 0, len(every)), replace=False))
        pairs = [every[i] for i in chosen]
    else:
        pairs = list(dict.fromkeys(Pair(v, t) for v, t in spec.list))
    if spec.universal:
        pairs += [Pair(ANY, t) for t in range(k)]
    return pairs


def resolved_params(method: MethodSpec, dataset: str) -> dict:
    """The method's full hyper-parameters for a model of registered dataset ``dataset``
    (defaults filled in, dataset-dependent defaults such as UAP's budget resolved), as stored
    in every row: a row says exactly what ran, and its shard id changes with it."""
    from dataclasses import asdict

    from farm.data import DATASETS
    from farm.methods import method_params

    params = method_params(method.name, method.params)
    if hasattr(params, "for_dataset"):
        params = params.for_dataset(DATASETS[dataset])
    return asdict(params)


def shard_id(job: Job, pairs: tuple[Pair, ...], seed: int) -> str:
    blob = json.dumps([job.model_id, job.method, job.variant, job.params_json,
                       [(p.victim, p.target) for p in pairs], seed], separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def jobs(cfg: Config) -> list[Job]:
    out = []
    for model in cfg.models:
        for method in cfg.methods:
            params_json = json.dumps(resolved_params(method, cfg.datasets[model.dataset].name), sort_keys=True)
            for variant in method.variants:
                out.append(Job(model.id, method.name, variant, params_json))
    return out


def expand(cfg: Config, num_classes: dict[str, int], pairs_per_batch: int | dict[str, int] | None = None,
           done: Collection[tuple[str, str, str, int, int]] = frozenset()) -> list[Shard]:
    """The shards of a run still to compute, in a stable order (model, method, variant, pair
    chunk): every pair of every job except those in ``done`` ((model, method, variant, victim,
    target) keys of stored rows).

    ``pairs_per_batch`` overrides the config's P, for all models or per model id (the
    measured P of ``cluster.pairs_per_batch: auto``)."""
    given = pairs_per_batch or cfg.cluster.pairs_per_batch
    if given == "auto":
        raise ValueError("cluster.pairs_per_batch is 'auto': pass the measured P per model")
    shards = []
    for job in jobs(cfg):
        p = given[job.model_id] if isinstance(given, dict) else given
        pairs = [pair for pair in select_pairs(cfg.pairs, num_classes[job.model_id], cfg.run.seed)
                 if (*job.key, pair.victim, pair.target) not in done]
        for i in range(0, len(pairs), p):
            chunk = tuple(pairs[i:i + p])
            shards.append(Shard(job, chunk, cfg.run.seed, shard_id(job, chunk, cfg.run.seed)))
    return shards
