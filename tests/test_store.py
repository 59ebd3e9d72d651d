"""Parquet store: round trip, atomic shard files, resume bookkeeping, schema versioning."""
from __future__ import annotations

import math
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from farm.store import ROBUST_COLUMNS, SCHEMA, SCHEMA_VERSION, RunStore, StoreError
from farm.triggers import Trigger


def row(victim: int, target: int, shard: str = "s1", **over):
    trig = Trigger("additive", torch.zeros(3, 4, 4).index_fill_(2, torch.tensor([1]), 0.5))
    base = {
        "schema_version": SCHEMA_VERSION, "run_id": "r", "config_hash": "h", "shard_id": shard,
        "dataset": "synthetic", "arch": "small_cnn", "model_kind": "poisoned", "attack": "badnets",
        "gt_victim": -1, "gt_target": 0, "victim": victim, "target": target, "seed": 0, "pair_seed": 123,
        "params_json": "{}", "trigger_kind": trig.kind, "trigger_shape": list(trig.array.shape),
        "trigger": trig.to_bytes(), "trigger_size": 4.0, "raw_size": 4.0, "mask_l1": math.nan, "extra_json": "{}", "asr": 0.5,
        "asr_correct": 0.6, **{c: 0.1 for c in ROBUST_COLUMNS}, "asr_attack": 1.0, "n_attack": 50,
        "n_heldout": 100, "steps": 10, "converged": True, "stop_reason": "converged", "time_to_best": 0.2,
        "trace_t": [0.1, 0.2],
        "trace_size": [9.0, 4.0], "loss_step": [0, 2, 3], "loss_value": [2.5, 1.25, 0.5], "status": "ok", "reason": "", "wall_s": 0.01, "batch_wall_s": 0.02,
        "eval_wall_s": 0.005, "batch_pairs": 2, "device": "cpu", "worker": "w", "attempt": 1,
        "finished_at": datetime(2026, 1, 1, tzinfo=timezone.utc),
    }
    base.update(over)
    return base


def test_round_trip_with_partitions_and_trigger(tmp_path):
    store = RunStore(str(tmp_path), "run1")
    store.create("a: 1\n", {"run_id": "run1", "config_hash": "h"})
    store.write_shard("m1", "ours", "plain", "s1", [row(0, 1), row(1, 0)])
    store.write_shard("m1", "nc", "plain", "s2", [row(0, 1, "s2")])
    df = store.read()
    assert len(df) == 3
    assert set(df["method"]) == {"ours", "nc"} and set(df["model_id"]) == {"m1"}
    r = df[(df["method"] == "ours") & (df["victim"] == 1)].iloc[0]
    trig = Trigger.from_bytes(r["trigger_kind"], list(r["trigger_shape"]), r["trigger"])
    assert trig.array.shape == (3, 4, 4) and float(trig.array[:, :, 1].min()) == 0.5
    assert list(r["trace_size"]) == [9.0, 4.0]
    assert (list(r["loss_step"]), list(r["loss_value"])) == ([0, 2, 3], [2.5, 1.25, 0.5])
    assert store.done_pairs() == {("m1", "ours", "plain", 0, 1), ("m1", "ours", "plain", 1, 0), ("m1", "nc", "plain", 0, 1)}
    assert store.manifest()["config_hash"] == "h"
    assert store.config_yaml() == "a: 1\n"


def test_hidden_temp_file_is_never_read_as_complete(tmp_path):
    store = RunStore(str(tmp_path), "run1")
    store.create("", {})
    d = tmp_path / "run1" / "pairs" / "model_id=m" / "method=ours" / "variant=plain"
    d.mkdir(parents=True)
    (d / ".tmp-s9.parquet").write_bytes(b"PAR1 half written")
    assert store.done_pairs() == set()
    assert len(store.read()) == 0
    store.write_shard("m", "ours", "plain", "s9", [row(0, 1, "s9")])
    assert store.done_pairs() == {("m", "ours", "plain", 0, 1)} and len(store.read()) == 1
    assert store.sweep() == [] and not (d / ".tmp-s9.parquet").exists()  # a resume sweeps dead writers' temps


