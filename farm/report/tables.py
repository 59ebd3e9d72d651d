"""`farm tables`: the paper's tables and figures, regenerated from a run's Parquet files alone.

Each builder is a small pure function of DataFrames (pair rows, alignment rows) returning a
:class:`~farm.report.render.Table`: this run's numbers, the paper's reference numbers
(:mod:`farm.report.paper`, clearly labelled) and notes that name every missing method or pair,
so a table of an incomplete run says what it lacks instead of averaging over fewer pairs.
Rendering (:mod:`farm.report.render`) and figures (:mod:`farm.report.plots`) are byte-stable,
so the same Parquet input gives identical files on any machine.

The alignment maps need a forward pass: they come from ``<run>/align`` (``farm align``). A
results folder may come from someone else, so by default nothing here loads a model, follows
a stored tracking URI or writes outside the output folder (docs/security.md); only with
``align=True`` (``--align``) does :func:`regenerate` run a missing alignment on Ray first,
otherwise the maps are reported as missing.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from farm.errors import RunError
from farm.methods import METHODS, STOP_REASONS
from farm.metrics import ROBUSTNESS, summarise_sizes
from farm.report import paper
from farm.report.aggregate import (JOB, anomaly_table, capped, mean_of, ok_rows, pair_matrix, summary,
                                   uncapped)
from farm.report.render import Table, to_csv, to_markdown, to_tex



def display(method: str) -> str:
    """A method's label in tables (``MethodInfo.display``); a stored method this farm no longer
    registers keeps its name."""
    return METHODS[method].info.display if method in METHODS else method


def ablations() -> list[str]:
    """Ours and the registered methods that declare themselves its ablations (Table 6)."""
    return [paper.OURS] + [name for name, cls in METHODS.items() if cls.info.ablation_of == paper.OURS]
ROBUST = ["asr", *[f"asr_{k}" for k in ROBUSTNESS]]  # Table 5 column order: normal, r98.., rot1..5
FORMATS = ("md", "csv", "tex")
Log = Callable[[str], None]


@dataclass
class RunData:
    """What every builder may use: pair rows (no trigger blobs), alignment rows and context."""

    df: pd.DataFrame
    align: pd.DataFrame | None
    expected: dict[str, list[tuple[int, int]]]  # model -> pairs the config asked for (victim >= 0)
    methods: list[tuple[str, str]]  # (method, variant) the config asked for
    num_classes: dict[str, int]
    class_names: dict[str, list[str]]
    sampled: bool = False  # pairs were sampled/listed (the large-model pair table applies)
    align_note: str = ""
    notes: list[str] = field(default_factory=list)


# ---- helpers -------------------------------------------------------------------------------
def pairs_of(g: pd.DataFrame) -> pd.DataFrame:
    return g[g["victim"] >= 0]


def missing_pairs(g: pd.DataFrame, expected: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Expected pairs without an ok row in ``g`` (absent or failed)."""
    ok = pairs_of(g)
    have = set(zip(ok[ok["status"] == "ok"]["victim"].astype(int), ok[ok["status"] == "ok"]["target"].astype(int)))
    return [p for p in expected if p not in have]


def _pair_list(pairs: list[tuple[int, int]], limit: int = 8) -> str:
    text = ", ".join(f"{v}->{t}" for v, t in pairs[:limit])
    return text + (f", ... ({len(pairs)} in all)" if len(pairs) > limit else "")


def job_notes(df: pd.DataFrame, data: RunData, methods: list[str] | None = None) -> list[str]:
    """Notes for the jobs a table uses: methods without rows, incomplete jobs, capped pairs,
    budgets shortened below METHODS.md, and the ASR bound behind each method's `converged`."""
    notes = []
    wanted = methods if methods is not None else sorted({m for m, _ in data.methods})
    present = set(df["method"]) if len(df) else set()
    absent = [m for m in wanted if m not in present]
    if absent:
        notes.append(f"missing methods (no rows in this run): {', '.join(absent)}")
    used = df[df["method"].isin(wanted)] if len(df) else df
    for key, g in used.groupby(JOB, sort=True):
        miss = missing_pairs(g, data.expected.get(key[0], []))
        if miss:
            notes.append(f"{'/'.join(key)}: {len(miss)} of {len(data.expected[key[0]])} pairs missing or failed "
                         f"({_pair_list(miss)}); its averages cover the other pairs only")
        cap = pairs_of(capped(g))
        if len(cap):
            notes.append(f"{'/'.join(key)}: {len(cap)} of {len(pairs_of(g))} pairs stopped by a cap "
                         f"({_caps(key[1], g)}): their size is the cap's, not a converged one; shown apart "
                         f"(capped columns) and left out of every average")
    return notes + run_settings_notes(used)


