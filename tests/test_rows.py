"""farm.rows: one builder for ok and failed pair rows, every schema column, the method's trigger kind."""
from __future__ import annotations

import json
import math

import pytest

from farm.grid import Job, Pair, Shard, shard_id
from farm.rows import ShardAttempt, failed_rows, pair_row, shard_pair_seeds
from farm.store import SCHEMA, RunStore

INFO = {"dataset": "syn", "arch": "small_cnn", "model_kind": "clean", "attack": "none", "gt_victim": None,
        "gt_target": None}


def _attempt(method: str) -> ShardAttempt:
    job = Job("m", method, "plain", json.dumps({"epochs": 3}))
    pairs = (Pair(0, 1), Pair(2, 1))
    return ShardAttempt(Shard(job, pairs, 7, shard_id(job, pairs, 7)), INFO, "r", "h", 3)


@pytest.mark.parametrize("method, kind, shape", [("ours", "additive", [3, 8, 8]), ("nc", "blend", [4, 8, 8]),
                                                  ("cw", "blend", [4, 8, 8]), ("uap", "additive", [3, 8, 8])])
def test_failed_rows_carry_the_methods_trigger_kind_and_shape(method, kind, shape):
    rows = failed_rows(_attempt(method), (3, 8, 8), "boom")
    assert [(r["trigger_kind"], r["trigger_shape"]) for r in rows] == [(kind, shape)] * 2
    assert {(r["status"], r["stop_reason"], r["reason"], r["attempt"]) for r in rows} == {("failed", "failed", "boom", 3)}
    assert [r["pair_seed"] for r in rows] == shard_pair_seeds(_attempt(method).shard)


def test_failed_rows_fill_every_column_and_round_trip_through_the_store(tmp_path):
    rows = failed_rows(_attempt("nc"), (3, 8, 8), "boom")
    assert set(SCHEMA.names) <= set(rows[0])
    store = RunStore(str(tmp_path), "run")
    store.write_shard("m", "nc", "plain", "s0", rows)
    df = store.read()
    assert len(df) == 2 and set(df["trigger_kind"]) == {"blend"} and math.isnan(df["asr"].iloc[0])


def test_pair_row_refuses_a_column_the_schema_lacks():
    at = _attempt("ours")
    with pytest.raises(ValueError, match="asr_typo"):
        pair_row(at, at.shard.pairs[0], 1, "additive", (3, 8, 8), asr_typo=1.0)
    row = pair_row(at, at.shard.pairs[0], 1, "additive", (3, 8, 8), asr=0.5, status="ok")
    assert (row["asr"], row["status"], row["params_json"], row["batch_pairs"]) == (0.5, "ok", '{"epochs": 3}', 2)


def test_summary_reports_the_evaluation_share_and_nan_for_rows_without_it():
    import pandas as pd

    from farm.report.aggregate import summary

    rows = failed_rows(_attempt("ours"), (3, 8, 8), "boom")
    df = pd.DataFrame(rows).assign(model_id="m", method="ours", variant="plain", status="ok",
                                   wall_s=[3.0, 1.0], eval_wall_s=[1.0, 1.0])
    assert summary(df)["eval_share_pct"].iloc[0] == pytest.approx(100 * 2 / 6)
    old = summary(df.assign(eval_wall_s=math.nan))  # rows stored before the column existed
    assert math.isnan(old["eval_share_pct"].iloc[0])
