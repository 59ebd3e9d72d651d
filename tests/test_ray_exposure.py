"""Issue 10, point 3: what a local farm Ray exposes, SIGTERM, and orphans of a SIGKILLed driver.

Real processes throughout: a driver that starts farm's local Ray (``farm.cluster.connect``),
psutil for its listening sockets, HTTP requests to each of them, a second process that tries
to join without the token, real SIGTERM and SIGKILL. Every process is found by an env tag
and killed by pid at the end, never with ``ray stop``.
"""
from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from test_resilience import _tagged  # processes carrying a test's FARM_TEST_TAG

from e2e_util import tiny_config, write_config

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent

DRIVER = """
import json, sys, psutil, ray
from farm.cluster import connect
connect(None, 1, log_fn=lambda m: print(m, file=sys.stderr))
ray.get(ray.remote(lambda: 1).remote())
procs = [psutil.Process()] + psutil.Process().children(recursive=True)
ports = []
for p in procs:
    try:
        ports += [[c.laddr.ip, c.laddr.port, p.name()] for c in p.net_connections("inet") if c.status == psutil.CONN_LISTEN]
    except psutil.Error:
        pass
import os
print(json.dumps({"gcs": ray.get_runtime_context().gcs_address, "ports": ports,
                  "token": os.environ["RAY_AUTH_TOKEN"]}), flush=True)
sys.stdin.read()
ray.shutdown()
"""

JOIN = """
import ray, sys
ray.init(address=sys.argv[1], logging_level="ERROR")
print("joined")
"""


def _env(tag: str, **extra: str) -> dict[str, str]:
    # A fresh shell's environment, not this process's: earlier tests in the session (a shared
    # local Ray, servers) leave RAY_* settings in os.environ that a user's driver would not have.
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "USER")}
    return env | {"PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0", "FARM_TEST_TAG": tag,
                  "RAY_TMPDIR": tempfile.mkdtemp(prefix="fx", dir="/tmp")} | extra


def _kill_tagged(tag: str) -> None:
    procs = _tagged(tag)
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=10)


def _wait_gone(tag: str, timeout_s: float) -> list[str]:
    deadline = time.time() + timeout_s
    while _tagged(tag) and time.time() < deadline:
        time.sleep(0.5)
    names = []
    for p in _tagged(tag):
        try:
            names.append(f"{p.pid}:{p.name()}")
        except psutil.NoSuchProcess:
            pass
    return names


def _http_get(ip: str, port: int, path: str) -> tuple[int, str] | None:
    host = "127.0.0.1" if ip in ("0.0.0.0", "::", "::ffff:127.0.0.1") else (f"[{ip}]" if ":" in ip else ip)
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=3) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError):
        return None  # not HTTP (gRPC) or closed


def _prometheus_exporters() -> set[int]:
    """Ray 2.60's dashboard head and autoscaler monitor start a Prometheus exporter on a fixed
    port each whatever ``RAY_enable_metrics_collection`` says, bound to 127.0.0.1 in single-host
    mode, without auth and with no switch to turn them off. Only one Ray on a host gets these
    ports (another's exporter fails to bind and logs it), so whether a test's Ray serves them
    depends on what else runs on the machine."""
    from ray._private.ray_constants import env_integer
    from ray.autoscaler._private.constants import AUTOSCALER_METRIC_PORT
    from ray.dashboard.consts import DASHBOARD_METRIC_PORT

    assert env_integer("DASHBOARD_METRIC_PORT", 44227) == DASHBOARD_METRIC_PORT
    return {AUTOSCALER_METRIC_PORT, DASHBOARD_METRIC_PORT}