BUDGET_KEYS = ("epochs", "max_iterations", "max_rounds")


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        out |= _flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v}
    return out


def _params(g: pd.DataFrame) -> dict[str, Any]:
    """A job's hyper-parameters as flat dotted keys (NC Prune's halves: ``nc.epochs``)."""
    return _flat(json.loads(g["params_json"].iloc[0])) if len(g) and g["params_json"].iloc[0] else {}


def _caps(method: str, g: pd.DataFrame) -> str:
    params = _params(g)
    caps = getattr(METHODS.get(method), "caps", ())
    return ", ".join(f"{c}={params.get(c)}" for c in caps) or "a cap"


def run_settings_notes(df: pd.DataFrame) -> list[str]:
    """Per method: the ASR bound its `converged` flag used, every budget (epochs, iterations,
    rounds) below its METHODS.md default and any opt-in early stop, so shortened runs are never
    mistaken for the paper's settings."""
    if not len(df):
        return []
    bounds, short, early = [], [], []
    for method, g in df.groupby("method", sort=True):
        params = _params(g)
        defaults = _flat(asdict(METHODS[method].Params())) if method in METHODS else {}
        b = [f"{100 * v:g}%" for k, v in params.items() if k.split(".")[-1] == "asr_threshold"]
        if b:
            bounds.append(f"{method} {'/'.join(dict.fromkeys(b))}")
        cut = [f"{k}={v} ({defaults[k]})" for k, v in params.items()
               if k.split(".")[-1] in BUDGET_KEYS and k in defaults and v < defaults[k]]
        if cut:
            short.append(f"{method}: {', '.join(cut)}")
        on = [f"{k}={v}" for k, v in params.items() if k.split(".")[-1] == "early_stop_epochs" and v is not None]
        if on:
            early.append(f"{method}: {', '.join(on)}")
    notes = [f"ASR bound behind `converged` (attack set, `asr_threshold`): {', '.join(bounds)}"] if bounds else []
    if short:
        notes.append("budgets below METHODS.md (its default in parentheses), not paper settings: " + "; ".join(short))
    if early:
        notes.append("opt-in early stop on (METHODS.md runs every epoch), not paper settings: " + "; ".join(early))
    return notes


def _ok(g: pd.DataFrame) -> pd.DataFrame:
    """Pair rows that averages may use: a result, and not stopped by a cap."""
    return pairs_of(uncapped(g))


def _count(g: pd.DataFrame, data: RunData, model: str) -> str:
    """'averaged pairs / expected pairs' (capped and failed pairs are not averaged)."""
    return f"{len(_ok(g))}/{len(data.expected.get(model, []))}"


# ---- builders (pure) -----------------------------------------------------------------------
def coverage(data: RunData) -> Table:
    """Which (model, method, variant) jobs and pairs the run holds versus what it asked for,
    and why each pair stopped."""
    rows = []
    for model in sorted(data.expected):
        for method, variant in data.methods:
            g = data.df[(data.df["model_id"] == model) & (data.df["method"] == method) & (data.df["variant"] == variant)]
            miss = missing_pairs(g, data.expected[model])
            reasons = pairs_of(g)["stop_reason"].value_counts()
            rows.append({"model": model, "method": method, "variant": variant,
                         "pairs_expected": len(data.expected[model]), "pairs_ok": len(ok_rows(g)),
                         **{f"stop_{r}": int(reasons.get(r, 0)) for r in STOP_REASONS},
                         "missing": _pair_list(miss) if miss else ""})
    absent = [m for m in paper.TABLE4_METHODS if m not in {m for m, _ in data.methods}]
    notes = [f"paper methods not in this run's config: {', '.join(absent)}"] if absent else []
    notes.append("stop_*: why each pair stopped (converged: the method's own end with a trigger meeting its "
                 "ASR bound; early_stop: an early-stop rule, with such a trigger; cap: a safety cap while still "
                 "improving; budget: out of epochs/cost without such a trigger; failed: no result)")
    return Table("coverage", "Coverage: pairs and methods present in this run", pd.DataFrame(rows),
                 notes=notes + job_notes(data.df, data))


