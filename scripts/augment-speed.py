"""The augmentation before and after issue #11, timed in ONE process, rounds interleaved.

Before: torchvision's rotate + resized_crop called pair by pair (the loop ``farm.methods.
augment`` had until issue #11, kept here as the reference). After: ``augment.transform``, all
pairs at once. Times (a) the transform alone, forward + backward, on P pairs of B = 32 images,
and (b) a whole ``ours`` inversion with the augmentation (the loop's real use) on an untrained
network of the given architecture (speed does not depend on the weights), and prints the largest
difference between the two outputs so that a speed-up is never bought with a different result.
Usage (docs/benchmarks.md, "Augmentation"):
    OMP_NUM_THREADS=1 python scripts/augment-speed.py --pairs 1,10,50 --rounds 5
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
import torchvision.transforms.v2.functional as TF

from farm.methods import METHODS, PairBatch
from farm.methods.augment import AugmentDraw, draw, make_augment, transform
from farm.methods.base import Augment
from farm.models import build_net

MEAN = [0.5, 0.5, 0.5]


def per_pair(x: torch.Tensor, draws: list[AugmentDraw], fill: list[float]) -> torch.Tensor:
    """The implementation before issue #11: one torchvision call pair by pair."""
    h, w = x.shape[-2:]
    return torch.stack([
        TF.resized_crop(TF.rotate(xi, d.angle, interpolation=TF.InterpolationMode.NEAREST, fill=fill),
                        d.top, d.left, d.height, d.width, [h, w], antialias=True)
        for xi, d in zip(x, draws)])


def per_pair_augment(fill: list[float]) -> Augment:
    def augment(x: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
        h, w = x.shape[-2:]
        return per_pair(x, [draw(g, h, w) for g in generators], fill)

    return augment


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def transform_only(p: int, hw: int, rounds: int, reps: int, device: str) -> tuple[float, float, float]:
    """(before s, after s, max |difference|) per forward + backward of the transform (the
    gradient w.r.t. its input for a random upstream gradient, as in the loop), averaged over
    ``reps`` fresh sets of draws (on small images most draws leave an image unchanged)."""
    g = torch.Generator().manual_seed(p)
    x = torch.rand(p, 32, 3, hw, hw, generator=g).to(device).requires_grad_()
    upstream = torch.rand(x.shape, generator=g).to(device)
    draw_sets = [[draw(g, hw, hw) for _ in range(p)] for _ in range(reps)]
    with torch.no_grad():
        diff = max(float((per_pair(x, d, MEAN) - transform(x, d, MEAN)).abs().max()) for d in draw_sets)

    def steps(fn: Callable) -> None:
        for draws in draw_sets:
            torch.autograd.grad(fn(x, draws, MEAN), x, upstream)

    times: dict[str, list[float]] = {"before": [], "after": []}
    for fn in (per_pair, transform):  # warm-up: caches, allocator
        steps(fn)
    for _ in range(rounds):
        for name, fn in (("before", per_pair), ("after", transform)):
            times[name].append(timed(lambda fn=fn: steps(fn)) / reps)
    return statistics.median(times["before"]), statistics.median(times["after"]), diff


def inversion(arch: str, p: int, epochs: int, rounds: int, device: str) -> tuple[float, float, float]:
    """(before s, after s, max |trigger difference|) of ours with augmentation on P pairs.

    Timed in float32; the difference is taken on a float64 run of the first (up to) 4 pairs,
    because in float32 a last-bit difference of the resize can move a trigger entry across the
    1/255 threshold, after which the two optimisations drift apart like any two float32 runs."""
    net = build_net(arch, 10, (3, 32, 32)).to(device).eval().requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    images = torch.rand(p, 50, 3, 32, 32, generator=g).to(device)
    batch = PairBatch(list(range(p)), [(i + 1) % 10 for i in range(p)], images, list(range(p)), batch_size=32)
    cls = METHODS["ours"]
    augments = (("before", per_pair_augment(MEAN)), ("after", make_augment(MEAN)))
    times: dict[str, list[float]] = {"before": [], "after": []}
    for _ in range(rounds):
        for name, aug in augments:
            method = cls(cls.Params(epochs=epochs), augment=aug)
            times[name].append(timed(lambda m=method: m.invert(net, batch)))
    few = batch.subset(list(range(min(p, 4))))
    few.images = few.images.double()
    outs = [cls(cls.Params(epochs=epochs), augment=aug).invert(net.double(), few) for _, aug in augments]
    diff = max(float((a.trigger.array - b.trigger.array).abs().max()) for a, b in zip(*outs))
    return statistics.median(times["before"]), statistics.median(times["after"]), diff


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", default="1,10,50", help="comma list of P")
    ap.add_argument("--hw", default="32,224", help="image sizes for the transform-only timing")
    ap.add_argument("--archs", default="small_cnn,resnet20", help="networks for the inversion timing")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reps", type=int, default=10, help="transform calls (sets of draws) per timing")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), device {args.device}"
          + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else ""))
    print("| what | P | before (per pair) | after (batched) | speed-up | max abs difference (inversion: float64) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for hw in (int(s) for s in args.hw.split(",")):
        for p in (int(s) for s in args.pairs.split(",")):
            if hw * hw * p > 224 * 224 * 10:
                continue  # keep the 224-px case to P <= 10 (memory and minutes)
            reps = args.reps if hw <= 64 else 1
            before, after, diff = transform_only(p, hw, args.rounds, reps, args.device)
            print(f"| transform fwd+bwd, 32 images {hw}x{hw} per pair | {p} | {before * 1e3:.2f} ms | "
                  f"{after * 1e3:.2f} ms | {before / after:.2f}x | {diff:.1e} |", flush=True)
    for arch in args.archs.split(","):
        for p in (int(s) for s in args.pairs.split(",")):
            before, after, diff = inversion(arch, p, args.epochs, args.rounds, args.device)
            print(f"| ours + augmentation, {arch}, {args.epochs} epochs | {p} | {before:.2f} s | {after:.2f} s | "
                  f"{before / after:.2f}x | {diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()
