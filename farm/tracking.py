"""Where and how farm talks to MLflow: the tracking URI, the sqlite lock, the experiment
(kind tag, location-free artifact root) and artifact upload; ``farm tables``' logging.

The runs of ``farm run`` are logged live by :mod:`farm.mlflow_run`. Only the driver talks to
MLflow (sqlite locks under concurrent writers).
"""
from __future__ import annotations

import json
import os
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import quote, unquote


from farm.config import Config
from farm.store import RunStore, filesystem

TAG_RUN = "farm.run_id"
TAG_JOB = "farm.job"


@contextmanager
def scoped_uri(uri: str) -> Iterator[None]:
    """Point MLflow at ``uri`` for a block, then restore $MLFLOW_TRACKING_URI.

    ``mlflow.set_tracking_uri`` also writes the environment variable, which would make every
    later run in the same process (a notebook, a test session, ``farm run`` then ``farm
    tables``) log into this store instead of its own default. A sqlite store is used under
    an exclusive lock (:func:`sqlite_lock`).
    """
    import mlflow

    with sqlite_lock(uri):
        before = os.environ.get("MLFLOW_TRACKING_URI")
        mlflow.set_tracking_uri(uri)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(before)  # None unsets the variable again


@contextmanager
def sqlite_lock(uri: str) -> Iterator[None]:
    """Hold ``<db>.lock`` (flock) while using a sqlite tracking store.

    Two runs sharing one results root would otherwise both create MLflow's schema in a fresh
    ``mlflow.db`` at once, and the loser fails (its migrations meet half-made tables). Other
    URIs (servers) handle their own concurrency.
    """
    import fcntl

    if not uri.startswith("sqlite:///"):
        yield
        return
    lock_path = Path(uri[len("sqlite:///"):] + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def available() -> bool:
    """Whether MLflow can be imported: a GPU box may run ``farm run --local`` without it, and
    then logs later with ``farm tables`` on a machine that has it."""
    try:
        import mlflow  # noqa: F401
    except ImportError:
        return False
    return True


def tracking_uri(cfg: Config) -> str:
    """Config, then $MLFLOW_TRACKING_URI, then sqlite inside a local output folder."""
    if cfg.tracking.uri:
        return cfg.tracking.uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    fs, root = filesystem(cfg.run.output)
    if fs.type_name != "local":
        return f"sqlite:///{Path('mlflow.db').resolve()}"
    Path(root).mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{Path(root).resolve() / 'mlflow.db'}"


class TrackingUnavailable(RuntimeError):
    """The MLflow server did not answer; results are in Parquet and can be logged later."""


def wait_reachable(uri: str, tries: int = 3, timeout_s: float = 5.0, backoff_s: float = 1.0) -> None:
    """Probe an http(s) tracking server a few times before logging.

    MLflow's own client retries a refused connection with exponential backoff for minutes;
    a benchmark that already finished should instead warn quickly and move on.
    """
    import time
    import urllib.error
    import urllib.request

    if not uri.startswith(("http://", "https://")):
        return
    last: Exception | None = None
    for i in range(tries):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s):
                return
        except urllib.error.HTTPError:
            return  # the server answered (an old server may lack /health)
        except (urllib.error.URLError, OSError) as exc:
            last = exc
            if i + 1 < tries:
                time.sleep(backoff_s * 2 ** i)
    raise TrackingUnavailable(f"MLflow server {uri} unreachable after {tries} tries ({last})")


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def flatten(d: Any, prefix: str = "") -> dict[str, str]:
    """Nested config as MLflow params (``a.b.0.c``), values as JSON, cut to MLflow's limit."""
    out: dict[str, str] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}."))
    elif isinstance(d, list) and d and all(isinstance(x, dict) for x in d):
        for i, v in enumerate(d):
            out.update(flatten(v, f"{prefix}{i}."))
    else:
        out[prefix[:-1]] = json.dumps(d) if not isinstance(d, str) else d
    return {k: v[:6000] for k, v in out.items()}


