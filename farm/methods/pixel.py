"""Ours = PixelBackdoor [PB torch] and its four ablations (METHODS.md §2(a), Table 6).

One code path: the ablations differ only in how the additive trigger is parametrised
(``VARIABLES``) and which size regulariser is used (``REGULARISER``), both fixed per
registered name so that a config cannot silently turn "ours" into an ablation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from farm.methods.base import (BatchedAdam, CostSchedule, EpochMethod, EpochProblem, MethodInfo, PairBatch,
                               PairOutcome, as_outcomes, check_params, register)
from farm.methods.squash import squash
from farm.triggers import Trigger, additive_size, threshold_additive

M = 1.0  # max pixel value


@dataclass(frozen=True)
class PixelParams:
    """[PB] defaults (METHODS.md §2(a))."""

    epochs: int = 1000
    lr: float = 0.1
    betas: tuple[float, float] = (0.5, 0.9)
    adam_eps: float = 1e-8
    asr_threshold: float = 0.9
    init_cost: float = 1e-3
    patience: int = 10
    cost_up: float = 1.5
    cost_down: float = 1.5**1.5
    # Opt-in, not in [PB] (METHODS.md: "no early stop"): stop a pair once its best size has not
    # improved for this many epochs after its first success. None = run every epoch.
    early_stop_epochs: int | None = None

    def check(self) -> list[str]:
        out = check_params(self)
        if self.early_stop_epochs is not None and self.early_stop_epochs < 1:
            out.append(f"early_stop_epochs: must be >= 1 or null (off), got {self.early_stop_epochs}")
        return out


def smooth_step(u: torch.Tensor) -> torch.Tensor:
    """s(u) = tanh(u/10)/(2-eps) + 0.5: 0.5 at 0, -> 0 as u -> -inf, so R pushes u below 0."""
    return squash(u, temperature=10.0)


def _pixel_max(t: torch.Tensor) -> torch.Tensor:
    """sum_(h,w) max_c t[..., c, h, w] -> one value per pair."""
    return t.amax(dim=-3).flatten(-2).sum(-1)


class PixelProblem(EpochProblem):
    def __init__(self, method: "Ours", batch: PairBatch, device: torch.device, dtype: torch.dtype):
        super().__init__(batch, device, dtype)
        prm = method.params
        self.variables_kind, self.reg_kind = method.VARIABLES, method.REGULARISER
        self.thr = prm.asr_threshold
        self.early_stop_epochs = prm.early_stop_epochs
        shape = tuple(batch.images.shape[2:])
        if self.variables_kind == "single":
            u = self.per_pair(lambda g: torch.rand(shape, generator=g) * 2 - 1)  # U[-1, 1)
            self.variables = [u.requires_grad_()]
        else:
            u_p = self.per_pair(lambda g: torch.rand(shape, generator=g))
            self.variables = [u_p.requires_grad_()]
            if self.variables_kind == "two":
                u_n = self.per_pair(lambda g: torch.rand(shape, generator=g))
                self.variables.append(u_n.requires_grad_())
        self.optimiser = BatchedAdam(self.variables, prm.lr, prm.betas, prm.adam_eps)
        p = batch.size
        self.cost = CostSchedule(p, prm.init_cost, prm.patience, prm.cost_up, prm.cost_down,
                                 start_at_zero=False, device=device, dtype=dtype)
        self.r_best = torch.full((p,), math.inf, dtype=dtype, device=device)
        self.since_best = torch.zeros(p, dtype=torch.long, device=device)  # epochs without a new best
        self.n_best = torch.full((p,), math.inf, dtype=dtype, device=device)
        self.delta_best = torch.zeros((p,) + shape, dtype=dtype, device=device)
        # Parts of each pair's delta in its last forward pass: (p+, p-) for the two-variable
        # form, (delta, 0) otherwise. Kept apart because [PB] thresholds and projects them apart.
        self.last_pos = torch.zeros_like(self.delta_best)
        self.last_neg = torch.zeros_like(self.delta_best)

    def stamp(self, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        if self.variables_kind == "single":
            pos = self.variables[0][rows].clamp(-M, M)
            delta = pos
        else:
            pos = self.variables[0][rows].clamp(0, M)
            delta = pos
            if self.variables_kind == "two":
                neg = -self.variables[1][rows].clamp(0, M)
                self.last_neg[rows] = neg.detach()
                delta = pos + neg
        self.last_pos[rows] = pos.detach()
        return (x + delta.unsqueeze(1)).clamp(0, M)

    def regulariser(self, rows: torch.Tensor) -> torch.Tensor:
        vs = [v[rows] for v in self.variables]
        if self.variables_kind == "single":
            u = vs[0]
            return _pixel_max(torch.tanh(u.abs() / 10) if self.reg_kind == "tanh" else u.clamp(-M, M).abs())
        if self.reg_kind == "tanh":
            return sum(_pixel_max(smooth_step(u)) for u in vs)
        return sum(_pixel_max(u.clamp(0, M)) for u in vs)  # |p-| = clamp(u_n, 0, M)

    def total_loss(self, data: torch.Tensor, reg: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return data + self.cost.cost[rows] * reg

    def _thresholded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(P+, P-) of the last forward pass, entries below tau in magnitude set to exactly 0."""
        return threshold_additive(self.last_pos), threshold_additive(self.last_neg)

    @torch.no_grad()
    def end_epoch(self, asr: torch.Tensor, reg: torch.Tensor, elapsed: float) -> None:
        act = self.active
        pos, neg = self._thresholded()
        thr_delta = pos + neg
        n = additive_size(thr_delta, tau=0.0).to(self.dtype)  # already thresholded: count nonzero
        improved = act & (asr >= self.thr) & (reg < self.r_best) & (n < self.n_best)
        self.r_best = torch.where(improved, reg, self.r_best)
        self.n_best = torch.where(improved, n, self.n_best)
        sel = improved.view(-1, 1, 1, 1)
        self.delta_best = torch.where(sel, thr_delta, self.delta_best)
        # Projection u <- P/M on rows that improved only; Adam's moments are kept ([PB]).
        self.variables[0].data = torch.where(sel, pos / M, self.variables[0].data)
        if self.variables_kind == "two":
            self.variables[1].data = torch.where(sel, -neg / M, self.variables[1].data)
        self.converged |= improved
        self.mark_best(improved, n, elapsed)
        self.cost.update(asr >= self.thr, act)
        if self.early_stop_epochs is not None:
            self.since_best = torch.where(improved, 0, self.since_best + act.long())
            stop = act & self.converged & (self.since_best >= self.early_stop_epochs)
            self.early_stopped |= stop
            self.active &= ~stop

    def outcomes(self) -> list[PairOutcome]:
        pos, neg = self._thresholded()
        fallback = pos + neg
        chosen = torch.where(self.converged.view(-1, 1, 1, 1), self.delta_best, fallback)
        return as_outcomes(self, [Trigger("additive", chosen[i].detach().float().cpu())
                                  for i in range(self.batch.size)])


