"""Aggregate stored pair rows: per-job summaries, K×K pair matrices, anomaly indices.

Everything here is a pure function of the Parquet rows, so ``farm tables`` on a copied
results folder reproduces exactly what the run logged.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from farm.metrics import anomaly_index

JOB = ["model_id", "method", "variant"]
# Methods whose MAD size is NC's L1 mask norm ([NC]); every other method uses pixel counts.
L1_SIZE_METHODS = {"nc"}


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, method, variant): pairs, failures, mean size/ASR, seconds per pair.

    Sizes average over converged pairs only (an unconverged pair has no valid trigger size);
    ``converged`` says how many that is, so fewer pairs are never averaged silently.
    """
    rows = []
    pair_rows = df[df["victim"] >= 0] if len(df) else df
    for key, g in pair_rows.groupby(JOB, sort=True):
        ok = g[g["status"] == "ok"]
        rows.append({
            "model_id": key[0], "method": key[1], "variant": key[2],
            "pairs": len(g), "ok": len(ok), "failed": int((g["status"] != "ok").sum()),
            "converged": int(ok["converged"].sum()),
            "mean_size": float(ok["trigger_size"].mean()) if len(ok) else math.nan,
            "median_size": float(ok["trigger_size"].median()) if len(ok) else math.nan,
            "mean_asr": float(ok["asr"].mean()) if len(ok) else math.nan,
            "s_per_pair": float(ok["wall_s"].mean()) if len(ok) else math.nan,
        })
    return pd.DataFrame(rows, columns=["model_id", "method", "variant", "pairs", "ok", "failed", "converged",
                                       "mean_size", "median_size", "mean_asr", "s_per_pair"])


def pair_matrix(g: pd.DataFrame, column: str, k: int) -> np.ndarray:
    """K×K matrix (row victim, column target) of one job's pair rows; NaN where missing."""
    mat = np.full((k, k), np.nan)
    pairs = g[g["victim"] >= 0]
    mat[pairs["victim"].to_numpy(int), pairs["target"].to_numpy(int)] = pairs[column].to_numpy(float)
    return mat


def label_sizes(g: pd.DataFrame, method: str, k: int, source: str) -> np.ndarray:
    """Per-target trigger size for MAD (METHODS.md §2(g), §5.15).

    ``universal``: the (any -> t) trigger of each label; ``pair-min``: s_t = min_v s(v -> t)
    over the all-pairs rows. NC's size is the L1 norm of its mask, every other method's the
    pixel count.
    """
    column = "mask_l1" if method in L1_SIZE_METHODS else "trigger_size"
    ok = g[g["status"] == "ok"]
    rows = ok[ok["victim"] < 0] if source == "universal" else ok[ok["victim"] >= 0]
    sizes = np.full(k, np.nan)
    for t, gt in rows.groupby("target"):
        vals = gt[column].dropna()
        if len(vals):
            sizes[int(t)] = float(vals.min())
    return sizes


def anomaly_table(df: pd.DataFrame, num_classes: dict[str, int]) -> pd.DataFrame:
    """Anomaly index per (model, method, variant, size source) against the ground truth.

    A model is flagged when its index exceeds 2 ([NC]); both size sources are reported
    where the run has the rows for them, so the universal scan can be checked against the
    all-pairs variant.
    """
    rows = []
    for key, g in df.groupby(JOB, sort=True):
        k = num_classes.get(key[0]) or int(max(g["target"].max(), g["victim"].max()) + 1)
        sources = (["universal"] if (g["victim"] < 0).any() else []) + \
            (["pair-min"] if (g["victim"] >= 0).any() else [])
        first = g.iloc[0]
        for source in sources:
            index, flagged = anomaly_index(label_sizes(g, key[1], k, source).tolist())
            rows.append({
                "model_id": key[0], "method": key[1], "variant": key[2], "source": source,
                "anomaly_index": index, "flagged_labels": ",".join(map(str, flagged)),
                "detected": bool(index > 2) if not math.isnan(index) else False,
                "model_kind": first["model_kind"], "gt_target": first["gt_target"],
            })
    return pd.DataFrame(rows, columns=["model_id", "method", "variant", "source", "anomaly_index",
                                       "flagged_labels", "detected", "model_kind", "gt_target"])
