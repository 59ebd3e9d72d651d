"""Method interface, registry and the shared batched optimisation loop.

P pairs are optimised as ONE problem (METHODS.md §4): variables are stacked P×..., the model
sees P·B images per step, and the scalar objective is the SUM of per-pair losses so that each
pair's gradient is exactly its own. Everything that makes pairs differ — cost, patience
counters, best-so-far, early stop, Adam step counts, random streams — is a length-P tensor or
a per-pair generator, which is what makes a pair's result independent of its batch-mates
(the parity tests check this). Methods vary only the parametrisation, the loss and the
end-of-epoch bookkeeping; the loop is written once here.
"""
from __future__ import annotations

import hashlib
import math
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, ClassVar, Literal, final, get_args

import torch
import torch.nn.functional as F

from farm.errors import ConfigError
from farm.triggers import Trigger, TriggerKind

METHODS: dict[str, type["Method"]] = {}
# Most points of a pair's loss curve kept on the device (even: a full buffer keeps every other
# point and doubles its stride, so a curve of any length costs P × LOSS_POINTS floats).
LOSS_POINTS = 64

# Why a pair stopped (the ``stop_reason`` column). A table may average only rows that ended by
# the method's own rule; a cap or a failure is reported apart (docs/methods.md, "Stop reasons").
StopReason = Literal["converged", "cap", "budget", "early_stop", "failed"]
STOP_REASONS: tuple[str, ...] = get_args(StopReason)


@dataclass(frozen=True)
class MethodInfo:
    """What the rest of the farm knows about a method without running it, declared once where
    the method registers, so that adding a method touches one file.

    ``trigger_kind``: the family of every trigger it stores (also of its failed rows);
    ``mad_size``: the row column MAD ranks its per-target sizes by (NC's own measure is its
    mask's L1, METHODS.md §2(g)); ``display``: its label in tables and figures;
    ``ablation_of``: the method it is an ablation of (Table 6 lists them with it).
    """

    trigger_kind: TriggerKind
    mad_size: Literal["trigger_size", "mask_l1"] = "trigger_size"
    display: str = ""  # empty: the registered name
    ablation_of: str | None = None


def register(name: str, info: MethodInfo) -> Callable[[type["Method"]], type["Method"]]:
    """Class decorator: make a method selectable by ``name`` in configs, with its metadata."""

    def wrap(cls: type["Method"]) -> type["Method"]:
        if name in METHODS:
            raise ValueError(f"method {name!r} registered twice")
        cls.name = name
        cls.info = replace(info, display=info.display or name)
        METHODS[name] = cls
        return cls

    return wrap


def method_class(name: str) -> type["Method"]:
    """The registered class of ``name``; a ConfigError naming the known ones otherwise."""
    if name not in METHODS:
        raise ConfigError([f"method {name!r}: unknown; expected one of {', '.join(sorted(METHODS))}"])
    return METHODS[name]


def method_info(name: str) -> MethodInfo:
    return method_class(name).info


def method_params(name: str, raw: dict[str, Any] | None = None) -> Any:
    """``name``'s frozen Params from plain data (a config's ``params``, a row's ``params_json``)."""
    return method_class(name).Params(**(raw or {}))


def create_method(name: str, params: dict[str, Any] | Any | None = None,
                  augment: "Augment | None" = None) -> "Method":
    """The one way to build a method by name: ``params`` as plain data or as its Params."""
    if params is None or isinstance(params, dict):
        params = method_params(name, params)
    return method_class(name)(params, augment=augment)


def pair_seed(*parts: Any) -> int:
    """A 63-bit seed from (seed, model, method, victim, target): stable across processes."""
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


@dataclass
class PairBatch:
    """P pairs of one model and one method, with their attack images."""

    victims: list[int | None]  # None: all-to-one ("any") pair
    targets: list[int]
    images: torch.Tensor  # P×N×C×H×W float in [0,1] on the compute device
    seeds: list[int]  # per-pair seed (see pair_seed)
    batch_size: int = 32  # B = min(batch_size, N)

    def __post_init__(self) -> None:
        p = len(self.targets)
        if not (len(self.victims) == len(self.seeds) == self.images.shape[0] == p):
            raise ValueError("victims, targets, seeds and images must all have P entries")

    @property
    def size(self) -> int:
        return len(self.targets)

    def generators(self) -> list[torch.Generator]:
        return [torch.Generator().manual_seed(s) for s in self.seeds]

    def subset(self, rows: list[int]) -> "PairBatch":
        return PairBatch([self.victims[i] for i in rows], [self.targets[i] for i in rows],
                         self.images[rows], [self.seeds[i] for i in rows], self.batch_size)


