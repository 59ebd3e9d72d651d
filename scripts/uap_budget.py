"""Apply docs/methods.md's rule for UAP's L-inf budget on a dataset the paper does not cover.

    PYTHONPATH=. python scripts/uap_budget.py CONFIG MODEL_ID [--set key=value ...]

MODEL_ID names the dataset's *clean* zoo model in CONFIG (trained or reused from the zoo).
For every budget of the ladder it runs per-image targeted PGD (100 sign steps of eps/20, CE to
the target) on the 50 attack images of 10 fixed pairs and prints the mean and minimum share of
images flipped; the rule's budget is the smallest one whose mean is >= 0.9. Set it as the
dataset class's ``uap_eps`` (farm/data/) and record the table in docs/methods.md.
"""
from __future__ import annotations

import argparse
from dataclasses import replace

import torch

from farm.config import load_config
from farm.data.selection import attack_indices, gather
from farm.prepare import prepare_models

LADDER = (4 / 255, 0.03, 10 / 255, 0.05, 0.1, 0.2, 0.3)  # the paper's budgets, then MNIST's usual ones
PAIRS = ((1, 3), (2, 5), (4, 7), (6, 9), (8, 1), (3, 0), (5, 2), (9, 4), (7, 6), (0, 8))
STEPS, N, BAR = 100, 50, 0.9


def pgd_flip_rate(model: torch.nn.Module, x: torch.Tensor, target: int, eps: float) -> float:
    """Share of images x (N×C×H×W in [0,1]) that per-image targeted PGD sends to ``target``."""
    labels = torch.full((len(x),), target)
    delta = torch.zeros_like(x, requires_grad=True)
    for _ in range(STEPS):
        loss = torch.nn.functional.cross_entropy(model((x + delta).clamp(0, 1)), labels)
        (grad,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            delta -= eps / 20 * grad.sign()
            delta.clamp_(-eps, eps)
    with torch.no_grad():
        return float((model((x + delta).clamp(0, 1)).argmax(1) == target).float().mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config")
    ap.add_argument("model_id")
    ap.add_argument("--set", action="append", default=[], dest="overrides")
    args = ap.parse_args()
    cfg = load_config(args.config, args.overrides)
    cfg = replace(cfg, models=[m for m in cfg.models if m.id == args.model_id])
    if not cfg.models:
        raise SystemExit(f"{args.model_id}: not a model of {args.config}")
    prepared = prepare_models(cfg, print)[args.model_id]
    model = prepared.payload.load(torch.device("cpu"))
    chosen = None
    for eps in LADDER:
        rates = [pgd_flip_rate(model, gather(prepared.dataset, "train",
                                             attack_indices(prepared.dataset, v, t, N, cfg.run.seed)).float() / 255,
                               t, eps) for v, t in PAIRS]
        mean = sum(rates) / len(rates)
        print(f"eps={eps:.4f}: per-image targeted PGD flips mean {mean:.2f}, min {min(rates):.2f}", flush=True)
        if chosen is None and mean >= BAR:
            chosen = eps
    print(f"rule's budget: {chosen if chosen is not None else f'none of the ladder (max {LADDER[-1]})'}")


if __name__ == "__main__":
    main()
