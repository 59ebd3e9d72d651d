"""Load: 1560 tiny pairs (40-class synthetic model, all pairs) through 16 shards (issue 6, point 8).

The driver runs as ``python -m farm run`` in its own process; its resident memory is sampled
with psutil while it works. Streaming (one shard file written as each result arrives, a
scalar-only closing read) keeps the driver's peak RSS bounded; the figures go into
docs/benchmarks.md ("Load").
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import psutil
import pytest

from e2e_util import tiny_config, write_config

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
K = 40
RSS_BOUND_MB = 1500  # measured ~960 MB: torch + Ray client + in-process zoo training (docs/benchmarks.md)
RSS_GROWTH_MB = 150  # measured a few MB


def test_1560_pairs_stream_through_16_shards_with_bounded_driver_memory(tmp_path):
    cfg = tiny_config(tmp_path / "out", run={"name": "load", "id": "load", "output": str(tmp_path / "out")})
    cfg["datasets"] = {"syn40": {"name": "synthetic",
                                 "params": {"num_classes": K, "train_per_class": 20, "test_per_class": 4}}}
    cfg["models"] = [{"id": "m40", "dataset": "syn40", "arch": "small_cnn", "train": {"epochs": 1}}]
    cfg["methods"] = [{"name": "ours", "params": {"epochs": 1}}]
    cfg["pairs"] = {"mode": "all", "victim_images": 4, "batch_size": 4, "heldout_images": 2}
    cfg["cluster"] = {"num_cpus": 2, "pairs_per_batch": 100}
    cfg["tracking"] = {"enabled": False}
    path = write_config(tmp_path / "load.yaml", cfg)
    ray_tmp = tempfile.mkdtemp(prefix="ld", dir="/tmp")
    env = dict(os.environ, PYTHONPATH=str(ROOT), RAY_TMPDIR=ray_tmp, RAY_USAGE_STATS_ENABLED="0",
               FARM_TEST_TAG=uuid.uuid4().hex)
    env.pop("RAY_ADDRESS", None)
    start = time.perf_counter()
    driver = subprocess.Popen([sys.executable, "-m", "farm", "run", str(path)], env=env, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    proc = psutil.Process(driver.pid)
    peak = 0
    first_shard_at = None
    first_shard_seen = None  # wall-clock time (UTC) the first shard file was on disk
    rss_at_first = 0
    try:
        while driver.poll() is None:
            try:
                rss = proc.memory_info().rss
            except psutil.NoSuchProcess:
                break
            peak = max(peak, rss)
            if first_shard_at is None and any((tmp_path / "out" / "load" / "pairs").rglob("*.parquet")):
                first_shard_at, rss_at_first = time.perf_counter() - start, rss
                first_shard_seen = datetime.now(timezone.utc)
            time.sleep(0.1)
        output = driver.stdout.read()
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        subprocess.run(["rm", "-rf", ray_tmp])
    wall = time.perf_counter() - start
    assert driver.returncode == 0, output[-3000:]

    from farm.store import RunStore

    df = RunStore(str(tmp_path / "out"), "load").read(columns=["victim", "target", "status", "shard_id",
                                                               "batch_wall_s", "finished_at"])
    assert len(df) == K * (K - 1) and not df.duplicated(["victim", "target"]).any()
    assert df["shard_id"].nunique() == 16 and (df["status"] == "ok").all()
    # Streaming: the first shard file was on disk before the last shard's pairs were finished
    # (written at the end, it would appear only after every row's finished_at).
    span = (df["finished_at"].max() - df["finished_at"].min()).total_seconds()
    assert first_shard_seen is not None and first_shard_seen < df["finished_at"].max().to_pydatetime(), (
        first_shard_seen, df["finished_at"].max())
    peak_mb, growth_mb = peak / 2**20, (peak - rss_at_first) / 2**20
    print(f"\nLOAD pairs={len(df)} shards=16 wall_s={wall:.1f} pairs_per_s={len(df) / wall:.1f} "
          f"pairs_per_s_shard_phase={len(df) / span:.1f} driver_peak_rss_mb={peak_mb:.0f} "
          f"rss_growth_after_first_shard_mb={growth_mb:.0f}")
    assert peak_mb < RSS_BOUND_MB
    # Results stream to disk: from the first stored shard to the end (summary read included)
    # the driver grows by little, not by the run's rows and triggers.
    assert growth_mb < RSS_GROWTH_MB
