"""Tiny but complete configs for end-to-end runs (seconds, not minutes)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

TINY_DATA = {"name": "synthetic", "params": {"train_per_class": 60, "test_per_class": 12}}


def tiny_config(out: Path, **over: Any) -> dict[str, Any]:
    cfg = {
        "run": {"name": "tiny", "output": str(out), "seed": 0},
        "datasets": {"syn": TINY_DATA},
        "models": [
            {"id": "clean", "dataset": "syn", "arch": "small_cnn", "train": {"epochs": 1}},
            {"id": "poisoned", "dataset": "syn", "arch": "small_cnn", "train": {"epochs": 1},
             "attack": {"type": "badnets", "target": 0}},
        ],
        "methods": [{"name": "ours", "params": {"epochs": 2}}, {"name": "nc", "params": {"epochs": 2}}],
        "pairs": {"mode": "all", "victim_images": 8, "batch_size": 8, "heldout_images": 6},
        "cluster": {"num_cpus": 2, "pairs_per_batch": 30},
        "tracking": {"experiment": "e2e"},
    }
    for key, value in over.items():
        cfg[key] = value
    return cfg


def write_config(path: Path, cfg: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path