# MLflow 3 opens an experiment in its GenAI view (traces, evaluations) unless told it holds
# model-development runs. Versions that read this tag open farm's experiments on the runs
# table; 3.17's UI decides by its own "workflowType" instead, which `farm ui` sets in the URL.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
# Artifacts of a local (sqlite) store live next to its database, under a location-free URI,
# so a copied or moved results folder keeps its heat maps and tables (`farm ui` serves them
# from <folder>/mlartifacts). A tracking server keeps choosing its own artifact root.
PROXIED = "mlflow-artifacts:/"


def local_artifact_root(uri: str) -> Path | None:
    """``<db folder>/mlartifacts`` for a sqlite store, else None (the server decides)."""
    return Path(uri[len("sqlite:///"):]).parent / "mlartifacts" if uri.startswith("sqlite:///") else None


def experiment_id(client: Any, uri: str, name: str) -> str:
    """The experiment's id, created with the location-free artifact root (sqlite stores) and,
    either way, tagged as a model-development experiment."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        location = f"{PROXIED}{quote(name)}" if local_artifact_root(uri) else None
        exp_id = client.create_experiment(name, artifact_location=location, tags=EXPERIMENT_KIND)
    else:
        exp_id = exp.experiment_id
        if any(exp.tags.get(k) != v for k, v in EXPERIMENT_KIND.items()):
            for k, v in EXPERIMENT_KIND.items():
                client.set_experiment_tag(exp_id, k, v)
    return exp_id


def run_artifact_dir(uri: str, artifact_uri: str) -> Path | None:
    """The local folder of a run's artifacts in a sqlite store (``<db folder>/mlartifacts/...``),
    None where MLflow's client handles them. MLflow's own client reads ``mlflow-artifacts:``
    URIs only through a server (``farm ui``); code that reads a local store's artifacts
    directly uses this folder."""
    root = local_artifact_root(uri)
    if root is None or not artifact_uri.startswith(PROXIED):
        return None
    return root / unquote(artifact_uri[len(PROXIED):])


def log_artifacts(client: Any, uri: str, run_id: str, folder: str | Path, artifact_path: str | None = None) -> None:
    """Upload ``folder`` to the run's artifacts: into :func:`run_artifact_dir` for a sqlite
    store (what ``mlflow ui --artifacts-destination`` serves), else through MLflow's client."""
    local = run_artifact_dir(uri, client.get_run(run_id).info.artifact_uri)
    if local is not None:
        from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

        LocalArtifactRepository(str(local)).log_artifacts(str(folder), artifact_path)
    else:
        client.log_artifacts(run_id, str(folder), artifact_path)


def paper_tables_uri(output: str, run_id: str, explicit: str | None = None, allow_stored: bool = False,
                     log_fn: Any = print) -> tuple[str, str]:
    """(tracking URI, experiment) for ``farm tables``: --tracking-uri, else (only with
    ``allow_stored``, --allow-tracking-uri) the run's config, else $MLFLOW_TRACKING_URI, else the
    sqlite store of the results folder it was read from. A received folder's config.yaml is
    not trusted to choose where this machine sends data."""
    import yaml

    raw = yaml.safe_load(RunStore(output, run_id).config_yaml()).get("tracking", {}) or {}
    experiment = str(raw.get("experiment") or "farm")
    stored = raw.get("uri")
    if stored and not allow_stored and not explicit:
        log_fn(f"tables: not logging to the run's stored tracking.uri {stored!r} (pass --allow-tracking-uri to use "
               "it, or --tracking-uri)")
    uri = explicit or (stored if allow_stored else None) or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        fs, root = filesystem(output)
        base = Path(root) if fs.type_name == "local" else Path(".")
        uri = f"sqlite:///{(base / 'mlflow.db').resolve()}"
    return uri, experiment