def speedup(data: RunData) -> Table:
    """Fig 8 analogue: time of ours vs CW per pair (total and to the final best, §5.13)."""
    rows = []
    for (model, variant), g in data.df.groupby(["model_id", "variant"], sort=True):
        by = {m: _ok(g[g["method"] == m]) for m in paper.FIG8_METHODS}
        row: dict[str, Any] = {"model": model, "variant": variant}
        for m, ok in by.items():
            gm = g[g["method"] == m]
            row |= {f"{m}_pairs": _count(gm, data, model), f"{m}_capped": len(pairs_of(capped(gm))),
                    f"{m}_s_per_pair": mean_of(ok["wall_s"]), f"{m}_s_to_best": mean_of(ok["time_to_best"])}
        ours, other = paper.FIG8_METHODS
        row["speedup_total"] = row[f"{other}_s_per_pair"] / row[f"{ours}_s_per_pair"]
        row["speedup_to_best"] = row[f"{other}_s_to_best"] / row[f"{ours}_s_to_best"]
        rows.append(row)
    ref = pd.DataFrame(paper.FIG8_SPEEDUP)
    return Table("fig8_speedup", "Fig 8 (speed-up of ours over CW)", pd.DataFrame(rows), ref,
                 paper.SOURCE, job_notes(data.df, data, list(paper.FIG8_METHODS)) + [paper.FIG8_NOTE])


def methods_table(data: RunData) -> Table:
    """Table 4 analogue: one row per method: time per pair, trigger pixels, held-out ASR, with
    the pairs that a cap stopped in columns of their own."""
    rows = [{"model": r.model_id, "method": display(r.method), "variant": r.variant,
             "pairs": f"{r.ok - r.capped}/{len(data.expected.get(r.model_id, []))}", "converged": r.converged,
             "early_stop": r.early_stop, "budget": r.budget, "failed": r.failed, "s_per_pair": r.s_per_pair,
             "pixels_mean": r.mean_size, "pixels_median": r.median_size, "asr_pct": r.mean_asr_pct,
             "capped": r.capped, "capped_pixels_mean": r.capped_mean_size, "capped_asr_pct": r.capped_mean_asr_pct}
            for r in summary(data.df).itertuples()]
    ref = pd.DataFrame(paper.TABLE4).rename(columns={"time": "time (min?)", "pixels": "pixels", "asr": "asr_pct"})
    notes = job_notes(data.df, data, sorted(set(paper.TABLE4_METHODS) | {m for m, _ in data.methods}))
    notes.append("pairs: uncapped pairs with a result / expected; converged counts early stops too; pixels: "
                 "converged pairs only (an unconverged trigger has no valid size, METHODS.md §5.3); "
                 "ASR and s_per_pair: held-out victim images, uncapped pairs with a result; capped_*: the pairs "
                 "a cap stopped, never averaged with the others.")
    return Table("table4_methods", "Table 4 (time / trigger size / ASR per method)", pd.DataFrame(rows), ref,
                 paper.SOURCE + " (ImageNet turtle->kangaroo)", notes)


