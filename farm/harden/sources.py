"""Where a hardening step's triggers come from: the farm's own inversion methods.

Each step stamps a share of its batch: image i (true label v_i) gets the trigger of a pair
(v_i, t_i) with t_i drawn uniformly from the other K-1 labels, so the pairs a step uses are
drawn from all K(K-1). Two sources:

- :class:`OnTheFly` (ours, iterative NC, UAP): ONE batched problem of the shared loop holds all
  K(K-1) pairs; a step continues only the pairs it drew for ``inversion_epochs`` epochs against
  the current weights (:func:`run_epochs_on`) and stamps with the method's own ``stamp`` of its
  current variables. Triggers are warm-started from step to step within an epoch and made
  afresh each epoch: a checkpoint at an epoch boundary then holds everything a resume needs,
  and a resumed run is identical to an uninterrupted one.
- :class:`Universal` (NC as published): K all-to-one triggers inverted once on the natural
  model, before training, and stamped unchanged; the pair's victim plays no part.
"""
from __future__ import annotations

from typing import Protocol

import torch

from farm.data import Dataset
from farm.data.selection import attack_indices, gather
from farm.methods import PairBatch, pair_seed
from farm.methods.base import EpochMethod, EpochProblem, run_epochs_on
from farm.triggers import Trigger, stamp


class TriggerSource(Protocol):
    def begin_epoch(self, epoch: int) -> None:
        """Called before each training epoch."""

    def stamp(self, model: torch.nn.Module, x: torch.Tensor, victims: torch.Tensor,
              targets: torch.Tensor) -> torch.Tensor:
        """x: n×C×H×W in [0,1] on the model's device, of classes ``victims`` (CPU, like ``targets``)
        -> x stamped with pair (v_i, t_i)'s trigger."""


def draw_targets(labels: torch.Tensor, num_classes: int, gen: torch.Generator) -> torch.Tensor:
    """A target for every label, uniform over the other K-1 classes."""
    return (labels + 1 + torch.randint(num_classes - 1, labels.shape, generator=gen)) % num_classes


def pair_images(ds: Dataset, victims: list[int | None], targets: list[int], n: int, seed: int,
                device: str | torch.device) -> torch.Tensor:
    """P×n×C×H×W clean train images in [0,1] for each (victim or any, target), seeded like a run."""
    imgs = torch.stack([gather(ds, "train", attack_indices(ds, v, t, n, seed)) for v, t in zip(victims, targets)])
    return imgs.to(device).float() / 255


class _Inverting:
    """Eval mode and frozen weights while the method optimises its triggers (METHODS.md §4:
    no cross-sample coupling; no gradient wasted on the weights), training mode after."""

    def __init__(self, model: torch.nn.Module):
        self.model, self.was_training = model, model.training

    def __enter__(self) -> torch.nn.Module:
        return self.model.eval().requires_grad_(False)

    def __exit__(self, *exc: object) -> None:
        self.model.train(self.was_training).requires_grad_(True)


class OnTheFly:
    """All K(K-1) pairs of ``method`` in one problem, continued per step for the pairs drawn."""

    def __init__(self, method: EpochMethod, ds: Dataset, attack_images: int, inversion_epochs: int,
                 seed: int, tag: str, device: str | torch.device = "cpu"):
        k = ds.num_classes
        self.method, self.epochs, self.seed, self.tag = method, inversion_epochs, seed, tag
        self.victims = [v for v in range(k) for t in range(k) if v != t]
        self.targets = [t for v in range(k) for t in range(k) if v != t]
        self.images = pair_images(ds, self.victims, self.targets, attack_images, seed, device)  # type: ignore[arg-type]
        self.index = torch.full((k, k), -1, dtype=torch.long)
        self.index[self.victims, self.targets] = torch.arange(len(self.targets))
        self.problem: EpochProblem | None = None

    def begin_epoch(self, epoch: int) -> None:
        seeds = [pair_seed(self.seed, self.tag, epoch, v, t) for v, t in zip(self.victims, self.targets)]
        self.problem = self.method.make_problem(PairBatch(list(self.victims), list(self.targets), self.images, seeds))

    def stamp(self, model: torch.nn.Module, x: torch.Tensor, victims: torch.Tensor,
              targets: torch.Tensor) -> torch.Tensor:
        assert self.problem is not None, "begin_epoch() first"
        rows = self.index[victims, targets].to(self.images.device)
        drawn = torch.zeros(len(self.targets), dtype=torch.bool, device=self.images.device)
        drawn[rows] = True
        with _Inverting(model) as frozen:
            run_epochs_on(self.problem, frozen, drawn, self.epochs, self.method.augment)
        with torch.no_grad():
            return self.problem.stamp(x.unsqueeze(1), rows).squeeze(1)


class Universal:
    """NC's published hardening: one all-to-one trigger per target, inverted once, then fixed."""

    def __init__(self, method: EpochMethod, model: torch.nn.Module, ds: Dataset, attack_images: int,
                 seed: int, tag: str, device: str | torch.device = "cpu"):
        k = ds.num_classes
        victims: list[int | None] = [None] * k
        targets = list(range(k))
        seeds = [pair_seed(seed, tag, "universal", t) for t in targets]
        batch = PairBatch(victims, targets, pair_images(ds, victims, targets, attack_images, seed, device), seeds)
        with _Inverting(model) as frozen:
            self.triggers: list[Trigger] = [o.trigger for o in method.invert(frozen, batch)]

    def begin_epoch(self, epoch: int) -> None:
        """Fixed triggers: nothing to regenerate."""

    def stamp(self, model: torch.nn.Module, x: torch.Tensor, victims: torch.Tensor,
              targets: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        for t in targets.unique().tolist():
            sel = (targets == t).to(x.device)
            out[sel] = stamp(x[sel], self.triggers[t])
        return out
