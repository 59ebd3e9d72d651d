"""Speed check for a machine with an accelerator: ``scripts/device-check.sh`` runs this.

Made for a GPU box that has only torch, torchvision, pandas, pyarrow and pyyaml (no Ray, no
MLflow, no network): it builds small_cnn and ResNet20 with random weights (speed does not
depend on what a model learned), draws random [0,1] images, and prints pair-epochs/s of ours
and NC at several P and at the autotuned P, with and without autocast, next to the
paper-style baseline of :mod:`farm.baseline`, with peak accelerator memory. It calls the same
``Method.invert`` the actors call. ``FARM_CHECK_TINY=1`` shrinks everything so the CPU test
suite can prove the script runs.
"""
from __future__ import annotations

import argparse
import os
import time
from typing import Any, cast

import pandas as pd
import torch

from farm.autotune import best_pairs_per_batch, sweep_pairs_per_batch
from farm.baseline import time_baseline
from farm.methods import PairBatch, create_method
from farm.models import build_model
from farm.models.loading import frozen
from farm.worker import pick_device, precision_context

NUM_CLASSES, SHAPE, N, B = 10, (3, 32, 32), 50, 32  # the paper's 32×32 setting, N = 50 images per pair


def _frozen(arch: str, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    return frozen(build_model(arch, NUM_CLASSES, SHAPE, (0.5,) * 3, (0.25,) * 3).to(device))


def _peak(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rate(method: Any, model: torch.nn.Module, images: torch.Tensor, p: int, epochs: int) -> float:
    """pair-epochs/s of ``method`` on P rows (the images recycled), after one warm-up epoch."""
    rows = [i % len(images) for i in range(p)]
    batch = PairBatch([None] * p, [1 + i % (NUM_CLASSES - 1) for i in rows], images[rows], list(range(p)), B)
    create_method(method.name, {**method.params_dict(), "epochs": 1})(model, batch)
    _sync(images.device)
    start = time.perf_counter()
    method(model, batch)
    _sync(images.device)
    return p * epochs / (time.perf_counter() - start)


def check(device: torch.device, pairs: list[int], epochs: int, precisions: list[str], arches: list[str],
          baseline_pairs: int) -> pd.DataFrame:
    g = torch.Generator().manual_seed(0)
    images = torch.rand(max(8, baseline_pairs), N, *SHAPE, generator=g).to(device)
    records = []

    def emit(**rec: Any) -> None:
        records.append(rec)
        print("  ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in rec.items()),
              flush=True)

    for arch in arches:
        model = _frozen(arch, device)
        for name in ("ours", "nc"):
            method = create_method(name, {"epochs": epochs})
            time_baseline(model, list(images[:1]), [1], name, 1, B, 0)  # warm-up
            s = time_baseline(model, list(images[:baseline_pairs]), [1] * baseline_pairs, name, epochs, B, 0)
            base = baseline_pairs * epochs / s
            emit(arch=arch, method=name, config="baseline", precision="fp32", P=1, pair_epochs_per_s=base,
                 x_baseline=1.0, peak_mib=_peak(device))
            for precision in precisions:
                with precision_context(device, precision):
                    points = sweep_pairs_per_batch(method, model, images[:8], [1 + i for i in range(8)],
                                                   max_pairs=max(pairs) * 8, batch_size=B, epochs=2)
                    auto = best_pairs_per_batch(points)
                    for config, p in [*(("P", p) for p in pairs), ("auto", auto)]:
                        if device.type == "cuda":
                            torch.cuda.reset_peak_memory_stats(device)
                        try:
                            rate = _rate(method, model, images, p, epochs)
                        except torch.cuda.OutOfMemoryError:
                            torch.cuda.empty_cache()
                            emit(arch=arch, method=name, config=f"{config} (OOM)", precision=precision, P=p)
                            continue
                        emit(arch=arch, method=name, config=config, precision=precision, P=p,
                             pair_epochs_per_s=rate, x_baseline=rate / base, peak_mib=_peak(device))
    return pd.DataFrame(records)


def paper_setting(device: torch.device, precisions: list[str], epochs: int, compile_step: bool,
                  arch: str = "resnet20") -> pd.DataFrame:
    """Issue #11's GPU goal measured directly: every pair of a 10-class 32×32 ResNet20 (90) through ours
    at ``epochs`` (the paper: 1000) and N = 50, as ONE batch of P = 90, against the baseline's
    pair-epochs/s on the same model (timed on 2 pairs, extrapolated to 90 × ``epochs``)."""
    model = _frozen(arch, device)
    pairs = [(v, t) for v in range(NUM_CLASSES) for t in range(NUM_CLASSES) if v != t]
    g = torch.Generator().manual_seed(1)
    images = torch.rand(len(pairs), N, *SHAPE, generator=g).to(device)
    batch = PairBatch([v for v, _ in pairs], [t for _, t in pairs], images, list(range(len(pairs))), B)
    base_epochs = max(2, epochs // 20)
    time_baseline(model, list(images[:1]), [1], "ours", 1, B, 0)  # warm-up
    base = 2 * base_epochs / time_baseline(model, list(images[:2]), [1, 2], "ours", base_epochs, B, 0)
    base_seconds = len(pairs) * epochs / base
    records = []
    variants = [(prec, False) for prec in precisions] + ([("fp32", True)] if compile_step else [])
    for precision, compiled in variants:
        step_model = cast(torch.nn.Module, torch.compile(model, dynamic=True)) if compiled else model
        method = create_method("ours", {"epochs": epochs})
        with precision_context(device, precision):
            create_method("ours", {"epochs": 2})(step_model, batch)  # warm-up/compile
            _sync(device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            start = time.perf_counter()
            out = method(step_model, batch)
            _sync(device)
            seconds = time.perf_counter() - start
        rec = {"arch": arch, "pairs": len(pairs), "epochs": epochs, "precision": precision, "compile": compiled,
               "seconds": seconds, "baseline_seconds_est": base_seconds, "x_baseline": base_seconds / seconds,
               "peak_mib": _peak(device), "converged": sum(bool(o.converged) for o in out)}
        print("paper setting (ours, 90 pairs, P = 90): "
              + "  ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in rec.items()),
              flush=True)
        records.append(rec)
    return pd.DataFrame(records)


def main(argv: list[str] | None = None) -> int:
    tiny = os.environ.get("FARM_CHECK_TINY") == "1"
    ap = argparse.ArgumentParser(description="pair-epochs/s of ours and NC vs the paper-style baseline")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--epochs", type=int, default=2 if tiny else 20)
    ap.add_argument("--pairs", default="1,2" if tiny else "1,8,64,512", help="comma list of P")
    ap.add_argument("--arch", default="small_cnn" if tiny else "small_cnn,resnet20")
    ap.add_argument("--out", help="also write the table as CSV here (the paper-setting table beside it: *-paper.csv)")
    ap.add_argument("--paper-epochs", type=int, default=2 if tiny else 1000,
                    help="epochs of the paper-setting run (90 ResNet20 pairs through ours as one batch); 0 skips it")
    ap.add_argument("--compile", action="store_true", help="also time the paper setting with torch.compile")
    ap.add_argument("--skip-sweep", action="store_true", help="only the paper-setting run")
    args = ap.parse_args(argv)
    device = pick_device(args.device)
    bf16_ok = device.type == "cpu" or torch.cuda.is_bf16_supported()
    precisions = ["fp32", "bf16" if bf16_ok else "fp16"]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {name}, torch {torch.__version__}, threads {torch.get_num_threads()}", flush=True)
    start = time.perf_counter()
    if args.paper_epochs > 0:
        paper = paper_setting(device, precisions, args.paper_epochs, args.compile,
                              arch="small_cnn" if tiny else "resnet20")
        print(paper.to_string(index=False), flush=True)
        if args.out:
            paper.to_csv(args.out.removesuffix(".csv") + "-paper.csv", index=False)
    if not args.skip_sweep:
        df = check(device, [int(p) for p in args.pairs.split(",")], args.epochs, precisions, args.arch.split(","),
                   baseline_pairs=1 if tiny else 4)
        print(df.to_string(index=False))
        if args.out:
            df.to_csv(args.out, index=False)
    print(f"device check done in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
