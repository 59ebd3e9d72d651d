"""Targeted universal adversarial perturbation [S-B Eq 10-11] (METHODS.md §2(e)), batched.

One additive delta per pair in the L∞ ball of radius eps, trained on the pair's victim images
with the clipped loss mean_i min(CE(f(x'_i), t), beta) by projected sign-gradient descent
(the SGD-UAP recipe of Shafahi et al. that METHODS.md picks [REC]). Batching, shuffles and
epochs are the shared loop's (same N/B as ours); the kept trigger is the delta of the epoch
with the best attack-set ASR. There is no size term: UAP is the "changes every pixel"
baseline of Fig. 9/10.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

from farm.methods.base import (EpochMethod, EpochProblem, MethodInfo, PairBatch, PairOutcome, as_outcomes,
                               check_params, per_sample_ce, register)
from farm.triggers import Trigger, additive_size


@dataclass(frozen=True)
class UAPParams:
    epochs: int = 1000
    # L-inf budget; null = the dataset's own (Dataset.uap_eps: CIFAR-10 4/255, SVHN 0.05, LISA/GTSRB
    # 0.03, ImageNet 10/255, and the docs/methods.md rule for datasets the paper does not cover)
    eps: float | None = None
    step_fraction: float = 0.1  # alpha = eps * step_fraction ([REC] eps/10)
    beta: float = 12.0  # loss clip (public SGD-UAP default)
    asr_threshold: float = 0.9  # [REC] converged = best attack-set ASR >= this

    def check(self) -> list[str]:
        out = check_params(self)
        if self.eps is not None and not 0 < self.eps <= 1:
            out.append(f"eps: must be in (0, 1], got {self.eps}")
        if not 0 < self.step_fraction <= 1:
            out.append(f"step_fraction: must be in (0, 1], got {self.step_fraction}")
        if self.beta <= 0:
            out.append(f"beta: must be > 0, got {self.beta}")
        return out

    def for_dataset(self, dataset: Any) -> "UAPParams":
        """These params with a null eps replaced by the dataset class's ``uap_eps``."""
        return self if self.eps is not None else replace(self, eps=dataset.uap_eps)


class SignSGD:
    """x <- clip(x - lr * sign(grad), -bound, bound) on active rows, with ``BatchedAdam``'s
    ``step(active)`` interface. A sign step has no state, so an inactive row simply does not
    move; the projection is UAP's L∞ ball, which is why this lives here and not in base."""

    def __init__(self, params: list[torch.Tensor], lr: float, bound: float):
        self.params, self.lr, self.bound = params, lr, bound

    @torch.no_grad()
    def step(self, active: torch.Tensor) -> None:
        for x in self.params:
            if x.grad is None:
                continue
            act = active.view((-1,) + (1,) * (x.dim() - 1))
            moved = (x - self.lr * x.grad.sign()).clamp(-self.bound, self.bound)
            x.copy_(torch.where(act, moved, x))


class UAPProblem(EpochProblem):
    def __init__(self, params: UAPParams, batch: PairBatch, device: torch.device, dtype: torch.dtype):
        super().__init__(batch, device, dtype)
        if params.eps is None:
            raise ValueError("uap: eps is null (the dataset's budget) but no dataset resolved it; "
                             "pass UAPParams(eps=...) or run through a config (farm.grid.resolved_params)")
        self.prm = params
        p = batch.size
        shape = tuple(batch.images.shape[2:])
        delta = torch.zeros((p,) + shape, dtype=dtype, device=device)
        self.variables = [delta.requires_grad_()]
        self.optimiser = SignSGD(self.variables, params.eps * params.step_fraction, params.eps)
        self.best_asr = torch.full((p,), -1.0, dtype=dtype, device=device)
        self.best = torch.zeros((p,) + shape, dtype=dtype, device=device)
        self.last_delta = torch.zeros_like(self.best)  # delta of each pair's last forward pass
        self.unclipped_steps = torch.zeros(p, dtype=torch.long, device=device)

    def stamp(self, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        delta = self.variables[0][rows]
        self.last_delta[rows] = delta.detach()
        return (x + delta.unsqueeze(1)).clamp(0, 1)

    def regulariser(self, rows: torch.Tensor) -> torch.Tensor:
        return torch.zeros(rows.numel(), dtype=self.dtype, device=self.device)  # no size term

    def data_loss(self, logits: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """mean_i min(CE_i, beta); a pair whose every sample is above beta would get a zero
        gradient, so for that step it uses the unclipped mean CE [REC] (counted)."""
        ce = per_sample_ce(logits, self.targets[rows])
        all_clipped = (ce.detach() > self.prm.beta).all(1)
        self.unclipped_steps[rows] += all_clipped.long()
        return torch.where(all_clipped, ce.mean(1), ce.clamp(max=self.prm.beta).mean(1))

    def total_loss(self, data: torch.Tensor, reg: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return data

    @torch.no_grad()
    def end_epoch(self, asr: torch.Tensor, reg: torch.Tensor, elapsed: float) -> None:
        """Keep the delta the epoch's ASR was measured with (its last forward pass) if that
        ASR beats the best so far (strictly: the earliest of equal ASRs is kept)."""
        improved = self.active & (asr > self.best_asr)
        self.best_asr = torch.where(improved, asr, self.best_asr)
        self.best = torch.where(improved.view(-1, 1, 1, 1), self.last_delta, self.best)
        self.converged = self.best_asr >= self.prm.asr_threshold
        self.mark_best(improved, additive_size(self.last_delta).to(self.dtype), elapsed)

    def outcomes(self) -> list[PairOutcome]:
        out = as_outcomes(self, [Trigger("additive", self.best[i].float().cpu()) for i in range(self.batch.size)])
        for i, o in enumerate(out):
            o.extra["best_attack_asr"] = float(self.best_asr[i])
            o.extra["uap_unclipped_steps"] = float(self.unclipped_steps[i])
        return out


@register("uap", MethodInfo("additive"))
class UAP(EpochMethod):
    """Targeted UAP: L∞-bounded additive delta, clipped CE, sign-gradient steps, best ASR kept."""

    Params = UAPParams

    def make_problem(self, batch: PairBatch) -> UAPProblem:
        return UAPProblem(self.params, batch, batch.images.device, batch.images.dtype)
