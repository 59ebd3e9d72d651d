"""configs/paper/fashion-mnist-ci.yaml end to end on IDX fixtures: the zoo trains on the IDX
files, every paper method runs on real local Ray into Parquet and MLflow, and `farm tables`
regenerates the paper tables from the stored rows."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from farm.config import load_config
from farm.data import DATASETS
from farm.methods import STOP_REASONS
from farm.prepare import zoo_dir
from real_fixtures import write_idx

pytestmark = pytest.mark.slow
CONFIG = Path(__file__).resolve().parent.parent / "configs" / "paper" / "fashion-mnist-ci.yaml"


def test_fashion_mnist_ci_config_end_to_end(tmp_path, local_ray):
    from farm.report.tables import regenerate
    from farm.runner import execute

    root = write_idx(tmp_path / "fmnist", "flat", gz=True, train_per_class=30, test_per_class=20)
    cfg = load_config(CONFIG, [f"datasets.fashion_mnist.root={root}", f"run.output={tmp_path / 'out'}",
                               "cluster.num_cpus=2"])
    result = execute(cfg, log_fn=print)
    df = result.store.read(with_triggers=False)
    jobs = sum(len(m.variants) for m in cfg.methods) * len(cfg.models)
    assert len(df) == jobs * cfg.pairs.sample  # the sampled pairs of every job
    assert (df["status"] == "ok").all() and set(df["stop_reason"]) <= set(STOP_REASONS)
    assert set(df["dataset"]) == {"fashion_mnist"} and set(df["trigger_shape"].map(tuple)) <= {(1, 28, 28), (2, 28, 28)}
    zoo = result.store.manifest()["models"]["cnn-badnets"]["zoo"]
    meta = json.loads((zoo_dir(cfg) / zoo["key"] / "meta.json").read_text())  # trained and evaluated on the IDX files
    assert meta["dataset_spec"]["root"] == str(root) and meta["image_shape"] == [1, 28, 28], meta
    assert (meta["clean_acc"], meta["asr"]) == (zoo["clean_acc"], zoo["asr"])
    cw = df[df.method == "cw"]
    assert set(cw["stop_reason"]) <= {"cap", "converged", "budget"}
    eps = {json.loads(p)["eps"] for p in df[df.method == "uap"]["params_json"]}
    assert eps == {DATASETS["fashion_mnist"].uap_eps}, "UAP's budget is the dataset's"
    out = regenerate(result.run_id, str(tmp_path / "out"), str(tmp_path / "tables"), log_mlflow=False,
                     log_fn=print)
    table4 = (out / "table4_methods.md").read_text()
    assert "| cnn-badnets | cw | plain |" in table4 and "ASR bound behind `converged`" in table4
    # the note is there exactly when a CW pair was capped (either way round is a failure)
    assert ("stopped by a cap (max_rounds=3)" in table4) == bool((cw["stop_reason"] == "cap").any()), table4
