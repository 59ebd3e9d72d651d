"""The files a config names, checked before anything starts.

A valid config whose checkpoint or dataset root is missing used to pass ``farm validate``
and fail ``farm run`` only after Ray had started (~25 s). Both commands now check the files
first and report every missing one at once. ``farm validate --no-check-files`` skips this
for configs whose paths exist only on the cluster's nodes (``farm run`` itself always
checks: the driver loads checkpoints and datasets before any pair runs).
"""
from __future__ import annotations

from pathlib import Path

from farm.config import Config


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
    for key, d in sorted(cfg.datasets.items()):
        if d.root and _local(d.root) and not d.download and not Path(d.root).expanduser().is_dir():
            out.append(f"datasets.{key}.root: {d.root} is not a folder; fix the path, or set download: true "
                       "where the dataset can be fetched")
    return out
