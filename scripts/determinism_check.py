"""Which knobs change a run's bits on this machine? (docs/determinism.md)

Runs ours on the same pairs of one small zoo model several times in this process, changing one
knob at a time (a repeat, pairs per batch P, intra-op threads), and prints for each whether every
trigger is byte-identical to the reference and, if not, the largest size and ASR differences.

    python scripts/determinism_check.py --pairs 10 --epochs 40
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from farm.inprocess import method_spec, run_pairs  # noqa: E402
from farm.config import DEFAULT_CONFIG, load_config  # noqa: E402
from farm.grid import select_pairs  # noqa: E402
from farm.prepare import prepare_models  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=40)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(DEFAULT_CONFIG, [f"run.output={tmp}"])
        model = prepare_models(cfg, lambda _m: None)["cnn-badnets"]
        pairs = select_pairs(cfg.pairs, model.num_classes, cfg.run.seed)
        pairs = [p for p in pairs if p.victim >= 0][:args.pairs]
        spec = method_spec(cfg, "ours", args.epochs)

        def run(p: int, threads: int) -> list[dict]:
            torch.set_num_threads(threads)
            return run_pairs(cfg, model, spec, pairs, p)

        ref = run(args.pairs, 1)
        print(f"reference: P={args.pairs}, 1 thread, {len(pairs)} pairs x {args.epochs} epochs; torch "
              f"{torch.__version__}, {torch.backends.cpu.get_cpu_capability()}")
        for label, p, threads in [("repeat", args.pairs, 1), ("P=1", 1, 1), (f"P={max(2, args.pairs // 2)}",
                                                                             max(2, args.pairs // 2), 1),
                                  ("2 threads", args.pairs, 2)]:
            rows = run(p, threads)
            same = sum(a["trigger"] == b["trigger"] for a, b in zip(ref, rows))
            dsize = max(abs(a["raw_size"] - b["raw_size"]) for a, b in zip(ref, rows))
            dasr = max(abs(a["asr"] - b["asr"]) for a, b in zip(ref, rows))
            print(f"{label:>10}: {same}/{len(rows)} triggers byte-identical, max |d size| {dsize:g} px, "
                  f"max |d ASR| {100 * dasr:.1f} points")


if __name__ == "__main__":
    main()
