"""Scan tables: the Table 8 analogue beside the paper's Table 8, and the per-model decisions,
written as Markdown/CSV and logged to the run's MLflow parent run."""
from __future__ import annotations

from pathlib import Path

from farm.scan.run import read_scan
from farm.scan.table import PAPER_TABLE8, table8
from farm.report.files import write_frames
from farm.store import RunStore

DECISION_COLUMNS = ["model_id", "scanner", "arch", "attack", "poisoned", "true_target", "true_victim",
                    "decision", "score", "arm_victim", "arm_target", "rounds", "seconds"]


def write_scan_tables(store: RunStore, out_dir: str | None = None, log_mlflow: bool = True) -> Path:
    models = read_scan(store)
    if models.empty:
        raise ValueError(f"scan run {store.run_id!r} has no finished models yet; run `farm scan` first")
    frames = {"table8": table8(models), "table8_paper": PAPER_TABLE8,
              "scan_decisions": models[DECISION_COLUMNS].sort_values(["scanner", "model_id"])}
    folder = write_frames(Path(out_dir or f"{store.run_dir}/tables"), frames, floatfmt=".3f")
    if log_mlflow:
        from farm.mlflow_run import log_paper_tables

        log_paper_tables(store.run_id, store.root, folder, frames)
    return folder
