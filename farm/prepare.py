"""Everything a run needs before any pair runs: datasets loaded, zoo models trained or reused,
checkpoints loaded and checked, and each victim's attack / held-out images chosen.

Shared by ``farm run``, ``farm bench``, ``farm tables`` (alignment) and ``farm zoo``; it
knows nothing of Ray, so it runs on machines without it (``parallel_train`` brings Ray in).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from farm.config import Config, ModelSpec, PairsSpec
from farm.data import load_dataset
from farm.data.base import Dataset
from farm.data.selection import attack_indices, gather, heldout_indices
from farm.errors import ConfigError
from farm.grid import ANY, Pair
from farm.store import filesystem
from farm.threads import config_threads
from farm.worker import ModelPayload, PairImages, image_key, payload_from_module

Log = Callable[[str], None]


@dataclass
class PreparedModel:
    spec: ModelSpec
    dataset: Dataset
    payload: ModelPayload
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return self.dataset.num_classes


def zoo_dir(cfg: Config) -> Path:
    if cfg.run.zoo_dir:
        return Path(cfg.run.zoo_dir)
    fs, root = filesystem(cfg.run.output)
    if fs.type_name != "local":
        raise ConfigError(["run.zoo_dir: required when run.output is not a local folder"])
    return Path(root) / "zoo"


def model_info(spec: ModelSpec, ds_name: str, meta: dict[str, Any]) -> dict[str, Any]:
    """Ground-truth columns of every row of this model."""
    attack = meta.get("attack", {}).get("type", spec.attack.type) if spec.source == "zoo" else spec.attack.type
    poisoned = attack != "none"
    gt_victim = spec.attack.victim if spec.attack.type == "label_specific" else (ANY if poisoned else None)
    return {"dataset": ds_name, "arch": spec.arch, "model_kind": "poisoned" if poisoned else "clean",
            "attack": attack, "gt_victim": gt_victim, "gt_target": spec.attack.target if poisoned else None}


def prepare_models(cfg: Config, log_fn: Log, parallel_train: Callable | None = None,
                   train_device: str = "cpu") -> dict[str, PreparedModel]:
    """Load datasets, train (or reuse) zoo models (several at once with ``parallel_train``, else
    in turn on ``train_device``, on a CPU with ``cluster.cpus_per_actor`` threads like a Ray
    training task) and load checkpoints, before any pair runs.

    Checkpoints are loaded here, on the driver, so that a corrupt file or a class-count
    mismatch fails the run at once with a clear message instead of inside every actor.
    """
    from farm.models.loading import load_checkpoint
    from farm.models.zoo_jobs import ensure_models

    datasets = {name: load_dataset(cfg.datasets[name]) for name in {m.dataset for m in cfg.models}}
    zoo_specs = [m for m in cfg.models if m.source == "zoo"]
    entries = ensure_models([(m, cfg.datasets[m.dataset]) for m in zoo_specs], zoo_dir(cfg), log_fn,
                            parallel=parallel_train, device=train_device,
                            threads=config_threads(cfg.cluster.cpus_per_actor)) if zoo_specs else {}
    out = {}
    for spec in cfg.models:
        ds = datasets[spec.dataset]
        if spec.source == "zoo":
            entry = entries[spec.id]
            path, fmt, meta = entry.path, "state_dict", entry.meta
        else:
            path, fmt, meta = Path(spec.checkpoint or ""), spec.format, {}
        model = load_checkpoint(path, fmt, spec.arch, ds.num_classes, ds.image_shape, ds.mean, ds.std,
                                trust_code=spec.trust_code)
        info = model_info(spec, cfg.datasets[spec.dataset].name, meta)
        if spec.source == "checkpoint" and spec.format == "trojai":
            from farm.models.trojai import ground_truth

            info |= ground_truth(path)  # the folder's ground_truth.csv / config.json, where present
        payload = payload_from_module(spec.id, spec.arch, model, ds.num_classes, ds.image_shape,
                                      tuple(ds.mean), tuple(ds.std), info)
        out[spec.id] = PreparedModel(spec, ds, payload, meta)
    return out


def pair_images(ds: Dataset, pairs: list[Pair], spec: PairsSpec, seed: int, log_fn: Log,
                record: dict[str, dict[str, list[int]]] | None = None) -> PairImages:
    """Attack and held-out images for every image key the pairs use (one set per victim).

    ``record`` (if given) receives {image_key: {"attack": [...], "heldout": [...]}}: the split
    indices used, so a run documents exactly which images each pair saw."""
    attack, heldout, labels, chosen = {}, {}, {}, {}
    test_labels = ds.labels("test")
    for pair in pairs:
        key = image_key(pair)
        if key in attack:
            continue
        victim = None if pair.victim == ANY else pair.victim
        a_idx = attack_indices(ds, victim, pair.target, spec.victim_images, seed)
        h_idx = heldout_indices(ds, victim, pair.target, spec.heldout_images, seed)
        chosen[key] = (a_idx, h_idx)
        attack[key] = gather(ds, "train", a_idx)
        heldout[key] = gather(ds, "test", h_idx)
        labels[key] = torch.as_tensor(test_labels[h_idx], dtype=torch.long)
    n = min(a.shape[0] for a in attack.values())
    if n < spec.victim_images:
        log_fn(f"warning: only {n} attack images available for some class; using N={n} for every pair")
        attack = {k: a[:n] for k, a in attack.items()}
    if record is not None:
        record.update({k: {"attack": [int(i) for i in a[:n]], "heldout": [int(i) for i in h]}
                       for k, (a, h) in chosen.items()})
    return PairImages(attack, heldout, labels)
