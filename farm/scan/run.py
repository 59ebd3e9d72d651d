"""``farm scan``: train/reuse the scan zoo, run every scanner on every model, store rows.

Models are sharded over Ray tasks (one CPU each, or one GPU where there is one); a task trains
or reuses its model and writes, per scanner, the arm rows and then the model row, each an
atomic Parquet file. A model row's existence means "done", so a run killed at any point
resumes by skipping exactly the finished (model, scanner) results.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import torch

from farm import failpoints
from farm.data import Dataset, load_dataset
from farm.errors import ConfigError, FarmError
from farm.methods import create_method
from farm.methods.base import EpochMethod
from farm.metrics import MAD_THRESHOLD
from farm.models.loading import frozen
from farm.models.zoo import ensure_model
from farm.preflight import dataset_root_problems
from farm.scan.config import ScanConfig, ScannerSpec
from farm.scan.karm import bound, scan_model
from farm.scan.mad import mad_scan
from farm.scan.trojai_round import RoundModel, load_round_model, round_models
from farm.scan.zoo import zoo_specs
from farm.schema import to_dict
from farm.store import RunStore
from farm.triggers import Trigger

MODEL_DIR = "scan/models"
ARM_DIR = "scan/arms"


def _path(kind: str, model_id: str, scanner: str) -> str:
    return f"{kind}/model_id={model_id}/scanner={scanner}.parquet"


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def trigger_columns(trigger: Trigger | None) -> dict[str, Any]:
    """The chosen arm's trigger as the pair store keeps one (float16 bytes, kind, shape);
    ``farm.triggers.Trigger.from_bytes`` decodes it. All null when no arm was chosen."""
    if trigger is None:
        return {"trigger_kind": None, "trigger_shape": None, "trigger": None}
    return {"trigger_kind": trigger.kind, "trigger_shape": list(trigger.array.shape), "trigger": trigger.to_bytes()}


def subject(cfg: ScanConfig, spec: Any, trust_code: bool) -> tuple[torch.nn.Module, Dataset, dict[str, Any]]:
    """(model, its images, the row's ground-truth columns) of a zoo spec or a round folder."""
    if isinstance(spec, RoundModel):
        model, ds, truth = load_round_model(spec, cfg.round_arch, trust_code)
        return frozen(model), ds, truth
    entry = ensure_model(spec, cfg.dataset, Path(cfg.zoo_dir), log=lambda _m: None)
    attack = entry.meta["attack"]
    truth = {"model_id": spec.id, "arch": spec.arch, "attack": attack["type"], "poisoned": attack["type"] != "none",
             "true_target": attack.get("target"), "true_victim": attack.get("victim"),
             "clean_acc": entry.meta["clean_acc"], "asr": entry.meta.get("asr")}
    return frozen(entry.load("cpu")), load_dataset(cfg.dataset), truth


def scan_one(cfg: ScanConfig, spec: Any, scanners: list[ScannerSpec], trust_code: bool = False) -> list[str]:
    """Scan one model with ``scanners``; returns the model-row files written."""
    torch.set_num_threads(1)
    store = RunStore(cfg.output, cfg.run_id)
    model, ds, truth = subject(cfg, spec, trust_code)
    written = []
    for sc in scanners:
        core = create_method(sc.core, sc.params)
        assert isinstance(core, EpochMethod), sc.core  # ScannerSpec.core names epoch-loop methods only
        base = {**truth, "scanner": sc.name, "kind": sc.kind, "core": sc.core}
        if sc.kind == "karm":
            params = sc.karm_params(cfg.karm)
            r = scan_model(model, ds, core, params, cfg.seed, spec.id)
            arms = [{**base, "victim": a.victim, "target": a.target, "size": _finite(s), "rounds": n}
                    for a, s, n in zip(r.arms, r.arm_sizes, r.arm_rounds)]
            row = {**base, "decision": r.trojaned, "score": _finite(r.score), "arm_victim": r.arm.victim,
                   "arm_target": r.arm.target, "rounds": r.rounds, "seconds": r.seconds,
                   "threshold": bound(params, r.arm), **trigger_columns(r.trigger)}
        else:
            m = mad_scan(model, ds, core, cfg.mad_attack_size, cfg.seed, spec.id)
            arms = [{**base, "victim": None, "target": t, "size": None if math.isnan(s) else s, "rounds": 1}
                    for t, s in enumerate(m.sizes)]
            flagged = m.flagged[0] if m.flagged else None
            row = {**base, "decision": m.trojaned, "score": None if math.isnan(m.score) else min(m.score, 1e9),
                   "arm_victim": None, "arm_target": flagged, "rounds": 1, "seconds": m.seconds,
                   "threshold": MAD_THRESHOLD,
                   **trigger_columns(None if flagged is None else m.triggers[flagged])}
        store.write_parquet(_path(ARM_DIR, spec.id, sc.name), pa.Table.from_pylist(arms))
        written.append(store.write_parquet(_path(MODEL_DIR, spec.id, sc.name), pa.Table.from_pylist([row])))
        failpoints.hit("scan.model_row")
    return written


def pending(cfg: ScanConfig, store: RunStore, specs: list[Any]) -> list[tuple[Any, list[ScannerSpec]]]:
    """(model, scanners still to run) for every model with unfinished work."""
    out = []
    for spec in specs:
        todo = [s for s in cfg.scanners
                if store.fs.get_file_info(f"{store.run_dir}/{_path(MODEL_DIR, spec.id, s.name)}").type != pafs.FileType.File]
        if todo:
            out.append((spec, todo))
    return out


def execute(cfg: ScanConfig, config_yaml: str, log: Any = print, trust_code: bool = False) -> RunStore:
    """Run (or resume) the scan of ``cfg``; returns its store.

    A new run's folder is created only once its dataset loaded (or its round's folders were
    checked) and Ray is up, so a scan that cannot start (a missing dataset root, an untrusted
    TorchScript model, no Ray) leaves no empty run folder behind."""
    import ray

    from farm.cluster import connect

    problems = [] if cfg.round_dir else dataset_root_problems({"dataset": cfg.dataset})
    if problems:
        raise ConfigError(problems)
    store = RunStore(cfg.output, cfg.run_id)
    if store.exists() and store.config_yaml() != config_yaml:
        raise FarmError(f"scan run {cfg.run_id!r} under {cfg.output!r} was started with another config; "
                        f"choose another run_id or restore {store.run_dir}/config.yaml")
    specs: list[Any] = (round_models(cfg.round_dir, trust_code) if cfg.round_dir
                        else zoo_specs(cfg, load_dataset(cfg.dataset).num_classes))
    work = pending(cfg, store, specs)
    log(f"scan {cfg.run_id}: {len(specs)} models x {len(cfg.scanners)} scanners, {len(work)} model(s) to do")
    if work:
        connect(None, cfg.num_cpus)
    if not store.exists():
        store.create(config_yaml, {"kind": "scan", "config": to_dict(cfg)})
    if not work:
        return store
    task = ray.remote(num_cpus=1, max_retries=2)(scan_one)
    refs = {task.remote(cfg, spec, todo, trust_code): spec.id for spec, todo in work}
    while refs:
        done, _ = ray.wait(list(refs), num_returns=1)
        model_id = refs.pop(done[0])
        ray.get(done[0])
        log(f"  done {model_id} ({len(work) - len(refs)}/{len(work)})")
    ray.shutdown()
    return store


def read_scan(store: RunStore, kind: str = MODEL_DIR) -> pd.DataFrame:
    """All model rows (or arm rows with ``kind=ARM_DIR``) of a scan run as a DataFrame.

    Files are read one by one: a column that is all-null in one model (no victim) and typed
    in another would make a single-schema dataset read fail.
    """
    sel = pafs.FileSelector(f"{store.run_dir}/{kind}", recursive=True, allow_not_found=True)
    files = sorted(i.path for i in store.fs.get_file_info(sel)
                   if i.type == pafs.FileType.File and i.base_name.endswith(".parquet")
                   and not i.base_name.startswith("."))
    frames = [pq.read_table(f, filesystem=store.fs).to_pandas() for f in files]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
