"""A benchmark submitted from elsewhere (issue 15.3): ``ray job submit --runtime-env-json
'{"working_dir": "."…}' -- python jobs/benchmark.py CONFIG`` against a head from ``ray start
--head`` and one worker from ``ray start --address`` (two raylets, loopback, token auth), with
results to an S3 server (moto_server) and tracking to an ``mlflow server``.

The submitting side is a separate folder holding only the code and the config (the "laptop");
it reads the results back from the bucket with ``farm tables``.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

import services
from e2e_util import tiny_config, write_config

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
RAY = str(Path(sys.executable).with_name("ray"))
BUCKET = "farm-jobs"


@pytest.fixture(scope="module")
def services_up(tmp_path_factory):
    """moto S3 (with the bucket) and an MLflow server, for the whole module."""
    s3 = services.start_s3(tmp_path_factory.mktemp("moto"))
    mlflow = None
    try:
        services.make_bucket(s3, BUCKET)
        mlflow = services.start_mlflow(tmp_path_factory.mktemp("mlflow"))
        yield s3, mlflow
    finally:
        if mlflow is not None:
            mlflow.stop()
        s3.stop()


def _ray_ports() -> list[str]:
    """Per-node agent ports: two raylets on one host must not share Ray's fixed defaults."""
    return [f"--dashboard-agent-listen-port={services.free_port()}",
            f"--dashboard-agent-grpc-port={services.free_port()}",
            f"--runtime-env-agent-port={services.free_port()}", f"--metrics-export-port={services.free_port()}",
            "--node-ip-address=127.0.0.1", "--disable-usage-stats", "--block"]


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """Head (no CPUs: the job's driver only) plus one worker node with one CPU; token auth.

    The worker runs in its own mount namespace with an empty tmpfs over ``head_only``: a folder
    that exists on the head but that the worker node cannot see, as a node-local path on a real
    cluster (None where ``unshare`` is not permitted)."""
    tag = uuid.uuid4().hex
    # The nodes' environment has the farm's dependencies (a lab's image or venv): `python` in the
    # job's entry point is this venv's.
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", RAY_USAGE_STATS_ENABLED="0",
               PYTHONPATH="", RAY_AUTH_MODE="token",
               RAY_AUTH_TOKEN=os.urandom(16).hex(), FARM_TEST_TAG=tag)
    for key in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH", "MLFLOW_TRACKING_URI"):
        env.pop(key, None)
    ray_tmp = tempfile.mkdtemp(prefix="rj", dir="/tmp")
    # The worker node has its own temp dir, as a second machine would: sharing the head's, both
    # nodes' runtime-env agents unpack the job's working_dir into one folder, and one agent's
    # re-unpacking deleted the cwd of the other node's task processes under them
    # (FileNotFoundError from os.getcwd() in torch's lazy imports).
    worker_tmp = tempfile.mkdtemp(prefix="rw", dir="/tmp")
    port, dash = services.free_port(), services.free_port()
    logs = tmp_path_factory.mktemp("raylogs")
    procs = [subprocess.Popen([RAY, "start", "--head", f"--port={port}", "--num-cpus=0",
                               "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", f"--temp-dir={ray_tmp}",
                               *_ray_ports()], env=env, stdout=open(logs / "head.log", "wb"),
                              stderr=subprocess.STDOUT, start_new_session=True)]
    try:
        _wait_dashboard(env, dash, procs[0])
        head_only = tmp_path_factory.mktemp("head-only")
        worker = [RAY, "start", f"--address=127.0.0.1:{port}", "--num-cpus=1", f"--temp-dir={worker_tmp}",
                  *_ray_ports()]
        if shutil.which("unshare") and subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0:
            worker = ["unshare", "-m", "sh", "-c", f'mount -t tmpfs farm-test "{head_only}" && exec "$@"', "sh", *worker]
        else:
            head_only = None
        procs.append(subprocess.Popen(worker, env=env, stdout=open(logs / "worker.log", "wb"), stderr=subprocess.STDOUT,
                                      start_new_session=True))
        _wait_nodes(env, port, 2)
        yield {"env": env, "dashboard": f"http://127.0.0.1:{dash}", "head_only": head_only}
    finally:
        services.stop_group(*reversed(procs))
        from test_resilience import _reap

        left = _reap(tag, grace_s=5)
        shutil.rmtree(ray_tmp, ignore_errors=True)
        shutil.rmtree(worker_tmp, ignore_errors=True)
        assert not services.port_open(dash) and not services.port_open(port), "Ray head still listening"
        print("Ray processes killed after the nodes stopped:", left)


