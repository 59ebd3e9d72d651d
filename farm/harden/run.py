"""``farm harden``: harden every (model, method) as a Ray task, then measure class distances.

Each (model, method) is one Ray task (one CPU, or a GPU where the cluster has one) that
fine-tunes from the natural zoo model, checkpoints after every epoch and finally writes the
hardened weights and its row, an atomic Parquet file whose existence marks it done. A run
killed at any point is resumed by running the same command: finished rows are skipped and an
unfinished hardening continues from its last checkpoint (Ray's own task retries do the same).
The class distances are then ``farm run``s of the natural and hardened models
(:mod:`farm.harden.distance`), resumed or skipped the same way.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import torch

from farm.config import ModelSpec
from farm.data import Dataset, load_dataset
from farm.errors import ConfigError, FarmError
from farm.harden.config import ON_THE_FLY, HardenConfig, HardenMethodSpec
from farm.harden.distance import measure, restart_run_id
from farm.harden.sources import OnTheFly, TriggerSource, Universal
from farm.harden.train import harden
from farm.methods import METHODS
from farm.methods.base import EpochMethod
from farm.models.loading import save_state_dict
from farm.models.zoo import ensure_model
from farm.preflight import dataset_root_problems
from farm.schema import to_dict
from farm.store import RunStore

ROWS = "harden/rows"
CHECKPOINTS = "harden/checkpoints"
WEIGHTS = "harden/models"


def row_path(model_id: str, method: str) -> str:
    return f"{ROWS}/model_id={model_id}/method={method}.parquet"


def make_source(method: HardenMethodSpec, model: torch.nn.Module, ds: Dataset, cfg: HardenConfig, tag: str,
                device: str) -> TriggerSource:
    """The method's inverter (METHODS.md defaults + the config's overrides; UAP's L∞ bound
    defaults to the dataset's) wrapped as an on-the-fly or a fixed universal source."""
    if method.inverter is None:
        raise ValueError(f"{method.name!r} generates no triggers")
    cls = METHODS[method.inverter]
    params = cls.Params(**method.params)
    if hasattr(params, "for_dataset"):
        params = params.for_dataset(ds)
    inverter = cls(params)
    if not isinstance(inverter, EpochMethod):
        raise TypeError(f"{method.inverter!r} is not a shared-loop method; hardening continues its problem per step")
    if method.name in ON_THE_FLY:
        return OnTheFly(inverter, ds, cfg.train.attack_images, cfg.train.inversion_epochs, cfg.seed, tag, device)
    return Universal(inverter, model, ds, cfg.train.attack_images, cfg.seed, tag, device)


def harden_one(cfg: HardenConfig, spec: ModelSpec, method: HardenMethodSpec) -> str:
    """Harden ``spec`` with ``method`` (resuming from its checkpoint); returns the row file."""
    torch.set_num_threads(1)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    store = RunStore(cfg.output, cfg.run_id)
    entry = ensure_model(spec, cfg.datasets[spec.dataset], Path(cfg.zoo_dir), log=lambda _m: None)
    ds = load_dataset(cfg.datasets[spec.dataset])
    row: dict[str, Any] = {"model_id": spec.id, "dataset": cfg.datasets[spec.dataset].name, "arch": spec.arch,
                           "num_classes": ds.num_classes, "method": method.name,
                           "natural_accuracy": entry.meta["clean_acc"], "device": device}
    if method.name == "natural":
        row |= {"accuracy": entry.meta["clean_acc"], "seconds": entry.meta["train_seconds"],
                "epochs": entry.meta["train"]["epochs"], "resumed_from": 0, "stamped": 0, "weights": str(entry.path)}
    else:
        tag = f"{spec.id}/{method.name}"
        model = entry.load(device)
        run_dir = Path(store.run_dir)
        ckpt = run_dir / CHECKPOINTS / spec.id / f"{method.name}.pt"
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()  # NC's universal inversion happens here: part of its hardening time
        source = make_source(method, model, ds, cfg, tag, device)
        setup = time.perf_counter() - t0
        out = harden(model, ds, source, cfg.train, cfg.seed, tag, ckpt, device=device)
        weights = run_dir / WEIGHTS / spec.id / f"{method.name}.pt"
        weights.parent.mkdir(parents=True, exist_ok=True)
        save_state_dict(model, weights)
        row |= {"accuracy": out.accuracy, "seconds": setup + out.seconds, "epochs": cfg.train.epochs,
                "resumed_from": out.resumed_from, "stamped": out.stamped, "weights": str(weights)}
    return store.write_parquet(row_path(spec.id, method.name), pa.Table.from_pylist([row]))


def pending(cfg: HardenConfig, store: RunStore) -> list[tuple[ModelSpec, HardenMethodSpec]]:
    """(model, method) pairs without a finished row (a temp file of a killed writer is not one)."""
    return [(spec, m) for spec in cfg.models for m in cfg.methods
            if store.fs.get_file_info(f"{store.run_dir}/{row_path(spec.id, m.name)}").type != pafs.FileType.File]


def execute(cfg: HardenConfig, config_yaml: str, log: Any = print) -> RunStore:
    """Run (or resume) the hardening of ``cfg`` and its distance runs; returns its store.

    A new run's folder is created only once the natural models are trained (their datasets
    loaded) and Ray is up, so a run that cannot start leaves no empty run folder behind."""
    import ray

    from farm.cluster import connect

    problems = dataset_root_problems({f"datasets.{key}": d for key, d in cfg.datasets.items()})
    if problems:
        raise ConfigError(problems)
    store = RunStore(cfg.output, cfg.run_id)
    if store.exists() and store.config_yaml() != config_yaml:
        raise FarmError(f"harden run {cfg.run_id!r} under {cfg.output!r} was started with another config; "
                        f"choose another run_id or restore {store.run_dir}/config.yaml")
    for spec in cfg.models:  # train the natural models once, before their tasks share them,
        # with the tasks' one thread, as `farm zoo` and `farm run` train them
        ensure_model(spec, cfg.datasets[spec.dataset], Path(cfg.zoo_dir), log=log, threads=1)
    work = pending(cfg, store)
    log(f"harden {cfg.run_id}: {len(cfg.models)} model(s) x {len(cfg.methods)} method(s), {len(work)} to do")
    resources = connect(None, cfg.num_cpus)
    if not store.exists():
        store.create(config_yaml, {"kind": "harden", "config": to_dict(cfg),
                                   "distance_runs": [restart_run_id(cfg, r) for r in range(cfg.distance.restarts)]})
    if work:
        task = ray.remote(num_cpus=1, num_gpus=1 if resources.get("GPU") else 0, max_retries=2)(harden_one)
        refs = {task.remote(cfg, spec, m): f"{spec.id}/{m.name}" for spec, m in work}
        while refs:
            done, _ = ray.wait(list(refs), num_returns=1)
            name = refs.pop(done[0])
            ray.get(done[0])
            log(f"  hardened {name} ({len(work) - len(refs)}/{len(work)})")
    rows = read_rows(store)
    hardened = {(r.model_id, r.method): r.weights for r in rows.itertuples() if r.method != "natural"}
    measure(cfg, hardened, log)
    return store


def read_rows(store: RunStore) -> pd.DataFrame:
    """Every finished (model, method) row of a harden run."""
    sel = pafs.FileSelector(f"{store.run_dir}/{ROWS}", recursive=True, allow_not_found=True)
    files = sorted(i.path for i in store.fs.get_file_info(sel)
                   if i.type == pafs.FileType.File and not i.base_name.startswith("."))
    frames = [pq.read_table(f, filesystem=store.fs).to_pandas() for f in files]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
