"""K-Arm decision bounds tuned on held-out models (METHODS.md §5.16).

[KA]'s bounds (L1 1720 global / 1000 pair on 224x224) were set for NC's mask L1 on TrojAI
images; ours measures a trigger in pixels and other data sets have other trigger scales, so
the bounds must be re-tuned on models that the evaluation does not use. A model's decision
uses the bound of its chosen arm's type (global: all-to-one, pair: label-specific), so the two
bounds separate: each is set independently to the threshold that decides the most held-out
models of its arm type correctly. Among equally good thresholds the one in the widest gap
between neighbouring scores wins, taken as the geometric midpoint (sizes are shares of the area
spanning decades, so a ratio is the natural margin). An arm type whose held-out models are all
poisoned (or all clean) does not place its threshold (anything past one end decides them all):
its bound is kept. Models without ground truth (a round folder without it) are not used.

Caveat, stated with the result: K-Arm also STOPS once an arm is below its bound, so the
held-out scores were produced under the old bounds; a lower bound lets a scan run longer and
find smaller triggers. Apply the tuned bounds to a fresh scan of other models to measure them.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from farm.scan.karm import GLOBAL_BOUND, PAIR_BOUND

ARM_TYPES = {"global": GLOBAL_BOUND, "pair": PAIR_BOUND}


def best_threshold(scores: np.ndarray, poisoned: np.ndarray) -> tuple[float, int, float]:
    """(threshold, models decided right by ``score < threshold``, margin as a ratio >= 1).

    Candidates: below every score, between each pair of neighbouring distinct scores
    (geometric midpoint) and above every score (capped at the whole image, 1.0)."""
    finite = np.isfinite(scores)
    distinct = np.unique(scores[finite & (scores > 0)])
    if len(distinct) == 0:  # no finite score: nothing is ever below a bound
        return 1.0, int((~poisoned).sum()), 1.0
    edges = [(distinct[0] / 2, 2.0)]
    edges += [(math.sqrt(a * b), b / a) for a, b in zip(distinct[:-1], distinct[1:])]
    edges.append((min(1.0, distinct[-1] * 2), 2.0))
    best = None
    for thr, gap in edges:
        right = int(((scores < thr) == poisoned).sum())  # NaN/inf scores never fall below
        key = (right, gap)
        if best is None or key > best[0]:
            best = (key, thr)
    assert best is not None
    (right, gap), thr = best
    return float(thr), right, float(gap)


def tune_bounds(models: pd.DataFrame) -> pd.DataFrame:
    """One row per K-Arm scanner and arm type of a scan run's model rows: the tuned bound,
    the models of that arm type it decides right, and the current bound's count beside it."""
    rows = []
    known = models[(models["kind"] == "karm") & models["poisoned"].notna()]
    for scanner, sub in known.groupby("scanner", sort=True):
        arm_type = np.where(sub["arm_victim"].isna(), "global", "pair")
        scores = sub["score"].astype(float).to_numpy()
        poisoned = sub["poisoned"].to_numpy(bool)
        current = sub["threshold"].astype(float) if "threshold" in sub else pd.Series(np.nan, index=sub.index)
        for name, default in ARM_TYPES.items():
            sel = arm_type == name
            old = current[sel].dropna().unique()
            old_bound = float(old[0]) if len(old) == 1 else default
            old_right = int(((scores[sel] < old_bound) == poisoned[sel]).sum())
            base = {"scanner": scanner, "arm_type": name, "models": int(sel.sum()), "poisoned": int(poisoned[sel].sum()),
                    "old_bound": old_bound, "old_right": old_right}
            if poisoned[sel].all() or not poisoned[sel].any():  # no model, or one class: nothing places it
                note = "one class only: not identified, kept" if sel.any() else "no model chose this arm type: kept"
                rows.append({**base, "bound": old_bound, "right": old_right, "margin_ratio": math.nan, "note": note})
                continue
            thr, right, gap = best_threshold(scores[sel], poisoned[sel])
            rows.append({**base, "bound": thr, "right": right, "margin_ratio": gap, "note": ""})
    return pd.DataFrame(rows)


def bounds_yaml(tuned: pd.DataFrame) -> str:
    """The ``scanners:`` entries that carry the tuned bounds, to paste into a scan config."""
    lines = ["scanners:  # K-Arm bounds tuned by `farm tune-bounds` (keep your MAD scanners and params)"]
    for scanner, sub in tuned.groupby("scanner", sort=True):
        core = scanner.split("-", 1)[1]
        b = dict(zip(sub["arm_type"], sub["bound"]))
        lines.append(f"  - {{kind: karm, core: {core}, global_bound: {b['global']:.6g}, pair_bound: {b['pair']:.6g}}}")
    return "\n".join(lines) + "\n"
