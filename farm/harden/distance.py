"""Class distances before and after hardening, measured by the farm's own pair grid.

Every restart is one ``farm run`` (same runner, Ray actors, batching, Parquet store, resume and
MLflow logging as any benchmark) over all K(K-1) pairs of the natural model and of every
hardened one, with NC and ours at the distance budget; restarts differ only in the run seed,
which re-draws each pair's initialisation and its N victim images. A pair's distance is the
smallest converged size over restarts [S-L.1]: NC's L1 mask size, ours' pixel count.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from farm.config import Config, config_from_dict
from farm.harden.config import HardenConfig
from farm.schema import to_dict
from farm.store import RunStore

MEASURES = {"nc": "mask_l1", "ours": "trigger_size"}  # column each inverter's distance is read from


def measured_id(model_id: str, method: str) -> str:
    """The distance runs' model id of ``model_id`` hardened by ``method`` ('natural': as trained)."""
    return f"{model_id}.{method}"


def restart_run_id(cfg: HardenConfig, restart: int) -> str:
    return f"{cfg.run_id}-distance-{restart}"


def distance_config(cfg: HardenConfig, hardened: dict[tuple[str, str], str], restart: int) -> Config:
    """The ``farm run`` config of one restart; ``hardened`` maps (model, method) to its weights."""
    d = cfg.distance
    models = []
    for spec in cfg.models:
        models.append({**to_dict(spec), "id": measured_id(spec.id, "natural")})
        for (model_id, method), path in sorted(hardened.items()):
            if model_id == spec.id:
                models.append({"id": measured_id(spec.id, method), "dataset": spec.dataset, "arch": spec.arch,
                               "source": "checkpoint", "checkpoint": path, "format": "state_dict",
                               "attack": to_dict(spec.attack)})
    data = {
        "run": {"name": "harden-distance", "id": restart_run_id(cfg, restart), "seed": cfg.seed + restart,
                "output": cfg.output, "zoo_dir": cfg.zoo_dir},
        "datasets": to_dict(cfg.datasets),
        "models": models,
        "methods": [{"name": m, "params": {"epochs": d.epochs}} for m in MEASURES],
        "pairs": {"mode": "all", "victim_images": d.images, "heldout_images": d.heldout_images},
        "cluster": {"num_cpus": cfg.num_cpus, "pairs_per_batch": d.pairs_per_batch},
        "tracking": to_dict(cfg.tracking),
    }
    return config_from_dict(data, source=f"distance run {restart} of harden {cfg.run_id}")


def measure(cfg: HardenConfig, hardened: dict[tuple[str, str], str], log: Callable[[str], None] = print) -> None:
    """Run (or resume, or skip when complete) every restart's ``farm run``."""
    from farm.runner import execute

    for r in range(cfg.distance.restarts):
        run_cfg = distance_config(cfg, hardened, r)
        exists = RunStore(cfg.output, restart_run_id(cfg, r)).exists()
        execute(run_cfg, resume=run_cfg.run.id if exists else None, log_fn=log)


def distances(output: str, run_ids: list[str]) -> pd.DataFrame:
    """:func:`smallest` over the stored rows of the restarts ``run_ids``."""
    columns = ["model_id", "method", "victim", "target", "converged", *sorted(set(MEASURES.values()))]
    return smallest(pd.concat([RunStore(output, r).read(columns=columns, with_triggers=False) for r in run_ids],
                              ignore_index=True))


def smallest(rows: pd.DataFrame) -> pd.DataFrame:
    """(model_id, measure, victim, target, distance) from pair rows of every restart: the
    smallest converged size of each pair by its measure's column; NaN where no restart
    converged (Eq 12 then skips the pair, a failure never counts as distance 0)."""
    rows = rows[rows["method"].isin(list(MEASURES))]
    size = np.select([rows["method"] == m for m in MEASURES], [rows[c] for c in MEASURES.values()])
    rows = rows.assign(distance=np.where(rows["converged"], size, np.nan)).rename(columns={"method": "measure"})
    return rows.groupby(["model_id", "measure", "victim", "target"], as_index=False)["distance"].min()


def distance_matrix(rows: pd.DataFrame, num_classes: int) -> np.ndarray:
    """K×K matrix of one model and measure (NaN on the diagonal and where unmeasured)."""
    d = np.full((num_classes, num_classes), np.nan)
    d[rows["victim"].to_numpy(int), rows["target"].to_numpy(int)] = rows["distance"].to_numpy(float)
    return d