@register("ours", MethodInfo("additive"))
class Ours(EpochMethod):
    """PixelBackdoor: p+ and p- variables, tanh pixel regulariser, projection on improvement."""

    Params = PixelParams
    VARIABLES: ClassVar[Literal["two", "positive", "single"]] = "two"
    REGULARISER: ClassVar[Literal["tanh", "l1"]] = "tanh"

    def make_problem(self, batch: PairBatch) -> PixelProblem:
        return PixelProblem(self, batch, batch.images.device, batch.images.dtype)


@register("ours_no_tanh", MethodInfo("additive", ablation_of="ours"))
class OursNoTanh(Ours):
    """Ablation (1): R = sum max_c p+ + sum max_c |p-| instead of the tanh step."""

    REGULARISER = "l1"


@register("ours_single_positive", MethodInfo("additive", ablation_of="ours"))
class OursSinglePositive(Ours):
    """Ablation (2): only u_p, so the trigger can only brighten pixels."""

    VARIABLES = "positive"


@register("ours_single_variable", MethodInfo("additive", ablation_of="ours"))
class OursSingleVariable(Ours):
    """Ablation (3): one u in [-1,1), R = sum max_c tanh(|u|/10) (kink at 0)."""

    VARIABLES = "single"


@register("ours_no_tanh_single", MethodInfo("additive", ablation_of="ours"))
class OursNoTanhSingle(Ours):
    """Ablation (4): one variable and R = sum max_c |delta| (both removed)."""

    VARIABLES = "single"
    REGULARISER = "l1"
