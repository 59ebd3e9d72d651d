"""``farm harden`` configuration: models to harden, hardening methods, schedule, distances.

Validated by :func:`farm.schema.build` like every farm config, so all problems are reported at
once with their dotted paths (``methods[2].params.lr: must be > 0``). Defaults are METHODS.md's
where it gives one (N = 100 distance images, 3 restarts, 1000 epochs, stamp 20 % of a batch);
the schedule it leaves open (§5.17) is our [REC] choice, named as such.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from farm.config import DatasetSpec, ModelSpec, TrackingSpec, is_safe_id, load_raw, params_problems
from farm.schema import build

HardenName = Literal["natural", "uap", "nc", "iterative_nc", "ours"]
# The farm method that generates each hardening method's triggers (natural generates none).
INVERTER: dict[str, str] = {"uap": "uap", "nc": "nc", "iterative_nc": "nc", "ours": "ours"}
ON_THE_FLY = frozenset({"uap", "iterative_nc", "ours"})  # regenerated during training; nc: fixed, made once


@dataclass(frozen=True)
class HardenMethodSpec:
    """One hardening method; ``params`` override its inverter's Params (METHODS.md defaults)."""

    name: HardenName
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def inverter(self) -> str | None:
        return INVERTER.get(self.name)

    def check(self) -> list[str]:
        if self.inverter is None:
            return [f"params: 'natural' generates no triggers, got {sorted(self.params)}"] if self.params else []
        return params_problems(self.inverter, self.params)


@dataclass(frozen=True)
class HardenTrainSpec:
    """Fine-tuning schedule ([REC], METHODS.md §5.17: the paper gives none)."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.01  # SGD (momentum 0.9, nesterov) from the natural model's weights
    weight_decay: float = 5e-4
    stamp_share: float = 0.2  # share of each batch stamped with a trigger, true labels kept
    inversion_epochs: int = 2  # epochs of the shared loop per step for the drawn pairs (warm-started)
    attack_images: int = 32  # clean images per pair the on-the-fly inversion optimises on

    def check(self) -> list[str]:
        out = []
        for name in ("epochs", "batch_size", "inversion_epochs", "attack_images"):
            if getattr(self, name) < 1:
                out.append(f"{name}: must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            out.append(f"lr: must be > 0, got {self.lr}")
        if not self.weight_decay >= 0:
            out.append(f"weight_decay: must be >= 0, got {self.weight_decay}")
        if not 0 < self.stamp_share <= 1:
            out.append(f"stamp_share: must be in (0, 1], got {self.stamp_share}")
        return out


@dataclass(frozen=True)
class DistanceSpec:
    """Class distance of every pair [S-L.1]: NC (L1 of the mask) and ours (#pixels), smallest of
    ``restarts`` runs, each a ``farm run`` over all K(K-1) pairs of every model."""

    images: int = 100  # N val images of the victim class [S-L.1]
    epochs: int = 1000
    restarts: int = 3
    heldout_images: int | None = 50  # held-out ASR is logged, not used: capped to save time
    pairs_per_batch: int = 50

    def check(self) -> list[str]:
        out = []
        for name in ("images", "epochs", "restarts", "pairs_per_batch"):
            if getattr(self, name) < 1:
                out.append(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.heldout_images is not None and self.heldout_images < 1:
            out.append(f"heldout_images: must be >= 1 or null, got {self.heldout_images}")
        return out


@dataclass(frozen=True)
class HardenConfig:
    run_id: str = "harden"
    output: str = "results"  # a local folder: checkpoints are files
    zoo_dir: str = "results/zoo"  # shared with `farm run` / `farm scan`: same key, same weights
    datasets: dict[str, DatasetSpec] = field(default_factory=lambda: {"synthetic": DatasetSpec()})
    models: list[ModelSpec] = field(default_factory=list)  # zoo models: the natural ones
    methods: list[HardenMethodSpec] = field(default_factory=lambda: [
        HardenMethodSpec(n) for n in ("natural", "uap", "nc", "iterative_nc", "ours")])  # type: ignore[arg-type]
    train: HardenTrainSpec = field(default_factory=HardenTrainSpec)
    distance: DistanceSpec = field(default_factory=DistanceSpec)
    seed: int = 0
    num_cpus: int | None = None  # local Ray; one (model, method) hardening per CPU
    tracking: TrackingSpec = field(default_factory=TrackingSpec)

    def check(self) -> list[str]:
        out = []
        if not is_safe_id(self.run_id):
            out.append(f"run_id: {self.run_id!r} must be a plain folder name")
        if "://" in self.output and not self.output.startswith("file://"):
            out.append(f"output: {self.output!r}: hardening checkpoints need a local folder")
        if not self.models:
            out.append("models: at least one model to harden is required")
        for i, m in enumerate(self.models):
            if m.source != "zoo":
                out.append(f"models[{i}].source: hardening starts from zoo models (their natural training is the "
                           f"'natural' row), got {m.source!r}")
            if m.dataset not in self.datasets:
                out.append(f"models[{i}].dataset: {m.dataset!r} is not a key of datasets ({', '.join(sorted(self.datasets))})")
        names = [m.name for m in self.methods]
        if len(set(names)) != len(names):
            out.append(f"methods: duplicates in {names}")
        if "natural" not in names:
            out.append("methods: 'natural' is required (Eq 12 compares every hardened model with it)")
        return out


def load_harden_config(path: str | Path) -> HardenConfig:
    return build(HardenConfig, load_raw(path), source=str(path))
