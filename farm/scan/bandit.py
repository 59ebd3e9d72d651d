"""K-Arm's scheduler [KA] (METHODS.md §2(g)): an epsilon-greedy bandit over arms.

Each pull of an arm is one optimisation round; its reward favours arms whose trigger is
small already (``beta / mean size``) and still shrinking fast (relative size drop of the
last round). Spending rounds on the promising arm is why K-Arm costs a fraction of
optimising every arm to the end. The scheduler is pure bookkeeping, separate from the
optimiser, so its decisions can be tested on arms with known sizes.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field


@dataclass(frozen=True)
class BanditParams:
    epsilon: float = 0.3  # [KA] exploration probability
    beta: float = 1e4  # [KA] weight of 1/mean size
    warmup_rounds: int = 2  # [KA] rounds every arm gets before the bandit chooses
    max_rounds: int = 60  # [KA] total rounds over all arms after warm-up
    window: int = 3  # [REC] rounds averaged in "mean size"

    def check(self) -> list[str]:
        out = []
        if not 0 <= self.epsilon <= 1:
            out.append(f"epsilon: must be in [0, 1], got {self.epsilon}")
        for name in ("warmup_rounds", "max_rounds", "window"):
            if getattr(self, name) < 1:
                out.append(f"{name}: must be >= 1, got {getattr(self, name)}")
        return out


@dataclass
class Bandit:
    """Size histories of ``n_arms`` arms and the choice of the next arm to pull."""

    n_arms: int
    params: BanditParams = field(default_factory=BanditParams)
    seed: int = 0

    def __post_init__(self) -> None:
        self.history: list[list[float]] = [[] for _ in range(self.n_arms)]
        self.finished = [False] * self.n_arms
        self.rng = random.Random(self.seed)

    def record(self, arm: int, size: float, finished: bool = False) -> None:
        """Size after a round of ``arm`` (inf while the attack does not succeed yet)."""
        self.history[arm].append(size)
        self.finished[arm] = self.finished[arm] or finished

    def reward(self, arm: int) -> float:
        h = [s for s in self.history[arm] if math.isfinite(s)]
        if not h:
            return 0.0  # no successful trigger yet: only exploration picks it
        recent = h[-self.params.window:]
        speed = (h[-2] - h[-1]) / h[-2] if len(h) >= 2 and h[-2] > 0 else 0.0
        return speed + self.params.beta / max(sum(recent) / len(recent), 1e-12)

    def choose(self) -> int | None:
        """Next arm to pull, or None when every arm has finished."""
        open_ = [a for a in range(self.n_arms) if not self.finished[a]]
        if not open_:
            return None
        if self.rng.random() < self.params.epsilon:
            return self.rng.choice(open_)
        return max(open_, key=lambda a: (self.reward(a), -a))

    def best(self) -> tuple[int, float]:
        """(arm, smallest size ever seen); size inf if no arm ever succeeded."""
        sizes = [min(h, default=math.inf) for h in self.history]
        arm = min(range(self.n_arms), key=lambda a: sizes[a])
        return arm, sizes[arm]
