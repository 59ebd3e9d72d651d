"""Table 8 analogue: detection quality and cost per scanner, split by attack type.

ROC-AUC ranks models by the scanner's score (K-Arm: a SMALLER trigger is more suspicious, so
the score is negated; MAD: a larger anomaly index is). TPR at 5% FPR uses the same ranking
with the threshold set on the clean models, so it is comparable across scanners whose
decision rules differ.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

# Tao et al. Table 8 (TrojAI rounds 2-4; accuracy %, seconds per model), METHODS.md §3 [S-L.2].
PAPER_TABLE8 = pd.DataFrame([
    {"method": "ABS", "R2 acc": 62, "R2 s": "1527", "R3 acc": 71, "R3 s": "1435", "R4 acc": 79, "R4 s": "525"},
    {"method": "TABOR", "R2 acc": 55, "R2 s": ">32000", "R3 acc": 60, "R3 s": ">30000", "R4 acc": 60,
     "R4 s": ">35000"},
    {"method": "DLTND", "R2 acc": 60, "R2 s": ">26000", "R3 acc": 65, "R3 s": ">29000", "R4 acc": 65,
     "R4 s": ">31000"},
    {"method": "K-Arm (NC core)", "R2 acc": 85, "R2 s": "210", "R3 acc": 91, "R3 s": "183", "R4 acc": 87,
     "R4 s": "292"},
    {"method": "K-Arm (ours core)", "R2 acc": 85, "R2 s": "231", "R3 acc": 92, "R3 s": "198", "R4 acc": 89,
     "R4 s": "320"},
])


def suspicion(rows: pd.DataFrame) -> np.ndarray:
    """Higher = more likely trojaned; missing scores (nothing inverted) are least suspicious."""
    s = rows["score"].astype(float).to_numpy()
    s = np.where(rows["kind"].to_numpy() == "karm", -s, s)
    return np.nan_to_num(s, nan=-np.inf, posinf=np.inf, neginf=-np.inf)


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Probability that a random poisoned model outranks a random clean one (ties count 1/2)."""
    pos, neg = scores[positive], scores[~positive]
    if len(pos) == 0 or len(neg) == 0:
        return math.nan
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def tpr_at_fpr(scores: np.ndarray, positive: np.ndarray, fpr: float = 0.05) -> float:
    """Share of poisoned models above the score that at most ``fpr`` of clean models exceed."""
    pos, neg = scores[positive], np.sort(scores[~positive])[::-1]
    if len(pos) == 0 or len(neg) == 0:
        return math.nan
    allowed = int(math.floor(fpr * len(neg)))  # clean models allowed above the threshold
    thr = neg[allowed] if allowed < len(neg) else -np.inf
    return float((pos > thr).mean())


def table8(models: pd.DataFrame) -> pd.DataFrame:
    """One row per (scanner, attack type): clean models are shared by every attack type.

    Accuracy and TPR in percent, as the paper's Table 8 and every other farm table report
    rates; ROC-AUC stays a probability in [0, 1], as it is conventionally read. Models whose
    ground truth is unknown (a round folder without ground_truth.csv) are left out."""
    out = []
    known = models[models["poisoned"].notna()].astype({"poisoned": bool})
    for scanner, rows in known.groupby("scanner", sort=True):
        clean = rows[~rows["poisoned"]]
        for attack in ["all", *sorted(rows.loc[rows["poisoned"], "attack"].unique())]:
            sub = rows if attack == "all" else pd.concat([clean, rows[rows["attack"] == attack]])
            positive = sub["poisoned"].to_numpy(bool)
            scores = suspicion(sub)
            out.append({"scanner": scanner, "attack": attack, "models": len(sub),
                        "accuracy_pct": 100 * float((sub["decision"].to_numpy(bool) == positive).mean()),
                        "roc_auc": roc_auc(scores, positive),
                        "tpr_pct@5%fpr": 100 * tpr_at_fpr(scores, positive),
                        "median_s_per_model": float(sub["seconds"].median())})
    return pd.DataFrame(out)