def robustness(data: RunData) -> Table:
    """Table 5 analogue: mean ASR (%) under each rescale/rotation, per method and variant."""
    rows = []
    names = ["normal", *ROBUSTNESS]
    for (model, method, variant), g in data.df.groupby(JOB, sort=True):
        ok = _ok(g)
        vals = [100 * mean_of(ok[c]) for c in ROBUST]
        rows.append({"model": model, "method": method, "variant": variant, "pairs": _count(g, data, model),
                     **dict(zip(names, vals)), "avg": float(np.mean(vals)) if len(ok) else math.nan})
    ref = pd.DataFrame([{"target": t, "method": m, **dict(zip(paper.ROBUST_ORDER, v)), "avg": avg}
                        for (t, m), (v, avg) in paper.TABLE5.items()])
    notes = job_notes(data.df, data, list(paper.TABLE5_METHODS))
    if "augmented" not in set(data.df["variant"]):
        notes.append("the paper's Table 5 uses augmented generation; this run has no 'augmented' variant")
    notes += [f"paper means: {', '.join(f'{k} {v}' for k, v in paper.TABLE5_MEANS.items())}", paper.TABLE5_NOTE,
              "avg = mean of the 10 columns (normal + 9 transforms), METHODS.md §2(f)"]
    return Table("table5_robustness", "Table 5 (ASR % under rescale and rotation)", pd.DataFrame(rows), ref,
                 paper.SOURCE + " (ImageNet turtle, augmented)", notes)


def ablation(data: RunData) -> Table:
    """Table 6 analogue: ours and its four ablations, mean ± std of size and ASR over pairs."""
    rows = []
    for (model, variant), g in data.df.groupby(["model_id", "variant"], sort=True):
        for method in ablations():
            gm = g[g["method"] == method]
            if gm.empty:
                continue
            ok = _ok(gm)
            size, a = summarise_sizes(ok["trigger_size"]), summarise_sizes(100 * ok["asr"])
            rows.append({"model": model, "variant": variant, "method": display(method), "pairs": _count(gm, data, model),
                         "converged": size["n"], "pixels": _pm(size), "asr_pct": _pm(a)})
    ref = pd.DataFrame([{"method": m, "pixels": f"{s:.2f} ± {sd:.2f}", "asr_pct": f"{a:.2f} ± {ad:.2f}"}
                        for m, (s, sd, a, ad) in paper.TABLE6.items()])
    notes = job_notes(data.df, data, ablations())
    notes.append("mean ± population std over this run's pairs (the paper: 10 runs of one pair); "
                 "pixels over converged pairs only")
    return Table("table6_ablation", "Table 6 (ablation: ours and its four ablations)", pd.DataFrame(rows), ref,
                 paper.SOURCE + " (CIFAR-10 ResNet20 plane->dog, 10 runs)", notes)


def _pm(s: dict[str, float]) -> str:
    return "n/a" if s["n"] == 0 else f"{s['mean']:.2f} ± {s['std']:.2f}"


def scan(data: RunData) -> Table:
    """Per-model scan: anomaly index per method, flagged or not, against the zoo's ground truth."""
    t = anomaly_table(data.df, data.num_classes)
    rows = []
    for r in t.itertuples(index=False):
        poisoned = r.model_kind == "poisoned"
        gt = None if pd.isna(r.gt_target) else int(r.gt_target)
        flagged = [int(x) for x in r.flagged_labels.split(",") if x]
        correct = (r.detected and (gt is None or gt in flagged)) if poisoned else not r.detected
        rows.append({"model": r.model_id, "method": r.method, "variant": r.variant, "truth": r.model_kind,
                     "gt_target": gt, "size_source": r.source, "anomaly_index": r.anomaly_index,
                     "detected": bool(r.detected), "flagged_labels": r.flagged_labels, "correct": bool(correct)})
    notes = ["detected = anomaly index > 2 (NC's MAD rule); a poisoned model counts as correct when detected "
             "with its ground-truth target flagged, a clean one when not detected",
             "size_source: 'universal' = any->t scans of the run, 'pair-min' = min over victims (METHODS.md §5.15)",
             "label sizes leave out capped rows (a capped size is the cap's)"]
    if not (data.df["victim"] < 0).any():
        notes.append("this run has no universal (any->t) scans; label sizes are the pair variant")
    notes += job_notes(data.df, data)
    return Table("scan_anomaly", "Per-model scan (anomaly index, Table 3/8 and [S-L.2] style)", pd.DataFrame(rows),
                 pd.DataFrame(paper.ANOMALY), paper.SOURCE + " [S-L.2]", notes)


PAIR_KEY = [*JOB, "victim", "target"]