@dataclass
class PairOutcome:
    """What a method returns for one pair; the actor adds metrics and identity."""

    trigger: Trigger
    converged: bool
    steps: int
    attack_asr: float  # attack-set ASR of the last epoch (or last inner solve)
    time_to_best: float | None = None
    trace: list[tuple[float, float]] = field(default_factory=list)  # (elapsed s, best size) changes
    # (epoch, mean loss of that epoch), every stride-th epoch and the last (PairState.record_loss);
    # CW: (iteration, loss)
    loss_curve: list[tuple[int, float]] = field(default_factory=list)
    failure: str | None = None  # set when the pair failed (non-finite loss, ...)
    extra: dict[str, float] = field(default_factory=dict)  # method-specific scalars
    stop_reason: StopReason = "converged"


def stop_reason(converged: bool, failure: str | None, early_stopped: bool = False,
                capped: bool = False) -> StopReason:
    """The one rule every method uses: a failure wins, then a safety cap (the method would have
    gone on), then an early stop (ends with a trigger), then converged vs out of budget (the
    epoch or cost budget ran out without a trigger meeting the ASR bound)."""
    if failure is not None:
        return "failed"
    if capped:
        return "cap"
    if early_stopped:
        return "early_stop"
    return "converged" if converged else "budget"


class Method(ABC):
    """A trigger-inversion method: frozen ``Params`` (defaults = METHODS.md) + ``invert``.

    Callers run a method as ``method(model, batch)``, never ``invert`` directly: ``__call__``
    establishes what every ``invert`` assumes (see there).
    """

    name: ClassVar[str]
    info: ClassVar[MethodInfo]
    Params: ClassVar[type]
    # Params fields that cap a run without being part of the method (a pair they stop gets
    # stop_reason "cap"); the tables name their values in their notes.
    caps: ClassVar[tuple[str, ...]] = ()

    def __init__(self, params: Any | None = None, augment: "Augment | None" = None):
        self.params = params if params is not None else self.Params()
        self.augment = augment

    def params_dict(self) -> dict[str, Any]:
        return asdict(self.params)

    @final
    def __call__(self, model: torch.nn.Module, batch: PairBatch) -> list[PairOutcome]:
        """``invert`` on a model in eval mode with frozen weights and inputs checked to be in [0,1].

        A model in train mode makes BatchNorm normalise with the statistics of the whole P·B
        batch, so a pair's trigger would depend on its batch-mates (and dropout would make it
        random); trainable weights would collect gradients every step. The model's mode and
        ``requires_grad`` flags are restored afterwards. NaN images pass the range check: they
        are how a poisoned pair is tested, and the loop fails that pair alone.
        """
        low, high = torch.aminmax(batch.images)
        if bool(low < 0) or bool(high > 1):
            raise ValueError(f"{self.name}: images must be in [0, 1] (got [{float(low):.3g}, {float(high):.3g}]); "
                             "divide uint8 images by 255")
        training = model.training
        grads = [(p, p.requires_grad) for p in model.parameters()]
        model.eval()
        for p, _ in grads:  # not model.requires_grad_(): ScriptModules do not support it
            p.requires_grad_(False)
        try:
            return self.invert(model, batch)
        finally:
            model.train(training)
            for p, flag in grads:
                p.requires_grad_(flag)

    @abstractmethod
    def invert(self, model: torch.nn.Module, batch: PairBatch) -> list[PairOutcome]:
        """Optimise all pairs of ``batch`` together; one outcome per pair, in order."""


# An augmentation maps stamped images P×B×C×H×W plus per-pair generators to transformed ones.
Augment = Callable[[torch.Tensor, list[torch.Generator]], torch.Tensor]


