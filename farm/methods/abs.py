"""ABS, pair version [S-G; ABS] (METHODS.md §2(c)), batched over pairs.

A blend trigger m = tanh(a)/2 + 0.5 (H×W), p = tanh(b)/2 + 0.5 (C×H×W) is optimised to raise
the target logit over the victim logit, under ABS's size-bound penalty (zero while the mask
has at most B "on" pixels, w·sum(m) in a tolerance band, 2w·sum(m) beyond). ABS optimises on
the whole image set at once, so the problem is handed to the shared loop with its batch size
set to N: one epoch of ``run_epochs`` is then exactly one full-batch Adam iteration, and no
second loop exists. The output is the last iterate (ABS keeps no best-so-far).

Optional (off by default, not in METHODS.md): a simplified stimulation analysis picks, per
pair, one penultimate-layer neuron and adds a term that raises its activation; see
:func:`select_neurons`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import nn

from farm.methods.base import (BatchedAdam, Method, MethodInfo, PairBatch, PairOutcome, as_outcomes,
                               best_other_logit, check_params, register, run_epochs)
from farm.methods.blend import BlendProblem
from farm.triggers import Trigger, mask_size

NNZ_THRESHOLD = 0.01  # ABS counts a mask pixel as "on" above this value


@dataclass(frozen=True)
class ABSParams:
    """[ABS] CIFAR config.json defaults (METHODS.md §2(c))."""

    epochs: int = 1000  # full-batch Adam iterations
    lr: float = 0.1
    betas: tuple[float, float] = (0.9, 0.999)  # torch defaults ([ABS] uses the default Adam)
    size_bound: int = 64  # B: pixels allowed before the penalty starts
    # w_pair = w / (N_ref * P_ref) = 500 / (50 * 64): [ABS]'s w = 500 is calibrated against a data
    # term SUMMED over 50 images and an 8x8 feature map; our margin is a per-image MEAN
    # (METHODS.md §2(c) amendment 2026-11-26). With w = 500 itself the penalty freezes the mask.
    penalty_weight: float = 500.0 / 3200
    asr_threshold: float = 0.8  # [ABS] config.json reasr_bound: converged = last attack-set ASR >= this
    stimulation: bool = False  # [REC] opt-in neuron-stimulation term (dropped for pairs by METHODS.md)
    stimulation_weight: float = 1.0  # lambda of that term

    def check(self) -> list[str]:
        out = check_params(self)
        if self.size_bound < 1:
            out.append(f"size_bound: must be >= 1, got {self.size_bound}")
        if self.penalty_weight < 0:
            out.append(f"penalty_weight: must be >= 0, got {self.penalty_weight}")
        if self.stimulation_weight < 0:
            out.append(f"stimulation_weight: must be >= 0, got {self.stimulation_weight}")
        return out


def size_penalty(m: torch.Tensor, bound: int, weight: float) -> torch.Tensor:
    """ABS's three-branch size penalty for masks ...×H×W, one value per mask.

    n_nz = #{m > 0.01}, S = sum m: 0 if n_nz <= B; w·S if B < n_nz <= (sqrt(B)+2)^2; else 2w·S.
    The branch is chosen on the count (piecewise constant, no gradient); S carries the gradient.
    """
    n_nz = (m.detach() > NNZ_THRESHOLD).flatten(-2).sum(-1)
    s = m.flatten(-2).sum(-1)
    band = (math.sqrt(bound) + 2) ** 2
    factor = torch.where(n_nz <= bound, 0.0, torch.where(n_nz <= band, 1.0, 2.0)).to(s.dtype)
    return factor * weight * s


def init_mask_variable(h: int, w: int, bound: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """a = +2 on the top-left floor(sqrt(B))×floor(sqrt(B)) square, -2 elsewhere ([ABS])."""
    side = math.isqrt(bound)
    a = torch.full((h, w), -2.0, dtype=dtype)
    a[:side, :side] = 2.0
    return a


def margin(logits: torch.Tensor, targets: torch.Tensor, victims: list[int | None]) -> torch.Tensor:
    """Z_t - Z_v per image from logits A×B×K; for an all-to-one pair (victim None) Z_v is the
    largest non-target logit of each image [REC], the natural "any victim" reading."""
    a, b, _ = logits.shape
    t = targets.view(a, 1, 1).expand(a, b, 1)
    z_t = logits.gather(2, t).squeeze(2)
    rivals = best_other_logit(logits, targets)
    fixed = torch.tensor([-1 if v is None else v for v in victims], device=logits.device)
    z_v = logits.gather(2, fixed.clamp(min=0).view(a, 1, 1).expand(a, b, 1)).squeeze(2)
    z_v = torch.where((fixed >= 0).view(a, 1), z_v, rivals)
    return z_t - z_v


def last_linear(model: nn.Module) -> nn.Linear:
    """The model's last ``nn.Linear`` (its input is the penultimate-layer activation)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears or isinstance(model, torch.jit.ScriptModule):
        raise ValueError("abs.params.stimulation needs an nn.Module model with an nn.Linear layer "
                         "(TorchScript models cannot be hooked); set stimulation: false")
    return linears[-1]


