"""Why ABS does or does not converge on a zoo BadNets model: ABS under parameter variants.

    PYTHONPATH=. python scripts/abs_variants.py CONFIG MODEL_ID [--pairs 1-0,2-0,...] [--epochs E]
        [--variant 'NAME={"penalty_weight": 0.0156}' ...] [--init-square TOP,LEFT,SIDE] [--set key=value ...]

Runs ABS on the given pairs of MODEL_ID (the run's own seeds and images, in this process:
``farm.inprocess.run_pairs``) once per variant (a JSON dict of ABS parameters over the config's;
``default={}`` when none is given) and prints, per variant, how many pairs into the planted
target and into other targets converged (attack-set ASR >= the 0.8 bound), their median mask
size, and how many masks cover all pixels of the planted patch (m >= 1/255 on each of them).
``--init-square`` adds one control run with the mask variable's +2 square moved to the given
place (ABS's own init is the top-left square, METHODS.md §2(c)): it tells a search failure (the
planted trigger is a better optimum but unreachable from the init) from an objective failure.
Measured numbers: docs/methods.md, "abs".
"""
from __future__ import annotations

import argparse
import json
from dataclasses import replace
from unittest import mock

import pandas as pd
import torch

from farm.inprocess import method_spec, run_pairs
from farm.config import load_config
from farm.grid import Pair
from farm.methods import abs as abs_method
from farm.models.poison import Poison, make_poison
from farm.prepare import PreparedModel, prepare_models
from farm.triggers import TAU, Trigger

DEFAULT_PAIRS = "1-0,2-0,3-0,4-0,5-0,6-0,7-0,8-0,9-0,2-5,4-7,1-3,8-6,9-1,0-8,6-2,3-4,7-9"
COLUMNS = ["variant", "victim", "target", "raw_size", "asr", "asr_attack", "stop_reason", "patch_covered"]


def parse_pairs(text: str) -> list[Pair]:
    """``"1-0,2-5"`` -> [Pair(1, 0), Pair(2, 5)]."""
    return [Pair(*(int(x) for x in item.split("-"))) for item in text.split(",")]


def parse_variant(text: str) -> tuple[str, dict]:
    name, _, params = text.partition("=")
    if not params:
        raise SystemExit(f"--variant {text!r}: expected NAME=JSON, e.g. 'w10={{\"penalty_weight\": 0.0156}}'")
    return name, json.loads(params)


def square_init(top: int, left: int, side: int):
    """ABS's mask init (+2 inside a square, -2 elsewhere) with the square at (top, left)."""
    def init(h: int, w: int, bound: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        a = torch.full((h, w), -2.0, dtype=dtype)
        a[top:top + side, left:left + side] = 2.0
        return a
    return init


def patch_covered(row: dict, poison: Poison | None) -> int | None:
    """Pixels of the planted patch where the inverted mask is on (m >= 1/255, METHODS.md §1)."""
    if poison is None or poison.type == "blend":
        return None
    mask = Trigger.from_bytes(row["trigger_kind"], row["trigger_shape"], row["trigger"]).mask
    p = poison.pattern.shape[-1]
    return int((mask[poison.top:poison.top + p, poison.left:poison.left + p] >= TAU).sum())


def run_variant(cfg, model: PreparedModel, pairs: list[Pair], epochs: int, name: str, params: dict,
                poison: Poison | None) -> pd.DataFrame:
    spec = method_spec(cfg, "abs")
    spec = replace(spec, params={**spec.params, "epochs": epochs, **params})
    rows = run_pairs(cfg, model, spec, pairs, len(pairs))
    for row in rows:
        row["patch_covered"] = patch_covered(row, poison)
        row["variant"] = name
    return pd.DataFrame(rows)[COLUMNS]


def summary(df: pd.DataFrame, poison: Poison | None) -> pd.DataFrame:
    """Per variant: converged and median size into the planted target and into the others."""
    planted = None if poison is None else poison.target
    whole = None if poison is None else poison.trigger_pixels
    out = []
    for name, g in df.groupby("variant", sort=False):
        into = g.target == planted
        out.append({"variant": name,
                    "converged into planted": f"{int((g[into].stop_reason == 'converged').sum())}/{int(into.sum())}",
                    "converged into others": f"{int((g[~into].stop_reason == 'converged').sum())}/{int((~into).sum())}",
                    "median px into planted": g[into].raw_size.median(), "median px others": g[~into].raw_size.median(),
                    "masks covering the patch": f"{int((g[into].patch_covered == whole).sum())}/{int(into.sum())}"})
    return pd.DataFrame(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config")
    ap.add_argument("model_id")
    ap.add_argument("--pairs", default=DEFAULT_PAIRS, help="comma list of VICTIM-TARGET")
    ap.add_argument("--epochs", type=int, default=1000)
    ap.add_argument("--variant", action="append", default=[], help="NAME=JSON of ABS params (repeatable)")
    ap.add_argument("--init-square", help="TOP,LEFT,SIDE: one extra run with the mask's init square there")
    ap.add_argument("--csv", help="write the per-pair rows here")
    ap.add_argument("--set", action="append", default=[], dest="overrides")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = load_config(args.config, args.overrides)
    cfg = replace(cfg, models=[m for m in cfg.models if m.id == args.model_id])
    if not cfg.models:
        raise SystemExit(f"{args.model_id}: not a model of {args.config}")
    model = prepare_models(cfg, print)[args.model_id]
    poison = make_poison(model.spec.attack, model.dataset.image_shape, model.spec.train.seed)
    pairs = parse_pairs(args.pairs)
    variants = [parse_variant(v) for v in args.variant] or [("default", {})]
    frames = [run_variant(cfg, model, pairs, args.epochs, name, params, poison) for name, params in variants]
    if args.init_square:
        top, left, side = (int(x) for x in args.init_square.split(","))
        with mock.patch.object(abs_method, "init_mask_variable", square_init(top, left, side)):
            frames.append(run_variant(cfg, model, pairs, args.epochs, f"init square at {top},{left} (side {side})",
                                      {}, poison))
    df = pd.concat(frames, ignore_index=True)
    if args.csv:
        df.to_csv(args.csv, index=False, float_format="%.4g")
    print(df.to_string(index=False))
    print(summary(df, poison).to_markdown(index=False))


if __name__ == "__main__":
    main()