def _wait_dashboard(env: dict, dash: int, head: subprocess.Popen) -> None:
    import time

    deadline = time.time() + 120
    while not services.port_open(dash):
        assert head.poll() is None and time.time() < deadline, "Ray head did not come up"
        time.sleep(0.5)


def _wait_nodes(env: dict, port: int, n: int) -> None:
    import time

    deadline = time.time() + 120
    while True:
        res = subprocess.run([RAY, "status", f"--address=127.0.0.1:{port}"], env=env, capture_output=True, text=True)
        if res.stdout.count("node_") >= n:
            return
        assert time.time() < deadline, f"{n} nodes never joined: {res.stdout}{res.stderr}"
        time.sleep(1)


def _laptop(tmp_path: Path, cfg: dict) -> Path:
    """The submitting side: the code and one config, nothing else."""
    src = tmp_path / "laptop"
    for part in ("farm", "jobs"):
        shutil.copytree(ROOT / part, src / part, ignore=shutil.ignore_patterns("__pycache__"))
    write_config(src / "job.yaml", cfg)
    return src


def _submit(cluster: dict, src: Path, s3, job_id: str) -> subprocess.CompletedProcess:
    import time

    runtime_env = {"working_dir": ".", "env_vars": services.s3_env(s3)}
    deadline = time.time() + 120
    while True:
        res = subprocess.run([RAY, "job", "submit", f"--address={cluster['dashboard']}", f"--submission-id={job_id}",
                              f"--runtime-env-json={json.dumps(runtime_env)}", "--", "python", "jobs/benchmark.py",
                              "job.yaml"], cwd=src, env=cluster["env"], capture_output=True, text=True, timeout=400)
        # The head's job agent registers a while after the dashboard answers (minutes on 2 busy
        # cores); nothing was submitted then, so the same submission id is tried again.
        if "No available agent to submit job" not in res.stdout + res.stderr or time.time() > deadline:
            return res
        time.sleep(2)


def _ray_job(cluster: dict, *args: str) -> str:
    res = subprocess.run([RAY, "job", *args, f"--address={cluster['dashboard']}"], env=cluster["env"],
                         capture_output=True, text=True, timeout=60)
    return res.stdout + res.stderr


