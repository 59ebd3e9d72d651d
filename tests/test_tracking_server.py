"""MLflow as a tracking server (issue 15.2): ``tracking.uri: http://…`` against a real
``mlflow server`` (sqlite backend, proxied artifacts on disk) on a free loopback port.

What the run logs is read back through the REST client (``MlflowClient``); a server that
accepts connections but never answers must cost the run nothing but a warning that says how
to log later, and following that advice must work.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import services
from e2e_util import tiny_config, write_config

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
K = 10


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    server = services.start_mlflow(tmp_path_factory.mktemp("mlflow"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def silent_server():
    """A port that accepts connections and never answers (a hung or overloaded server)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


def _farm(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    ray_tmp = tempfile.mkdtemp(prefix="ft", dir="/tmp")
    env = dict(os.environ, PYTHONPATH=str(ROOT), RAY_TMPDIR=ray_tmp, RAY_USAGE_STATS_ENABLED="0",
               RAY_ADDRESS=f"127.0.0.1:{services.free_port()}", MLFLOW_HTTP_REQUEST_MAX_RETRIES="1")
    env.pop("MLFLOW_TRACKING_URI", None)
    try:
        return subprocess.run([sys.executable, "-m", "farm", *args], env=env, cwd=cwd, capture_output=True,
                              text=True, timeout=300)
    finally:
        subprocess.run(["rm", "-rf", ray_tmp])


def _config(tmp_path: Path, run_id: str, uri: str) -> Path:
    cfg = tiny_config(tmp_path / "out", run={"name": run_id, "id": run_id, "output": str(tmp_path / "out"), "seed": 0})
    cfg["models"] = cfg["models"][1:]
    cfg["methods"] = [{"name": "ours", "params": {"epochs": 2}}]
    cfg["pairs"] = {"mode": "sample", "sample": 12, "victim_images": 8, "batch_size": 8, "heldout_images": 4}
    # In-process executor: the tracking is the driver's whatever runs the shards, and a Ray start
    # per `farm run` here would cost ~12 s of the suite each.
    cfg["cluster"] = {"executor": "local", "pairs_per_batch": 6}
    cfg["tracking"] = {"uri": uri, "experiment": "server", "connect_timeout_s": 1.0}
    return write_config(tmp_path / f"{run_id}.yaml", cfg)


def _runs(client, run_id: str) -> list:
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids, filter_string=f"tags.`farm.run_id` = '{run_id}'")


def test_run_logs_runs_nested_runs_metrics_and_artifacts_to_the_server(tmp_path, mlflow_server):
    from mlflow import MlflowClient

    res = _farm(["run", str(_config(tmp_path, "srv", mlflow_server.url))], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "warning: MLflow" not in res.stdout + res.stderr
    client = MlflowClient(tracking_uri=mlflow_server.url)
    runs = _runs(client, "srv")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1 and [c.data.tags["farm.job"] for c in children] == ["poisoned/ours/plain"]
    child = children[0]
    from farm.store import RunStore

    rows = RunStore(str(tmp_path / "out"), "srv").read(with_triggers=False)
    assert child.data.metrics["pairs"] == 12
    assert child.data.metrics["mean_asr_pct"] == pytest.approx(100 * rows["asr"].mean())  # the rows', in percent
    assert parents[0].data.params["config_hash"]
    parent_files = {f.path for f in client.list_artifacts(parents[0].info.run_id, "tables")}
    assert {"tables/summary.csv", "tables/anomaly.csv"} <= parent_files
    heat = {f.path for f in client.list_artifacts(child.info.run_id, "heatmaps")}
    assert heat == {"heatmaps/trigger_size.png", "heatmaps/asr.png"}
    png = Path(client.download_artifacts(child.info.run_id, "heatmaps/asr.png", str(tmp_path)))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {f.path for f in client.list_artifacts(child.info.run_id)} >= {"pairs.json"}
    # the server runs as `farm ui` runs it, without MLflow's job-queue consumers (farm.ui)
    import psutil

    spawned = " ".join(" ".join(p.cmdline()) for p in psutil.Process(mlflow_server.proc.pid).children(recursive=True))
    assert "uvicorn" in spawned and "huey" not in spawned, spawned


def test_silent_server_loses_nothing_and_the_advice_logs_later(tmp_path, mlflow_server, silent_server):
    from mlflow import MlflowClient

    from farm.store import RunStore

    res = _farm(["run", str(_config(tmp_path, "hung", silent_server))], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    out = tmp_path / "out"
    store = RunStore(str(out), "hung")
    assert store.manifest()["status"] == "complete" and len(store.read()) == 12
    advice = f"farm tables hung --output {out} --tracking-uri {silent_server}"
    assert advice in res.stdout, res.stdout[-2000:]
    # Follow the advice, with the server that works: the tables arrive there.
    later = _farm(["tables", "hung", "--output", str(out), "--tracking-uri", mlflow_server.url], tmp_path)
    assert later.returncode == 0, later.stderr[-3000:]
    client = MlflowClient(tracking_uri=mlflow_server.url)
    runs = _runs(client, "hung")
    [parent] = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    # The server had never seen the run: its job was logged from the Parquet rows too.
    assert [r.data.metrics["pairs"] for r in runs if r is not parent] == [12]
    assert any(f.path.startswith("paper_tables/") for f in client.list_artifacts(parent.info.run_id, "paper_tables"))
