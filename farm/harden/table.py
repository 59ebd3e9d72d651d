"""Table 7 analogue: accuracy, time, mean class distance and Eq 12 improvement per hardening.

One row per (model, hardening method): clean accuracy (%), minutes of hardening (natural: the
zoo's training time), mean distance over all K(K-1) pairs by NC (L1 mask) and by ours (pixels),
and Eq 12's relative improvement over the natural model (%), by each measure.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from farm.harden.distance import distance_matrix, measured_id
from farm.metrics import relative_improvement

ORDER = ["natural", "uap", "nc", "iterative_nc", "ours"]
COLUMNS = ["dataset", "model", "method", "accuracy", "minutes", "adv_nc", "inc_nc", "adv_ours", "inc_ours"]

# Tao et al. Table 7 (METHODS.md §3): Acc %, Time min, Adv_NC, Inc_NC %, Adv_Ours, Inc_Ours %.
_PAPER = {
    ("CIFAR-10", "ResNet20"): "91.52 56.77 53.49 - 43.91 - | 90.04 243.11 96.00 81.57 61.62 42.91 | 90.83 84.88 72.56 "
                              "37.84 62.77 49.56 | 90.57 65.00 93.54 78.16 89.24 112.12 | 90.32 64.11 95.17 79.21 100.72 139.77",
    ("CIFAR-10", "NiN"): "88.09 68.30 60.67 - 38.17 - | 86.61 196.67 57.56 -5.22 36.92 -2.05 | 86.64 40.35 75.49 26.49 "
                         "52.20 42.89 | 86.76 33.90 90.69 54.09 66.69 87.75 | 86.32 28.46 93.77 59.08 74.31 108.59",
    ("SVHN", "NiN"): "95.61 10.50 64.63 - 37.17 - | 94.63 45.47 69.31 6.99 41.56 12.37 | 94.89 24.72 82.90 32.19 53.16 "
                     "48.96 | 95.03 53.40 107.15 65.97 67.53 88.99 | 94.86 42.71 108.43 68.47 71.18 99.86",
    ("SVHN", "ResNet32"): "95.15 26.70 55.11 - 32.83 - | 93.16 228.95 49.40 -8.86 23.69 -27.08 | 93.45 31.51 75.77 "
                          "39.10 45.57 39.69 | 94.60 109.30 120.20 113.92 76.20 128.26 | 94.18 97.55 122.79 121.07 "
                          "83.24 152.02",
    ("LISA", "CNN"): "97.30 0.15 68.47 - 32.92 - | 95.60 1.79 65.90 -1.23 32.31 -0.43 | 96.88 8.27 71.69 4.58 35.09 "
                     "6.70 | 96.45 11.34 101.48 46.13 53.38 60.36 | 96.02 10.41 107.34 54.34 56.83 70.11",
    ("LISA", "ResNet20"): "98.86 1.70 72.05 - 43.62 - | 96.16 6.33 97.11 36.32 56.77 30.77 | 99.29 34.34 75.51 4.67 "
                          "45.21 3.96 | 98.30 25.37 113.35 53.38 72.18 60.74 | 98.30 27.03 115.63 55.96 75.58 67.86",
}


def _paper() -> pd.DataFrame:
    rows = []
    for (dataset, model), text in _PAPER.items():
        for method, cells in zip(ORDER, text.split("|")):
            values = [math.nan if c == "-" else float(c) for c in cells.split()]
            rows.append({"dataset": dataset, "model": model, "method": method, **dict(zip(COLUMNS[3:], values))})
    return pd.DataFrame(rows, columns=COLUMNS)


PAPER_TABLE7 = _paper()


def _matrix(dist: pd.DataFrame, model_id: str, method: str, measure: str, num_classes: int) -> np.ndarray:
    sel = dist[(dist["model_id"] == measured_id(model_id, method)) & (dist["measure"] == measure)]
    return distance_matrix(sel, num_classes)


def table7(rows: pd.DataFrame, dist: pd.DataFrame) -> pd.DataFrame:
    """``rows``: the harden rows (model_id, dataset, arch, num_classes, method, accuracy, seconds);
    ``dist``: :func:`farm.harden.distance.distances`. Improvements are NaN for natural."""
    out = []
    for _, r in rows.iterrows():
        entry = {"dataset": r["dataset"], "model": f"{r['model_id']} ({r['arch']})", "method": r["method"],
                 "accuracy": 100 * r["accuracy"], "minutes": r["seconds"] / 60}
        k = int(r["num_classes"])
        for measure in ("nc", "ours"):
            mine = _matrix(dist, r["model_id"], r["method"], measure, k)
            entry[f"adv_{measure}"] = float(np.nanmean(mine)) if np.isfinite(mine).any() else math.nan
            entry[f"inc_{measure}"] = (math.nan if r["method"] == "natural" else
                                       100 * relative_improvement(_matrix(dist, r["model_id"], "natural", measure, k),
                                                                  mine))
        out.append(entry)
    order = {m: i for i, m in enumerate(ORDER)}
    table = pd.DataFrame(out, columns=COLUMNS)
    return table.sort_values(["dataset", "model", "method"], key=lambda c: c.map(order) if c.name == "method" else c,
                             ignore_index=True)