@pytest.mark.timeout(600)
def test_submitted_job_writes_s3_logs_to_mlflow_and_reads_back(tmp_path, services_up, ray_cluster):
    from mlflow import MlflowClient

    s3, mlflow = services_up
    output = f"s3://{BUCKET}/runs"
    cfg = tiny_config(tmp_path, run={"name": "job", "id": "job1", "output": output, "seed": 0,
                                     "zoo_dir": str(tmp_path / "zoo")})
    cfg["models"] = cfg["models"][1:]
    cfg["methods"] = [{"name": "ours", "params": {"epochs": 2}}]
    cfg["pairs"] = {"mode": "sample", "sample": 12, "victim_images": 8, "batch_size": 8, "heldout_images": 4}
    cfg["cluster"] = {"pairs_per_batch": 4}
    cfg["tracking"] = {"uri": mlflow.url, "experiment": "jobs"}
    src = _laptop(tmp_path, cfg)

    res = _submit(ray_cluster, src, s3, "bench-1")
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    assert "job 'bench-1' succeeded" in _ray_job(ray_cluster, "status", "bench-1").lower()
    logs = _ray_job(ray_cluster, "logs", "bench-1")
    assert "run id:   job1" in logs and "mean_size" in logs and f"--output {output}" in logs, logs[-3000:]

    env = dict(os.environ, **services.s3_env(s3), PYTHONPATH=str(src), RAY_USAGE_STATS_ENABLED="0")
    tables = subprocess.run([sys.executable, "-m", "farm", "tables", "job1", "--output", output,
                             "--tracking-uri", mlflow.url], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert tables.returncode == 0, tables.stderr[-3000:]
    assert list((tmp_path / "job1-tables").rglob("*.png"))
    client = MlflowClient(tracking_uri=mlflow.url)
    ids = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(ids, filter_string="tags.`farm.run_id` = 'job1'")
    [parent] = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [r.data.tags["farm.job"] for r in runs if r.data.tags.get("mlflow.parentRunId")] == ["poisoned/ours/plain"]
    assert {f.path for f in client.list_artifacts(parent.info.run_id)} >= {"tables", "paper_tables"}

    from farm.store import RunStore

    os.environ.update(services.s3_env(s3))
    df = RunStore(output, "job1").read(with_triggers=False)
    assert len(df) == 12 and not df.duplicated(["victim", "target"]).any() and (df["status"] == "ok").all()


@pytest.mark.timeout(300)
def test_job_with_a_checkpoint_the_cluster_cannot_see_fails_fast(tmp_path, services_up, ray_cluster):
    s3, mlflow = services_up
    missing = "/laptop-only/models/resnet.pt"
    cfg = tiny_config(tmp_path, run={"name": "job", "id": "job2", "output": f"s3://{BUCKET}/runs", "seed": 0,
                                     "zoo_dir": str(tmp_path / "zoo")})
    cfg["models"] = [{"id": "mine", "dataset": "syn", "arch": "small_cnn", "source": "checkpoint",
                      "checkpoint": missing}]
    cfg["tracking"] = {"enabled": False}
    res = _submit(ray_cluster, _laptop(tmp_path, cfg), s3, "bench-2")
    assert res.returncode != 0
    assert "job 'bench-2' failed" in _ray_job(ray_cluster, "status", "bench-2").lower()
    logs = _ray_job(ray_cluster, "logs", "bench-2")
    assert missing in logs, logs[-3000:]
    assert "Traceback" not in logs, logs[-3000:]


@pytest.mark.timeout(300)
def test_job_whose_zoo_folder_a_worker_cannot_see_fails_fast(tmp_path, services_up, ray_cluster):
    """Two zoo models train as Ray tasks on the worker node; their run.zoo_dir exists on the head
    only (the worker sees an empty tmpfs there): the job fails before training, naming the folder
    and the node, instead of the driver silently training everything again by itself."""
    if ray_cluster["head_only"] is None:
        pytest.skip("needs `unshare -m` (root or user namespaces) to give the worker node a private folder")
    s3, _ = services_up
    zoo = ray_cluster["head_only"] / "zoo"
    cfg = tiny_config(tmp_path, run={"name": "job", "id": "job3", "output": f"s3://{BUCKET}/runs", "seed": 0,
                                     "zoo_dir": str(zoo)})
    cfg["tracking"] = {"enabled": False}
    res = _submit(ray_cluster, _laptop(tmp_path, cfg), s3, "bench-3")
    assert res.returncode != 0
    logs = _ray_job(ray_cluster, "logs", "bench-3")
    assert f"run.zoo_dir {zoo} is not the same folder on every Ray node" in logs, logs[-3000:]
    assert re.search(r"node \S+ \([0-9a-f]{8}\): FileNotFoundError", logs) and "Traceback" not in logs, logs[-3000:]
    assert not list(zoo.glob("*/meta.json")), "no model may train before the check"
