"""Recovery on the default config's zoo (issue 3): the planted backdoor is what the methods find.

The main fixture runs configs/default.yaml exactly as `make run` does (Ray, Parquet, MLflow)
and the assertions read its Parquet rows; the label-specific check runs one row of pairs
in-process with the same code the actors use.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from farm.bench import method_spec, run_pairs
from farm.config import DEFAULT_CONFIG, load_config
from farm.grid import Pair
from farm.runner import prepare_models

pytestmark = pytest.mark.slow
K = 10


@pytest.fixture(scope="module")
def default_run(tmp_path_factory, local_ray):
    """The default config exactly as `make run` runs it (Ray, Parquet, MLflow)."""
    from farm.runner import execute

    cfg = load_config(DEFAULT_CONFIG, [f"run.output={tmp_path_factory.mktemp('recovery')}"])
    return cfg, execute(cfg, log_fn=print).store.read(with_triggers=False)


def test_default_run_is_complete(default_run):
    cfg, df = default_run
    assert len(df) == 2 * 2 * (K * (K - 1) + K)
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


def test_nc_anomaly_index_flags_poisoned_not_clean(default_run):
    """NC's universal scan (L1 of the mask, MAD rule) as the default config runs it."""
    from farm.report.aggregate import anomaly_table

    cfg, df = default_run
    table = anomaly_table(df, {"cnn-badnets": K, "cnn-clean": K})
    nc = table[(table.method == "nc") & (table.source == "universal")].set_index("model_id")
    assert nc.loc["cnn-badnets", "anomaly_index"] > 2, nc
    # Membership, not equality: another label may also sit > 2 MADs below the median on some
    # machines ('0,6' was seen); the claim is that the planted target is flagged.
    assert str(cfg.models[1].attack.target) in nc.loc["cnn-badnets", "flagged_labels"].split(","), nc
    assert nc.loc["cnn-clean", "anomaly_index"] <= 2, nc


def test_ours_label_specific_pair_smallest_of_its_row(tmp_path):
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
    assert min(sizes, key=lambda t: np.inf if np.isnan(sizes[t]) else sizes[t]) == 5, sizes
