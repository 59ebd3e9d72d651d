"""The live MLflow view of one farm run: runs appear when the work starts, fill in as it goes.

A parent run per farm run and a nested run per (model, method, variant) job are created
before the first shard is submitted, so the UI shows the run (status RUNNING, real start
time) while it computes. As shards come back the parent logs ``pairs_done`` (throttled),
a few sampled pairs log their size and loss curves as step metrics, and each job, once its last pair
is stored, logs its aggregates on its nested run (and, prefixed ``<model>/<method>/<variant>/``,
on the parent, so one runs-table row compares every job) and ends with its real end time.

Idempotent per farm run id: a resumed run or a second ``log_run`` finds the runs by tag
and logs into them. Tracking never loses results: the first MLflow error turns the tracker
off with one warning saying how to log later (the Parquet rows are written first).
"""
from __future__ import annotations

import json
import math
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pandas as pd

from farm.config import Config
from farm.report.aggregate import JOB, anomaly_table, pair_matrix, summary, uncapped
from farm.report.plots import heatmap
from farm.store import SCALAR_COLUMNS, RunStore
from farm.tracking import (TAG_JOB, TAG_RUN, experiment_id, flatten, git_commit, log_artifacts, paper_tables_uri,
                           sqlite_lock, tracking_uri, wait_reachable)

Key = tuple[str, str, str]
SUMMARY_METRICS = ("pairs", "ok", "failed", "converged", "early_stop", "capped", "budget", "mean_size",
                   "median_size", "mean_asr_pct", "s_per_pair", "eval_share_pct", "capped_mean_size",
                   "capped_mean_asr_pct")
# The parent carries the metrics a reader compares across jobs; the nested runs carry them all.
PARENT_METRICS = ("mean_size", "median_size", "mean_asr_pct", "converged", "capped", "anomaly_index", "detected")
CURVES_PER_JOB = 3  # pairs per job whose best-size trace and loss curve are logged as step metrics
PROGRESS_EVERY_S = 10.0  # at most one pairs_done point per this many seconds (sqlite writes are slow)


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class JobRun:
    """One job's nested run and how many of its pairs are stored."""

    mlflow_id: str
    total: int
    done: int
    sampled: set[tuple[int, int]] = field(default_factory=set)

    @property
    def finished(self) -> bool:
        return self.done >= self.total