def _features(inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Input of a Linear as N×F (extra middle dims averaged)."""
    x = inputs[0]
    return x if x.dim() == 2 else x.reshape(x.shape[0], -1, x.shape[-1]).mean(1)


def select_neurons(model: nn.Module, batch: PairBatch) -> torch.Tensor:
    """Per pair, the penultimate neuron with the largest mean gradient of Z_t - Z_v on the
    pair's clean images [REC]: a one-step stand-in for ABS's stimulation analysis (which
    sweeps each neuron's value) that needs no extra hyper-parameters. Images of one pair
    only affect that pair's gradient, so the choice does not depend on batch-mates."""
    layer = last_linear(model)
    leaf: list[torch.Tensor] = []

    def swap_in_leaf(_mod: nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        f = inputs[0].detach().requires_grad_()
        leaf.append(f)
        return (f,) + inputs[1:]

    handle = layer.register_forward_pre_hook(swap_in_leaf)
    try:
        p, n = batch.images.shape[:2]
        with torch.enable_grad():
            logits = model(batch.images.flatten(0, 1)).view(p, n, -1)
            targets = torch.tensor(batch.targets, device=logits.device)
            margin(logits, targets, batch.victims).sum().backward()
    finally:
        handle.remove()
    grad = _features((leaf[0].grad,)).reshape(p, n, -1).mean(1)
    return grad.argmax(1)


class ABSProblem(BlendProblem):
    divisor = 2.0  # [ABS]: no epsilon, unlike [NC]

    def __init__(self, params: ABSParams, batch: PairBatch, model: nn.Module):
        images = batch.images
        super().__init__(batch, images.device, images.dtype)
        self.prm = params
        c, h, w = images.shape[2:]
        a0 = init_mask_variable(h, w, params.size_bound)
        a = self.per_pair(lambda g: a0.clone())
        b = self.per_pair(lambda g: torch.randn((c, h, w), generator=g, dtype=torch.float64))
        self.variables = [a.requires_grad_(), b.requires_grad_()]
        self.optimiser = BatchedAdam(self.variables, params.lr, params.betas)
        self.last_size = torch.full((batch.size,), -1.0, dtype=self.dtype, device=self.device)
        self.neurons: torch.Tensor | None = None
        self.features: torch.Tensor | None = None
        self._hook = None
        if params.stimulation:
            self.neurons = select_neurons(model, batch)
            self._hook = last_linear(model).register_forward_hook(self._keep_features)

    def _keep_features(self, _mod: nn.Module, inputs: tuple[torch.Tensor, ...], _out: torch.Tensor) -> None:
        self.features = _features(inputs)

    def close(self) -> None:
        """Remove the stimulation hook: the model outlives this problem (actors reuse it)."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def regulariser(self, rows: torch.Tensor) -> torch.Tensor:
        return size_penalty(self.squash(self.variables[0][rows]), self.prm.size_bound, self.prm.penalty_weight)

    def data_loss(self, logits: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        victims = [self.batch.victims[i] for i in rows.tolist()]
        loss = -margin(logits, self.targets[rows], victims).mean(1)
        if self.neurons is not None:
            a, b = logits.shape[:2]
            act = self.features.view(a, b, -1).gather(2, self.neurons[rows].view(a, 1, 1).expand(a, b, 1))
            loss = loss - self.prm.stimulation_weight * act.squeeze(2).mean(1)
        return loss

    def total_loss(self, data: torch.Tensor, reg: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return data + reg

    @torch.no_grad()
    def end_epoch(self, asr: torch.Tensor, reg: torch.Tensor, elapsed: float) -> None:
        """No best-so-far ([ABS] outputs the last iterate). The Fig. 8 trace records the size
        of the iterate whenever it meets the ASR bound with a new size [REC]."""
        size = mask_size(self.squash(self.variables[0].detach())).to(self.dtype)
        changed = self.active & (asr >= self.prm.asr_threshold) & (size != self.last_size)
        self.last_size = torch.where(changed, size, self.last_size)
        self.mark_best(changed, size, elapsed)

    def outcomes(self) -> list[PairOutcome]:
        self.converged = self.last_asr >= self.prm.asr_threshold  # [REC] on the last iterate
        current = self.current()
        out = as_outcomes(self, [Trigger("blend", current[i].float().cpu()) for i in range(self.batch.size)])
        for i, o in enumerate(out):
            o.extra["abs_nnz"] = float((current[i, 0] > NNZ_THRESHOLD).sum())  # ABS's own size count
            if self.neurons is not None:
                o.extra["abs_neuron"] = float(self.neurons[i])
        return out


@register("abs", MethodInfo("blend"))
class ABS(Method):
    """ABS pair version: logit margin + size-bound penalty, full-batch Adam, last iterate.

    Not an ``EpochMethod``: its problem needs the model (stimulation hook) and B = N.
    """

    Params = ABSParams

    def invert(self, model: nn.Module, batch: PairBatch) -> list[PairOutcome]:
        full = replace(batch, batch_size=batch.images.shape[1])  # B = N: one epoch = one full-batch step
        problem = ABSProblem(self.params, full, model)
        try:
            run_epochs(problem, model, self.params.epochs, self.augment)
        finally:
            problem.close()
        return problem.outcomes()
