"""Real servers for the cluster-shape tests (issue 15): an S3 endpoint (moto_server) and an
MLflow tracking server, each bound to 127.0.0.1 on a free port and stopped by whoever started it.

They run as child processes in their own session so that stopping them ends their workers too
(the MLflow server forks uvicorn workers); ``stop`` checks the port is closed afterwards.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Server:
    """A started server: its process, port and log file."""

    proc: subprocess.Popen
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """SIGTERM the server's process group, SIGKILL what lingers; assert nothing is left."""
        procs = [psutil.Process(self.proc.pid)]
        try:
            procs += procs[0].children(recursive=True)
        except psutil.NoSuchProcess:
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        _, alive = psutil.wait_procs(procs, timeout=10)
        for p in alive:
            p.kill()
        psutil.wait_procs(alive, timeout=10)
        self.proc.wait(timeout=10)
        assert not port_open(self.port), f"port {self.port} still open after stopping {self.proc.args[0]}"


def stop_group(*procs: subprocess.Popen, grace_s: float = 3) -> None:
    """SIGTERM the process groups of ``procs`` (`ray start --block` nodes, each started in its
    own session) at once, SIGKILL every group still there after ``grace_s`` in all. A node's own
    SIGTERM cleanup took up to a minute per node on 2 busy cores, for processes the test owns and
    discards anyway; the test's tag-based reap catches whatever left the group."""
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.time() + grace_s
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            pass
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the node's daemons too, which share its group
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)


def start(cmd: list[str], port: int, log: Path, timeout_s: float = 60, env: dict[str, str] | None = None) -> Server:
    """Start ``cmd`` (which must listen on 127.0.0.1:port) and wait until it accepts connections."""
    out = open(log, "wb")
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    server = Server(proc, port, log)
    deadline = time.time() + timeout_s
    while not port_open(port):
        if proc.poll() is not None or time.time() > deadline:
            server.stop()
            raise RuntimeError(f"{cmd[0]} did not start on port {port}:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    return server


def start_s3(log_dir: Path) -> Server:
    port = free_port()
    return start([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], port, log_dir / "moto.log")


def s3_env(server: Server) -> dict[str, str]:
    """The standard AWS variables pointing pyarrow and boto3 at the test's S3 server."""
    return {"AWS_ENDPOINT_URL": server.url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


def make_bucket(server: Server, name: str) -> None:
    import boto3

    env = s3_env(server)
    boto3.client("s3", endpoint_url=server.url, region_name=env["AWS_DEFAULT_REGION"],
                 aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                 aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"]).create_bucket(Bucket=name)


def start_mlflow(root: Path) -> Server:
    """``mlflow server`` with a sqlite backend and proxied artifacts stored under ``root``."""
    port = free_port()
    (root / "artifacts").mkdir(parents=True, exist_ok=True)
    cmd = [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
           "--artifacts-destination", str(root / "artifacts")]
    # As `farm ui` runs it (farm.ui.server_env): without MLflow's job runner, six processes
    # and ~21 s of CPU per server that farm never uses.
    from farm.ui import server_env

    return start(cmd, port, root / "mlflow.log", timeout_s=120, env=server_env())
