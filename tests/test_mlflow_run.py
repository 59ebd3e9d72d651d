"""The live MLflow view (farm.mlflow_run) against a real sqlite store, without Ray: pair rows
come from the actor's own code in-process (farm.inprocess.run_pairs), as ``farm run`` stores them."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from e2e_util import tiny_config

KEY = ("poisoned", "ours", "plain")


@pytest.fixture(scope="module")
def computed(tmp_path_factory):
    """(config, model, rows) of 6 pairs of the tiny poisoned model, computed once."""
    from farm.inprocess import method_spec, run_pairs
    from farm.config import config_from_dict
    from farm.grid import select_pairs
    from farm.runner import prepare_models

    out = tmp_path_factory.mktemp("track")
    raw = tiny_config(out / "out", run={"name": "t", "id": "t", "output": str(out / "out"), "seed": 0})
    raw["models"] = raw["models"][1:]
    raw["methods"] = [{"name": "ours", "params": {"epochs": 2}}]
    raw["pairs"] = {"mode": "sample", "sample": 6, "victim_images": 8, "batch_size": 8, "heldout_images": 4}
    cfg = config_from_dict(raw)
    model = prepare_models(cfg, lambda _m: None)["poisoned"]
    pairs = select_pairs(cfg.pairs, model.num_classes, cfg.run.seed)
    rows = run_pairs(cfg, model, method_spec(cfg, "ours"), pairs, 3)
    return cfg, model, rows


def _store(cfg, rows_written):
    from farm.store import RunStore

    store = RunStore(cfg.run.output, cfg.run.id)
    if not store.exists():
        store.create(cfg.to_yaml(), {"run_id": cfg.run.id, "config_hash": cfg.hash(),
                                     "models": {"poisoned": {"num_classes": 10, "class_names": []}}})
    for i, chunk in enumerate(rows_written):
        store.write_shard(*KEY, f"s{i}", chunk)
    return store


def _tracker(cfg, model, store):
    from farm.mlflow_run import RunTracker

    return RunTracker(cfg, store, {"poisoned": model.num_classes}, {}, log_fn=print)


def _runs(client):
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids, filter_string="tags.`farm.run_id` = 't'")


def test_runs_live_resume_idempotent_and_a_copy_keeps_its_artifacts(computed, tmp_path):
    from mlflow import MlflowClient

    from farm.mlflow_run import log_paper_tables, sampled_pairs
    from farm.tracking import local_artifact_root

    cfg, model, rows = computed
    pairs = [(r["victim"], r["target"]) for r in rows]
    store = _store(cfg, [])
    tracker = _tracker(cfg, model, store).start({KEY: pairs}, {})
    client = MlflowClient(tracking_uri=tracker.uri)
    # Before any pair: the parent and the job's run exist, RUNNING, with progress 0 of 6.
    runs = _runs(client)
    assert sorted(r.info.status for r in runs) == ["RUNNING", "RUNNING"]
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert parent.data.metrics == {"pairs_total": 6, "pairs_done": 0}
    assert [d.dataset.name for d in parent.inputs.dataset_inputs] == ["syn"]
    exp = client.get_experiment(parent.info.experiment_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert exp.artifact_location.startswith("mlflow-artifacts:/")

    # Half the pairs, then the run is interrupted.
    _store(cfg, [rows[:3]])
    tracker.rows(KEY, rows[:3])
    tracker.close("KILLED")
    assert {r.info.status for r in _runs(client)} == {"KILLED"}
    assert client.get_run(parent.info.run_id).data.metrics["pairs_done"] == 3

    # Resume: the same two runs, finished with the job's aggregates and real end times.
    tracker = _tracker(cfg, model, store).start({KEY: pairs}, {KEY: 3})
    store.write_shard(*KEY, "s1", rows[3:])
    tracker.rows(KEY, rows[3:])
    assert tracker.close() == parent.info.run_id
    runs = _runs(client)
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    job = next(r for r in runs if "mlflow.parentRunId" in r.data.tags)
    ok = [r["asr"] for r in rows if r["status"] == "ok"]
    assert job.data.metrics["pairs"] == 6 and job.data.metrics["ok"] == len(ok) >= 5
    assert job.data.metrics["mean_asr_pct"] == pytest.approx(100 * sum(ok) / len(ok))  # percent of the rows' mean
    # 6 pairs: too few labels for a finite anomaly index, so none is logged and nothing is detected
    assert "anomaly_index" not in job.data.metrics and job.data.metrics["detected"] == 0.0
    assert job.info.end_time >= job.info.start_time
    top = client.get_run(parent.info.run_id).data.metrics
    assert top["pairs_done"] == 6 and top["poisoned/ours/plain/mean_asr_pct"] == job.data.metrics["mean_asr_pct"]
    assert top["poisoned/ours/plain/detected"] == job.data.metrics["detected"]
    # Step curves of the sampled pairs, and of no other: size at each improvement (step: elapsed
    # ms), loss at each of its 2 epochs (step: epoch), as the rows hold them.
    sampled = sampled_pairs(pairs)
    assert len(sampled) == 3
    by_pair = {(r["victim"], r["target"]): r for r in rows}
    names = {f"v{v}_t{t}" for v, t in sampled}
    assert {m for m in job.data.metrics if m.startswith("loss_curve/")} == {f"loss_curve/{n}" for n in names}
    assert {m for m in job.data.metrics if m.startswith("size_curve/")} == {
        f"size_curve/v{v}_t{t}" for v, t in sampled if by_pair[v, t]["trace_t"]}
    for v, t in sampled:
        r = by_pair[v, t]
        loss = sorted((m.step, m.value) for m in client.get_metric_history(job.info.run_id, f"loss_curve/v{v}_t{t}"))
        assert [s for s, _ in loss] == r["loss_step"] == [0, 1]
        assert [x for _, x in loss] == pytest.approx(r["loss_value"], rel=1e-6)
        size = client.get_metric_history(job.info.run_id, f"size_curve/v{v}_t{t}")
        assert sorted(m.value for m in size) == sorted(r["trace_size"])

    # Logging the stored run again (farm tables' fallback) neither duplicates runs nor metrics.
    from farm.mlflow_run import log_run

    assert log_run(cfg, store, {"poisoned": model.num_classes}, {}) == parent.info.run_id
    assert len(_runs(client)) == 2
    assert len(client.get_metric_history(job.info.run_id, "mean_asr_pct")) == 1

    # Artifacts live under the results folder: a copy has its own heat maps, and tables
    # logged on the copy land in the copy.
    out = Path(cfg.run.output)
    artifacts = Path(job.info.artifact_uri[len("mlflow-artifacts:/"):])
    assert (out / "mlartifacts" / artifacts / "heatmaps" / "asr.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "mlartifacts").is_dir() and local_artifact_root(tracker.uri) == out / "mlartifacts"
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    folder = tmp_path / "tables"
    folder.mkdir()
    (folder / "t1.md").write_text("| a |\n")
    uri = log_paper_tables("t", str(copy), folder, {})
    assert uri == f"sqlite:///{copy / 'mlflow.db'}"
    parent_dir = Path(parent.info.artifact_uri[len("mlflow-artifacts:/"):])
    assert (copy / "mlartifacts" / parent_dir / "paper_tables" / "t1.md").is_file()
    assert not (out / "mlartifacts" / parent_dir / "paper_tables").exists()

    # A store that never saw the run gets all of it from the Parquet rows, then the tables.
    other = f"sqlite:///{tmp_path / 'other.db'}"
    assert log_paper_tables("t", str(out), folder, {}, explicit_uri=other) == other
    runs = _runs(MlflowClient(tracking_uri=other))
    assert sorted(r.info.run_name for r in runs) == ["poisoned/ours/plain", "t"]
    job = next(r for r in runs if "mlflow.parentRunId" in r.data.tags)
    assert job.data.metrics["pairs"] == 6 and job.info.status == "FINISHED"
    assert (tmp_path / "mlartifacts" / job.info.artifact_uri[len("mlflow-artifacts:/"):] / "heatmaps").is_dir()