def aligned_ok(data: RunData) -> pd.DataFrame:
    """Alignment rows with a result whose pair no cap stopped (neither ours' row nor the
    other method's): a capped trigger is the cap's, so aligning it says nothing."""
    assert data.align is not None
    ok = data.align[data.align["status"] == "ok"]
    cap = pairs_of(capped(data.df))
    if not len(cap):
        return ok
    keys = set(map(tuple, cap[PAIR_KEY].itertuples(index=False, name=None)))
    ref_keys = {(m, v, vi, ta) for m, me, v, vi, ta in keys if me == paper.OURS}
    mask = [(k not in keys) and ((k[0], k[2], k[3], k[4]) not in ref_keys)
            for k in ok[PAIR_KEY].itertuples(index=False, name=None)]
    return ok[mask]


def align_size(data: RunData) -> Table:
    """Fig 9/13 analogue: mean held-out ASR of the other method cut to ours' size."""
    rows = []
    if data.align is not None:
        for (model, method, variant), ok in aligned_ok(data).groupby(JOB, sort=True):
            rows.append({"model": model, "other": method, "variant": variant, "pairs": len(ok),
                         "asr_other_pct": 100 * mean_of(ok["asr_other"]),
                         "asr_other_cut_pct": 100 * mean_of(ok["asr_other_cut"]),
                         "asr_ours_pct": 100 * mean_of(ok["asr_ref"]), "k_ours_mean": mean_of(ok["k_ref"])})
    notes = [data.align_note] if data.align is None else _align_notes(data)
    return Table("fig9_13_align_size", "Fig 9 / Fig 13 (align by size: other method cut to ours' size)",
                 pd.DataFrame(rows), pd.DataFrame(paper.ALIGN_SIZE), paper.SOURCE, notes + [paper.SG_ABS])


def align_asr(data: RunData) -> Table:
    """Fig 10/14 analogue: size of the other method vs k* of ours at the other's ASR."""
    rows = []
    if data.align is not None:
        for (model, method, variant), ok in aligned_ok(data).groupby(JOB, sort=True):
            rows.append({"model": model, "other": method, "variant": variant, "pairs": len(ok),
                         "size_other_mean": mean_of(ok["size_other"]), "k_star_mean": mean_of(ok["k_star"]),
                         "ratio_median": float(ok["size_ratio"].median()) if len(ok) else math.nan})
    notes = [data.align_note] if data.align is None else _align_notes(data)
    return Table("fig10_14_align_asr", "Fig 10 / Fig 14 (align by ASR: k* of ours at the other's ASR)",
                 pd.DataFrame(rows), None, "", notes + [paper.ALIGN_ASR_NOTE + " (paper reference)"])


def _align_notes(data: RunData) -> list[str]:
    assert data.align is not None
    notes = []
    usable = aligned_ok(data)
    for (model, method, variant), _ in data.df[data.df["method"] != paper.OURS].groupby(JOB, sort=True):
        have = usable[(usable.model_id == model) & (usable.method == method) & (usable.variant == variant)]
        n = len(data.expected.get(model, []))
        if len(have) < n:
            notes.append(f"{model}/{method}/{variant}: aligned on {len(have)} of {n} pairs "
                         f"(the others lack an ok trigger of ours or of {method}, or a cap stopped them)")
    return notes + job_notes(data.df, data)


def pair_table(data: RunData) -> Table:
    """Table 9 analogue (ImageNet-style): one row per sampled pair, time/size/ASR per method."""
    rows = []
    if data.sampled:
        for (model, v, t), g in pairs_of(data.df).groupby(["model_id", "victim", "target"], sort=True):
            names = data.class_names.get(model, [])
            row: dict[str, Any] = {"model": model, "pair": f"{_name(names, v)}->{_name(names, t)}"}
            for (method, variant), gm in g.groupby(["method", "variant"], sort=True):
                r = gm.iloc[0]
                ok = r["status"] == "ok"
                label = method if variant == "plain" else f"{method}[{variant}]"
                row |= {f"{label} s": r["wall_s"] if ok else math.nan,
                        f"{label} px": r["trigger_size"] if ok else math.nan,
                        f"{label} asr%": 100 * r["asr"] if ok else math.nan,
                        f"{label} stop": r["stop_reason"]}
            rows.append(row)
    ref = pd.DataFrame([{"pair": f"{v}->{t}", **{f"{m} (min, px, asr%)": "lost in source" if x is None else
                                                 ", ".join("?" if y is None else str(y) for y in x)
                                                 for m, x in res.items()}} for v, t, res in paper.TABLE9])
    notes = ["one row per pair, never averaged; 'stop' says whether each number is converged, capped, "
             "out of budget or failed"]
    if not data.sampled:
        notes.append("not applicable: this run scans all pairs (the paper's Table 9 lists "
                     "sampled pairs of a large model; use pairs.mode sample or list)")
    return Table("table9_pairs", "Table 9 (large-model sampled pairs, ImageNet-style)", pd.DataFrame(rows), ref,
                 paper.SOURCE + " (ImageNet ResNet50)", notes + job_notes(data.df, data, list(paper.TABLE9_METHODS)))


