"""Time the farm's own code in-process (no Ray, no MLflow) against a paper-style baseline.

``farm bench`` answers DESIGN.md's "the number of pairs per batch is measured, not assumed"
and issue #11's "every speed claim is a ratio to the baseline, measured in one run": it runs
the actor's code (:class:`farm.worker.ShardExecutor`) over the same pairs with several P and,
with ``--baseline``, the one-pair loop of :mod:`farm.baseline` on the same model, images and
epochs, interleaved round by round so that load from other processes hits both alike. It
imports neither Ray nor MLflow, so it runs as is on a GPU box that has only torch, pandas,
pyarrow and pyyaml.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from farm.autotune import measure
from farm.baseline import time_baseline
from farm.bench_procs import ProcessGroup
from farm.config import Config
from farm.grid import Pair, select_pairs
from farm.inprocess import has_epochs, make_executor, method_spec, run_shards
from farm.methods import method_class
from farm.prepare import PreparedModel, prepare_models
from farm.worker import PairImages, image_key, pick_device


@dataclass
class Timing:
    """One configuration's seconds per round: optimisation only and with evaluation."""

    opt: list[float]
    total: list[float]


def _baseline_inputs(images: PairImages, pairs: list[Pair], device: torch.device) -> list[torch.Tensor]:
    return [images.attack[image_key(p)].to(device, torch.float32) / 255.0 for p in pairs]


def bench(cfg: Config, model_ids: list[str] | None, methods: list[str], batch_sizes: list[int | str], pairs: int,
          epochs: int, device: str = "auto", out: str | None = None, baseline: bool = False,
          baseline_pairs: int = 4, rounds: int = 1, processes: int = 1) -> pd.DataFrame:
    """Pair-epochs/s of each P (and of the baseline) over the same pairs; printed and returned.

    ``batch_sizes`` may include "auto": the P that ``cluster.pairs_per_batch: auto`` would
    measure for this model and method (farm.autotune), reported as ``auto=P``.
    Each round times the baseline on ``baseline_pairs`` pairs and every P on ``pairs`` pairs,
    one after the other; medians over rounds are reported, and ``x_baseline`` is the ratio of a
    configuration's optimisation rate to the baseline's rate in the same run.

    ``processes`` > 1 runs the farm's configurations in that many processes at once, each with
    its share of this process's threads, as actors share a machine (farm.bench_procs); the
    baseline keeps every thread in this process, as a paper's script does.
    """
    ids = model_ids or [cfg.models[0].id]
    models = prepare_models(replace(cfg, models=[m for m in cfg.models if m.id in ids]), print)  # only those timed
    chosen_models = [models[m] for m in ids]
    dev = str(pick_device(device))
    threads = torch.get_num_threads()
    farm_threads = max(1, threads // processes)
    print(f"bench: {len(chosen_models)} model(s) x {len(methods)} method(s) x {len(batch_sizes)} P x {rounds} "
          f"round(s), {pairs} pairs, {epochs} epochs each, on {dev}"
          + (f", the farm in {processes} processes x {farm_threads} thread(s), the baseline in "
             f"1 x {threads}" if processes > 1 else "") + ". The default sweep (4 P x 90 pairs x 5 epochs) "
          "takes about 15 min on 2 CPU cores; --pairs 10 --pairs-per-batch 1,10 gives a first look in about a "
          "minute.", flush=True)
    group = ProcessGroup(cfg, ids, processes, farm_threads, dev) if processes > 1 else None
    records = []
    try:
        for model in chosen_models:
            records += _bench_model(cfg, model, methods, batch_sizes, pairs, epochs, dev, baseline, baseline_pairs,
                                    rounds, group, threads)
    finally:
        if group is not None:
            group.close()
    df = pd.DataFrame(records)
    print(df.to_string(index=False))
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(out, index=False)
    return df


def _bench_model(cfg: Config, model: PreparedModel, methods: list[str], batch_sizes: list[int | str], pairs: int,
                 epochs: int, dev: str, baseline: bool, baseline_pairs: int, rounds: int,
                 group: ProcessGroup | None, threads: int) -> list[dict[str, Any]]:
    """The timing records of one model: every method, the baseline and each P, ``rounds`` times."""
    records: list[dict[str, Any]] = []
    # The paper's code runs the model as loaded: not folded, not compiled, fp32 (the baseline
    # has no autocast), whatever run.* options the farm's configurations use.
    base_model = model.payload.load(torch.device(dev)) if baseline else None
    chosen = select_pairs(replace(cfg.pairs, universal=False), model.num_classes, cfg.run.seed)[:pairs]
    for method in methods:
        spec = method_spec(cfg, method, epochs)
        # CW has no epochs: its rate is pairs/s (epochs counted as 1 per pair).
        epoch_based = has_epochs(method_class(method).Params)
        per_pair = epochs if epoch_based else 1
        executor = make_executor(cfg, model, spec, chosen, device=dev)
        b = min(cfg.pairs.batch_size, cfg.pairs.victim_images)
        base_pairs = chosen[:baseline_pairs]
        base_x = _baseline_inputs(executor.images, base_pairs, executor.device)
        sizes = [measure(executor, chosen, b)[0] if p == "auto" else int(p) for p in batch_sizes]
        if group is not None:
            group.setup(model.spec.id, spec, chosen)
        names = [f"auto={p}" if given == "auto" else f"P={p}" for given, p in zip(batch_sizes, sizes)]
        timings: dict[str, Timing] = {}
        for _ in range(rounds):
            if base_model is not None:
                s = time_baseline(base_model, base_x, [p.target for p in base_pairs], method, epochs, b,
                                  cfg.run.seed)
                timings.setdefault("baseline", Timing([], [])).opt.append(s)
                timings["baseline"].total.append(s)
            for name, p in zip(names, sizes):
                if group is not None:
                    opt, total = group.run(chosen, p)
                else:
                    start = time.perf_counter()
                    rows = run_shards(cfg, executor, model, spec, chosen, p)
                    total = time.perf_counter() - start
                    opt = sum(r["wall_s"] for r in rows)
                t = timings.setdefault(name, Timing([], []))
                t.opt.append(opt)
                t.total.append(total)
        base_rate = (len(base_pairs) * per_pair / statistics.median(timings["baseline"].opt)) if baseline else None
        for name, t in timings.items():
            is_base = name == "baseline"
            n = len(base_pairs) if is_base else len(chosen)
            opt_s, total_s = statistics.median(t.opt), statistics.median(t.total)
            rate = n * per_pair / opt_s
            records.append({
                "device": dev, "model": model.spec.id, "arch": model.spec.arch, "method": method,
                "config": name, "precision": "fp32" if is_base else cfg.run.precision,
                "compile": cfg.run.compile and not is_base,
                "fold_batchnorm": cfg.run.fold_batchnorm and not is_base,
                "processes": len(group.conns) if group and not is_base else 1,
                "threads": threads if is_base or group is None else group.threads,
                "pairs": n, "epochs": per_pair, "pair_epochs_per_s": rate,
                "pair_epochs_per_s_with_eval": n * per_pair / total_s,
                "eval_share": 1 - opt_s / total_s, "x_baseline": rate / base_rate if base_rate else None,
                "s_per_pair": opt_s / n, "total_s": total_s})
            print(f"{model.spec.id} {method} {name:>8}: {rate:8.1f} "
                  f"{'pair-epochs/s' if epoch_based else 'pairs/s'}"
                  + (f" ({records[-1]['x_baseline']:.2f}x baseline)" if base_rate else "")
                  + f", eval {100 * records[-1]['eval_share']:.0f}% of wall", flush=True)
    return records
