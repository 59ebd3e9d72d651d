"""``farm ui``: the MLflow UI of a results folder, safe and light by default.

* Loopback only unless ``--expose`` (the UI has no login).
* The port is checked before anything starts, so a taken port is one clear error, not a
  server that dies after its workers have spawned.
* One worker by default: MLflow's default of 4 took 80 s to start on 2 cores and lost
  workers; one is plenty for one person browsing.
* No MLflow job runner: MLflow 3 starts six job-queue consumer processes with every server
  (for its GenAI jobs, which farm never submits), ~21 s of CPU on 2 cores before the UI is
  any use; ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false`` unless the environment says otherwise
  (``--dry-run`` prints it before the command).
* Artifacts are served from ``<folder>/mlartifacts`` (``--artifacts-destination``), where
  farm writes them (farm.tracking), so a copied folder shows its own heat maps.
* The landing URLs open each experiment on its runs table (``workflowType=machine_learning``:
  MLflow 3.17 otherwise opens the GenAI traces view).
* The server's exit status is farm's: a server that fails to start exits non-zero.
* No line per HTTP request unless ``farm -v ui``.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from farm.schema import ConfigError

LOOPBACK = ("127.0.0.1", "localhost", "::1")
RUNS_VIEW = "workflowType=machine_learning"
JOB_RUNNER_ENV = "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"


@dataclass
class UiOptions:
    output: str
    tracking_uri: str | None
    host: str
    port: int
    expose: bool
    workers: int
    access_log: bool = False  # uvicorn's line per HTTP request (dozens per page load): -v only


def check(opts: UiOptions) -> None:
    """Refuse an exposed host without --expose, a bad port, or a port that is taken."""
    if opts.host not in LOOPBACK and not opts.expose:
        raise ConfigError([f"--host {opts.host}: the MLflow UI has no login; anyone who reaches {opts.host}:"
                           f"{opts.port} reads (and can delete) every run. Keep 127.0.0.1 (use an SSH tunnel), or "
                           "add --expose if that network is trusted"])
    if not 1 <= opts.port <= 65535:
        raise ConfigError([f"--port {opts.port}: must be in 1..65535"])
    if opts.workers < 1:
        raise ConfigError([f"--workers {opts.workers}: must be at least 1"])
    try:
        with socket.socket(socket.AF_INET6 if ":" in opts.host else socket.AF_INET) as s:
            s.bind((opts.host, opts.port))
    except OSError as exc:
        raise ConfigError([f"--port {opts.port}: cannot listen on {opts.host}:{opts.port} ({exc.strerror or exc}); "
                           "the port is taken or the address is not this machine's. Pass another --port"]) from None


def store_uri(opts: UiOptions) -> str:
    return opts.tracking_uri or f"sqlite:///{Path(opts.output).resolve() / 'mlflow.db'}"


def command(opts: UiOptions) -> list[str]:
    """The ``mlflow ui`` command line for these options."""
    uri = store_uri(opts)
    exe = shutil.which("mlflow") or str(Path(sys.executable).with_name("mlflow"))
    cmd = [exe, "ui", "--backend-store-uri", uri, "--host", opts.host, "--port", str(opts.port),
           "--workers", str(opts.workers)]
    if uri.startswith("sqlite:///"):
        cmd += ["--artifacts-destination", str(Path(uri[len("sqlite:///"):]).parent / "mlartifacts")]
    if not opts.access_log:
        cmd += ["--uvicorn-opts", "--no-access-log"]
    return cmd


def server_env() -> dict[str, str]:
    """The server's environment: this one, with MLflow's job runner off unless set (module docstring)."""
    return {JOB_RUNNER_ENV: "false", **os.environ}


def landing_urls(opts: UiOptions) -> list[str]:
    """One URL per experiment of a local store, opening on its runs table; the root URL
    (runs view) when the store is empty, remote or not created yet."""
    base = f"http://{'[' + opts.host + ']' if ':' in opts.host else opts.host}:{opts.port}"
    uri = store_uri(opts)
    if uri.startswith("sqlite:///") and Path(uri[len("sqlite:///"):]).is_file():
        import sqlite3

        with sqlite3.connect(f"file:{uri[len('sqlite:///'):]}?mode=ro", uri=True) as db:
            # Read-only and without MLflow's client, which would migrate (write) the schema.
            rows = db.execute("select experiment_id, name from experiments where lifecycle_stage = 'active' "
                              "and name != 'Default' order by experiment_id").fetchall()
        if rows:
            return [f"{base}/#/experiments/{eid}/runs?{RUNS_VIEW}  ({name})" for eid, name in rows]
    return [f"{base}/#/?{RUNS_VIEW}"]


def serve(opts: UiOptions, ready_timeout_s: float = 120.0) -> int:
    """Start the server, say where to browse once it answers, wait for it; its exit status."""
    proc = subprocess.Popen(command(opts), env=server_env())
    deadline = time.monotonic() + ready_timeout_s
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            socket.create_connection((opts.host, opts.port), timeout=1).close()
            print("MLflow UI ready; open:\n  " + "\n  ".join(landing_urls(opts)) + "\nCtrl-C to stop", flush=True)
            break
        except OSError:
            time.sleep(0.5)
    try:
        rc = proc.wait()
    except BaseException:
        proc.terminate()
        proc.wait(timeout=30)
        raise
    if rc != 0:
        print(f"farm ui: error: the MLflow server exited with status {rc} (its messages are above)", file=sys.stderr)
        return rc if rc > 0 else 1
    return 0