def test_local_ray_listens_on_loopback_needs_the_token_and_serves_no_metrics():
    tag = uuid.uuid4().hex
    driver = subprocess.Popen([sys.executable, "-c", textwrap.dedent(DRIVER)], env=_env(tag), cwd=ROOT,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        info = json.loads(driver.stdout.readline())
        assert info["ports"], "the driver found no listening sockets"
        public = [p for p in info["ports"] if p[0] not in ("127.0.0.1", "::ffff:127.0.0.1", "::1")]
        assert not public, f"Ray listens beyond loopback: {public}"
        assert info["gcs"].startswith("127.0.0.1:")
        answered, bodies = {}, {}
        probes = [(name, ip, port, path) for ip, port, name in info["ports"]
                  for path in ("/metrics", "/api/version", "/get_runtime_envs_info")]
        # All at once: a gRPC port holds a plain HTTP request until its 3 s timeout, one by one
        # those waits added up to most of this test's time.
        with ThreadPoolExecutor(max_workers=len(probes)) as pool:
            for key, got in zip(probes, pool.map(lambda k: _http_get(k[1], k[2], k[3]), probes)):
                if got is not None:
                    answered[key], bodies[key] = got
        print("HTTP answers without a token:", answered)
        open_ = [k for k, status in answered.items() if status == 200]
        # Every Ray agent refuses a caller without the token; the only open answers allowed are
        # Ray's own loopback Prometheus exporters (docs/security.md), serving metrics text only.
        assert {port for _, _, port, _ in open_} <= _prometheus_exporters(), open_
        for key in open_:
            assert key[1] == "127.0.0.1", key
            assert info["token"] not in bodies[key] and "RAY_AUTH_TOKEN" not in bodies[key], key
            assert all(line.startswith("#") or not line.strip() or line[0].isalpha() or line[0] in "_:" for line in
                       bodies[key].splitlines()), (key, bodies[key][:500])  # Prometheus exposition text
        assert [k for k, status in answered.items() if status == 401], answered  # the agents ask for the token
        # A local process that knows the address but not the token (single-host mode, as the
        # driver, so it reaches the loopback GCS at once) is turned away by the GCS itself.
        # Both joins at once: each waits ~10 s inside Ray before it gives up.
        envs = ({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "wrong" * 8}, {"RAY_AUTH_MODE": "disabled"})
        joins = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(JOIN), info["gcs"]],
                                  env=_env(tag, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", **env),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for env in envs]
        for env, join in zip(envs, joins):
            out, err = join.communicate(timeout=120)
            assert join.returncode != 0 and "joined" not in out, (env, out, err[-800:])
            assert "InvalidAuthToken" in err, err[-800:]
    finally:
        driver.communicate("", timeout=60)
        _kill_tagged(tag)


def test_ray_auth_disabled_in_the_environment_is_refused(tmp_path, monkeypatch, capsys):
    from farm.cli import main

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    path = write_config(tmp_path / "c.yaml", tiny_config(tmp_path / "out"))
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "RAY_AUTH_MODE=disabled" in err and "cluster.ray_auth: disabled" in err and "Traceback" not in err


def _long_run(tmp_path: Path, run_id: str) -> Path:
    cfg = tiny_config(tmp_path / "out", run={"name": "s", "id": run_id, "output": str(tmp_path / "out")})
    cfg["models"] = cfg["models"][:1]
    cfg["methods"] = [{"name": "ours", "params": {"epochs": 60}}]
    cfg["cluster"] = {"num_cpus": 1, "pairs_per_batch": 10, "max_actors": 1}
    cfg["tracking"] = {"enabled": False}
    return write_config(tmp_path / f"{run_id}.yaml", cfg)


def _start_and_wait_for_a_shard(tmp_path: Path, run_id: str, tag: str) -> subprocess.Popen:
    path = _long_run(tmp_path, run_id)
    driver = subprocess.Popen([sys.executable, "-m", "farm", "run", str(path)], env=_env(tag), cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    pairs = tmp_path / "out" / run_id / "pairs"
    deadline = time.time() + 300
    while driver.poll() is None and time.time() < deadline and not [
            p for p in pairs.rglob("*.parquet") if not p.name.startswith(".")]:
        time.sleep(0.2)
    assert driver.poll() is None, driver.stderr.read()[-2000:]
    return driver


def test_sigterm_ends_the_run_and_its_ray(tmp_path):
    tag = uuid.uuid4().hex
    try:
        driver = _start_and_wait_for_a_shard(tmp_path, "term", tag)
        driver.send_signal(signal.SIGTERM)
        _, err = driver.communicate(timeout=120)
        assert driver.returncode == 143 and "terminated; Ray shut down" in err, err[-2000:]
        left = _wait_gone(tag, 20)
        assert not left, f"Ray processes still running after SIGTERM: {left}"
        # The lock died with the driver: the run resumes.
        from farm.store import RunStore

        lock = RunStore(str(tmp_path / "out"), "term").lock()
        assert lock is not None
        lock.release()
    finally:
        _kill_tagged(tag)


ORPHAN = """
import socket, sys, time
s = socket.socket()
s.bind(("0.0.0.0", 0))
s.listen()
print(s.getsockname()[1], flush=True)
time.sleep(600)
"""


def test_next_local_ray_ends_the_orphans_of_a_sigkilled_driver(tmp_path):
    """A listening process tagged by a farm driver that was SIGKILLed (what Ray's agents are
    when they outlive their driver) is ended by the next farm command that starts a local Ray;
    a process of a live driver, or untagged, is left alone."""
    from farm.ray_safety import DRIVER_ENV

    tag, later = uuid.uuid4().hex, uuid.uuid4().hex
    driver = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    dead = f"{driver.pid}:{psutil.Process(driver.pid).create_time():.3f}"
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=30)
    me = psutil.Process()
    alive = f"{me.pid}:{me.create_time():.3f}"
    orphan, bystander = (subprocess.Popen([sys.executable, "-c", textwrap.dedent(ORPHAN)], stdout=subprocess.PIPE,
                                          text=True, env=_env(tag, **{DRIVER_ENV: who}))
                         for who in (dead, alive))
    try:
        port = int(orphan.stdout.readline())
        bystander.stdout.readline()
        restart = subprocess.run([sys.executable, "-c", "import ray\nfrom farm.cluster import connect\n"
                                  "connect(None, 1)\nray.shutdown()"], env=_env(later), cwd=ROOT,
                                 capture_output=True, text=True, timeout=180)
        assert restart.returncode == 0, restart.stderr[-2000:]
        assert "ending 1 process(es) left by an earlier farm run" in restart.stdout + restart.stderr
        assert orphan.wait(timeout=30) is not None
        listening = {c.laddr.port for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN}
        assert port not in listening and bystander.poll() is None
    finally:
        for p in (orphan, bystander):
            p.kill()
            p.wait(timeout=10)
        _kill_tagged(later)
