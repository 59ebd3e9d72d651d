"""Is a stored run already complete? Light on purpose (no torch, no Ray, no MLflow), so that
``farm run --resume`` of a finished run answers in about a second instead of starting a
cluster or importing the models' stack."""
from __future__ import annotations

import pandas as pd

from farm.store import SCALAR_COLUMNS, RunStore, StoreError

# --set keys that cannot change what a run computes: a resume with only these may take the
# fast path without validating the whole config (others go through the config hash check).
NEUTRAL_OVERRIDES = ("run.output=", "cluster.", "tracking.")


def complete_rows(store: RunStore) -> pd.DataFrame | None:
    """The stored rows (scalar columns) when the manifest says complete and every promised
    pair is readable; None when there is work left (or a shard needs recomputing)."""
    manifest = store.manifest()
    if manifest.get("status") != "complete":
        return None
    try:
        df = store.read(columns=SCALAR_COLUMNS)
    except StoreError:  # a corrupt shard: the full resume moves it aside and recomputes it
        return None
    return df if len(df) == manifest.get("pairs") else None


def finished(output: str, run_id: str, overrides: list[str] | None) -> RunStore | None:
    """The store of run ``run_id`` under ``output`` if it is complete (checked under its lock, so
    a run still being written never counts), else None; only for neutral ``--set`` overrides."""
    if any(not item.startswith(NEUTRAL_OVERRIDES) for item in overrides or []):
        return None
    store = RunStore(output, run_id)
    if not store.exists():
        return None
    lock = store.lock()
    try:
        return store if complete_rows(store) is not None else None
    finally:
        if lock is not None:
            lock.release()
