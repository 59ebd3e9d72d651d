"""Build every missing zoo model of a run, in parallel as Ray tasks where Ray is up.

Training happens once per zoo key (the hash of what determines the weights), so two config
entries that differ only in their id share one model, and a second run reuses the cache.
Tasks write into the zoo folder themselves: on a multi-node cluster ``run.zoo_dir`` must be
shared storage (docs/cluster.md); locally it is just a folder.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from farm.config import DatasetSpec, ModelSpec
from farm.models.zoo import ZooEntry, ensure_model, write_manifest, zoo_key

Items = list[tuple[ModelSpec, DatasetSpec]]
Trainer = Callable[[Items, Path, Callable[[str], None]], None]


def is_cached(spec: ModelSpec, dataset: DatasetSpec, zoo_dir: Path) -> bool:
    return (zoo_dir / zoo_key(spec, dataset) / "meta.json").is_file()


def ensure_models(items: Items, zoo_dir: Path, log: Callable[[str], None],
                  parallel: Trainer | None = None, device: str = "cpu") -> dict[str, ZooEntry]:
    """ZooEntry per model id; trains what is missing (``parallel`` trains several at once,
    else one after another on ``device``)."""
    missing: dict[str, tuple[ModelSpec, DatasetSpec]] = {}
    for spec, ds in items:
        if not is_cached(spec, ds, zoo_dir):
            missing.setdefault(zoo_key(spec, ds), (spec, ds))
    if parallel is not None and len(missing) > 1:
        log(f"zoo: training {len(missing)} model(s) in parallel into {zoo_dir}")
        parallel(list(missing.values()), zoo_dir, log)
    entries = {spec.id: ensure_model(spec, ds, zoo_dir, log, device) for spec, ds in items}
    write_manifest(zoo_dir)  # clean accuracy and ASR of every cached model, for humans and tables
    return entries


def ray_trainer(cpus: float) -> Trainer:
    """A :data:`Trainer` that runs one Ray task per model, each with ``cpus`` CPUs."""

    def train(items: Items, zoo_dir: Path, log: Callable[[str], None]) -> None:
        import ray

        @ray.remote(num_cpus=cpus, max_retries=1)
        def _train(spec: ModelSpec, ds: DatasetSpec, folder: str, threads: int) -> str:
            import torch

            torch.set_num_threads(threads)
            entry = ensure_model(spec, ds, Path(folder), lambda msg: print(f"[{spec.id}] {msg}", flush=True))
            return entry.key

        threads = max(1, int(cpus))
        ray.get([_train.remote(spec, ds, str(zoo_dir), threads) for spec, ds in items])

    return train