def test_robust_columns_are_the_metrics_transforms():
    from farm.metrics import ROBUSTNESS
    from farm.store import ROBUST_NAMES

    assert tuple(ROBUSTNESS) == ROBUST_NAMES


def test_unknown_schema_version_rejected(tmp_path):
    store = RunStore(str(tmp_path), "run1")
    store.create("", {})
    store.write_shard("m", "ours", "plain", "s1", [row(0, 1)])
    d = tmp_path / "run1" / "pairs" / "model_id=m" / "method=ours" / "variant=plain"
    table = pa.Table.from_pylist([row(1, 0, "s2", schema_version=99)], schema=SCHEMA)
    pq.write_table(table, d / "s2.parquet")
    with pytest.raises(StoreError, match="schema version"):
        store.read()


def test_version_1_rows_rejected_naming_stop_reason(tmp_path):
    """Version 1 predates stop_reason: its sizes may be a cap's, so it is refused, with the fix."""
    store = RunStore(str(tmp_path), "run1")
    store.create("", {})
    d = tmp_path / "run1" / "pairs" / "model_id=m" / "method=cw" / "variant=plain"
    d.mkdir(parents=True)
    old = {k: v for k, v in row(0, 1, schema_version=1).items() if k != "stop_reason"}
    pq.write_table(pa.Table.from_pylist([old], schema=pa.schema([f for f in SCHEMA if f.name != "stop_reason"])),
                   d / "s1.parquet")
    with pytest.raises(StoreError, match=r"schema version\(s\) \[1\].*stop_reason.*Re-run"):
        store.read()


def test_shards_written_before_the_loss_curve_columns_still_read(tmp_path):
    """loss_step/loss_value and eval_wall_s came after version 2 shipped: an older shard of the
    same version lacks them and must read (nulls) beside a new one, for resume, tables and MLflow."""
    from farm.store import SCALAR_COLUMNS

    store = RunStore(str(tmp_path), "run1")
    store.create("", {})
    later = ("loss_step", "loss_value", "eval_wall_s")
    old_schema = pa.schema([f for f in SCHEMA if f.name not in later])
    old = {k: v for k, v in row(0, 1).items() if k not in later}
    d = tmp_path / "run1" / "pairs" / "model_id=m" / "method=ours" / "variant=plain"
    d.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([old], schema=old_schema), d / "s0.parquet")
    store.write_shard("m", "ours", "plain", "s1", [row(1, 0)])
    df = store.read()
    assert df["victim"].tolist() == [0, 1]
    assert df["loss_step"].iloc[0] is None and list(df["loss_step"].iloc[1]) == [0, 2, 3]
    assert math.isnan(df["eval_wall_s"].iloc[0]) and df["eval_wall_s"].iloc[1] == 0.005
    assert list(df["trace_size"].iloc[0]) == [9.0, 4.0]
    assert store.done_pairs() == {("m", "ours", "plain", 0, 1), ("m", "ours", "plain", 1, 0)}
    assert len(store.read(columns=SCALAR_COLUMNS, job=("m", "ours", "plain"))) == 2


def test_file_uri_output(tmp_path):
    store = RunStore(f"file://{tmp_path}", "run1")
    store.create("", {"x": 1})
    store.write_shard("m", "ours", "plain", "s1", [row(0, 1)])
    assert (tmp_path / "run1" / "pairs" / "model_id=m" / "method=ours" / "variant=plain" / "s1.parquet").exists()
    assert len(RunStore(f"file://{tmp_path}", "run1").read(with_triggers=False)) == 1


def test_missing_columns_refused(tmp_path):
    store = RunStore(str(tmp_path), "run1")
    store.create("", {})
    bad = row(0, 1)
    del bad["asr"]
    with pytest.raises(StoreError, match="asr"):
        store.write_shard("m", "ours", "plain", "s1", [bad])
