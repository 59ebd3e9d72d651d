"""Measure CPU speed options of issue #11 in ONE process, interleaved round by round.

Times ``Method.invert`` (the actors' code, optimisation only) on the zoo models of a config
for: the default (fp32, channels-last), bf16 autocast, BatchNorm folded, both of these
(``bf16+fold_bn``), torch.compile of the model, and optionally 1 process x 2 threads vs
2 processes x 1 thread. Prints pair-epochs/s
and the ratio to the default, plus size/ASR drift of each numerics-changing option against
fp32 on the same pairs. Usage (docs/benchmarks.md):
    python scripts/cpu-options.py configs/bench.yaml --set run.output=/tmp/perf --epochs 30
"""
from __future__ import annotations

import argparse
import copy
import multiprocessing as mp
import statistics
import time

import torch

from farm.inprocess import method_spec
from farm.cli import _config
from farm.grid import select_pairs
from farm.methods import PairBatch, create_method
from farm.models.fold import fold_batchnorm
from farm.prepare import pair_images, prepare_models
from farm.triggers import trigger_size
from farm.worker import image_key, precision_context


def batch_for(model, cfg, n_pairs):
    pairs = select_pairs(cfg.pairs, model.num_classes, cfg.run.seed)[:n_pairs]
    imgs = pair_images(model.dataset, pairs, cfg.pairs, cfg.run.seed, lambda _m: None)
    x = torch.stack([imgs.attack[image_key(p)] for p in pairs]).float() / 255
    return PairBatch([p.victim for p in pairs], [p.target for p in pairs], x, list(range(len(pairs))),
                     min(cfg.pairs.batch_size, cfg.pairs.victim_images))


def run(method, model, batch, precision="fp32"):
    start = time.perf_counter()
    with precision_context(torch.device("cpu"), precision):
        out = method.invert(model, batch)
    return time.perf_counter() - start, out


OPTIONS = ("bf16", "fold_bn", "bf16+fold_bn", "compile")


def _precision(option: str) -> str:
    return "bf16" if option.startswith("bf16") else "fp32"


def _worker(args):
    cfg_args, model_id, method_name, epochs, n_pairs = args
    torch.set_num_threads(1)
    cfg = _config(cfg_args)
    model = prepare_models(cfg, lambda _m: None)[model_id]
    net = model.payload.load(torch.device("cpu"))
    spec = method_spec(cfg, method_name, epochs)
    m = create_method(method_name, spec.params)
    return run(m, net, batch_for(model, cfg, n_pairs))[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--set", action="append")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--pairs", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--models", default="cnn-badnets,resnet20-badnets")
    ap.add_argument("--methods", default="ours,nc")
    ap.add_argument("--options", default="bf16,fold_bn,compile",
                    help=f"comma list of {', '.join(OPTIONS)}")
    ap.add_argument("--processes", action="store_true", help="also 2 processes x 1 thread vs 1 x 2")
    args = ap.parse_args()
    unknown = set(args.options.split(",")) - set(OPTIONS)
    if unknown:
        ap.error(f"--options: unknown {', '.join(sorted(unknown))} (have {', '.join(OPTIONS)})")
    cfg = _config(args)
    models = prepare_models(cfg, print)
    for mid in args.models.split(","):
        model = models[mid]
        base = model.payload.load(torch.device("cpu"))
        options = args.options.split(",")
        nets = {"fp32": base}
        folded = fold_batchnorm(copy.deepcopy(base)) if any("fold_bn" in o for o in options) else None
        for opt in options:  # every option runs on the same pairs as fp32, in the order given
            nets[opt] = torch.compile(base) if opt == "compile" else folded if "fold_bn" in opt else base
        batch = batch_for(model, cfg, args.pairs)
        for name in args.methods.split(","):
            spec = method_spec(cfg, name, args.epochs)
            method = create_method(name, spec.params)
            warm = create_method(name, {**spec.params, "epochs": 2})
            for opt, net in nets.items():
                run(warm, net, batch, _precision(opt))
            times = {k: [] for k in nets}
            outs = {}
            for _ in range(args.rounds):
                for opt, net in nets.items():
                    s, outs[opt] = run(method, net, batch, _precision(opt))
                    times[opt].append(s)
            if args.processes:
                times["2 procs x 1 thread"] = []
                half = [(args, mid, name, args.epochs, args.pairs // 2)] * 2
                with mp.get_context("spawn").Pool(2) as pool:
                    for _ in range(args.rounds):  # each half times its own invert; both run at once
                        times["2 procs x 1 thread"].append(max(pool.map(_worker, half)))
            ref = statistics.median(times["fp32"])
            sizes0 = [trigger_size(o.trigger) for o in outs["fp32"]]
            asr0 = [o.attack_asr for o in outs["fp32"]]
            for opt, ts in times.items():
                t = statistics.median(ts)
                line = f"{mid} {name} {opt:>20}: {args.pairs * args.epochs / t:7.1f} pair-epochs/s, x{ref / t:.2f}"
                if opt in outs and opt != "fp32":
                    sz = [trigger_size(o.trigger) for o in outs[opt]]
                    asr = [o.attack_asr for o in outs[opt]]
                    line += (f"; size {statistics.median(sz):.0f} vs {statistics.median(sizes0):.0f} (median),"
                             f" mean |d size| {statistics.mean(abs(a - b) for a, b in zip(sz, sizes0)):.1f},"
                             f" mean attack ASR {100 * statistics.mean(asr):.1f}% vs {100 * statistics.mean(asr0):.1f}%")
                print(line, flush=True)


if __name__ == "__main__":
    main()
