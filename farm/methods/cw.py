"""CW L0, set version (METHODS.md §2(d); [S-A] Eq 7-9; [CWc] l0_attack.py), batched over pairs.

One pattern q = tanh(w)/2 + 0.5 and one binary pixel set v per pair replace the pixels of
every attack image: x'_n = v*q + (1-v)*x_n. CW alternates two steps until it can no longer
succeed:

* inner solve (v fixed): Adam on L = sum_n ||x'_n - x_n||^2 + c * sum_n max(margin_n, -kappa),
  stopping at the first iterate whose attack-set ASR reaches the bound; a cost that fails for
  ``max_iterations`` steps is doubled, and the solve gives up once c >= ``max_cost``;
* pruning: drop the valid pixels whose change matters least (e = |mean change| * |dL/dw|),
  a few at a time, so v only shrinks.

The answer is the last success, as a ``blend`` trigger [v; q] whose size is sum(v).

CW has no epochs, so it does not use the shared epoch loop; pairs progress at their own pace
(own cost, own iteration count within the current cost, own v, own Adam step counts) and
the global loop forwards and steps only the rows still running (METHODS.md §4). A pair is
finished when its inner solve gives up or v is empty (stop_reason "converged" after at least one
success, else "budget"), or after ``max_rounds`` successes: a safety cap, not CW's own end, so
that pair's stop_reason is "cap" and its size is the cap's, not a converged L0 set.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from farm.methods.base import (Augment, BatchedAdam, Method, MethodInfo, PairBatch, PairOutcome, PairState,
                               as_outcomes, best_other_logit, check_params, hit_rate, register)
from farm.methods.squash import squash, unsquash
from farm.triggers import Trigger

CHANGED = 1e-4  # [CWc]: a pixel counts as changed when some channel moved by >= 1e-4
ARCTANH_SCALE = 1.999999  # [CWc]: arctanh(x * 1.999999) keeps pixels at exactly 0/1 finite


@dataclass(frozen=True)
class CWParams:
    """METHODS.md §2(d) defaults; Adam betas are [CWc]'s tf.train.AdamOptimizer defaults."""

    lr: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    max_iterations: int = 1000  # Adam steps per cost value
    init_cost: float = 1e-3
    cost_up: float = 2.0  # [CWc] const_factor: c doubles after a failed cost
    max_cost: float = 2e6  # give up once c >= max_cost
    kappa: float = 0.01
    asr_threshold: float = 0.9  # [REC] success of a set: attack-set ASR >= 0.9
    prune_e_stop: float = 0.01  # stop pruning right after removing a pixel with e > this
    prune_frac: float = 0.3  # ... or once >= prune_frac * sqrt(n_changed) pixels were removed
    max_rounds: int = 10_000  # safety cap on successful rounds (not in [CWc]; never binds at 32x32)

    def check(self) -> list[str]:
        out = check_params(self)
        for name in ("max_iterations", "max_rounds"):
            if getattr(self, name) < 1:
                out.append(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.max_cost <= self.init_cost:
            out.append(f"max_cost: must exceed init_cost ({self.init_cost}), got {self.max_cost}")
        for name in ("kappa", "prune_e_stop"):
            if getattr(self, name) < 0:
                out.append(f"{name}: must be >= 0, got {getattr(self, name)}")
        if self.prune_frac <= 0:
            out.append(f"prune_frac: must be > 0, got {self.prune_frac}")
        return out


def prune_pixels(e: torch.Tensor, valid: torch.Tensor, n_changed: int, e_stop: float, frac: float) -> torch.Tensor:
    """One CW pruning step: the new pixel set (same shape and dtype as ``valid``).

    Visits valid pixels by ascending e (stable sort: ties go to the lower flat index; [CWc]
    uses numpy's unstable argsort) and removes each; stops right after removing a pixel with
    e > ``e_stop`` or once >= ``frac * sqrt(n_changed)`` pixels were removed ([CWc] checks
    in that order). At least one pixel goes whenever one is valid, so rounds always shrink v.
    """
    flat_e, keep = e.flatten(), valid.flatten().clone()
    order = torch.sort(flat_e, stable=True).indices
    candidates = order[keep[order] > 0]
    if candidates.numel() == 0:
        return keep.view_as(valid)
    by_count = max(1, math.ceil(frac * math.sqrt(n_changed)))
    big = (flat_e[candidates] > e_stop).nonzero()
    by_e = int(big[0]) + 1 if big.numel() else candidates.numel()
    keep[candidates[:min(by_count, by_e)]] = 0
    return keep.view_as(valid)


class CWProblem(PairState):
    """Batched CW state: one row per pair; see the module docstring for the algorithm."""

    def __init__(self, params: CWParams, batch: PairBatch, augment: Augment | None = None):
        super().__init__(batch, batch.images.device, batch.images.dtype)
        self.prm, self.augment = params, augment
        p, _, c, h, w = batch.images.shape
        # First round: q = mean image of X_v [REC]; later rounds warm-start from the solution.
        self.w = unsquash(batch.images.mean(1), ARCTANH_SCALE).requires_grad_()
        self.optimiser = BatchedAdam([self.w], params.lr, params.betas)
        opts = {"device": self.device, "dtype": self.dtype}
        self.v = torch.ones((p, h, w), **opts)
        self.cost = torch.full((p,), params.init_cost, **opts)
        self.iteration = torch.zeros(p, dtype=torch.long, device=self.device)  # steps at this cost
        self.rounds = torch.zeros_like(self.iteration)  # successful inner solves
        self.solution = torch.zeros((p, 1 + c, h, w), **opts)  # [v; q] of the last success
        self.solution_asr = torch.zeros(p, **opts)
        self.first_v = torch.zeros_like(self.v)  # v of the first success (v only shrinks)

    def loss(self, x_adv: torch.Tensor, x: torch.Tensor, logits: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """L_p = sum_n ||x'_n - x_n||^2 + c_p * sum_n max(max_{j!=t} Z_j - Z_t, -kappa)."""
        dist = (x_adv - x).pow(2).flatten(1).sum(1)
        t = self.targets[rows].view(-1, 1, 1).expand(-1, logits.shape[1], 1)
        z_t = logits.gather(2, t).squeeze(2)
        z_other = best_other_logit(logits, self.targets[rows])
        hinge = (z_other - z_t).clamp(min=-self.prm.kappa).sum(1)
        return dist + self.cost[rows] * hinge

    def run(self, model: torch.nn.Module) -> None:
        """Iterate until every pair has given up, emptied v, or hit ``max_rounds``."""
        images, n = self.batch.images, self.batch.images.shape[1]
        start = time.perf_counter()
        while bool(self.active.any()):
            rows = self.active.nonzero().flatten()
            x = images[rows]  # A×N×C×H×W: the full attack set every iteration ([CWc] set version)
            self.w.grad = None
            q = squash(self.w[rows], 2.0).unsqueeze(1)
            v = self.v[rows][:, None, None]
            x_adv = v * q + (1 - v) * x
            x_in = x_adv if self.augment is None else self.augment(
                x_adv, [self.generators[i] for i in rows.tolist()])
            logits = model(x_in.flatten(0, 1)).view(rows.numel(), n, -1)
            loss = self.loss(x_adv, x, logits, rows)
            finite = torch.isfinite(loss)
            torch.where(finite, loss, torch.zeros_like(loss)).sum().backward()
            with torch.no_grad():
                hit = hit_rate(logits, self.targets[rows])
                self.last_asr[rows] = hit
                reached = hit >= self.prm.asr_threshold
                success, step = self._mask(rows, finite & reached), self._mask(rows, finite & ~reached)
                # one point per iteration (CW has no epochs), on the device like the loop's
                self.record_loss(torch.zeros_like(self.last_asr).index_put((rows,), loss.detach().to(self.dtype)),
                                 self._mask(rows, finite))
                if not bool(finite.all()):
                    self.fail(self._mask(rows, ~finite), f"non-finite loss at step {int(self.steps.max())}")
                if bool(success.any()):
                    self._accept(success, rows, x_adv - x, time.perf_counter() - start)
            self.optimiser.step(step)
            self._advance(step)

    def _mask(self, rows: torch.Tensor, sub: torch.Tensor) -> torch.Tensor:
        """A length-P bool mask that is ``sub`` on ``rows`` and False elsewhere."""
        out = torch.zeros_like(self.active)
        out[rows] = sub
        return out

    @torch.no_grad()
    def _accept(self, success: torch.Tensor, rows: torch.Tensor, diff: torch.Tensor, elapsed: float) -> None:
        """Record each success, prune its v, and start its next inner solve (fresh Adam)."""
        grad = self.w.grad
        q = squash(self.w.detach(), 2.0)
        self.mark_best(success, self.v.flatten(1).sum(1), elapsed)
        position = {int(r): k for k, r in enumerate(rows.tolist())}
        for i in success.nonzero().flatten().tolist():
            if not bool(self.converged[i]):
                self.first_v[i] = self.v[i]
            self.converged[i] = True
            self.solution[i, 0], self.solution[i, 1:] = self.v[i], q[i]
            self.solution_asr[i] = self.last_asr[i]
            self.rounds[i] += 1
            d = diff[position[i]]  # N×C×H×W
            e = d.mean(0).sum(0).abs() * grad[i].abs().sum(0)
            n_changed = int((d.abs() >= CHANGED).flatten(0, 1).any(0).sum())
            self.v[i] = prune_pixels(e, self.v[i], n_changed, self.prm.prune_e_stop, self.prm.prune_frac)
            if not bool(self.v[i].any()):
                self.active[i] = False
            elif int(self.rounds[i]) >= self.prm.max_rounds:  # still shrinking: its size is the cap's
                self.active[i] = False
                self.capped[i] = True
        self.optimiser.reset_rows(success)
        self.iteration[success] = 0

    @torch.no_grad()
    def _advance(self, step: torch.Tensor) -> None:
        """Count the Adam steps; double a cost that used up its iterations; give up at max_cost."""
        self.steps += step.long()
        self.iteration += step.long()
        exhausted = step & (self.iteration >= self.prm.max_iterations)
        self.cost = torch.where(exhausted, self.cost * self.prm.cost_up, self.cost)
        self.iteration[exhausted] = 0
        self.active &= ~(exhausted & (self.cost >= self.prm.max_cost))

    def outcomes(self) -> list[PairOutcome]:
        """Last success per pair; without one, the current [v; q] flagged unconverged."""
        current = torch.cat([self.v.unsqueeze(1), squash(self.w.detach(), 2.0)], 1)
        chosen = torch.where(self.converged.view(-1, 1, 1, 1), self.solution, current)
        self.last_asr = torch.where(self.converged, self.solution_asr, self.last_asr)
        out = as_outcomes(self, [Trigger("blend", chosen[i].float().cpu()) for i in range(self.batch.size)])
        for i, o in enumerate(out):
            o.extra.update(rounds=float(self.rounds[i]), final_cost=float(self.cost[i]),
                           first_size=float(self.first_v[i].sum()) if o.converged else math.nan)
        return out


@register("cw", MethodInfo("blend"))
class CarliniWagnerL0(Method):
    """CW L0 for a set of images: shared pattern, shrinking pixel set (METHODS.md §2(d))."""

    Params = CWParams
    caps = ("max_rounds",)

    def invert(self, model: torch.nn.Module, batch: PairBatch) -> list[PairOutcome]:
        problem = CWProblem(self.params, batch, self.augment)
        problem.run(model)
        return problem.outcomes()
