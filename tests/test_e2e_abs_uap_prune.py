"""abs, uap and nc_prune through the whole farm once (real local Ray, Parquet, MLflow)."""
from __future__ import annotations

import json

import pytest

from e2e_util import tiny_config

pytestmark = pytest.mark.slow
K = 10


def test_abs_uap_nc_prune_end_to_end(tmp_path, local_ray):
    from farm.config import config_from_dict
    from farm.runner import execute

    cfg = tiny_config(tmp_path)
    cfg["models"] = cfg["models"][1:]  # the poisoned one
    cfg["methods"] = [{"name": "abs", "params": {"epochs": 2}}, {"name": "uap", "params": {"epochs": 2}},
                      {"name": "nc_prune", "params": {"nc": {"epochs": 2}, "ours": {"epochs": 2}}}]
    result = execute(config_from_dict(cfg), log_fn=lambda _m: None)
    df = result.store.read()
    assert df.groupby("method").size().to_dict() == {"abs": K * (K - 1), "uap": K * (K - 1), "nc_prune": K * (K - 1)}
    assert (df["status"] == "ok").all() and df["trigger"].map(len).gt(0).all()
    kinds = df.groupby("method")["trigger_kind"].unique().map(list).to_dict()
    assert kinds == {"abs": ["blend"], "uap": ["additive"], "nc_prune": ["blend"]}
    prune = df[df.method == "nc_prune"]
    assert (prune["steps"] <= 4).all()  # 2 NC + 2 ours epochs
    assert json.loads(prune["params_json"].iloc[0])["nc"]["epochs"] == 2
    assert (df[df.method == "uap"]["steps"] == 2).all() and (df[df.method == "abs"]["steps"] == 2).all()
