"""Recovery on the default config's zoo (issue 3): the planted backdoor is what the methods find.

These run the default config's own models, seeds and method parameters in-process (the
actors' code path, without Ray), so they check what `make run` produces.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from farm.bench import method_spec, run_pairs
from farm.config import DEFAULT_CONFIG, load_config
from farm.grid import ANY, Pair
from farm.metrics import anomaly_index
from farm.runner import prepare_models

pytestmark = pytest.mark.slow
K = 10


@pytest.fixture(scope="module")
def default_zoo(tmp_path_factory):
    cfg = load_config(DEFAULT_CONFIG, [f"run.output={tmp_path_factory.mktemp('recovery')}"])
    return cfg, prepare_models(cfg, lambda _m: None)


def test_ours_pairs_into_planted_target_are_smallest(default_zoo):
    cfg, models = default_zoo
    model = models["cnn-badnets"]
    target = model.spec.attack.target
    pairs = [Pair(v, t) for v in range(K) for t in range(K) if v != t]
    rows = run_pairs(cfg, model, method_spec(cfg, "ours"), pairs, pairs_per_batch=90)
    size = {(r["victim"], r["target"]): r["trigger_size"] for r in rows}
    into = [size[(v, target)] for v in range(K) if v != target]
    others = [s for (v, t), s in size.items() if t != target]
    assert all(np.isfinite(into)), "every pair into the planted target must converge"
    per_target = {t: np.nanmean([s for (v, tt), s in size.items() if tt == t]) for t in range(K)}
    assert min(per_target, key=per_target.get) == target
    assert np.median(into) < 0.5 * np.nanmin(list(per_target.values())[1:] if target == 0 else others)
    for v in range(K):
        if v != target:
            row = {t: size[(v, t)] for t in range(K) if t != v}
            assert min(row, key=lambda t: np.inf if np.isnan(row[t]) else row[t]) == target, (v, row)
    asr_into = [r["asr"] for r in rows if r["target"] == target]
    assert np.mean(asr_into) >= 0.9


def test_ours_label_specific_pair_smallest_of_its_row(default_zoo, tmp_path):
    cfg, _ = default_zoo
    data = load_config(DEFAULT_CONFIG, [f"run.output={tmp_path}"])
    spec = replace(data.models[1], id="cnn-ls", attack=replace(data.models[1].attack, type="label_specific",
                                                                 victim=2, target=5))
    ls_cfg = replace(data, models=[spec])
    model = prepare_models(ls_cfg, lambda _m: None)["cnn-ls"]
    assert model.meta["asr"] >= 0.9
    row = [Pair(2, t) for t in range(K) if t != 2]
    rows = run_pairs(ls_cfg, model, method_spec(ls_cfg, "ours"), row, pairs_per_batch=9)
    sizes = {r["target"]: r["trigger_size"] for r in rows}
    assert min(sizes, key=lambda t: np.inf if np.isnan(sizes[t]) else sizes[t]) == 5, sizes


def test_nc_anomaly_index_flags_poisoned_not_clean(default_zoo):
    """NC's universal scan (L1 of the mask, MAD rule) with the default config's parameters."""
    cfg, models = default_zoo
    universal = [Pair(ANY, t) for t in range(K)]
    index = {}
    for mid in ("cnn-badnets", "cnn-clean"):
        rows = run_pairs(cfg, models[mid], method_spec(cfg, "nc"), universal, pairs_per_batch=10)
        idx, flagged = anomaly_index([r["mask_l1"] for r in sorted(rows, key=lambda r: r["target"])])
        index[mid] = (idx, flagged)
    assert index["cnn-badnets"][0] > 2 and index["cnn-badnets"][1] == [0], index
    assert index["cnn-clean"][0] <= 2, index
