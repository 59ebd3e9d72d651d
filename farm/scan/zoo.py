"""The scan zoo: M clean and M poisoned model specs with their ground truth.

Every random choice (arch, attack type, patch size, shape and position, target, victim,
training seed) is drawn from ``zoo.seed`` so the zoo is the same on every machine, and each
model is trained (or reused) through the farm's own cached zoo.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from farm.config import AttackSpec, ModelSpec
from farm.scan.config import ScanConfig


def zoo_specs(cfg: ScanConfig, num_classes: int) -> list[ModelSpec]:
    z = cfg.zoo
    rng = np.random.default_rng(z.seed)
    specs = []
    for i in range(z.clean + z.poisoned):
        arch = str(rng.choice(z.archs))
        train = replace(z.train, seed=int(rng.integers(2**31)))
        if i < z.clean:
            attack = AttackSpec()
            kind = "clean"
        else:
            kind = str(rng.choice(z.attacks))
            target = int(rng.integers(num_classes))
            victim = int((target + 1 + rng.integers(num_classes - 1)) % num_classes)
            patch = int(rng.choice(z.patch_sizes))
            extra = {}
            if kind != "blend":  # drawn only when there is a choice: zoos drawn before keep their models
                for name, options in (("shape", z.shapes), ("position", z.positions)):
                    extra[name] = str(rng.choice(options)) if len(options) > 1 else options[0]
            attack = AttackSpec(type=kind, target=target, victim=victim if kind == "label_specific" else None,
                                patch_size=patch, **extra)
        specs.append(ModelSpec(id=f"{kind}-{i:03d}", dataset="scan", arch=arch, attack=attack, train=train))
    return specs
