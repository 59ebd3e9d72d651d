"""Results on an object store (issue 15.1): ``run.output: s3://bucket/prefix`` against a real
S3 server (moto_server on a free loopback port, one per module).

The driver is SIGKILLed mid-run and resumed: rows lost or duplicated must be zero, no temp
object may exist at any point, and every shard a reader lists must read whole.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

import services
from e2e_util import tiny_config, write_config

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
K = 10
BUCKET = "farm-results"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = services.start_s3(tmp_path_factory.mktemp("moto"))
    try:
        services.make_bucket(server, BUCKET)
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3, monkeypatch):
    """The AWS variables in this process (pyarrow reads them) and for the children."""
    env = services.s3_env(s3)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def _keys(fs: pafs.FileSystem, prefix: str) -> list[str]:
    sel = pafs.FileSelector(prefix, recursive=True, allow_not_found=True)
    return [i.path for i in fs.get_file_info(sel) if i.type == pafs.FileType.File]


def _shards(fs: pafs.FileSystem, prefix: str) -> list[str]:
    return [k for k in _keys(fs, prefix) if k.endswith(".parquet") and "/pairs/" in k]


class ShardWatcher(threading.Thread):
    """Lists the run's shards over and over while it is written and reads each new one whole:
    a partial object, or any temp key, seen even once is a failure."""

    def __init__(self, fs: pafs.FileSystem, prefix: str) -> None:
        super().__init__(daemon=True)
        self.fs, self.prefix = fs, prefix
        self.stop = threading.Event()
        self.seen: dict[str, int] = {}
        self.problems: list[str] = []

    def run(self) -> None:
        while not self.stop.is_set():
            for key in _keys(self.fs, self.prefix):
                name = key.rsplit("/", 1)[1]
                if name.startswith(".tmp-") or ("/pairs/" in key and name.startswith(".")):
                    self.problems.append(f"temp key {key}")  # (the brief .write-probe is not a result)
                elif key.endswith(".parquet") and key not in self.seen:
                    try:
                        with self.fs.open_input_file(key) as f:
                            self.seen[key] = pq.read_table(f).num_rows
                    except Exception as exc:  # noqa: BLE001 - any unreadable listed shard is the finding
                        self.problems.append(f"{key}: {exc}")
            self.stop.wait(0.05)


def test_sigkill_on_s3_then_resume_then_tables(tmp_path, s3, s3_env):
    from farm.config import config_from_dict
    from farm.grid import expand
    from farm.store import RunStore

    output = f"s3://{BUCKET}/runs"
    cfg = tiny_config(tmp_path, run={"name": "s3", "id": "s3-killed", "output": output, "seed": 0,
                                     "zoo_dir": str(tmp_path / "zoo")})
    cfg["models"] = cfg["models"][:1]
    cfg["methods"] = [{"name": "ours", "params": {"epochs": 10}}]
    # In-process executor: what is under test is the object store (atomic shard objects, resume
    # from what the bucket holds); a Ray run's SIGKILL and resume are test_resilience's, and two
    # Ray starts here cost ~25 s of the suite.
    cfg["cluster"] = {"executor": "local", "pairs_per_batch": 10}
    cfg["tracking"] = {"enabled": False}
    path = write_config(tmp_path / "c.yaml", cfg)
    shards = expand(config_from_dict(cfg), {"clean": K})
    fs = pafs.S3FileSystem(endpoint_override=s3.url, scheme="http", access_key="testing", secret_key="testing",
                           region="us-east-1")
    prefix = f"{BUCKET}/runs/s3-killed"
    ray_tmp = tempfile.mkdtemp(prefix="fs", dir="/tmp")
    env = dict(os.environ, **s3_env, PYTHONPATH=str(ROOT), RAY_TMPDIR=ray_tmp, RAY_USAGE_STATS_ENABLED="0",
               RAY_ADDRESS=f"127.0.0.1:{services.free_port()}", FARM_TEST_TAG=uuid.uuid4().hex)
    watcher = ShardWatcher(fs, prefix)
    watcher.start()
    try:
        # stalled (farm.failpoints) right after its first stored shard, killed there
        driver = subprocess.Popen([sys.executable, "-m", "farm", "run", str(path)],
                                  env=dict(env, FARM_FAILPOINTS="run.shard_stored"), cwd=tmp_path,
                                  stdout=subprocess.DEVNULL, stderr=open(tmp_path / "driver.log", "wb"),
                                  start_new_session=True)  # a file: an unread pipe would block on tqdm
        try:
            deadline = time.time() + 240
            while len(_shards(fs, prefix)) < 1 and driver.poll() is None and time.time() < deadline:
                time.sleep(0.05)
        finally:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait(timeout=30)
        before = {k: pq.read_table(fs.open_input_file(k)).to_pandas() for k in _shards(fs, prefix)}
        assert len(before) == 1, f"kill landed at {len(before)} of {len(shards)} shards"
        assert not [k for k in _keys(fs, prefix) if k.rsplit("/", 1)[1].startswith(".")], "temp object leaked"

        resumed = subprocess.run([sys.executable, "-m", "farm", "run", "--resume", "s3-killed",
                                  "--set", f"run.output={output}", "--set", f"run.zoo_dir={tmp_path / 'zoo'}"],
                                 env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                                 start_new_session=True)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        done = sum(len(b) for b in before.values())
        assert f"resume: {done} of {K * (K - 1)} pairs already stored" in resumed.stdout, resumed.stdout[-2000:]
    finally:
        watcher.stop.set()
        watcher.join(timeout=30)
        from test_resilience import _reap

        _reap(env["FARM_TEST_TAG"])
        subprocess.run(["rm", "-rf", ray_tmp])

    assert not watcher.problems, watcher.problems[:5]
    assert len(watcher.seen) >= len(before) and all(n > 0 for n in watcher.seen.values())
    store = RunStore(output, "s3-killed")
    assert store.manifest()["status"] == "complete"
    df = store.read()
    assert len(df) == K * (K - 1)
    assert not df.duplicated(["model_id", "method", "variant", "victim", "target"]).any()
    assert (df["status"] == "ok").all() and set(df["shard_id"]) == {s.shard_id for s in shards}
    for old in before.values():  # finished before the kill: kept, not recomputed
        new = df[df["shard_id"] == old["shard_id"].iloc[0]]
        assert sorted(new["finished_at"]) == sorted(old["finished_at"])
    assert not [k for k in _keys(fs, prefix) if k.rsplit("/", 1)[1].startswith(".")]

    # The submitting side reads the run back from the bucket: tables into a local folder.
    tables = subprocess.run([sys.executable, "-m", "farm", "tables", "s3-killed", "--output", output, "--no-mlflow"],
                            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert tables.returncode == 0, tables.stderr[-3000:]
    folder = tmp_path / "s3-killed-tables"
    assert (folder / "README.md").exists() or list(folder.glob("*.md")), tables.stdout
    assert list(folder.rglob("*.png")), "heat maps missing"


def test_unwritable_bucket_fails_before_any_training(tmp_path, s3_env):
    """A bucket that does not exist is named, with the fix, before the zoo is trained."""
    cfg = tiny_config(tmp_path, run={"name": "nob", "output": "s3://no-such-bucket/x", "zoo_dir": str(tmp_path / "z")})
    cfg["tracking"] = {"enabled": False}
    path = write_config(tmp_path / "c.yaml", cfg)
    env = dict(os.environ, **s3_env, PYTHONPATH=str(ROOT), RAY_USAGE_STATS_ENABLED="0")
    res = subprocess.run([sys.executable, "-m", "farm", "run", str(path)], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode != 0
    assert "no-such-bucket" in res.stderr and "run.output" in res.stderr, res.stderr[-2000:]
    assert not (tmp_path / "z").exists()
