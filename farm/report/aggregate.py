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


# Stop reasons of rows that ended by the method's own rule with a trigger meeting its ASR bound:
# the only rows whose sizes are averaged. "cap" rows (a safety cap stopped a method that was
# still improving) are shown apart, "failed" rows have no result, "budget" rows no valid size.
FINAL = ("converged", "early_stop")


def ok_rows(g: pd.DataFrame) -> pd.DataFrame:
    """Pair rows (not universal scans) with a result, capped or not."""
    p = g[g["victim"] >= 0]
    return p[p["status"] == "ok"]


def uncapped(g: pd.DataFrame) -> pd.DataFrame:
    """Rows with a result that no cap cut short: what ASR and time averages may use."""
    return g[(g["status"] == "ok") & (g["stop_reason"] != "cap")]


def capped(g: pd.DataFrame) -> pd.DataFrame:
    return g[(g["status"] == "ok") & (g["stop_reason"] == "cap")]


def mean_of(s: pd.Series) -> float:
    """Mean of the non-missing values (NaN when there are none, without a warning)."""
    s = s.dropna()
    return float(s.mean()) if len(s) else math.nan


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, method, variant): pair counts by stop reason, mean size/ASR, time.

    Sizes average over converged (and early-stopped) pairs only: an unconverged pair has no
    valid trigger size and a capped pair's size is the cap's. ASR and time average over the
    uncapped pairs with a result. Capped pairs get their own columns, so nothing is averaged
    in silently. ASR is in percent, as in every aggregate farm prints, logs or tabulates
    (docs/architecture.md, "Units"); the per-pair ``asr`` column is the evaluation's fraction.
    """
    rows = []
    pair_rows = df[df["victim"] >= 0] if len(df) else df
    for key, g in pair_rows.groupby(JOB, sort=True):
        final, cap, rest = g[g["stop_reason"].isin(FINAL)], capped(g), uncapped(g)
        rows.append({
            "model_id": key[0], "method": key[1], "variant": key[2],
            "pairs": len(g), "ok": int((g["status"] == "ok").sum()), "failed": int((g["status"] != "ok").sum()),
            "converged": len(final), "early_stop": int((g["stop_reason"] == "early_stop").sum()),
            "capped": len(cap), "budget": int((g["stop_reason"] == "budget").sum()),
            "mean_size": mean_of(final["trigger_size"]),
            "median_size": float(final["trigger_size"].median()) if len(final) else math.nan,
            "mean_asr_pct": 100 * mean_of(rest["asr"]), "s_per_pair": mean_of(rest["wall_s"]),
            "eval_share_pct": eval_share_pct(g),
            "capped_mean_size": mean_of(cap["raw_size"]), "capped_mean_asr_pct": 100 * mean_of(cap["asr"]),
        })
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


SUMMARY_COLUMNS = ["model_id", "method", "variant", "pairs", "ok", "failed", "converged", "early_stop", "capped",
                   "budget", "mean_size", "median_size", "mean_asr_pct", "s_per_pair", "eval_share_pct",
                   "capped_mean_size", "capped_mean_asr_pct"]


def eval_share_pct(g: pd.DataFrame) -> float:
    """Evaluation's share of the pairs' compute time (optimisation + held-out and robustness
    evaluation), in percent; NaN for rows written before ``eval_wall_s`` was stored."""
    if "eval_wall_s" not in g:
        return math.nan
    both = g[["wall_s", "eval_wall_s"]].dropna()
    total = float(both["wall_s"].sum() + both["eval_wall_s"].sum())
    return 100 * float(both["eval_wall_s"].sum()) / total if total > 0 else math.nan


def pair_matrix(g: pd.DataFrame, column: str, k: int) -> np.ndarray:
    """K×K matrix (row victim, column target) of one job's pair rows; NaN where missing."""
    mat = np.full((k, k), np.nan)
    pairs = g[g["victim"] >= 0]
    mat[pairs["victim"].to_numpy(int), pairs["target"].to_numpy(int)] = pairs[column].to_numpy(float)
    return mat


def label_sizes(g: pd.DataFrame, method: str, k: int, source: str) -> np.ndarray:
    """Per-target trigger size for MAD (METHODS.md §2(g), §5.15).

    ``universal``: the (any -> t) trigger of each label; ``pair-min``: s_t = min_v s(v -> t)
    over the all-pairs rows. The size column is the method's own (``MethodInfo.mad_size``:
    NC's is the L1 norm of its mask, every other method's the pixel count).
    """
    from farm.methods import method_info  # torch: only when a table asks for MAD

    column = method_info(method).mad_size
    ok = uncapped(g)  # a capped size is the cap's, not the label's
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
