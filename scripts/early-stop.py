"""Trade-off of ours' opt-in early stop (``params.early_stop_epochs``) on a config's zoo.

Runs ours on every pair of every model of the config (the run's own pairs, seeds, images and
pairs_per_batch, in this process: ``farm.inprocess.run_pairs``), once without early stop and once
per E, and compares each pair against its own run without early stop: epochs run, optimisation
time, trigger size and held-out ASR. Epochs run is the load-independent measure of the time
saved; optimisation seconds are also shown (noisy on a shared machine). Usage
(docs/benchmarks.md, "Early stop of ours"):
    python scripts/early-stop.py configs/default.yaml --set run.output=/tmp/es --early-stop 10,25,50 \
        --csv docs/data/early-stop-default.csv
"""
from __future__ import annotations

import argparse
from dataclasses import replace

import pandas as pd

from farm.inprocess import method_spec, run_pairs
from farm.config import load_config
from farm.grid import select_pairs
from farm.runner import prepare_models

KEEP = ["model_id", "victim", "target", "steps", "stop_reason", "trigger_size", "asr", "wall_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("--set", action="append")
    ap.add_argument("--early-stop", default="10,25,50", help="comma list of E (early_stop_epochs) to compare")
    ap.add_argument("--every", type=int, default=1, help="only every n-th pair of each model (a spread subset)")
    ap.add_argument("--csv", help="write the per-pair comparison here")
    args = ap.parse_args()
    cfg = load_config(args.config, args.set)
    settings = [None] + [int(e) for e in args.early_stop.split(",")]
    base = method_spec(cfg, "ours")
    per_pair = []
    for model in prepare_models(cfg, print).values():
        pairs = select_pairs(cfg.pairs, model.num_classes, cfg.run.seed)[::args.every]
        runs = {}
        for e in settings:
            spec = replace(base, params={**base.params, "early_stop_epochs": e})
            rows = pd.DataFrame(run_pairs(cfg, model, spec, pairs, cfg.cluster.pairs_per_batch))
            rows = rows.assign(model_id=model.spec.id)[KEEP]
            runs[e] = rows.set_index(["model_id", "victim", "target"])
            print(f"{model.spec.id} E={e}: {rows.wall_s.sum():.1f} s optimisation, "
                  f"{rows.steps.mean():.1f} epochs/pair", flush=True)
        off = runs[None]
        for e in settings[1:]:
            d = runs[e].merge(off, left_index=True, right_index=True, suffixes=("", "_off"))
            d["early_stop_epochs"] = e
            per_pair.append(d.reset_index())
    df = pd.concat(per_pair)
    if args.csv:
        df.to_csv(args.csv, index=False, float_format="%.4g")
    print(summary(df).to_markdown(index=False))


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per model and E: share of epochs and of optimisation time saved, size and ASR change."""
    out = []
    for (model, e), g in df.groupby(["model_id", "early_stop_epochs"], sort=False):
        both = g.trigger_size.notna() & g.trigger_size_off.notna()
        dsize = (g.trigger_size - g.trigger_size_off)[both]
        dasr = g.asr - g.asr_off
        out.append({
            "model": model, "E": e, "pairs": len(g), "early-stopped": int((g.stop_reason == "early_stop").sum()),
            "epochs/pair": f"{g.steps.mean():.0f} vs {g.steps_off.mean():.0f}",
            "epochs saved": f"{1 - g.steps.sum() / g.steps_off.sum():.0%}",
            "opt. time saved": f"{1 - g.wall_s.sum() / g.wall_s_off.sum():.0%}",
            "size change px: mean / median / max": f"{dsize.mean():+.1f} / {dsize.median():+.0f} / {dsize.max():+.0f}",
            "pairs larger / smaller": f"{int((dsize > 0).sum())} / {int((dsize < 0).sum())}",
            "size change: mean relative": f"{(dsize / g.trigger_size_off[both]).mean():+.0%}",
            "held-out ASR change (points): mean / min": f"{100 * dasr.mean():+.1f} / {100 * dasr.min():+.1f}",
        })
    return pd.DataFrame(out)


if __name__ == "__main__":
    main()
