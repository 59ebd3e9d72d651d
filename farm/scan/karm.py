"""K-Arm on one model [KA] (METHODS.md §2(g)): pre-screen, warm up, bandit rounds, decide.

The optimisation core is any epoch-loop method of the farm (``nc`` or ``ours``): all arms
live in ONE batched problem of the shared loop, so warm-up rounds optimise every arm
together (P pairs), and a bandit round continues only the chosen arm
(:func:`farm.methods.base.run_epochs_on`); the others stay untouched until chosen again.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from farm.data import Dataset
from farm.data.selection import gather
from farm.methods.base import EpochMethod, run_epochs, run_epochs_on
from farm.scan.arms import arm_batch, arm_size
from farm.scan.bandit import Bandit, BanditParams
from farm.scan.prescreen import Arm, prescreen
from farm.triggers import Trigger

# [KA] bounds, L1 1720 (global) and 1000 (pair) on 224x224 inputs, as shares of the area.
GLOBAL_BOUND = 1720 / 224**2
PAIR_BOUND = 1000 / 224**2


@dataclass(frozen=True)
class KArmParams:
    bandit: BanditParams = field(default_factory=BanditParams)
    round_epochs: int = 1  # [REC] epochs of the shared loop per bandit round
    attack_size: int = 50  # N clean images per arm
    screen_per_class: int = 20  # clean test images per class for pre-screening
    global_bound: float = GLOBAL_BOUND
    pair_bound: float = PAIR_BOUND

    def check(self) -> list[str]:
        out = [f"bandit.{e}" for e in self.bandit.check()]
        for name in ("round_epochs", "attack_size", "screen_per_class"):
            if getattr(self, name) < 1:
                out.append(f"{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("global_bound", "pair_bound"):
            if not 0 < getattr(self, name) <= 1:
                out.append(f"{name}: must be in (0, 1] (share of the image area), got {getattr(self, name)}")
        return out


@dataclass
class ScanResult:
    """Verdict on one model plus per-arm detail (sizes are shares of the image area)."""

    trojaned: bool
    score: float  # smallest arm size found
    arm: Arm  # the arm that gave it
    trigger: Trigger  # that arm's trigger (best so far; the last iterate if it never met the ASR bound)
    arms: list[Arm]
    arm_sizes: list[float]
    arm_rounds: list[int]
    rounds: int
    seconds: float


def bound(params: KArmParams, arm: Arm) -> float:
    return params.global_bound if arm.victim is None else params.pair_bound


@torch.no_grad()
def screen(model: torch.nn.Module, ds: Dataset, params: KArmParams, seed: int) -> list[Arm]:
    """Pre-screening on ``screen_per_class`` clean test images of every class."""
    labels = ds.labels("test")
    gen = torch.Generator().manual_seed(seed)
    idx = torch.cat([torch.nonzero(torch.as_tensor(labels == c)).flatten()[
        torch.randperm(int((labels == c).sum()), generator=gen)[: params.screen_per_class]]
        for c in range(ds.num_classes)])
    x = gather(ds, "test", idx.numpy()).float() / 255
    return prescreen(model(x))


def scan_model(model: torch.nn.Module, ds: Dataset, core: EpochMethod, params: KArmParams,
               seed: int = 0, model_id: str = "model") -> ScanResult:
    """Run K-Arm on ``model``; stops early once an arm's trigger is below its bound."""
    t0 = time.perf_counter()
    arms = screen(model, ds, params, seed)
    problem = core.make_problem(arm_batch(ds, arms, params.attack_size, seed, model_id, core.name))
    bandit = Bandit(len(arms), params.bandit, seed)
    rounds = [0] * len(arms)

    def record(pulled: list[int]) -> bool:
        sizes = [arm_size(o) for o in problem.outcomes()]
        for a in pulled:
            rounds[a] += 1
            bandit.record(a, sizes[a], finished=not bool(problem.active[a]))
        return any(sizes[a] < bound(params, arms[a]) for a in pulled)

    detected = False
    for _ in range(params.bandit.warmup_rounds):
        run_epochs(problem, model, params.round_epochs, core.augment)
        detected = record(list(range(len(arms))))
        if detected:
            break
    for _ in range(params.bandit.max_rounds if not detected else 0):
        a = bandit.choose()
        if a is None:
            break
        only = torch.zeros_like(problem.active)
        only[a] = True
        run_epochs_on(problem, model, only, params.round_epochs, core.augment)
        if record([a]):
            break
    best, size = bandit.best()
    sizes = [min(h, default=math.inf) for h in bandit.history]
    return ScanResult(trojaned=size < bound(params, arms[best]), score=size, arm=arms[best],
                      trigger=problem.outcomes()[best].trigger, arms=arms,
                      arm_sizes=sizes, arm_rounds=rounds, rounds=sum(rounds),
                      seconds=time.perf_counter() - t0)
