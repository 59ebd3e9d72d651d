"""Harden tables: the Table 7 analogue beside the paper's Table 7, as Markdown/CSV, logged to
MLflow like every ``farm tables`` output. Reads Parquet only (no model is loaded)."""
from __future__ import annotations

from pathlib import Path

from farm.harden.distance import distances
from farm.harden.run import read_rows
from farm.harden.table import PAPER_TABLE7, table7
from farm.report.files import write_frames
from farm.store import RunStore


def write_harden_tables(store: RunStore, out_dir: str | None = None, log_mlflow: bool = True) -> Path:
    rows = read_rows(store)
    if rows.empty:
        raise ValueError(f"harden run {store.run_id!r} has no finished hardening yet; run `farm harden` first")
    dist = distances(store.output, store.manifest()["distance_runs"])
    frames = {"table7": table7(rows, dist), "table7_paper": PAPER_TABLE7}
    folder = write_frames(Path(out_dir or f"{store.run_dir}/tables"), frames, floatfmt=".2f")
    if log_mlflow:
        from farm.mlflow_run import log_paper_tables

        log_paper_tables(store.run_id, store.root, folder, frames)
    return folder