def sampled_pairs(pairs: list[tuple[int, int]], n: int = CURVES_PER_JOB) -> set[tuple[int, int]]:
    """``n`` pairs spread evenly over the job's pair order: deterministic, so a resumed run
    logs the same pairs' curves."""
    step = max(1, len(pairs) // n)
    return set(pairs[::step][:n])


def job_metrics(g: pd.DataFrame, k: int) -> dict[str, float]:
    """Aggregates of one job's rows: summary counts and means, anomaly index and detection
    (from the all-pairs sizes where present; ``_universal`` from the universal scan)."""
    out: dict[str, float] = {}
    if (g["victim"] >= 0).any():
        agg = summary(g).iloc[0].to_dict()
        out |= {m: float(agg[m]) for m in SUMMARY_METRICS}
    for row in anomaly_table(g, {str(g["model_id"].iloc[0]): k}).itertuples():
        suffix = "" if row.source == "pair-min" else "_universal"
        out[f"anomaly_index{suffix}"] = float(row.anomaly_index)
        out[f"detected{suffix}"] = float(bool(row.detected))
    return {m: v for m, v in out.items() if not math.isnan(v)}


class RunTracker:
    """Create/find a farm run's MLflow runs and log into them as the work proceeds."""

    def __init__(self, cfg: Config, store: RunStore, num_classes: dict[str, int],
                 class_names: dict[str, list[str]], log_fn: Callable[[str], None] = print, uri: str | None = None):
        self.cfg, self.store, self.log_fn = cfg, store, log_fn
        self.num_classes, self.class_names = num_classes, class_names
        self.uri = uri or tracking_uri(cfg)
        self.client: Any = None
        self.parent_id: str | None = None
        self.jobs: dict[Key, JobRun] = {}
        self.pairs_total = self.pairs_done = 0
        self._last_progress = 0.0

    # ---- failure policy ------------------------------------------------------------------
    @property
    def active(self) -> bool:
        return self.client is not None

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """Run a logging step under the store's lock; on any error, warn once and stop tracking."""
        try:
            with sqlite_lock(self.uri):
                yield
        except Exception as exc:  # noqa: BLE001 - tracking must never lose a run
            self.client = None
            self.log_fn(f"warning: MLflow logging to {self.uri} failed ({type(exc).__name__}: {exc}); results are "
                        f"safe in Parquet. Log them later with: farm tables {self.store.run_id} --output "
                        f"{self.cfg.run.output} --tracking-uri {self.uri}")

    # ---- lifecycle -----------------------------------------------------------------------
    def start(self, job_pairs: dict[Key, list[tuple[int, int]]], done: dict[Key, int],
              params: dict[str, Any] | None = None) -> "RunTracker":
        """Find or create the parent and every job's nested run (status RUNNING), log the
        config as params and the datasets as inputs. ``job_pairs``: each job's (victim,
        target) pairs in run order; ``done``: pairs already stored per job (resume)."""
        from mlflow import MlflowClient

        with self._guard():
            wait_reachable(self.uri, timeout_s=self.cfg.tracking.connect_timeout_s)
            client = MlflowClient(tracking_uri=self.uri)
            exp = experiment_id(client, self.uri, self.cfg.tracking.experiment)
            run_id = self.store.run_id
            self.parent_id = _find_or_create(client, exp, {TAG_RUN: run_id}, run_id)
            base = {"config": json.loads(json.dumps(self.cfg.results_dict()))}
            _log_new_params(client, self.parent_id, flatten(base) | {"git_commit": git_commit(),
                            "config_hash": self.cfg.hash()} | {k: str(v) for k, v in (params or {}).items()})
            _log_datasets(client, self.parent_id, self.cfg)
            for key, pairs in job_pairs.items():
                job = "/".join(key)
                complete = done.get(key, 0) >= len(pairs)
                mid = _find_or_create(client, exp, {TAG_RUN: run_id, TAG_JOB: job}, job, parent=self.parent_id,
                                      reopen=not complete)
                self.jobs[key] = JobRun(mid, len(pairs), done.get(key, 0), sampled_pairs(pairs))
            self.pairs_total = sum(j.total for j in self.jobs.values())
            self.pairs_done = sum(min(j.done, j.total) for j in self.jobs.values())
            client.log_metric(self.parent_id, "pairs_total", self.pairs_total)
            self.client = client
            self._log_progress(force=True)
        return self

    def rows(self, key: Key, rows: list[dict[str, Any]]) -> None:
        """A shard of ``key`` is stored: progress, sampled curves, and the job's aggregates
        once its last pair is in."""
        if not self.active or key not in self.jobs:
            return
        job = self.jobs[key]
        job.done += len(rows)
        self.pairs_done += len(rows)
        with self._guard():
            self._log_curves(job, rows)
            if job.finished:
                self._finish_job(key, job)
            self._log_progress(force=job.finished)

    def close(self, status: str = "FINISHED") -> str | None:
        """End the parent (FINISHED, FAILED or KILLED) with the run-level tables; returns its id.
        Jobs not finished (a failed or interrupted run) end with the same status."""
        if not self.active:
            return None
        with self._guard():
            for key, job in self.jobs.items():
                if not job.finished:
                    self.client.set_terminated(job.mlflow_id, status)
                elif status == "FINISHED" and self.client.get_run(job.mlflow_id).info.status != "FINISHED":
                    self._finish_job(key, job)  # a resumed run whose job was complete but not logged
            self._log_progress(force=True)
            if status == "FINISHED":
                self._log_run_tables()
            self.client.set_terminated(self.parent_id, status)
        return self.parent_id if self.active else None

    # ---- pieces --------------------------------------------------------------------------
    def _log_progress(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_progress >= PROGRESS_EVERY_S:
            self.client.log_metric(self.parent_id, "pairs_done", self.pairs_done, step=self.pairs_done)
            self._last_progress = now

    def _log_curves(self, job: JobRun, rows: list[dict[str, Any]]) -> None:
        """The sampled pairs' best-size trace (step: elapsed ms) and loss curve (step: epoch)."""
        from mlflow.entities import Metric

        metrics = []
        now = _now_ms()
        for r in rows:
            if (r["victim"], r["target"]) not in job.sampled:
                continue
            pair = f"v{r['victim']}_t{r['target']}"
            metrics += [Metric(f"size_curve/{pair}", float(s), now, int(round(t * 1000)))
                        for t, s in zip(r["trace_t"], r["trace_size"])]
            metrics += [Metric(f"loss_curve/{pair}", float(v), now, int(e))
                        for e, v in zip(r["loss_step"], r["loss_value"])]
        for i in range(0, len(metrics), 1000):  # MLflow's per-batch limit
            self.client.log_batch(job.mlflow_id, metrics=metrics[i:i + 1000])

    def _finish_job(self, key: Key, job: JobRun) -> None:
        from mlflow.entities import Metric

        g = self.store.read(columns=SCALAR_COLUMNS, job=key)
        k = self.num_classes[key[0]]
        metrics = job_metrics(g, k)
        first = g.iloc[0]
        params = {"model_id": key[0], "method": key[1], "variant": key[2], "arch": first["arch"],
                  "dataset": first["dataset"], "model_kind": first["model_kind"], "attack": first["attack"]}
        params |= {f"param.{name}": json.dumps(v) for name, v in json.loads(first["params_json"]).items()}
        _log_new_params(self.client, job.mlflow_id, params)
        now = _now_ms()
        self.client.log_batch(job.mlflow_id, metrics=[Metric(m, v, now, 0) for m, v in metrics.items()])
        prefix = "/".join(key)
        self.client.log_batch(self.parent_id, metrics=[Metric(f"{prefix}/{m}", v, now, 0)
                                                        for m, v in metrics.items() if m in PARENT_METRICS])
        names = self.class_names.get(key[0]) or [str(i) for i in range(k)]
        with tempfile.TemporaryDirectory() as tmp:
            pairs = g[g["victim"] >= 0][["victim", "target", "trigger_size", "asr", "converged", "stop_reason",
                                         "status", "wall_s"]].reset_index(drop=True)
            _write_table(pairs, Path(tmp), "pairs")
            heat = Path(tmp) / "heatmaps"
            heat.mkdir()
            for column, scale, label in (("trigger_size", 1, "trigger size (pixels)"), ("asr", 100, "held-out ASR (%)")):
                png = heatmap(scale * pair_matrix(uncapped(g), column, k), f"{prefix}: {label}", names, label, "{:.0f}")
                (heat / f"{column}.png").write_bytes(png)
            log_artifacts(self.client, self.uri, job.mlflow_id, tmp)
        self.client.set_terminated(job.mlflow_id, "FINISHED")

    def _log_run_tables(self) -> None:
        df = self.store.read(columns=SCALAR_COLUMNS)
        with tempfile.TemporaryDirectory() as tmp:
            for name, frame in (("summary", summary(df)), ("anomaly", anomaly_table(df, self.num_classes))):
                _write_table(frame, Path(tmp) / "tables", name)
            assert self.parent_id is not None  # called only while the run is active
            log_artifacts(self.client, self.uri, self.parent_id, tmp)


def _write_table(frame: pd.DataFrame, folder: Path, name: str) -> None:
    """CSV and Markdown for people, and MLflow's table JSON (the artifact view renders it)."""
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_csv(folder / f"{name}.csv", index=False)
    (folder / f"{name}.md").write_text(frame.to_markdown(index=False, floatfmt=".4g"))
    (folder / f"{name}.json").write_text(frame.to_json(orient="split", index=False))


def _find_or_create(client: Any, experiment: str, tags: dict[str, str], name: str, parent: str | None = None,
                    reopen: bool = True) -> str:
    """The id of the run with these tags (back to RUNNING if ``reopen``: it has work left),
    or of a new RUNNING one started now."""
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    found = [r for r in client.search_runs([experiment], filter_string=query)
             if r.data.tags.get("mlflow.parentRunId") == parent]  # a job's runs carry the run's tag too
    if found:
        if reopen:
            client.update_run(found[0].info.run_id, status="RUNNING")
        return found[0].info.run_id
    extra = {"mlflow.parentRunId": parent} if parent else {}
    return client.create_run(experiment, start_time=_now_ms(), tags=tags | extra, run_name=name).info.run_id


def _log_new_params(client: Any, run_id: str, params: dict[str, Any]) -> None:
    """Params are immutable in MLflow: log only those the run does not have yet (resume)."""
    from mlflow.entities import Param

    existing = client.get_run(run_id).data.params
    new = [Param(k, str(v)) for k, v in params.items() if k not in existing]
    for i in range(0, len(new), 100):  # MLflow's per-batch limit
        client.log_batch(run_id, params=new[i:i + 100])


def _log_datasets(client: Any, run_id: str, cfg: Config) -> None:
    """Each dataset as a run input (``mlflow.log_input``'s record): name, registry entry and
    root, digest of its spec, so runs can be filtered by the data they used."""
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag

    logged = {d.dataset.name for d in client.get_run(run_id).inputs.dataset_inputs}
    inputs = []
    for name, spec in sorted(cfg.datasets.items()):
        if name in logged:
            continue
        source = CodeDatasetSource({"farm.dataset": spec.name, "root": spec.root or "",
                                    "params": json.dumps(spec.params, sort_keys=True)})
        # MLflow 3.17 marks MetaDataset.profile abstract yet implements it (returns None).
        entity = MetaDataset(source, name=name)._to_mlflow_entity()  # type: ignore[abstract]
        inputs.append(DatasetInput(entity, [InputTag("mlflow.data.context", "evaluation")]))
    if inputs:
        client.log_inputs(run_id, datasets=inputs)


def log_run(cfg: Config, store: RunStore, num_classes: dict[str, int], class_names: dict[str, list[str]],
            params: dict[str, Any] | None = None, log_fn: Callable[[str], None] = print,
            uri: str | None = None) -> str | None:
    """Log a stored run in one go (the same runs and metrics a live run logs) into ``uri``
    (default: the config's store): for a run whose tracking failed, or a copy of a results
    folder (``farm tables``). Returns the parent MLflow run id, None if tracking failed."""
    df = store.read(columns=[*JOB, "victim", "target"])
    job_pairs = {key: list(zip(g["victim"].astype(int), g["target"].astype(int)))
                 for key, g in df.groupby(JOB, sort=True)}
    done = {key: len(pairs) for key, pairs in job_pairs.items()}
    return RunTracker(cfg, store, num_classes, class_names, log_fn, uri).start(job_pairs, done, params).close()


def log_paper_tables(run_id: str, output: str, folder: Path, frames: dict[str, pd.DataFrame],
                     explicit_uri: str | None = None, allow_stored_uri: bool = False, log_fn: Any = print) -> str:
    """Log ``farm tables`` output on the run's parent MLflow run (found by its run-id tag in any
    experiment). A tracking store that has never seen the run (a copied results folder, another
    server, a run whose tracking failed) first gets the whole run logged from its Parquet rows
    (:func:`farm.mlflow_run.log_run`), so the tables sit next to its jobs, metrics and heat maps.
    Returns the tracking URI."""
    from mlflow import MlflowClient

    uri, experiment_name = paper_tables_uri(output, run_id, explicit_uri, allow_stored_uri, log_fn)
    found = _parents(uri, run_id)
    if not found:
        _log_stored_run(output, run_id, uri, log_fn)
        found = _parents(uri, run_id)
    with sqlite_lock(uri):
        client = MlflowClient(tracking_uri=uri)
        parent = found[0].info.run_id if found else client.create_run(
            experiment_id(client, uri, experiment_name), run_name=run_id, tags={TAG_RUN: run_id}).info.run_id
        with tempfile.TemporaryDirectory() as tmp:
            for name, frame in frames.items():
                (Path(tmp) / f"{name}.json").write_text(frame.reset_index(drop=True).to_json(orient="split",
                                                                                            index=False))
            log_artifacts(client, uri, parent, folder, "paper_tables")
            log_artifacts(client, uri, parent, tmp, "paper_tables")
        if not found:
            client.set_terminated(parent)
        return uri


def _parents(uri: str, run_id: str) -> list[Any]:
    """Parent runs of farm run ``run_id`` in any experiment of the store."""
    from mlflow import MlflowClient

    with sqlite_lock(uri):
        client = MlflowClient(tracking_uri=uri)
        ids = [e.experiment_id for e in client.search_experiments()]
        return [r for r in client.search_runs(ids, filter_string=f"tags.`{TAG_RUN}` = '{run_id}'")
                if "mlflow.parentRunId" not in r.data.tags]


def _log_stored_run(output: str, run_id: str, uri: str, log_fn: Any) -> None:
    """The run's jobs, metrics and heat maps from its Parquet rows, when its stored config
    still validates (a `farm scan` run, or one from an incompatible farm, gets the tables only)."""
    import yaml

    from farm.config import ConfigError, config_from_dict

    store = RunStore(output, run_id)
    models = store.manifest().get("models")
    if not models:
        return
    try:
        cfg = config_from_dict(yaml.safe_load(store.config_yaml()), [f"run.output={output}"])
    except ConfigError as exc:
        log_fn(f"tables: not logging {run_id}'s jobs to MLflow, its config.yaml does not validate here ({exc})")
        return
    log_run(cfg, store, {m: int(v["num_classes"]) for m, v in models.items()},
            {m: v.get("class_names") or [] for m, v in models.items()}, log_fn=log_fn, uri=uri)
