"""The files a config names, checked before anything starts (and before any run folder exists).

A valid config whose checkpoint or dataset root is missing used to pass ``farm validate``
and fail ``farm run`` only after Ray had started (~25 s). Both commands now check the files
first and report every missing one at once. ``farm validate --no-check-files`` skips this
for configs whose paths exist only on the cluster's nodes (``farm run`` itself always
checks: the driver loads checkpoints and datasets before any pair runs).
"""
from __future__ import annotations

from pathlib import Path

from farm.config import Config, DatasetSpec


def _local(path: str) -> bool:
    return "://" not in path  # object-store URIs (s3://, gs://) are not checked here


def file_problems(cfg: Config) -> list[str]:
    """One "field: problem and fix" line per missing checkpoint or dataset root."""
    out = []
    for i, m in enumerate(cfg.models):
        if m.source != "checkpoint" or not m.checkpoint or not _local(m.checkpoint):
            continue
        path = Path(m.checkpoint).expanduser()
        if m.format == "trojai" and not path.exists():
            out.append(f"models[{i}].checkpoint: {path} does not exist (a TrojAI model folder or its model.pt)")
        elif m.format != "trojai" and not path.is_file():
            out.append(f"models[{i}].checkpoint: {path} is not a file" +
                       (" (it is a folder; format: trojai reads TrojAI model folders)" if path.is_dir() else ""))
    return out + dataset_root_problems({f"datasets.{key}": d for key, d in cfg.datasets.items()})


def dataset_root_problems(datasets: dict[str, DatasetSpec]) -> list[str]:
    """One "<path>.root: problem and fix" line per dataset (keyed by its path in the config)
    whose local root is not a folder; ``farm run``, ``farm scan`` and ``farm harden`` check
    this before they create a run folder."""
    return [f"{path}.root: {d.root} is not a folder; fix the path, or set download: true where the dataset "
            "can be fetched" for path, d in sorted(datasets.items())
            if d.root and _local(d.root) and not d.download and not Path(d.root).expanduser().is_dir()]
