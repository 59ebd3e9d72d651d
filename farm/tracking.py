"""MLflow logging of a run: a parent run per farm run, a nested run per (model, method, variant).

Only the driver talks to MLflow (sqlite locks under concurrent writers). Logging is
idempotent per farm run id: a resumed run or a later ``farm tables`` finds the existing
parent/nested runs by tag and logs into them instead of creating duplicates. A tracking
failure never loses results: the Parquet files are already written, and the caller gets a
warning telling how to log later.
"""
from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from farm.config import Config
from farm.report.aggregate import JOB, anomaly_table, pair_matrix, summary, uncapped
from farm.report.plots import heatmap
from farm.store import RunStore, filesystem

log = logging.getLogger("farm.tracking")
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


def _flatten(d: Any, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
    elif isinstance(d, list) and d and all(isinstance(x, dict) for x in d):
        for i, v in enumerate(d):
            out.update(_flatten(v, f"{prefix}{i}."))
    else:
        out[prefix[:-1]] = json.dumps(d) if not isinstance(d, str) else d
    return {k: v[:6000] for k, v in out.items()}


def _find_or_start(mlflow: Any, experiment_id: str, tags: dict[str, str], name: str,
                   parent: str | None = None) -> Any:
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    found = mlflow.search_runs([experiment_id], filter_string=query, output_format="list", max_results=1)
    if found:
        return mlflow.start_run(run_id=found[0].info.run_id, nested=parent is not None)
    extra = {"mlflow.parentRunId": parent} if parent else {}
    return mlflow.start_run(experiment_id=experiment_id, run_name=name, nested=parent is not None,
                            tags=tags | extra)


def log_run(cfg: Config, store: RunStore, df: pd.DataFrame, num_classes: dict[str, int],
            class_names: dict[str, list[str]], extra_params: dict[str, Any] | None = None) -> str:
    """Log a run's aggregates, pair tables and heat maps; return the parent MLflow run id."""
    import mlflow

    uri = tracking_uri(cfg)
    wait_reachable(uri)
    with scoped_uri(uri):
        experiment = mlflow.set_experiment(cfg.tracking.experiment)
        run_id = store.run_id
        with _find_or_start(mlflow, experiment.experiment_id, {TAG_RUN: run_id}, run_id) as parent:
            params = _flatten({"config": json.loads(json.dumps(cfg.results_dict()))})
            params |= {"git_commit": git_commit(), "config_hash": cfg.hash()}
            params |= {k: str(v) for k, v in (extra_params or {}).items()}
            existing = mlflow.get_run(parent.info.run_id).data.params
            mlflow.log_params({k: v for k, v in params.items() if k not in existing})
            table = summary(df)
            anomalies = anomaly_table(df, num_classes)
            with tempfile.TemporaryDirectory() as tmp:
                for name, frame in (("summary", table), ("anomaly", anomalies)):
                    frame.to_csv(Path(tmp) / f"{name}.csv", index=False)
                    (Path(tmp) / f"{name}.md").write_text(frame.to_markdown(index=False, floatfmt=".4g"))
                mlflow.log_artifacts(tmp, "tables")
            mlflow.log_table(table, "summary.json")
            for key, g in df.groupby(JOB, sort=True):
                _log_job(mlflow, experiment.experiment_id, parent.info.run_id, run_id, key, g,
                         num_classes[key[0]], class_names.get(key[0], []))
            return parent.info.run_id


def _log_job(mlflow: Any, experiment_id: str, parent_id: str, run_id: str, key: tuple[str, str, str],
             g: pd.DataFrame, k: int, names: list[str]) -> None:
    job = "/".join(key)
    with _find_or_start(mlflow, experiment_id, {TAG_RUN: run_id, TAG_JOB: job}, job, parent=parent_id):
        first = g.iloc[0]
        existing = mlflow.active_run().data.params
        params = {"model_id": key[0], "method": key[1], "variant": key[2], "arch": first["arch"],
                  "dataset": first["dataset"], "model_kind": first["model_kind"], "attack": first["attack"]}
        params |= {f"param.{k2}": json.dumps(v) for k2, v in json.loads(first["params_json"]).items()}
        mlflow.log_params({k2: str(v) for k2, v in params.items() if k2 not in existing})
        agg = summary(g).iloc[0].to_dict() if (g["victim"] >= 0).any() else {}
        metrics = {m: float(agg[m]) for m in ("pairs", "ok", "failed", "converged", "early_stop", "capped", "budget",
                                               "mean_size", "median_size", "mean_asr", "s_per_pair",
                                               "capped_mean_size", "capped_mean_asr") if m in agg}
        mlflow.log_metrics({m: v for m, v in metrics.items() if not math.isnan(v)})
        pairs = g[g["victim"] >= 0][["victim", "target", "trigger_size", "asr", "converged", "stop_reason", "status",
                                     "wall_s"]]
        mlflow.log_table(pairs.reset_index(drop=True), "pairs.json")
        names = names or [str(i) for i in range(k)]
        with tempfile.TemporaryDirectory() as tmp:
            for column, label, fmt in (("trigger_size", "trigger size (pixels)", "{:.0f}"),
                                       ("asr", "held-out ASR", "{:.2f}")):
                png = heatmap(pair_matrix(uncapped(g), column, k), f"{job}: {label}", names, label, fmt)
                (Path(tmp) / f"{column}.png").write_bytes(png)
            mlflow.log_artifacts(tmp, "heatmaps")


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


def log_paper_tables(run_id: str, output: str, folder: Path, frames: dict[str, pd.DataFrame],
                     explicit_uri: str | None = None, allow_stored_uri: bool = False, log_fn: Any = print) -> str:
    """Log ``farm tables`` output on the run's parent MLflow run (found by its run-id tag in any
    experiment), or on a new parent run tagged with the run id when this tracking store has
    never seen the run (a copied results folder, another server). Returns the tracking URI."""
    import mlflow

    uri, experiment_name = paper_tables_uri(output, run_id, explicit_uri, allow_stored_uri, log_fn)
    with scoped_uri(uri):
        experiment = mlflow.set_experiment(experiment_name)
        client = mlflow.MlflowClient()
        ids = [e.experiment_id for e in client.search_experiments()]
        found = [r for r in mlflow.search_runs(ids, filter_string=f"tags.`{TAG_RUN}` = '{run_id}'", output_format="list")
                 if "mlflow.parentRunId" not in r.data.tags]
        kwargs = ({"run_id": found[0].info.run_id} if found else
                  {"experiment_id": experiment.experiment_id, "run_name": run_id, "tags": {TAG_RUN: run_id}})
        with mlflow.start_run(**kwargs):
            mlflow.log_artifacts(str(folder), "paper_tables")
            for name, frame in frames.items():
                mlflow.log_table(frame.reset_index(drop=True), f"paper_tables/{name}.json")
        return uri
