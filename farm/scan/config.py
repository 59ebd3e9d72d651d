"""``farm scan`` configuration: the scan zoo, the scanners and where results go.

Validated by :func:`farm.schema.build` like the benchmark config, so every problem is reported
at once with its dotted path (e.g. ``zoo.poisoned: must be >= 1``).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from farm.config import DatasetSpec, TrainSpec, is_safe_id, load_raw, params_problems
from farm.scan.karm import KArmParams
from farm.schema import build


@dataclass(frozen=True)
class ScanZooSpec:
    """M clean + M poisoned models; attacks, archs, targets and patch sizes drawn per model."""

    clean: int = 20
    poisoned: int = 20
    archs: tuple[str, ...] = ("small_cnn",)
    attacks: tuple[Literal["badnets", "blend", "label_specific"], ...] = ("badnets", "blend", "label_specific")
    patch_sizes: tuple[int, ...] = (2, 3, 4)
    shapes: tuple[Literal["square", "polygon"], ...] = ("square",)  # patch shape drawn per patch attack
    positions: tuple[Literal["corner", "random"], ...] = ("corner",)  # patch place drawn per patch attack
    seed: int = 0  # draws of arch/attack/target/victim/patch and each model's training seed
    train: TrainSpec = field(default_factory=TrainSpec)

    def check(self) -> list[str]:
        out = []
        for name in ("clean", "poisoned"):
            if getattr(self, name) < 0:
                out.append(f"{name}: must be >= 0, got {getattr(self, name)}")
        if self.clean + self.poisoned < 1:
            out.append("clean/poisoned: the zoo needs at least one model")
        for name in ("archs", "attacks", "patch_sizes", "shapes", "positions"):
            if not getattr(self, name):
                out.append(f"{name}: must list at least one value")
        return out


@dataclass(frozen=True)
class ScannerSpec:
    """One detector: ``karm`` (K-Arm) or ``mad`` (NC's anomaly index), with its core.

    K-Arm's decision bounds are per scanner because they are per core: NC's size is the mask's
    L1, ours' a pixel count, so one pair of bounds cannot suit both (METHODS.md §5.16: re-tune
    on held-out models; ``farm tune-bounds`` does, docs/scanning.md). None = ``karm``'s."""

    kind: Literal["karm", "mad"] = "karm"
    core: Literal["nc", "ours"] = "nc"
    params: dict[str, Any] = field(default_factory=dict)  # the core method's Params overrides
    global_bound: float | None = None  # share of the image area; None = karm.global_bound
    pair_bound: float | None = None  # share of the image area; None = karm.pair_bound

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.core}"

    def karm_params(self, base: KArmParams) -> KArmParams:
        """``base`` with this scanner's bounds where it sets them."""
        return replace(base, global_bound=base.global_bound if self.global_bound is None else self.global_bound,
                       pair_bound=base.pair_bound if self.pair_bound is None else self.pair_bound)

    def check(self) -> list[str]:
        out = params_problems(self.core, self.params)
        for name in ("global_bound", "pair_bound"):
            value = getattr(self, name)
            if value is None:
                continue
            if self.kind != "karm":
                out.append(f"{name}: only a karm scanner has decision bounds (this one is {self.kind})")
            elif not 0 < value <= 1:
                out.append(f"{name}: must be in (0, 1] (share of the image area), got {value}")
        return out


@dataclass(frozen=True)
class ScanConfig:
    run_id: str = "scan"
    output: str = "results"
    dataset: DatasetSpec = field(default_factory=DatasetSpec)
    zoo_dir: str = "results/zoo"  # where `farm run` keeps its zoo too: models are shared
    zoo: ScanZooSpec = field(default_factory=ScanZooSpec)
    scanners: tuple[ScannerSpec, ...] = (ScannerSpec("karm", "nc"), ScannerSpec("karm", "ours"),
                                         ScannerSpec("mad", "nc"), ScannerSpec("mad", "ours"))
    karm: KArmParams = field(default_factory=KArmParams)
    mad_attack_size: int = 50
    seed: int = 0
    num_cpus: int | None = None  # Ray actors (one model at a time each); None = all CPUs
    # A TrojAI-style round (id-*/model.pt + clean_example_data/) to scan INSTEAD of training
    # the zoo: `dataset` and `zoo` are then unused (farm/scan/trojai_round.py).
    round_dir: str | None = None
    round_arch: str | None = None  # state-dict model.pt files: their arch (default: config.json's, else small_cnn)

    def check(self) -> list[str]:
        out = []
        if not is_safe_id(self.run_id):
            out.append(f"run_id: {self.run_id!r} must be a plain folder name")
        names = [s.name for s in self.scanners]
        if len(set(names)) != len(names):
            out.append(f"scanners: duplicate kind/core in {names}")
        if self.mad_attack_size < 1:
            out.append(f"mad_attack_size: must be >= 1, got {self.mad_attack_size}")
        return out


def load_scan_config(path: str | Path) -> ScanConfig:
    return build(ScanConfig, load_raw(path), source=str(path))
