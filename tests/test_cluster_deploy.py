"""Multi-node scheduling with ``ray.cluster_utils.Cluster`` and a job through ``ray job submit``'s
API on a local head node (issue 6, points 4 and 5)."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import services
from e2e_util import tiny_config, write_config

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _small(out: str, zoo: Path) -> dict:
    cfg = tiny_config(Path("."), run={"name": "mn", "output": out, "zoo_dir": str(zoo)})
    cfg["models"] = cfg["models"][:1]
    cfg["methods"] = [{"name": "ours", "params": {"epochs": 2}}]
    cfg["pairs"] = {"mode": "sample", "sample": 16, "victim_images": 8, "batch_size": 8, "heldout_images": 4}
    cfg["cluster"] = {"pairs_per_batch": 4}
    cfg["tracking"] = {"enabled": False}
    return cfg


@pytest.mark.timeout(240)
def test_shards_spread_over_two_worker_nodes_driver_writes_file_uri(tmp_path, monkeypatch):
    import ray
    from ray.cluster_utils import Cluster

    from farm.config import config_from_dict
    from farm.runner import execute

    from ray._private import ray_constants

    ray.shutdown()  # the session's local Ray (conftest.local_ray), if an earlier test started it
    # Cluster() records its address under Ray's temp dir; keep that private to this test.
    monkeypatch.setenv("RAY_TMPDIR", tempfile.mkdtemp(prefix="mn", dir="/tmp"))
    # Ray's single-host switch: otherwise the driver rewrites 127.0.0.1 to the host's outward
    # IP, where the loopback-bound test nodes do not listen.
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)
    node = {"node_ip_address": "127.0.0.1", "include_dashboard": False}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, **node})
    try:
        workers = [cluster.add_node(num_cpus=1, **node) for _ in range(2)]
        cluster.wait_for_nodes()
        ray.init(address=cluster.address)
        cfg = config_from_dict(_small(f"file://{tmp_path / 'out'}", tmp_path / "zoo"))
        result = execute(cfg, log_fn=print)
        df = result.store.read()
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert len(df) == 16 and not df.duplicated(["victim", "target"]).any() and (df["status"] == "ok").all()
    nodes = {w.rsplit("@", 1)[1] for w in df["worker"]}
    assert nodes == {w.node_id[:8] for w in workers}, "shards must run on both worker nodes, none on the head"
    # Only the driver wrote: one file per shard under the file:// root, nothing else anywhere.
    files = sorted((tmp_path / "out" / result.run_id / "pairs").rglob("*"))
    assert len([f for f in files if f.is_file()]) == 4 and not [f for f in files if f.name.startswith(".")]


@pytest.mark.timeout(400)
def test_benchmark_job_through_job_submission_api(tmp_path, monkeypatch):
    from ray.job_submission import JobStatus, JobSubmissionClient

    # The head enforces token auth on its HTTP API; give it a private token (never the
    # machine's ~/.ray/auth_token) and send that token explicitly: Ray caches the client's
    # auth mode at import, before this test could set it.
    token = os.urandom(16).hex()
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", token)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    headers = {"Authorization": f"Bearer {token}"}
    ray_bin = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
    port, dash = _free_port(), _free_port()
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", PYTHONPATH="")
    env.pop("RAY_ADDRESS", None)
    ray_tmp = tempfile.mkdtemp(prefix="jb", dir="/tmp")
    head = subprocess.Popen([ray_bin, "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
                             "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
                             f"--dashboard-port={dash}", "--disable-usage-stats", f"--temp-dir={ray_tmp}",
                             # Ray's agents default to fixed ports (52365, ...): another Ray on the
                             # host (a parallel test worker) holding them leaves the head without a
                             # job agent ("No available agent to submit job").
                             f"--dashboard-agent-listen-port={_free_port()}",
                             f"--dashboard-agent-grpc-port={_free_port()}",
                             f"--runtime-env-agent-port={_free_port()}", f"--metrics-export-port={_free_port()}"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        client, error = None, None
        deadline = time.time() + 120
        while client is None and time.time() < deadline:
            try:
                client = JobSubmissionClient(f"http://127.0.0.1:{dash}", headers=headers)
            except Exception as exc:  # noqa: BLE001 - dashboard still starting
                error = exc
                assert head.poll() is None, head.stdout.read()
                time.sleep(1)
        assert client is not None, f"dashboard did not come up: {error}"
        cfg = _small(str(tmp_path / "out"), tmp_path / "zoo")
        path = write_config(tmp_path / "job.yaml", cfg)
        job, agent_deadline = None, time.time() + 180
        while job is None:
            try:
                job = client.submit_job(
                    entrypoint=f"{sys.executable} jobs/benchmark.py {path}",
                    runtime_env={"working_dir": str(ROOT), "excludes": [".venv", "results", ".git", "tests"]})
            except RuntimeError as exc:  # the head's job agent registers a while after the dashboard
                if "No available agent" not in str(exc) or time.time() > agent_deadline:
                    raise
                time.sleep(2)
        status = None
        while time.time() < deadline + 240:
            status = client.get_job_status(job)
            if status in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
                break
            time.sleep(1)
        logs = client.get_job_logs(job)
        assert status == JobStatus.SUCCEEDED, logs[-4000:]
        assert "run id:" in logs and "mean_size" in logs
        run_dirs = [d for d in (tmp_path / "out").iterdir() if (d / "manifest.json").exists()]
        assert len(run_dirs) == 1
        from farm.store import RunStore

        assert len(RunStore(str(tmp_path / "out"), run_dirs[0].name).read(with_triggers=False)) == 16
    finally:
        services.stop_group(head)
        shutil.rmtree(ray_tmp, ignore_errors=True)
