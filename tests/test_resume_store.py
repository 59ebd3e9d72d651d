"""Issue 10, points 4 and 5, through real Ray, Parquet and processes: resume never makes a run
unusable. A truncated shard, a moved results folder, another ``pairs_per_batch``, a second
``farm run`` started at the same time as the first; rows lost and duplicated stay 0.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from e2e_util import tiny_config, write_config
from farm.cli import main
from farm.store import RunStore, StoreError

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
KEY = ["model_id", "method", "variant", "victim", "target"]


def _config(out: Path, zoo: Path, run_id: str, **cluster) -> dict:
    cfg = tiny_config(out, run={"name": "r", "id": run_id, "output": str(out), "zoo_dir": str(zoo)})
    cfg["models"] = cfg["models"][:1]
    cfg["methods"] = [{"name": "ours", "params": {"epochs": 2}}]
    cfg["pairs"] = {"mode": "sample", "sample": 12, "victim_images": 8, "batch_size": 8, "heldout_images": 4}
    cfg["cluster"] = {"num_cpus": 2, "pairs_per_batch": 4, **cluster}
    return cfg


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT), RAY_USAGE_STATS_ENABLED="0", RAY_ADDRESS="local")


def _shards(run_dir: Path) -> list[Path]:
    return sorted(p for p in (run_dir / "pairs").rglob("*.parquet") if not p.name.startswith("."))


def test_resume_after_truncation_elsewhere_and_with_another_p_loses_and_duplicates_nothing(tmp_path, capsys,
                                                                                          local_ray):
    first, moved, zoo = tmp_path / "first", tmp_path / "moved", tmp_path / "zoo"
    path = write_config(tmp_path / "c.yaml", _config(first, zoo, "res"))
    assert main(["run", str(path)]) == 0, capsys.readouterr().err
    capsys.readouterr()
    # The folder is copied to another root (docs/cluster.md), one shard is lost and one truncated.
    shutil.copytree(first / "res", moved / "res")
    shutil.rmtree(first / "res")
    run_dir = moved / "res"
    lost, truncated, *kept = _shards(run_dir)
    assert len(kept) == 1
    lost.unlink()
    truncated.write_bytes(truncated.read_bytes()[:300])
    manifest = json.loads((run_dir / "manifest.json").read_text())
    (run_dir / "manifest.json").write_text(json.dumps(manifest | {"status": "running"}))
    with pytest.raises(StoreError, match=truncated.name):  # a store error names the file
        RunStore(str(moved), "res").read()
    before = pd.read_parquet(kept[0])

    # resume at the new root, with another P: only the 8 missing pairs, chunked by 3
    code = main(["run", "--resume", "res", "--set", f"run.output={moved}", "--set", "cluster.pairs_per_batch=3"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "resume: 4 of 12 pairs already stored" in out.out and truncated.name in out.out
    df = RunStore(str(moved), "res").read()
    assert len(df) == 12 and not df.duplicated(KEY).any() and (df["status"] == "ok").all()
    kept_now = df[df["shard_id"] == before["shard_id"].iloc[0]]
    assert list(kept_now.sort_values("victim")["finished_at"]) == list(before.sort_values("victim")["finished_at"])
    assert sorted(df.groupby("shard_id").size().tolist()) == [2, 3, 3, 4]  # 8 missing pairs as 3 + 3 + 2
    assert not (first / "res").exists() and (moved / "mlflow.db").is_file()  # nothing went back to the old root

    # A complete run resumes as a no-op: no Ray, no MLflow, nothing rewritten.
    manifest_bytes = (run_dir / "manifest.json").read_bytes()
    db = moved / "mlflow.db"
    db_before = db.stat().st_mtime_ns
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "farm", "run", "--resume", "res", "--set", f"run.output={moved}"],
                          env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=120)
    print(f"no-op resume of a complete run: {time.perf_counter() - start:.2f} s wall (subprocess, incl. imports)")
    assert done.returncode == 0, done.stderr
    assert "is already complete (12 pairs stored" in done.stdout and "nothing to do" in done.stdout
    assert "Ray" not in done.stdout + done.stderr and "mlflow:" not in done.stdout
    assert (run_dir / "manifest.json").read_bytes() == manifest_bytes and db.stat().st_mtime_ns == db_before


def test_two_fresh_runs_with_one_id_one_refused_and_a_resume_while_running_refused(tmp_path):
    cfg = _config(tmp_path / "out", tmp_path / "zoo", "twice", num_cpus=1, max_actors=1)
    cfg["methods"] = [{"name": "ours", "params": {"epochs": 30}}]
    path = write_config(tmp_path / "c.yaml", cfg)
    cmd = [sys.executable, "-m", "farm", "run", str(path)]
    a, b = (subprocess.Popen(cmd, env=_env(), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2))
    try:
        run_dir = tmp_path / "out" / "twice"
        deadline = time.time() + 240
        while not (run_dir / "manifest.json").exists() and time.time() < deadline \
                and (a.poll() is None or b.poll() is None):
            time.sleep(0.2)
        resumed = subprocess.run([sys.executable, "-m", "farm", "run", "--resume", "twice", "--set",
                                  f"run.output={tmp_path / 'out'}"], env=_env(), cwd=tmp_path, capture_output=True,
                                 text=True, timeout=120)
        outs = [p.communicate(timeout=400) for p in (a, b)]
    finally:
        for p in (a, b):
            if p.poll() is None:
                p.kill()
    codes = sorted([a.returncode, b.returncode])
    loser = outs[[a.returncode, b.returncode].index(2)][1] if 2 in codes else ""
    assert codes == [0, 2], [e[-2000:] for _, e in outs]
    assert "being written by another farm process" in loser or "already exists" in loser, loser
    assert "Traceback" not in loser
    assert resumed.returncode == 2 and "being written by another farm process" in resumed.stderr, resumed.stderr
    df = RunStore(str(tmp_path / "out"), "twice").read()
    assert len(df) == 12 and not df.duplicated(KEY).any()
