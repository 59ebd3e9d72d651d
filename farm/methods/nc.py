"""Neural Cleanse [NC] (METHODS.md §2(b)), batched over pairs.

Mask m (H×W) and pattern p (C×H×W) live in tanh space; the cost starts at 0 and is switched on
once the attack succeeds for ``patience`` epochs, then follows the up/down rule; early stop
needs the cost to have been both raised and lowered. Benchmark defaults are the
gtsrb_visualize_example.py script values with the 0.9 ASR bound of §5.6.

``loss`` picks the data term: ``ce`` (default) is the cross-entropy of the NC paper;
``original_code`` is what [NC]'s visualizer.py actually optimises (METHODS.md §2(b) note), so
users can see how much of NC's published behaviour comes from that. Its Keras call
``categorical_crossentropy(output, y_true)`` swaps the arguments: the softmax p becomes the
"target" and the one-hot label the "prediction", which Keras clips to [1e-7, 1 - 1e-7], giving
-(p_t log(1 - 1e-7) + (1 - p_t) log(1e-7)) ~ 16.1 (1 - p_t): bounded, and flat where CE is
steep (p_t near 0), so the mask grows slowly from a hopeless start.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from farm.methods.base import (BatchedAdam, CostSchedule, EpochMethod, MethodInfo, PairBatch, PairOutcome,
                               as_outcomes, check_params, register)
from farm.methods.blend import BlendProblem
from farm.methods.squash import NC_DIVISOR, squash, unsquash
from farm.triggers import Trigger, mask_size


@dataclass(frozen=True)
class NCParams:
    epochs: int = 1000
    lr: float = 0.1
    betas: tuple[float, float] = (0.5, 0.9)
    asr_threshold: float = 0.9  # [REC] §5.6 (script: 0.99)
    init_cost: float = 1e-3
    patience: int = 5
    cost_up: float = 2.0
    cost_down: float = 2.0**1.5
    early_stop: bool = True
    early_stop_threshold: float = 1.0
    early_stop_patience: int = 25
    loss: Literal["ce", "original_code"] = "ce"  # original_code: [NC]'s swapped-argument Keras CE

    def check(self) -> list[str]:
        return check_params(self)


KERAS_EPSILON = 1e-7  # keras.backend.epsilon(): the clip of categorical_crossentropy's "output"


def swapped_keras_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per pair, mean over images of Keras ``categorical_crossentropy(softmax, one_hot)`` with
    [NC]'s swapped arguments: -sum_k p_k log(clip(onehot_k)) = -(p_t log(1-e) + (1-p_t) log(e)).

    logits A×B×K, targets A -> A.
    """
    a, b, _ = logits.shape
    p_t = logits.softmax(-1).gather(2, targets.view(a, 1, 1).expand(a, b, 1)).squeeze(2)
    loss = -(p_t * math.log(1 - KERAS_EPSILON) + (1 - p_t) * math.log(KERAS_EPSILON))
    return loss.mean(1)


class NCProblem(BlendProblem):
    divisor = NC_DIVISOR

    def __init__(self, params: NCParams, batch: PairBatch, device: torch.device, dtype: torch.dtype):
        super().__init__(batch, device, dtype)
        self.prm = params
        c, h, w = batch.images.shape[2:]
        a = self.per_pair(lambda g: unsquash(torch.rand((h, w), generator=g, dtype=torch.float64)))
        b = self.per_pair(lambda g: unsquash(torch.rand((c, h, w), generator=g, dtype=torch.float64)))
        self.variables = [a.requires_grad_(), b.requires_grad_()]
        self.optimiser = BatchedAdam(self.variables, params.lr, params.betas)
        p = batch.size
        self.cost = CostSchedule(p, params.init_cost, params.patience, params.cost_up, params.cost_down,
                                 start_at_zero=True, device=device, dtype=dtype)
        self.r_best = torch.full((p,), math.inf, dtype=dtype, device=device)
        self.es_ref = torch.full((p,), math.inf, dtype=dtype, device=device)
        self.es_count = torch.zeros(p, dtype=torch.long, device=device)
        self.best = torch.zeros((p, 1 + c, h, w), dtype=dtype, device=device)

    def regulariser(self, rows: torch.Tensor) -> torch.Tensor:
        return squash(self.variables[0][rows]).flatten(1).sum(1)  # L1 of the mask

    def data_loss(self, logits: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        if self.prm.loss == "original_code":
            return swapped_keras_ce(logits, self.targets[rows])
        return super().data_loss(logits, rows)

    def total_loss(self, data: torch.Tensor, reg: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return data + self.cost.cost[rows] * reg

    @torch.no_grad()
    def end_epoch(self, asr: torch.Tensor, reg: torch.Tensor, elapsed: float) -> None:
        act = self.active
        success = asr >= self.prm.asr_threshold
        improved = act & success & (reg < self.r_best)
        current = self.current()
        self.best = torch.where(improved.view(-1, 1, 1, 1), current, self.best)
        self.r_best = torch.where(improved, reg, self.r_best)
        self.converged |= improved
        self.mark_best(improved, mask_size(current[:, 0]).to(self.dtype), elapsed)
        if self.prm.early_stop:  # [NC] order: early-stop check before this epoch's cost change
            has_best = self.r_best < math.inf
            grow = self.r_best >= self.prm.early_stop_threshold * self.es_ref
            counted = torch.where(grow, self.es_count + 1, torch.zeros_like(self.es_count))
            self.es_count = torch.where(act & has_best, counted, self.es_count)
            self.es_ref = torch.where(act, torch.minimum(self.es_ref, self.r_best), self.es_ref)
            stop = act & self.cost.raised & self.cost.lowered & (self.es_count >= self.prm.early_stop_patience)
            self.early_stopped |= stop
            self.active &= ~stop
        self.cost.update(success, act)

    def outcomes(self) -> list[PairOutcome]:
        chosen = torch.where(self.converged.view(-1, 1, 1, 1), self.best, self.current())
        out = as_outcomes(self, [Trigger("blend", chosen[i].float().cpu()) for i in range(self.batch.size)])
        for o, t in zip(out, chosen):
            o.extra["mask_l1"] = float(t[0].sum())  # NC's own size measure (MAD uses it)
        return out


@register("nc", MethodInfo("blend", mad_size="mask_l1"))
class NeuralCleanse(EpochMethod):
    Params = NCParams

    def make_problem(self, batch: PairBatch) -> NCProblem:
        return NCProblem(self.params, batch, batch.images.device, batch.images.dtype)