class BatchedAdam:
    """Adam over P stacked problems with a per-row step count and an ``active`` row mask.

    Identical per row to ``torch.optim.Adam`` (same update formula), but an inactive row is
    left untouched (no momentum drift), a row can be reset (CW's fresh inner solve), and
    rows step independently, which per-pair early stopping needs.
    """

    def __init__(self, params: list[torch.Tensor], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8):
        self.params = params
        self.lr, self.betas, self.eps = lr, betas, eps
        p = params[0].shape[0]
        self.step_count = torch.zeros(p, dtype=torch.long, device=params[0].device)
        self.m = [torch.zeros_like(x) for x in params]
        self.v = [torch.zeros_like(x) for x in params]

    @torch.no_grad()
    def step(self, active: torch.Tensor) -> None:
        b1, b2 = self.betas
        self.step_count += active.long()
        t = self.step_count.clamp(min=1).to(self.params[0].dtype)
        bc1, bc2 = 1 - b1**t, 1 - b2**t
        for x, m, v in zip(self.params, self.m, self.v):
            if x.grad is None:
                continue
            shape = (-1,) + (1,) * (x.dim() - 1)
            act = active.view(shape)
            g = x.grad
            m.copy_(torch.where(act, b1 * m + (1 - b1) * g, m))
            v.copy_(torch.where(act, b2 * v + (1 - b2) * g * g, v))
            denom = (v.sqrt() / bc2.sqrt().view(shape)) + self.eps
            update = (self.lr / bc1).view(shape) * m / denom
            x.sub_(torch.where(act, update, torch.zeros_like(update)))

    @torch.no_grad()
    def reset_rows(self, rows: torch.Tensor) -> None:
        """Forget moments and step counts of ``rows`` (bool mask): a fresh Adam for them."""
        self.step_count[rows] = 0
        for m, v in zip(self.m, self.v):
            m[rows] = 0
            v[rows] = 0


