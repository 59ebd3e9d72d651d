"""``farm compare``: do two runs agree, pair by pair?

Results are bit-identical only on the same machine, thread count and pairs-per-batch
(docs/determinism.md). Across machines the question is how far apart two runs are, and
whether any difference changes a verdict (a pair that converged in one run and not in the
other, a status flip). This module joins two runs' rows on the pair key and summarises the
per-pair differences per (model, method, variant). It reads Parquet only: no model is loaded.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from farm.store import RunStore, StoreError

KEY = ["model_id", "method", "variant", "victim", "target"]
JOB = ["model_id", "method", "variant"]
# Compared per pair. Wall time, worker, device and timestamps differ between any two runs
# by nature; run_id/config_hash are reported once, not per pair.
COLUMNS = ["trigger", "trigger_size", "raw_size", "asr", "asr_attack", "steps", "converged", "status"]


def resolve(ref: str, output: str | None) -> RunStore:
    """A run given as RUN_ID (under ``output``, default ``results``) or as the run folder's path."""
    path = Path(ref)
    if output is None and (path / "manifest.json").is_file():
        return RunStore(str(path.resolve().parent), path.resolve().name)
    return RunStore(output or "results", ref)


@dataclass
class Comparison:
    """Rows of two runs joined on the pair key, with one summary row per job."""

    a: RunStore
    b: RunStore
    joined: pd.DataFrame  # pairs present in both, with ``_a``/``_b`` columns and diff flags
    only_a: pd.DataFrame  # pair keys present only in run A
    only_b: pd.DataFrame
    same_config: bool

    @property
    def identical(self) -> bool:
        """Same pairs, and every compared field of every pair equal (triggers byte for byte)."""
        return self.only_a.empty and self.only_b.empty and not self.joined["differs"].any()

    def summary(self) -> pd.DataFrame:
        """Per job: pairs compared, identical triggers, pairs whose size/ASR/verdict differ and
        the largest differences, so a reader sees at once whether a difference matters."""
        j = self.joined
        if j.empty:
            return pd.DataFrame(columns=JOB + ["pairs", "identical_triggers", "size_differs", "max_abs_dsize",
                                               "max_abs_dasr_pct", "converged_flips", "status_flips"])
        g = j.groupby(JOB, sort=True)
        out = pd.DataFrame({
            "pairs": g.size(),
            "identical_triggers": g["same_trigger"].sum(),
            "size_differs": g["size_differs"].sum(),
            "max_abs_dsize": g["dsize"].max(),
            "max_abs_dasr_pct": 100 * g["dasr"].max(),  # percentage points, like every ASR shown
            "converged_flips": g["converged_flip"].sum(),
            "status_flips": g["status_flip"].sum(),
        }).reset_index()
        return out

    def report(self) -> str:
        """Human-readable verdict and summary table."""
        lines = [f"A: {self.a.run_dir}", f"B: {self.b.run_dir}"]
        if not self.same_config:
            lines.append("note: the runs have different config hashes (different settings, not just another "
                         "machine); differences below may be intended")
        lines.append(f"pairs in both: {len(self.joined)}, only in A: {len(self.only_a)}, only in B: {len(self.only_b)}")
        if self.identical:
            lines.append("verdict: IDENTICAL (every pair's trigger, size, ASR, steps and status are equal)")
        else:
            verdict_flips = int(self.joined["converged_flip"].sum() + self.joined["status_flip"].sum())
            lines.append(f"verdict: DIFFERENT ({int(self.joined['differs'].sum())} pairs differ, "
                         f"{verdict_flips} with a converged/status flip)")
        lines.append("")
        lines.append(self.summary().to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        return "\n".join(lines)


def _nan_equal(x: pd.Series, y: pd.Series) -> pd.Series:
    return (x == y) | (x.isna() & y.isna())


def compare(a: RunStore, b: RunStore) -> Comparison:
    """Join the two runs' pair rows and flag every per-pair difference."""
    for store in (a, b):
        if not store.exists():
            raise StoreError(f"run {store.run_id!r}: no manifest.json under {store.run_dir}; is the run id and "
                             f"output folder right?")
    cols = KEY + COLUMNS
    ra, rb = a.read(columns=cols), b.read(columns=cols)
    merged = ra.merge(rb, on=KEY, how="outer", suffixes=("_a", "_b"), indicator=True)
    only_a = merged.loc[merged["_merge"] == "left_only", KEY].reset_index(drop=True)
    only_b = merged.loc[merged["_merge"] == "right_only", KEY].reset_index(drop=True)
    j = merged[merged["_merge"] == "both"].drop(columns="_merge").reset_index(drop=True)
    j["same_trigger"] = [bytes(x) == bytes(y) for x, y in zip(j["trigger_a"], j["trigger_b"])]
    j["size_differs"] = ~_nan_equal(j["trigger_size_a"], j["trigger_size_b"])
    j["dsize"] = (j["raw_size_a"] - j["raw_size_b"]).abs()
    j["dasr"] = (j["asr_a"] - j["asr_b"]).abs()
    j["converged_flip"] = j["converged_a"] != j["converged_b"]
    j["status_flip"] = j["status_a"] != j["status_b"]
    equal = j["same_trigger"].astype(bool)
    for c in ("trigger_size", "raw_size", "asr", "asr_attack", "steps"):
        equal = equal & _nan_equal(j[f"{c}_a"], j[f"{c}_b"])
    j["differs"] = ~equal | j["converged_flip"] | j["status_flip"]
    same_config = a.manifest().get("config_hash") == b.manifest().get("config_hash")
    return Comparison(a, b, j, only_a, only_b, bool(same_config))