def _name(names: list[str], i: int) -> str:
    return names[i] if 0 <= i < len(names) else str(i)


BUILDERS: list[Callable[[RunData], Table]] = [coverage, speedup, methods_table, robustness, ablation, scan,
                                              align_size, align_asr, pair_table]


def build_tables(data: RunData) -> list[Table]:
    return [b(data) for b in BUILDERS]


# ---- figures -------------------------------------------------------------------------------
def best_size_curve(g: pd.DataFrame, grid: np.ndarray) -> np.ndarray:
    """Median over pairs of the best trigger size found by each time in ``grid`` (Fig 8).

    Each row's trace holds (elapsed batch seconds, best size) at every improvement; a pair
    without a trigger yet counts as missing, and the median is shown once half the pairs have
    one (NaN before), so early points are not the median of a lucky few.
    """
    vals = np.full((len(g), len(grid)), np.nan)
    for i, (ts, ss) in enumerate(zip(g["trace_t"], g["trace_size"])):
        ts, ss = np.asarray(ts, dtype=float), np.asarray(ss, dtype=float)
        if len(ts):
            idx = np.searchsorted(ts, grid, side="right") - 1
            vals[i] = np.where(idx >= 0, ss[idx.clip(0)], np.nan)
    enough = np.isfinite(vals).sum(0) >= max(1, len(g) / 2)
    out = np.full(len(grid), np.nan)
    if enough.any():
        out[enough] = np.nanmedian(vals[:, enough], axis=0)
    return out


def speed_figures(data: RunData) -> dict[str, bytes]:
    """Fig 8 analogue per (model, variant) with both ours and CW: best size vs time."""
    from farm.report.plots import curves

    out: dict[str, bytes] = {}
    pairs = _ok(data.df)
    for (model, variant), g in pairs.groupby(["model_id", "variant"], sort=True):
        jobs = {m: gm for m, gm in g.groupby("method") if m in paper.FIG8_METHODS}
        if len(jobs) < 2:
            continue
        end = max(float(max((t[-1] for t in gm["trace_t"] if len(t)), default=0.0)) for gm in jobs.values())
        grid = np.linspace(0.0, end, 200) if end > 0 else np.zeros(1)
        series = {m: (grid, best_size_curve(gm, grid)) for m, gm in jobs.items()}
        out[f"figures/{model}/fig8-{variant}-size-vs-time.png"] = curves(
            series, f"{model}/{variant}: best trigger size vs time (Fig 8)",
            "elapsed batch time (s)", "median best size (px)")
    return out