class CostSchedule:
    """The adaptive cost c_p of [PB]/[NC] (METHODS.md §2(a), §2(b)), vectorised over pairs.

    ``start_at_zero`` is NC's warm-up: c stays 0 until the attack succeeds for ``patience``
    epochs in a row, then starts at ``init`` with counters and flags reset.
    """

    def __init__(self, p: int, init: float, patience: int, up: float, down: float,
                 start_at_zero: bool, device: torch.device, dtype: torch.dtype):
        self.init, self.patience, self.up_mult, self.down_mult = init, patience, up, down
        self.start_at_zero = start_at_zero
        zeros = torch.zeros(p, dtype=torch.long, device=device)
        self.cost = torch.full((p,), 0.0 if start_at_zero else init, dtype=dtype, device=device)
        self.up, self.down, self.set_counter = zeros.clone(), zeros.clone(), zeros.clone()
        self.raised = torch.zeros(p, dtype=torch.bool, device=device)
        self.lowered = torch.zeros_like(self.raised)

    def update(self, success: torch.Tensor, active: torch.Tensor) -> None:
        def keep(new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
            return torch.where(active, new, old)

        if self.start_at_zero:
            zero = self.cost == 0
            counting = zero & success
            self.set_counter = keep(torch.where(counting, self.set_counter + 1, torch.zeros_like(self.set_counter)),
                                    self.set_counter)
            start = active & counting & (self.set_counter >= self.patience)
            self.cost = torch.where(start, torch.full_like(self.cost, self.init), self.cost)
            for name in ("up", "down"):
                setattr(self, name, torch.where(start, torch.zeros_like(self.up), getattr(self, name)))
            self.raised = self.raised & ~start
            self.lowered = self.lowered & ~start
        self.up = keep(torch.where(success, self.up + 1, torch.zeros_like(self.up)), self.up)
        self.down = keep(torch.where(success, torch.zeros_like(self.down), self.down + 1), self.down)
        raise_ = active & (self.up >= self.patience)
        lower = active & ~raise_ & (self.down >= self.patience)
        if self.start_at_zero:  # NC: 0 * factor stays 0 until the warm-up sets the cost
            raised_cost = self.cost * self.up_mult
        else:  # [PB]: a zero cost restarts at init
            raised_cost = torch.where(self.cost == 0, torch.full_like(self.cost, self.init), self.cost * self.up_mult)
        self.cost = torch.where(raise_, raised_cost, torch.where(lower, self.cost / self.down_mult, self.cost))
        self.up = torch.where(raise_, torch.zeros_like(self.up), self.up)
        self.down = torch.where(lower, torch.zeros_like(self.down), self.down)
        self.raised |= raise_
        self.lowered |= lower


def per_sample_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy to each pair's target for logits A×B×K and targets A: shape A×B."""
    a, b, k = logits.shape
    return F.cross_entropy(logits.reshape(a * b, k), targets.repeat_interleave(b), reduction="none").view(a, b)


def best_other_logit(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """max_{j != t} Z_j of each image, logits A×B×K and targets A -> A×B (CW's hinge, ABS's
    margin of an all-to-one pair)."""
    a, b, _ = logits.shape
    return logits.scatter(2, targets.view(a, 1, 1).expand(a, b, 1), -math.inf).amax(2)


def hit_rate(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Share of each pair's images classified as its target (batch ASR), logits A×B×K -> A."""
    return (logits.argmax(-1) == targets.unsqueeze(1)).to(logits.dtype).mean(1)


class PairState:
    """Per-pair bookkeeping every batched method keeps (METHODS.md §4): generators, active
    flags, failures, convergence, step counts, time-to-best, the Fig. 8 trace and the loss curve.

    Methods with their own loop (CW's rounds) use it directly; epoch-loop methods through
    :class:`EpochProblem`.
    """

    def __init__(self, batch: PairBatch, device: torch.device, dtype: torch.dtype):
        self.batch = batch
        self.device, self.dtype = device, dtype
        p = batch.size
        self.generators = batch.generators()  # one stream per pair: init, shuffles, augmentation
        self.targets = torch.tensor(batch.targets, device=device)
        self.active = torch.ones(p, dtype=torch.bool, device=device)
        self.failure: list[str | None] = [None] * p
        self.converged = torch.zeros(p, dtype=torch.bool, device=device)
        self.early_stopped = torch.zeros_like(self.converged)  # stopped by an early-stop rule
        self.capped = torch.zeros_like(self.converged)  # stopped by one of Method.caps
        self.steps = torch.zeros(p, dtype=torch.long, device=device)
        self.time_to_best: list[float | None] = [None] * p
        self.trace: list[list[tuple[float, float]]] = [[] for _ in range(p)]
        self.last_asr = torch.zeros(p, dtype=dtype, device=device)
        # The loss curve lives on the device until the outcomes are built (record_loss).
        self.loss_points = torch.full((p, LOSS_POINTS), math.nan, dtype=dtype, device=device)
        self.loss_count = torch.zeros(p, dtype=torch.long, device=device)  # points held
        self.loss_stride = torch.ones_like(self.loss_count)  # epochs between points
        self.loss_epochs = torch.zeros_like(self.loss_count)  # epochs recorded so far
        self.last_loss = torch.full((p,), math.nan, dtype=dtype, device=device)

    def per_pair(self, sample: Callable[[torch.Generator], torch.Tensor]) -> torch.Tensor:
        """Stack one draw per pair from its own generator (so init ignores batch-mates)."""
        return torch.stack([sample(g) for g in self.generators]).to(self.device, self.dtype)

    def mark_best(self, rows: torch.Tensor, sizes: torch.Tensor, elapsed: float) -> None:
        """Record time-to-best and the Fig. 8 trace for pairs whose best just improved."""
        for i in rows.nonzero().flatten().tolist():
            self.time_to_best[i] = elapsed
            self.trace[i].append((round(elapsed, 4), float(sizes[i])))

    @torch.no_grad()
    def record_loss(self, loss: torch.Tensor, rows: torch.Tensor) -> None:
        """One more epoch of the pairs ``rows`` (bool mask) ended with mean loss ``loss`` (length P).

        Each pair keeps its epochs 0, s, 2s, ... (s its stride) and its last one. When its
        LOSS_POINTS slots are full it keeps every other point and doubles s. Everything is
        per pair and on the device: no host sync, and a pair's curve depends on its own
        epochs only, so it is the same alone or in a batch.
        """
        take = rows & (self.loss_epochs % self.loss_stride == 0)
        slot = self.loss_count.clamp(max=LOSS_POINTS - 1).unsqueeze(1)
        value = torch.where(take, loss.to(self.dtype), self.loss_points.gather(1, slot).squeeze(1))
        self.loss_points.scatter_(1, slot, value.unsqueeze(1))
        self.loss_count += take.long()
        full = self.loss_count == LOSS_POINTS
        halved = torch.cat([self.loss_points[:, ::2], torch.full_like(self.loss_points[:, ::2], math.nan)], 1)
        self.loss_points = torch.where(full.unsqueeze(1), halved, self.loss_points)
        self.loss_count = torch.where(full, self.loss_count // 2, self.loss_count)
        self.loss_stride = torch.where(full, self.loss_stride * 2, self.loss_stride)
        self.last_loss = torch.where(rows, loss.to(self.dtype), self.last_loss)
        self.loss_epochs += rows.long()

    def loss_curves(self) -> list[list[tuple[int, float]]]:
        """Each pair's (epoch, loss) points, its last epoch included (one copy to the host)."""
        points, count, stride, epochs, last = (t.tolist() for t in (
            self.loss_points, self.loss_count, self.loss_stride, self.loss_epochs, self.last_loss))
        out = []
        for i in range(self.batch.size):
            curve = [(j * stride[i], points[i][j]) for j in range(count[i])]
            if epochs[i] and curve[-1][0] != epochs[i] - 1:
                curve.append((epochs[i] - 1, last[i]))
            out.append(curve)
        return out

    def fail(self, rows: torch.Tensor, reason: str) -> None:
        """Stop pairs ``rows`` (bool mask) for good, recording why; batch-mates carry on."""
        for i in (rows & self.active).nonzero().flatten().tolist():
            self.failure[i] = reason
        self.active &= ~rows


class EpochProblem(PairState, ABC):
    """Per-batch state of an epoch-loop method (variables, schedule, best-so-far).

    Every hook receives ``rows``: the indices of the pairs still active, in batch order, so
    that finished pairs are compacted away from the forward pass.
    """

    variables: list[torch.Tensor]
    optimiser: Any  # BatchedAdam or any object with step(active)

    @abstractmethod
    def stamp(self, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """x: A×B×C×H×W clean images of pairs ``rows`` -> stamped images (same shape)."""

    @abstractmethod
    def regulariser(self, rows: torch.Tensor) -> torch.Tensor:
        """Size regulariser R_p of pairs ``rows``."""

    def data_loss(self, logits: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Attack loss per pair from logits A×B×K: mean CE to the target by default."""
        return per_sample_ce(logits, self.targets[rows]).mean(1)

    @abstractmethod
    def total_loss(self, data: torch.Tensor, reg: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Per-pair loss L_p from its data loss and regulariser."""

    @abstractmethod
    def end_epoch(self, asr: torch.Tensor, reg: torch.Tensor, elapsed: float) -> None:
        """Bookkeeping after an epoch (length-P inputs): best-so-far, cost, early stop."""

    @abstractmethod
    def outcomes(self) -> list[PairOutcome]:
        """Final per-pair results."""


def run_epochs(problem: EpochProblem, model: torch.nn.Module, epochs: int,
               augment: Augment | None = None) -> None:
    """The shared loop of METHODS.md §2(a): epochs of floor(N/B) shuffled mini-batches.

    Each pair shuffles its own images with its own generator; only active pairs are
    forwarded (inactive rows are compacted away) and stepped, so early-stopped or failed
    pairs cost nothing and cannot drift. A pair whose loss turns non-finite is excluded from
    that very step on and failed at the end of the epoch.

    The steps of an epoch never wait for the device (no ``.item()``, ``nonzero`` or
    ``bool(tensor)``): the active rows are compacted once per epoch, and a failing pair is
    masked out of the optimiser on the device instead of being removed from the forward.
    Host syncs are per epoch only, which keeps a GPU's queue full. The loss curve is summed
    and recorded on the device too (:meth:`PairState.record_loss`).
    """
    batch = problem.batch
    p, n = batch.images.shape[:2]
    b = min(batch.batch_size, n)
    n_batches = n // b
    start = time.perf_counter()
    for epoch in range(epochs):
        rows = problem.active.nonzero().flatten()
        if rows.numel() == 0:
            break
        perms = torch.stack([torch.randperm(n, generator=problem.generators[i]) for i in rows.tolist()])
        perms = perms.to(problem.device)
        generators = [problem.generators[i] for i in rows.tolist()] if augment is not None else []
        asr_sum = torch.zeros(p, dtype=problem.dtype, device=problem.device)
        reg_sum = torch.zeros_like(asr_sum)
        loss_sum = torch.zeros_like(asr_sum)
        active_at_start = problem.active.clone()
        stepping = problem.active.clone()  # active minus pairs whose loss turned non-finite
        for k in range(n_batches):
            x = batch.images[rows.unsqueeze(1), perms[:, k * b:(k + 1) * b]]  # A×B×C×H×W
            x_adv = problem.stamp(x, rows)
            if augment is not None:
                x_adv = augment(x_adv, generators)
            logits = model(x_adv.flatten(0, 1)).view(rows.numel(), b, -1)
            reg = problem.regulariser(rows)
            loss = problem.total_loss(problem.data_loss(logits, rows), reg, rows)
            finite = torch.isfinite(loss)
            stepping[rows] &= finite
            for v in problem.variables:
                v.grad = None
            torch.where(finite, loss, torch.zeros_like(loss)).sum().backward()
            problem.optimiser.step(stepping)
            with torch.no_grad():
                hit = hit_rate(logits, problem.targets[rows])
                asr_sum[rows] += hit
                reg_sum[rows] += reg.detach()
                loss_sum[rows] += loss.detach().to(problem.dtype)
        problem.fail(problem.active & ~stepping, f"non-finite loss at epoch {epoch}")
        done = active_at_start & problem.active
        problem.steps += done.long()
        problem.record_loss(loss_sum / n_batches, done)
        asr = asr_sum / n_batches
        problem.last_asr = torch.where(done, asr, problem.last_asr)
        problem.end_epoch(asr, reg_sum / n_batches, time.perf_counter() - start)


def run_epochs_on(problem: EpochProblem, model: torch.nn.Module, rows: torch.Tensor, epochs: int,
                  augment: Augment | None = None) -> None:
    """Continue only the pairs ``rows`` (bool mask, length P) of ``problem`` for ``epochs``.

    The other pairs are masked out of ``active`` for the call and get their flags back after
    it, so their variables, cost schedules, Adam moments and best-so-far stay untouched until
    they are chosen again. K-Arm's bandit continues one arm per round this way, and hardening
    continues only the pairs a training step needs (warm start without P full solves).
    """
    alive = problem.active.clone()
    problem.active = alive & rows
    run_epochs(problem, model, epochs, augment)
    problem.active = torch.where(rows, problem.active, alive)


class EpochMethod(Method):
    """A method whose optimisation is the shared epoch loop: it only builds its problem."""

    @abstractmethod
    def make_problem(self, batch: PairBatch) -> EpochProblem:
        """Variables and schedule state for the pairs of ``batch``."""

    def invert(self, model: torch.nn.Module, batch: PairBatch) -> list[PairOutcome]:
        problem = self.make_problem(batch)
        run_epochs(problem, model, self.params.epochs, self.augment)
        return problem.outcomes()


def check_params(params: Any) -> list[str]:
    """Range checks shared by every method's Params (only the fields it has)."""
    out = []
    for name in ("epochs", "patience", "early_stop_patience", "iterations"):
        if getattr(params, name, 1) < 1:
            out.append(f"{name}: must be >= 1, got {getattr(params, name)}")
    for name in ("lr", "init_cost"):
        if getattr(params, name, 1.0) <= 0:
            out.append(f"{name}: must be > 0, got {getattr(params, name)}")
    if not 0 < getattr(params, "asr_threshold", 1.0) <= 1:
        out.append(f"asr_threshold: must be in (0, 1], got {params.asr_threshold}")
    if not all(0 <= b < 1 for b in getattr(params, "betas", ())):
        out.append(f"betas: each must be in [0, 1), got {list(params.betas)}")
    for name in ("cost_up", "cost_down"):
        if getattr(params, name, 2.0) <= 1:
            out.append(f"{name}: must be > 1, got {getattr(params, name)}")
    return out


def as_outcomes(problem: PairState, triggers: list[Trigger]) -> list[PairOutcome]:
    """Assemble per-pair outcomes from a finished problem and its chosen triggers."""
    curves = problem.loss_curves()
    return [
        PairOutcome(trigger=triggers[i], converged=bool(problem.converged[i]), steps=int(problem.steps[i]),
                    attack_asr=float(problem.last_asr[i]), time_to_best=problem.time_to_best[i],
                    trace=problem.trace[i], loss_curve=curves[i], failure=problem.failure[i],
                    stop_reason=stop_reason(bool(problem.converged[i]), problem.failure[i],
                                            bool(problem.early_stopped[i]), bool(problem.capped[i])))
        for i in range(problem.batch.size)
    ]
