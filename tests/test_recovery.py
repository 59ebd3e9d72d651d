"""Recovery on the default config's zoo (issue 3): the planted backdoor is what the methods find.

The main fixture runs configs/default.yaml's models and methods as `make run` does (Ray and
Parquet; MLflow off, nothing here reads it), limited to the rows the assertions read, and the
assertions read its Parquet rows; the label-specific check runs one row of pairs in-process
with the same code the actors use.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from farm.inprocess import method_spec, run_pairs
from farm.config import DEFAULT_CONFIG, load_config
from farm.grid import Pair
from farm.prepare import prepare_models

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]  # the fixture: minutes on 2 busy cores
K = 10


@pytest.fixture(scope="module")
def default_run(tmp_path_factory, local_ray):
    """configs/default.yaml's zoo, methods and settings through Ray and Parquet, limited
    to the rows these assertions read: every pair of the BadNets model through ours, and NC's
    universal scans of both models (the anomaly index and its clean reference), each with one
    pair beside them (a pair list cannot be empty). Each row is what `make run` computes for it
    (pair seeds and image selections depend on the pair, not on what else runs); the other 288
    rows of `make run` would more than double the suite's longest fixture (tests/test_e2e.py
    runs whole multi-model runs)."""
    from farm.runner import execute

    # Tracking off: nothing here reads MLflow, and its logging cost a tiny run ~10 s of CPU
    # (29-30 s vs 20 s measured); tests/test_e2e.py and test_tracking_server.py test it.
    cfg = load_config(DEFAULT_CONFIG, [f"run.output={tmp_path_factory.mktemp('recovery')}", "tracking.enabled=false"])
    _clean, badnets = cfg.models
    ours, nc = (next(m for m in cfg.methods if m.name == name) for name in ("ours", "nc"))
    parts = [replace(cfg, models=[badnets], methods=[ours], pairs=replace(cfg.pairs, universal=False)),
             replace(cfg, methods=[nc], pairs=replace(cfg.pairs, mode="list", list=[(1, 0)]))]
    frames = [execute(part, log_fn=print).store.read(with_triggers=False) for part in parts]
    return cfg, pd.concat(frames, ignore_index=True)


def test_default_run_is_complete(default_run):
    cfg, df = default_run
    assert len(df) == K * (K - 1) + 2 * (1 + K)
    assert (df["status"] == "ok").all()


def test_ours_pairs_into_planted_target_are_smallest(default_run):
    cfg, df = default_run
    target = cfg.models[1].attack.target
    g = df[(df.model_id == "cnn-badnets") & (df.method == "ours") & (df.victim >= 0)]
    size = {(int(r.victim), int(r.target)): r.trigger_size for r in g.itertuples()}
    into = [size[(v, target)] for v in range(K) if v != target]
    assert all(np.isfinite(into)), "every pair into the planted target must converge"
    per_target = {t: np.nanmean([s for (v, tt), s in size.items() if tt == t]) for t in range(K)}
    assert min(per_target, key=per_target.get) == target, per_target
    others = sorted(v for t, v in per_target.items() if t != target)
    assert per_target[target] < 0.5 * others[0], per_target
    for v in range(K):
        if v != target:
            row = {t: size[(v, t)] for t in range(K) if t != v}
            assert min(row, key=lambda t: np.inf if np.isnan(row[t]) else row[t]) == target, (v, row)
    assert g[g.target == target]["asr"].mean() >= 0.9


def test_nc_universal_scan_singles_out_planted_target(default_run):
    """NC's universal scan (L1 of the mask, MAD rule) as the default config runs it.

    Measured over 5 seeds x 1, 2 threads (docs/testing.md): the planted target's universal size
    is the smallest in 10/10 runs, at most 0.45x the next label's; the poisoned model's index
    is >= 1.93x the clean one's, and the clean index <= 1.61. The MAD rule itself (index > 2)
    held in 8/10 only (1.78, 1.89): with 10 labels it is noise, so it is reported, not asserted."""
    from farm.report.aggregate import anomaly_table

    cfg, df = default_run
    table = anomaly_table(df, {"cnn-badnets": K, "cnn-clean": K})
    nc = table[(table.method == "nc") & (table.source == "universal")].set_index("model_id")
    target = cfg.models[1].attack.target
    uni = df[(df.model_id == "cnn-badnets") & (df.method == "nc") & (df.victim < 0)].set_index("target")["raw_size"]
    ranked = uni.sort_values()
    assert ranked.index[0] == target and ranked.iloc[0] <= 0.6 * ranked.iloc[1], ranked
    assert nc.loc["cnn-badnets", "anomaly_index"] >= 1.5 * nc.loc["cnn-clean", "anomaly_index"], nc
    assert nc.loc["cnn-clean", "anomaly_index"] <= 2, nc


def test_ours_label_specific_pair_among_smallest_of_its_row(tmp_path):
    """2->5 is the smallest of its row in 9/10 measured runs and second (1.03x the minimum) in
    one (docs/testing.md): asserted as rank <= 2 of the 9 targets."""
    data = load_config(DEFAULT_CONFIG, [f"run.output={tmp_path}"])
    # poison_rate 0.2: at 0.1 the label-specific backdoor was learned to ASR 0.70 only at seed 2
    # (docs/testing.md); this test is about inversion, so its model must carry the backdoor.
    spec = replace(data.models[1], id="cnn-ls", attack=replace(data.models[1].attack, type="label_specific",
                                                                 victim=2, target=5, poison_rate=0.2))
    ls_cfg = replace(data, models=[spec])
    model = prepare_models(ls_cfg, lambda _m: None)["cnn-ls"]
    assert model.meta["asr"] >= 0.9
    row = [Pair(2, t) for t in range(K) if t != 2]
    rows = run_pairs(ls_cfg, model, method_spec(ls_cfg, "ours"), row, pairs_per_batch=9)
    sizes = {r["target"]: r["trigger_size"] for r in rows}
    ranked = sorted(sizes, key=lambda t: np.inf if np.isnan(sizes[t]) else sizes[t])
    assert 5 in ranked[:2], sizes
