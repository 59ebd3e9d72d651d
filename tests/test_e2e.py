"""End to end through real local Ray, Parquet and sqlite MLflow (no mocks)."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import services
from e2e_util import tiny_config, write_config

pytestmark = pytest.mark.slow
K = 10


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, local_ray):
    from farm.config import config_from_dict
    from farm.runner import execute

    out = tmp_path_factory.mktemp("e2e")
    cfg = config_from_dict(tiny_config(out))
    return cfg, execute(cfg, log_fn=print)


def test_rows_exactly_all_pairs_no_duplicates(finished_run):
    cfg, result = finished_run
    df = result.store.read()
    assert len(df) == 2 * 2 * K * (K - 1)
    keys = df[["model_id", "method", "variant", "victim", "target"]]
    assert not keys.duplicated().any()
    for (_m, _meth), g in df.groupby(["model_id", "method"]):
        assert len(g) == K * (K - 1)
        assert set(zip(g.victim, g.target)) == {(v, t) for v in range(K) for t in range(K) if v != t}
    assert (df["status"] == "ok").all()
    assert df["trigger"].map(len).gt(0).all()
    assert set(df["model_kind"]) == {"clean", "poisoned"}
    assert set(df[df.model_id == "poisoned"]["gt_target"]) == {0}
    hits = df["asr"] * df["n_heldout"]  # held-out ASR is a count of flipped images over n_heldout
    assert (df["n_heldout"] > 0).all() and ((hits - hits.round()).abs() < 1e-6).all()
    assert (df["attempt"] == 1).all()


def test_run_folder_has_config_and_manifest(finished_run):
    cfg, result = finished_run
    manifest = result.store.manifest()
    assert manifest["status"] == "complete" and manifest["config_hash"] == cfg.hash()
    assert manifest["pairs"] == 360
    assert "poisoned" in manifest["models"] and manifest["models"]["poisoned"]["num_classes"] == K
    assert "models:" in result.store.config_yaml()


def test_mlflow_parent_and_nested_runs(finished_run):
    import mlflow

    from farm.tracking import run_artifact_dir

    cfg, result = finished_run
    mlflow.set_tracking_uri(result.tracking_uri)
    assert result.tracking_uri.startswith("sqlite:///") and str(cfg.run.output) in result.tracking_uri
    runs = mlflow.search_runs(experiment_names=["e2e"], output_format="list")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    nested = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == result.mlflow_run_id]
    assert len(parents) == 1 and parents[0].data.tags["farm.run_id"] == result.run_id
    assert len(nested) == 4

    def artifacts(run) -> set[str]:  # the store's own folder: MLflow's client reads these through `farm ui`
        folder = run_artifact_dir(result.tracking_uri, run.info.artifact_uri)
        assert str(folder).startswith(str(cfg.run.output))
        return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}

    for r in nested:
        assert r.data.metrics["pairs"] == 90
        assert "mean_asr_pct" in r.data.metrics and "param.epochs" in r.data.params
        assert {"heatmaps/trigger_size.png", "heatmaps/asr.png", "pairs.json"} <= artifacts(r)
    assert {"tables/summary.csv", "tables/summary.md", "tables/anomaly.csv"} <= artifacts(parents[0])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_head(head: subprocess.Popen, port: int, log: Path, timeout: float = 120.0) -> None:
    """Until the head answers and has published itself for `--address auto`."""
    current = Path("/tmp/ray/ray_current_cluster")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert head.poll() is None, f"ray start --head exited early:\n{log.read_text()[-3000:]}"
        published = current.is_file() and current.read_text().strip().endswith(f":{port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            if published:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"Ray head on port {port} not ready after {timeout} s")


def test_connect_says_it_reuses_this_process_ray_instead_of_the_given_address(local_ray):
    """Ray allows one connection per process: in-process use (a notebook, these tests) with an
    address while connected keeps the Ray it has, and says so instead of silently ignoring it."""
    from farm.cluster import connect

    connect(None, num_cpus=2)  # the session's Ray (an earlier test may have shut it down)
    said: list[str] = []
    assert connect("127.0.0.1:1", log_fn=said.append)["CPU"] > 0
    assert len(said) == 1 and "already connected to Ray" in said[0] and "not 127.0.0.1:1" in said[0], said


def test_cli_run_joins_existing_cluster_with_address_auto(tmp_path, finished_run):
    """`ray start --head`, then `farm run --address auto` in a separate process.

    The head runs with --block in its own process group and is stopped by signalling that
    group, never with `ray stop`, which would kill every Ray cluster on the machine.
    """
    ray_bin = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    port = _free_port()
    head = subprocess.Popen([ray_bin, "start", "--head", "--block", f"--port={port}", "--num-cpus=2", "--node-ip-address=127.0.0.1",
                             "--include-dashboard=false", "--disable-usage-stats"],
                            env=env, stdout=(tmp_path / "head.log").open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        _wait_for_head(head, port, tmp_path / "head.log")
        cfg = tiny_config(tmp_path)
        cfg["methods"] = [{"name": "ours", "params": {"epochs": 1}}]
        cfg["models"] = cfg["models"][:1]
        cfg["pairs"] = {"mode": "sample", "sample": 6, "victim_images": 8, "batch_size": 8, "heldout_images": 4}
        path = write_config(tmp_path / "c.yaml", cfg)
        proc = subprocess.run([sys.executable, "-m", "farm", "run", str(path), "--address", "auto"],
                              capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "mean_size" in proc.stdout and "run id:" in proc.stdout
    finally:
        services.stop_group(head)

