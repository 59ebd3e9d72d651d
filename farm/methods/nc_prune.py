"""NC Prune [S-I/J] (METHODS.md §2(b), §2(g)): Neural Cleanse's trigger cut to ours' size.

For each pair, the NC mask keeps its k = size(ours) largest entries (``farm.triggers.prune``:
ties to the lower pixel index) and the rest become 0. k must come from ours on the *same*
pair, so this method runs the registered ``nc`` and ``ours`` methods itself, on the same
batch, and composes their outputs. That doubles the cost of an NC Prune row (it is one NC
run plus one ours run), and it is deliberate: reading k from the ``ours`` rows of the same
benchmark would make a job depend on another job having finished first (and on it being in
the same run), so results would depend on the order in which the farm schedules jobs.

Each half draws its randomness from a seed derived from the pair's seed and the half's name,
so the two halves have independent streams; they are statistically equivalent to, not
bit-identical with, the standalone ``nc``/``ours`` rows (those have different pair seeds).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
import torch

from farm.methods.base import (Method, MethodInfo, PairBatch, PairOutcome, StopReason, create_method, pair_seed,
                               register)
from farm.methods.nc import NCParams
from farm.methods.pixel import PixelParams
from farm.schema import build
from farm.triggers import prune, stamp, trigger_size


@dataclass(frozen=True)
class NCPruneParams:
    """The two halves' own hyper-parameters, each defaulting to its METHODS.md values."""

    nc: NCParams = field(default_factory=NCParams)
    ours: PixelParams = field(default_factory=PixelParams)

    def __post_init__(self) -> None:
        # Rows store params as plain JSON and actors rebuild them with Params(**raw): accept
        # the nested mappings too, converted (and checked) by the same schema as configs.
        for name, cls in (("nc", NCParams), ("ours", PixelParams)):
            value = getattr(self, name)
            if isinstance(value, dict):
                object.__setattr__(self, name, build(cls, value, name))

    def check(self) -> list[str]:
        return [f"{name}.{msg}" for name in ("nc", "ours") for msg in getattr(self, name).check()]


def _half(batch: PairBatch, name: str) -> PairBatch:
    return replace(batch, seeds=[pair_seed(s, name) for s in batch.seeds])


@register("nc_prune", MethodInfo("blend"))
class NCPrune(Method):
    """Run ``nc`` and ``ours`` on the same pairs; prune each NC mask to ours' size."""

    Params = NCPruneParams

    def invert(self, model: torch.nn.Module, batch: PairBatch) -> list[PairOutcome]:
        nc = create_method("nc", self.params.nc, self.augment).invert(model, _half(batch, "nc"))
        ours = create_method("ours", self.params.ours, self.augment).invert(model, _half(batch, "ours"))
        return [self._compose(model, batch.images[i], batch.targets[i], n, o) for i, (n, o) in enumerate(zip(nc, ours))]

    @staticmethod
    @torch.no_grad()
    def _compose(model: torch.nn.Module, images: torch.Tensor, target: int, nc: PairOutcome,
                 ours: PairOutcome) -> PairOutcome:
        """k = size(ours) (its raw size if ours did not converge: then the pair is not
        converged either); the attack ASR is the pruned trigger's, on the attack set."""
        k = trigger_size(ours.trigger)
        cut = prune(nc.trigger, k)
        hits = model(stamp(images, cut.to(images.device, images.dtype))).argmax(1) == target
        extra = {"ours_k": float(k), "nc_size": float(trigger_size(nc.trigger)), "nc_steps": float(nc.steps),
                 "ours_steps": float(ours.steps), "ours_converged": float(ours.converged),
                 "mask_l1": float(cut.mask.sum())}
        return PairOutcome(trigger=cut, converged=nc.converged and ours.converged, steps=nc.steps + ours.steps,
                           attack_asr=float(hits.double().mean()), failure=nc.failure or ours.failure,
                           extra=extra, stop_reason=_combined(nc.stop_reason, ours.stop_reason))


# A composed row is as final as its weaker half: failed > budget (a half without a trigger) >
# cap > early_stop > converged.
_WEAKEST_FIRST = ("failed", "budget", "cap", "early_stop", "converged")


def _combined(*reasons: StopReason) -> StopReason:
    return min(reasons, key=_WEAKEST_FIRST.index)
