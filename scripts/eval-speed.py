"""Shard evaluation: per-pair metric calls (before issue #11) vs ``evaluate_pairs``, one process.

Both score the same triggers (random sparse additive ones) of every pair of a model: held-out
ASR, ASR on correctly classified images and the 9 robustness columns. Rounds alternate.
    python scripts/eval-speed.py configs/bench.yaml --set run.output=/tmp/perf --model cnn-badnets
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from farm.cli import _config
from farm.grid import select_pairs
from farm.metrics import asr, evaluate_pairs, predict, robust_asr
from farm.prepare import pair_images, prepare_models
from farm.triggers import Trigger
from farm.worker import image_key


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--set", action="append")
    ap.add_argument("--model", default="cnn-badnets")
    ap.add_argument("--pairs", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--eval-batch", default="512", help="comma list of evaluate_pairs batch sizes")
    args = ap.parse_args()
    cfg = _config(args)
    pm = prepare_models(cfg, print)[args.model]
    model = pm.payload.load(torch.device("cpu"))
    pairs = select_pairs(cfg.pairs, pm.num_classes, cfg.run.seed)[:args.pairs]
    imgs = pair_images(pm.dataset, pairs, cfg.pairs, cfg.run.seed, print)
    g = torch.Generator().manual_seed(0)
    trigs = [Trigger("additive", (torch.rand(pm.dataset.image_shape, generator=g) > 0.97).float())
             for _ in pairs]
    held = [imgs.heldout[image_key(p)] for p in pairs]
    labels = [imgs.heldout_labels[image_key(p)] for p in pairs]

    def per_pair() -> None:
        for t, x, y, p in zip(trigs, held, labels, pairs):
            ok = predict(model, x) == y
            robust_asr(model, t, x, p.target)
            asr(model, t, x, p.target)
            asr(model, t, x[ok], p.target)

    def batched(batch_size: int) -> None:
        correct = {image_key(p): predict(model, x) == y for p, x, y in zip(pairs, held, labels)}
        evaluate_pairs(model, trigs, held, [correct[image_key(p)] for p in pairs], [p.target for p in pairs],
                       batch_size)

    runs = [("per-pair calls", per_pair)] + [(f"evaluate_pairs {b}", lambda b=int(b): batched(b))
                                             for b in args.eval_batch.split(",")]
    times: dict[str, list[float]] = {name: [] for name, _ in runs}
    for _ in range(args.rounds):
        for name, fn in runs:
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    ref = statistics.median(times["per-pair calls"])
    for name, ts in times.items():
        t = statistics.median(ts)
        print(f"{args.model} {name:>20}: {t / len(pairs) * 1000:.0f} ms/pair, x{ref / t:.2f}", flush=True)


if __name__ == "__main__":
    main()
