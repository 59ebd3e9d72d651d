"""Measure the margin of every outcome assertion of the recovery tests across seeds and threads.

Issue 16: a test that asserts the outcome of an optimisation or a training run must assert what
holds *with margin*, and that margin must be measured, not guessed. This script recomputes, in
one process, the quantity behind each such assertion for one (seed, threads) setting, with the
same code paths the tests use (the real zoo, ``farm.inprocess.run_pairs`` = the actors' code), and
prints one JSON line. ``docs/testing.md`` tabulates the spread over seeds 0..4 x threads 1, 2.

    python scripts/measure_margins.py --seed 3 --threads 2 >> margins.jsonl

Seed ``s`` moves everything a machine or a user could move: the synthetic data
(``datasets.*.params.seed``), zoo training (``models[*].train.seed``) and the pair RNG
(``run.seed``). Threads change the reduction order of every CPU kernel, the cross-machine
effect that made ``make test`` red elsewhere.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from farm.inprocess import method_spec, run_pairs  # noqa: E402
from farm.config import DEFAULT_CONFIG, load_config  # noqa: E402
from farm.grid import Pair  # noqa: E402
from farm.report.aggregate import anomaly_table  # noqa: E402
from farm.prepare import prepare_models  # noqa: E402

K = 10


def seeded(seed: int, out: Path, extra: list[str] | None = None):
    """The default config with every seed set to ``seed``."""
    sets = [f"run.output={out}", f"run.seed={seed}", f"datasets.synthetic.params.seed={seed}",
            f"models.0.train.seed={seed}", f"models.1.train.seed={seed}"]
    return load_config(DEFAULT_CONFIG, sets + (extra or []))


def second_smallest_ratio(values: dict[int, float], expected: int) -> float:
    """size(expected) / smallest other size: < 1 means ``expected`` is the unique minimum."""
    finite = {k: (v if np.isfinite(v) else np.inf) for k, v in values.items()}
    others = [v for k, v in finite.items() if k != expected]
    return float(finite[expected] / min(others)) if min(others) > 0 else math.inf


def default_config_margins(seed: int, out: Path) -> dict[str, Any]:
    """tests/test_recovery.py: ours' smallest column, NC's anomaly index, label-specific row."""
    cfg = seeded(seed, out)
    models = prepare_models(cfg, lambda _m: None)
    bad, clean = models["cnn-badnets"], models["cnn-clean"]
    target = cfg.models[1].attack.target
    res: dict[str, Any] = {"zoo_badnets_acc": bad.meta["clean_acc"], "zoo_badnets_asr": bad.meta["asr"],
                           "zoo_clean_acc": clean.meta["clean_acc"]}

    pairs = [Pair(v, t) for v in range(K) for t in range(K) if v != t]
    rows = pd.DataFrame(run_pairs(cfg, bad, method_spec(cfg, "ours"), pairs, cfg.cluster.pairs_per_batch))
    size = {(int(r.victim), int(r.target)): float(r.trigger_size) for r in rows.itertuples()}
    per_target = {t: float(np.nanmean([s for (v, tt), s in size.items() if tt == t])) for t in range(K)}
    res["ours_into_target_all_finite"] = bool(all(np.isfinite(size[(v, target)]) for v in range(K) if v != target))
    res["ours_target_col_ratio"] = second_smallest_ratio(per_target, target)  # test: < 0.5
    res["ours_worst_row_ratio"] = max(second_smallest_ratio({t: size[(v, t)] for t in range(K) if t != v}, target)
                                      for v in range(K) if v != target)  # test: < 1
    res["ours_into_target_asr"] = float(rows[rows.target == target]["asr"].mean())  # test: >= 0.9

    universal = [Pair(-1, t) for t in range(K)]
    nc_spec = method_spec(cfg, "nc")
    uni = pd.concat([pd.DataFrame(run_pairs(cfg, m, nc_spec, universal, cfg.cluster.pairs_per_batch))
                     .assign(model_id=m.spec.id, method="nc", variant="plain") for m in (bad, clean)])
    table = anomaly_table(uni, {"cnn-badnets": K, "cnn-clean": K}).set_index("model_id")
    res["nc_badnets_index"] = float(table.loc["cnn-badnets", "anomaly_index"])  # test: > 2
    res["nc_badnets_flagged"] = table.loc["cnn-badnets", "flagged_labels"]  # test: target in it
    res["nc_clean_index"] = float(table.loc["cnn-clean", "anomaly_index"])  # test: <= 2
    g = uni[uni.model_id == "cnn-badnets"].set_index("target")["raw_size"]
    res["nc_badnets_universal_sizes"] = [round(float(g[t]), 1) for t in range(K)]

    ls_spec = replace(cfg.models[1], id="cnn-ls", attack=replace(cfg.models[1].attack, type="label_specific",
                                                                 victim=2, target=5, poison_rate=0.2))
    ls_cfg = replace(cfg, models=[ls_spec])
    ls = prepare_models(ls_cfg, lambda _m: None)["cnn-ls"]
    res["zoo_ls_asr"] = ls.meta["asr"]
    ls_rows = run_pairs(ls_cfg, ls, method_spec(ls_cfg, "ours"), [Pair(2, t) for t in range(K) if t != 2], 9)
    res["ours_ls_row_ratio"] = second_smallest_ratio({r["target"]: r["trigger_size"] for r in ls_rows}, 5)
    return res


def zoo_fixture_margins(seed: int, root: Path) -> dict[str, Any]:
    """tests/test_recovery_variants.py, test_methods_cw.py, test_methods_abs_uap_prune.py (recovery
    parts) and test_zoo.py, on the conftest zoo model with every seed set to ``seed``."""
    import conftest
    from conftest import attack_batch, heldout
    from farm.methods import METHODS
    from farm.methods.augment import make_augment
    from farm.methods.cw import CWParams
    from farm.methods.nc import NCParams
    from farm.methods.nc_prune import NCPrune
    from farm.methods.pixel import PixelParams
    from farm.methods.uap import UAP
    from farm.metrics import asr
    from farm.triggers import trigger_size

    model, ds, meta = conftest.zoo_model(root, {"type": "badnets", "target": 0, "patch_size": 3}, "badnets",
                                         seed=seed)
    res: dict[str, Any] = {"fixture_zoo_acc": meta["clean_acc"], "fixture_zoo_asr": meta["asr"]}

    def held(v: int, t: int) -> torch.Tensor:
        return heldout(ds, v, t).float() / 255

    variants = {}
    for name, variant in [("ours", "augmented"), ("nc", "augmented"), ("ours_single_positive", "plain"),
                          ("ours_no_tanh", "plain"), ("ours_single_variable", "plain"),
                          ("ours_no_tanh_single", "plain")]:
        cls = METHODS[name]
        augment = make_augment(ds.mean) if variant == "augmented" else None
        pairs = [(1, 0), (2, 0)]
        out = cls(cls.Params(epochs=600), augment=augment).invert(model, attack_batch(ds, pairs, n=32, seed=seed))
        variants[f"{name}/{variant}"] = {
            "converged": all(o.converged for o in out),
            "min_heldout_asr": min(asr(model, o.trigger, held(*p), p[1]) for p, o in zip(pairs, out)),
            "max_size": max(trigger_size(o.trigger) for o in out)}
    res["variants"] = variants

    cw = METHODS["cw"](CWParams(max_iterations=20)).invert(model, attack_batch(ds, [(9, 0)], n=50, seed=seed))[0]
    res["cw_9_0"] = {"converged": cw.converged, "size": trigger_size(cw.trigger),
                     "heldout_asr": asr(model, cw.trigger, held(9, 0), 0)}

    prm = NCPrune.Params(nc=NCParams(epochs=150), ours=PixelParams(epochs=150))
    pr = NCPrune(prm).invert(model, attack_batch(ds, [(1, 0), (1, 3)], seed=seed))[0]
    res["nc_prune_1_0"] = {"converged": pr.converged, "size": trigger_size(pr.trigger),
                           "heldout_asr": asr(model, pr.trigger, held(1, 0), 0)}

    pairs = [(1, 0), (3, 0), (1, 3), (4, 7)]
    out = UAP(UAP.Params(epochs=150, eps=0.05)).invert(model, attack_batch(ds, pairs, seed=seed))
    rates = [asr(model, o.trigger, held(*p), p[1]) for p, o in zip(pairs, out)]
    res["uap"] = {"max_into_target": max(rates[:2]), "min_into_target": min(rates[:2]),
                  "max_other": max(rates[2:])}
    return res


# (quantity, test that asserts it, ">=" / "<=", bound): the bound each test uses.
BOUNDS = [
    ("zoo_badnets_acc", "test_zoo::test_default_poisoned_small_cnn", ">=", 0.85),
    ("zoo_badnets_asr", "test_zoo::test_default_poisoned_small_cnn", ">=", 0.9),
    ("ours_target_col_ratio", "test_recovery: target column mean / next column", "<=", 0.5),
    ("ours_worst_row_ratio", "test_recovery: target smallest of every row", "<=", 0.9),
    ("ours_into_target_asr", "test_recovery: held-out ASR into target", ">=", 0.9),
    ("nc_badnets_index", "reported only: NC index > 2 (MAD rule), poisoned", ">=", 2.0),
    ("nc_clean_index", "test_recovery: NC index, clean", "<=", 2.0),
    ("ours_ls_row_ratio", "test_recovery: label-specific 2->5 rank <= 2 (ratio to row min of others)", "<=", 1.1),
    ("variants.ours/augmented.min_heldout_asr", "test_recovery_variants", ">=", 0.7),
    ("variants.ours/augmented.max_size", "test_recovery_variants (<= 4x9 px)", "<=", 36),
    ("variants.nc/augmented.min_heldout_asr", "test_recovery_variants", ">=", 0.7),
    ("variants.nc/augmented.max_size", "test_recovery_variants (<= 4x9 px)", "<=", 36),
    ("variants.ours_single_positive/plain.min_heldout_asr", "test_recovery_variants", ">=", 0.7),
    ("variants.ours_single_positive/plain.max_size", "test_recovery_variants (<= 6x9 px)", "<=", 54),
    ("variants.ours_no_tanh/plain.min_heldout_asr", "test_recovery_variants", ">=", 0.7),
    ("variants.ours_single_variable/plain.min_heldout_asr", "test_recovery_variants", ">=", 0.7),
    ("variants.ours_no_tanh_single/plain.min_heldout_asr", "test_recovery_variants", ">=", 0.7),
    ("cw_9_0.size", "test_methods_cw::test_recovers_badnets_backdoor", "<=", 27),
    ("cw_9_0.heldout_asr", "test_methods_cw::test_recovers_badnets_backdoor", ">=", 0.75),
    ("nc_prune_1_0.size", "test_nc_prune_recovers_planted_trigger", "<=", 27),
    ("nc_prune_1_0.heldout_asr", "test_nc_prune_recovers_planted_trigger", ">=", 0.7),
    ("uap.max_into_target", "test_uap_reaches_backdoor_target", ">=", 0.85),
    ("uap.min_into_target", "test_uap_reaches_backdoor_target", ">=", 0.75),
    ("uap.gap", "reported only: min into target - max other", ">=", 0.0),
]


def _get(record: dict[str, Any], dotted: str) -> float:
    if dotted == "uap.gap":
        return record["uap"]["min_into_target"] - record["uap"]["max_other"]
    head, _, rest = dotted.partition(".")
    if rest and head == "variants":
        name, _, field = rest.rpartition(".")
        return float(record["variants"][name][field])
    return float(record[head][rest]) if rest else float(record[head])


def summarise(paths: list[str]) -> str:
    """Markdown table: per asserted quantity, its bound, min/max over the runs and the worst margin."""
    records = [json.loads(line) for p in paths for line in Path(p).read_text().splitlines() if line.strip()]
    lines = [f"{len(records)} runs: seeds {sorted({r['seed'] for r in records})}, threads "
             f"{sorted({r['threads'] for r in records})}", "",
             "| quantity | asserted in | bound | min | max | worst margin |", "| --- | --- | --- | --- | --- | --- |"]
    for key, test, op, bound in BOUNDS:
        vals = [_get(r, key) for r in records]
        worst = min(vals) - bound if op == ">=" else bound - max(vals)
        lines.append(f"| `{key}` | {test} | {op} {bound:g} | {min(vals):.3g} | {max(vals):.3g} | {worst:+.3g} |")
    flags = [r["nc_badnets_flagged"] or "-" for r in records]
    argmin = sum(int(np.argmin(r["nc_badnets_universal_sizes"]) == 0) for r in records)
    ratio = max(sorted(r["nc_badnets_universal_sizes"])[0] / sorted(r["nc_badnets_universal_sizes"])[1]
                for r in records)
    index_ratio = min(r["nc_badnets_index"] / r["nc_clean_index"] for r in records)
    lines += ["", f"NC universal scan, poisoned model: planted target 0 smallest in {argmin}/{len(records)} runs, "
              f"at most {ratio:.2f}x the next label (test: <= 0.6); poisoned/clean index >= {index_ratio:.2f} "
              f"(test: >= 1.5); flagged labels per run: {flags}"]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--part", choices=["default", "fixture", "all"], default="all")
    ap.add_argument("--summarise", nargs="+", metavar="JSONL", help="print the margin table of earlier runs")
    args = ap.parse_args()
    if args.summarise:
        print(summarise(args.summarise))
        return
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    out: dict[str, Any] = {"seed": args.seed, "threads": args.threads, "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        if args.part in ("default", "all"):
            out |= default_config_margins(args.seed, Path(tmp) / "default")
        if args.part in ("fixture", "all"):
            out |= zoo_fixture_margins(args.seed, Path(tmp) / "zoo")
    out["wall_s"] = round(time.perf_counter() - start, 1)
    print(json.dumps(out, default=float), flush=True)


if __name__ == "__main__":
    main()