def figures(data: RunData) -> dict[str, bytes]:
    """Heat maps (relative path -> PNG): size and ASR per job; align-by-size, align-by-ASR and
    ratio maps per (ours, other) from the alignment rows."""
    from farm.report.plots import heatmap

    out: dict[str, bytes] = {}
    for (model, method, variant), g in data.df.groupby(JOB, sort=True):
        k, names = data.num_classes[model], data.class_names.get(model, [])
        base = f"figures/{model}/{method}-{variant}"
        out[f"{base}-size.png"] = heatmap(pair_matrix(_ok(g), "trigger_size", k),
                                          f"{model} {method}/{variant}: trigger size (px)", names, "pixels")
        out[f"{base}-asr.png"] = heatmap(100 * pair_matrix(_ok(g), "asr", k),
                                         f"{model} {method}/{variant}: held-out ASR (%)", names, "ASR (%)", "{:.0f}")
    if data.align is not None:
        for (model, method, variant), ok in aligned_ok(data).groupby(JOB, sort=True):
            k, names = data.num_classes[model], data.class_names.get(model, [])
            base = f"figures/{model}/align-{method}-{variant}"
            for col, scale, label, fmt in (
                    ("asr_other_cut", 100, f"ASR (%) of {method} cut to size(ours) (Fig 9/13)", "{:.0f}"),
                    ("k_star", 1, f"k*: ours at {method}'s ASR (Fig 10/14)", "{:.0f}"),
                    ("size_ratio", 1, f"size({method}) / k* (Fig 10/14 ratio)", "{:.2g}")):
                out[f"{base}-{col}.png"] = heatmap(scale * pair_matrix(ok, col, k), f"{model}/{variant}: {label}",
                                                   names, col + (" (%)" if scale == 100 else ""), fmt)
    out |= speed_figures(data)
    return dict(sorted(out.items()))


# ---- orchestration -------------------------------------------------------------------------
MAX_CLASSES = 4096  # the pair grid and K×K heat maps are O(K²): ImageNet's 1000 fits, 10⁶ would hang


def _class_count(value: Any, model: str, run_dir: str) -> int:
    """A manifest's class count, checked: a received folder is untrusted (docs/security.md)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 2 <= value <= MAX_CLASSES:
        raise RunError(f"{run_dir}/manifest.json: model {model!r} has num_classes={value!r}; expected an integer "
                       f"in [2, {MAX_CLASSES}]. The folder was altered or is not a farm run")
    return value
def load(output: str, run_id: str, log_fn: Log = print, align: bool = False, trust_code: bool = False) -> RunData:
    """Read a run's rows and context from its folder (nothing else); with ``align``, run a
    missing alignment first when the run's models are here (that loads and runs them)."""
    import yaml

    from farm.align import read_align
    from farm.config import PairsSpec
    from farm.grid import select_pairs
    from farm.errors import RunError
    from farm.schema import parse
    from farm.store import RunStore

    store = RunStore(output, run_id)
    if not store.exists():
        raise RunError(f"no run {run_id!r} under {output!r} (expected {store.run_dir}/manifest.json); "
                       f"pass --output with the results folder that holds it")
    manifest = store.manifest()
    raw = yaml.safe_load(store.config_yaml())
    pairs_spec, problems = parse(PairsSpec, raw.get("pairs", {}), "pairs")
    if problems:
        raise RunError(f"run {run_id}: stored config has invalid pairs: {'; '.join(problems)}")
    seed = int(raw.get("run", {}).get("seed", 0))
    models = manifest.get("models", {})
    num_classes = {m: _class_count(v.get("num_classes"), m, store.run_dir) for m, v in models.items()}
    expected = {m: [(p.victim, p.target) for p in select_pairs(pairs_spec, k, seed) if not p.universal]
                for m, k in num_classes.items()}
    methods = [(m["name"], v) for m in raw.get("methods", []) for v in m.get("variants", ["plain"])]
    df = store.read(with_triggers=False)
    aligned = read_align(store)
    note = ""
    if aligned is None and align:
        aligned, note = _try_align(store, log_fn, trust_code)
    elif aligned is None:
        note = "alignment maps missing: run `farm align` first (or `farm tables --align`)"
    for name, frame in (("pairs", df), ("align", aligned)):
        unknown = sorted(set(frame["model_id"]) - set(models)) if frame is not None and len(frame) else []
        if unknown:
            raise RunError(f"run {run_id}: {name} rows of model(s) {', '.join(map(repr, unknown))} that "
                           f"{store.run_dir}/manifest.json does not list; the folder was altered or mixes runs")
    return RunData(df, aligned, expected, methods, num_classes,
                   {m: list(v.get("class_names", [])) for m, v in models.items()},
                   sampled=pairs_spec.mode != "all", align_note=note)


