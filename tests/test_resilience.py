"""Recovery through real Ray and Parquet (issue 6): SIGKILLed driver + resume, dying and
raising workers, unreachable MLflow, bad checkpoints given to ``farm run``.

Rows lost must be zero in every case: each test asserts the exact pair count and no duplicates.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest
import torch

from e2e_util import tiny_config, write_config

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
K = 10


def _shard_files(pairs_dir: Path) -> dict[str, Path]:
    return {p.stem: p for p in pairs_dir.rglob("*.parquet") if not p.name.startswith(".")}


def _tagged(tag: str) -> list[psutil.Process]:
    """Processes (the driver and every Ray process it started) carrying our env tag."""
    out = []
    for p in psutil.process_iter():
        try:
            if p.pid != os.getpid() and p.environ().get("FARM_TEST_TAG") == tag:
                out.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return out


def _reap(tag: str, grace_s: float = 15.0) -> list[str]:
    """Wait for a killed driver's Ray processes to exit; SIGKILL (by pid) what lingers and
    return those names. Ray's GCS/raylet/workers normally follow their dead parent within
    seconds; anything that does not is ours (tagged env) and is killed here, never `ray stop`."""
    deadline = time.time() + grace_s
    while _tagged(tag) and time.time() < deadline:
        time.sleep(0.5)
    lingering = _tagged(tag)
    for p in lingering:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    names = []
    for p in lingering:
        try:
            names.append(p.name())
        except psutil.NoSuchProcess:
            names.append(str(p.pid))
    psutil.wait_procs(lingering, timeout=10)
    return names


# ---- 1. resume after SIGKILL ---------------------------------------------------------------
def test_sigkill_mid_run_then_resume_loses_and_duplicates_nothing(tmp_path):
    from farm.config import config_from_dict
    from farm.grid import expand

    out = tmp_path / "out"
    cfg = tiny_config(out, run={"name": "kill", "id": "killed", "output": str(out), "seed": 0})
    cfg["models"] = cfg["models"][:1]
    cfg["methods"] = [{"name": "ours", "params": {"epochs": 10}}]
    cfg["cluster"] = {"num_cpus": 1, "pairs_per_batch": 10, "max_actors": 1}
    cfg["tracking"] = {"enabled": False}
    path = write_config(tmp_path / "c.yaml", cfg)
    shards = expand(config_from_dict(cfg), {"clean": K})
    assert len(shards) == 9
    pairs_dir = out / "killed" / "pairs"
    tag = uuid.uuid4().hex
    # Short RAY_TMPDIR: Ray's unix socket paths must stay under 108 characters.
    ray_tmp = tempfile.mkdtemp(prefix="fr", dir="/tmp")
    # A stale RAY_ADDRESS (someone's old head) must not be joined: a local run starts its own Ray.
    env = dict(os.environ, PYTHONPATH=str(ROOT), FARM_TEST_TAG=tag, RAY_TMPDIR=ray_tmp,
               RAY_USAGE_STATS_ENABLED="0", RAY_ADDRESS=f"127.0.0.1:{_free_port()}")
    try:
        # stalled (farm.failpoints) right after its first stored shard, killed there
        driver = subprocess.Popen([sys.executable, "-m", "farm", "run", str(path)],
                                  env=dict(env, FARM_FAILPOINTS="run.shard_stored"), cwd=tmp_path,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.time() + 240
        while len(_shard_files(pairs_dir)) < 1 and driver.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
        before = {sid: pq.read_table(f).to_pandas() for sid, f in _shard_files(pairs_dir).items()}
        assert len(before) == 1, f"kill landed at {len(before)} of {len(shards)} shards"
        print("left by the killed driver, killed by pid:", _reap(tag))
        # A crash mid-write leaves at most a hidden temp file; plant one for an unfinished shard.
        pending = next(s for s in shards if s.shard_id not in before)
        part = pairs_dir / "model_id=clean" / "method=ours" / "variant=plain"
        (part / f".tmp-{pending.shard_id}.parquet").write_bytes(b"PAR1\x00half a shard")

        resumed = subprocess.run([sys.executable, "-m", "farm", "run", "--resume", "killed",
                                  "--set", f"run.output={out}"], env=env, cwd=tmp_path, capture_output=True,
                                 text=True, timeout=300, start_new_session=True)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        stored = sum(len(rows) for rows in before.values())
        assert f"resume: {stored} of {K * (K - 1)} pairs already stored" in resumed.stdout + resumed.stderr
    finally:
        _reap(tag)
        subprocess.run(["rm", "-rf", ray_tmp])

    from farm.store import RunStore

    df = RunStore(str(out), "killed").read()
    assert len(df) == K * (K - 1)
    assert not df.duplicated(["model_id", "method", "variant", "victim", "target"]).any()
    assert (df["status"] == "ok").all() and set(df["shard_id"]) == {s.shard_id for s in shards}
    assert not (part / f".tmp-{pending.shard_id}.parquet").exists()
    for sid, old in before.items():  # finished before the kill: kept, not recomputed
        new = df[df["shard_id"] == sid].sort_values(["victim", "target"])
        old = old.sort_values(["victim", "target"])
        assert list(new["finished_at"]) == list(old["finished_at"])
        assert list(new["worker"]) == list(old["worker"]) and (new["attempt"] == 1).all()
    later = df[~df["shard_id"].isin(before)]
    assert not set(later["worker"]) & set(df[df["shard_id"].isin(before)]["worker"])
    assert later["finished_at"].min() > max(o["finished_at"].max() for o in before.values())


# ---- in-process runs sharing the session's local Ray (conftest.local_ray) -------------------
@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    return tmp_path_factory.mktemp("zoo")


def _cfg(out: Path, zoo: Path, **cluster):
    from farm.config import config_from_dict

    cfg = tiny_config(out, run={"name": "f", "output": str(out), "zoo_dir": str(zoo)})
    cfg["models"] = cfg["models"][:1]
    cfg["methods"] = [{"name": "ours", "params": {"epochs": 2}}]
    cfg["pairs"] = {"mode": "sample", "sample": 12, "victim_images": 8, "batch_size": 8, "heldout_images": 4}
    cfg["cluster"] = {"num_cpus": 2, "pairs_per_batch": 4, **cluster}
    return config_from_dict(cfg)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- 2. worker failure ---------------------------------------------------------------------
def test_actor_killed_mid_shard_is_retried_and_mlflow_outage_loses_nothing(local_ray, zoo, tmp_path):
    from farm.mlflow_run import log_run
    from farm.runner import execute

    cfg = _cfg(tmp_path, zoo, fault_injection="exit:1")
    cfg = replace(cfg, tracking=replace(cfg.tracking, uri=f"http://127.0.0.1:{_free_port()}"))
    msgs: list[str] = []
    start = time.perf_counter()
    result = execute(cfg, log_fn=msgs.append)
    df = result.store.read()
    assert len(df) == 12 and not df.duplicated(["victim", "target"]).any()
    assert (df["status"] == "ok").all()
    by_shard = df.groupby("shard_id")["attempt"].agg(set).to_dict()
    assert sorted(map(sorted, by_shard.values())) == [[1], [1], [2]], by_shard
    # MLflow server down: results stay in Parquet, the run says how to log later, and does not hang.
    assert result.mlflow_run_id is None and time.perf_counter() - start < 120
    warning = next(m for m in msgs if m.startswith("warning: MLflow"))
    assert "unreachable" in warning and f"farm tables {result.run_id}" in warning
    local = replace(cfg, tracking=replace(cfg.tracking, uri=f"sqlite:///{tmp_path / 'later.db'}"))
    assert log_run(local, result.store, result.num_classes, {}) is not None


def test_shard_that_keeps_raising_is_stored_failed_after_max_attempts(local_ray, zoo, tmp_path):
    from farm.runner import execute

    cfg = _cfg(tmp_path, zoo, fault_injection="raise:0", max_attempts=2)
    cfg = replace(cfg, tracking=replace(cfg.tracking, enabled=False))
    result = execute(cfg, log_fn=lambda _m: None)
    df = result.store.read()
    assert len(df) == 12 and not df.duplicated(["victim", "target"]).any()
    failed = df[df["status"] == "failed"]
    assert len(failed) == 4 and failed["shard_id"].nunique() == 1
    assert (failed["attempt"] == 2).all()
    assert failed["reason"].str.contains("InjectedFault").all()
    assert (df[df["status"] == "ok"]["attempt"] == 1).all() and len(df[df["status"] == "ok"]) == 8


# ---- 6. bad checkpoints through `farm run` -------------------------------------------------
def test_bad_checkpoints_give_one_clear_error(local_ray, zoo, tmp_path, capsys):
    from farm.cli import main
    from farm.models import build_net

    good = tmp_path / "good.pt"
    torch.save(build_net("small_cnn", K, (3, 32, 32)).state_dict(), good)
    cases = {
        "truncated": (good.read_bytes()[:2000], "truncated or corrupt"),
        "classes": (None, "5 output classes"),
        "channels": (None, "1-channel inputs"),
    }
    for name, (blob, expect) in cases.items():
        ckpt = tmp_path / f"{name}.pt"
        if blob is not None:
            ckpt.write_bytes(blob)
        else:
            k, shape = (5, (3, 32, 32)) if name == "classes" else (K, (1, 32, 32))
            torch.save(build_net("small_cnn", k, shape).state_dict(), ckpt)
        cfg = tiny_config(tmp_path / name)
        cfg["models"] = [{"id": "user", "dataset": "syn", "arch": "small_cnn", "source": "checkpoint",
                          "checkpoint": str(ckpt)}]
        code = main(["run", str(write_config(tmp_path / f"{name}.yaml", cfg))])
        err = capsys.readouterr().err
        assert code == 2 and "Traceback" not in err, err
        assert str(ckpt) in err and expect in err, err
