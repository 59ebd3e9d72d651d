"""The one builder of stored pair rows: every column of :data:`farm.store.SCHEMA`.

The worker's rows and the rows of a shard that failed every attempt both come from
:func:`pair_row`, so a column is added in one place, and a failed row differs from an ok one
only by what could not be measured (its trigger kind and shape are still the method's).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from farm.grid import Pair, Shard
from farm.methods import method_info, pair_seed
from farm.store import ROBUST_COLUMNS, SCHEMA, SCHEMA_VERSION
from farm.triggers import TriggerKind, trigger_shape

# What a pair without a result stores; every row starts from it, so the worker names only
# what it measured.
NO_RESULT: dict[str, Any] = {
    "trigger": b"", "trigger_size": math.nan, "raw_size": math.nan, "mask_l1": math.nan, "extra_json": "{}",
    "asr": math.nan, "asr_correct": math.nan, **dict.fromkeys(ROBUST_COLUMNS, math.nan), "asr_attack": math.nan,
    "n_attack": 0, "n_heldout": 0, "steps": 0, "converged": False, "stop_reason": "failed", "time_to_best": None,
    "trace_t": [], "trace_size": [], "loss_step": [], "loss_value": [], "status": "failed", "reason": "",
    "wall_s": math.nan, "batch_wall_s": math.nan, "eval_wall_s": math.nan, "device": "", "worker": "",
}
_COLUMNS = frozenset(SCHEMA.names)


@dataclass(frozen=True)
class ShardAttempt:
    """What every row of one attempt at one shard shares."""

    shard: Shard
    info: dict[str, Any]  # the model's ground-truth columns (ModelPayload.info)
    run_id: str
    config_hash: str
    attempt: int


def shard_pair_seeds(shard: Shard) -> list[int]:
    """Each pair's seed (farm.methods.pair_seed): what its optimisation draws from, and a column."""
    return [pair_seed(shard.seed, shard.job.model_id, shard.job.method, p.victim, p.target) for p in shard.pairs]


def pair_row(at: ShardAttempt, pair: Pair, seed: int, trigger_kind: TriggerKind, shape: tuple[int, ...],
             **measured: Any) -> dict[str, Any]:
    """One row: identity from the shard, then :data:`NO_RESULT` overridden by ``measured``.

    ``measured`` may name only schema columns, so a misspelt column fails here, not as a
    missing value in Parquet."""
    unknown = set(measured) - _COLUMNS
    if unknown:
        raise ValueError(f"pair_row: {sorted(unknown)} are not columns of farm.store.SCHEMA")
    shard = at.shard
    return {"schema_version": SCHEMA_VERSION, "run_id": at.run_id, "config_hash": at.config_hash,
            "shard_id": shard.shard_id, **at.info, "victim": pair.victim, "target": pair.target,
            "seed": shard.seed, "pair_seed": seed, "params_json": shard.job.params_json,
            "trigger_kind": trigger_kind, "trigger_shape": list(shape), "batch_pairs": len(shard.pairs),
            "attempt": at.attempt, **NO_RESULT, **measured, "finished_at": datetime.now(timezone.utc)}


def failed_rows(at: ShardAttempt, image_shape: tuple[int, int, int], reason: str) -> list[dict[str, Any]]:
    """Rows for pairs whose shard failed every attempt: stored, so the run is complete and
    the failure visible, instead of hanging or silently dropping pairs."""
    kind = method_info(at.shard.job.method).trigger_kind
    shape = trigger_shape(kind, image_shape)
    return [pair_row(at, pair, seed, kind, shape, reason=reason)
            for pair, seed in zip(at.shard.pairs, shard_pair_seeds(at.shard))]