def _try_align(store: Any, log_fn: Log, trust_code: bool) -> tuple[pd.DataFrame | None, str]:
    """Run the alignment when the run's models are here; otherwise say why the maps are missing."""
    from farm.align import align_run, models_missing, read_align, run_config
    from farm.config import ConfigError

    try:
        missing = models_missing(run_config(store))
    except ConfigError as exc:
        return None, f"alignment maps missing: the run's config does not load here ({exc})"
    if missing:
        return None, "alignment maps missing: models not available here (" + "; ".join(missing) + ")"
    log_fn("tables: no alignment stored for this run; running `farm align` on Ray first")
    align_run(store.run_id, store.output, log_fn=log_fn, trust_code=trust_code)
    return read_align(store), ""


def write(tables: list[Table], figs: dict[str, bytes], out_dir: Path, formats: list[str]) -> list[Path]:
    """Write every table in every format, the figures and an index; return the files written.

    Through :mod:`farm.report.files`: temp file + rename, no symlink followed."""
    from farm.report.files import prepare_folder, write_file

    prepare_folder(out_dir)
    written = []

    def put(rel: str, data: str | bytes) -> None:
        written.append(write_file(out_dir, rel, data.encode() if isinstance(data, str) else data))

    for t in tables:
        if "md" in formats:
            put(f"{t.name}.md", to_markdown(t))
        if "csv" in formats:
            put(f"{t.name}.csv", to_csv(t.frame))
            if t.reference is not None:
                put(f"{t.name}.paper.csv", to_csv(t.reference))
        if "tex" in formats:
            put(f"{t.name}.tex", to_tex(t))
    for rel, png in figs.items():
        put(rel, png)
    put("index.md", index(tables, figs))
    return written


def index(tables: list[Table], figs: dict[str, bytes]) -> str:
    lines = ["# Paper tables and figures of this run", "",
             "Regenerated by `farm tables` from the run's Parquet files. Paper reference numbers are marked "
             "'Paper reference' in each table.", "", "## Tables", ""]
    lines += [f"- [{t.title}]({t.name}.md)" + (f": {len(t.notes)} note(s)" if t.notes else "") for t in tables]
    lines += ["", "## Figures (heat maps: row victim, column target, diagonal masked)", ""]
    lines += [f"- [{rel}]({rel})" for rel in figs]
    return "\n".join(lines) + "\n"


def regenerate(run_id: str, output: str = "results", out_dir: str | None = None,
               formats: list[str] | tuple[str, ...] = ("md", "csv"), tracking_uri: str | None = None,
               log_mlflow: bool = True, log_fn: Log = print, align: bool = False, trust_code: bool = False,
               allow_stored_uri: bool = False) -> Path:
    """Write all tables and figures of a run, and log them to MLflow; returns the folder.

    ``align``/``trust_code``/``allow_stored_uri`` are the only ways a results folder can make
    this load models or send data elsewhere (``--align``, ``--trust-code``, ``--allow-tracking-uri``)."""
    from farm.errors import RunError
    from farm.store import RunStore

    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise RunError(f"--format: unknown format(s) {', '.join(bad)}; choose from {', '.join(FORMATS)}")
    from farm.report.files import prepare_folder

    store = RunStore(output, run_id)
    # Tables are files people open: a run on an object store gets them in a local folder.
    default = Path(store.run_dir) / "tables" if store.fs.type_name == "local" else Path(f"{run_id}-tables")
    folder = Path(out_dir) if out_dir else default
    prepare_folder(folder)  # a bad --out fails before any work
    log_fn(f"tables: reading {run_id}" + (" and aligning its triggers" if align else ""))
    data = load(output, run_id, log_fn, align=align, trust_code=trust_code)
    # Rendering is the slow part (minutes for a run with many jobs): say so before it starts.
    log_fn(f"tables: {len(data.df)} rows; building tables and rendering heat maps of "
           f"{data.df.groupby(JOB).ngroups} job(s)")
    tables = build_tables(data)
    figs = figures(data)
    write(tables, figs, folder, list(formats))
    if log_mlflow:
        from farm.mlflow_run import log_paper_tables

        uri = log_paper_tables(run_id, output, folder, {t.name: t.frame for t in tables}, tracking_uri,
                               allow_stored_uri, log_fn)
        log_fn(f"tables: logged to MLflow at {uri}")
    return folder
