"""ABS, UAP and NC Prune: parity (batched == alone), recovery on the zoo BadNets model, and one
defining property each (ABS penalty/init, UAP's L∞ budget and clip fallback, NC Prune's size)."""
from __future__ import annotations

import pytest
import torch

from conftest import TinyNet, attack_batch, heldout, same_loss_curve, tiny_images
from farm.methods import METHODS, PairBatch
from farm.methods.abs import init_mask_variable, size_penalty
from farm.methods.base import PairOutcome, run_epochs
from farm.methods.nc import NCParams
from farm.methods.nc_prune import NCPrune
from farm.methods.pixel import PixelParams
from farm.methods.uap import UAPProblem
from farm.metrics import asr
from farm.schema import ConfigError, build
from farm.triggers import Trigger, stamp, trigger_size

ABS, UAP, PRUNE = METHODS["abs"], METHODS["uap"], METHODS["nc_prune"]
PARITY = {
    "abs": ABS.Params(epochs=15, size_bound=4),  # 2×2 init square on 8×8 images: the penalty is live
    "abs_stimulation": ABS.Params(epochs=15, size_bound=4, stimulation=True),
    "uap": UAP.Params(epochs=15, eps=4 / 255),
    "nc_prune": PRUNE.Params(nc=NCParams(epochs=15), ours=PixelParams(epochs=15)),
}


def _tiny() -> torch.nn.Module:
    return TinyNet().double().eval().requires_grad_(False)


def _batch(p: int = 4) -> PairBatch:
    return PairBatch([0, 1, 2, None][:p], [1, 2, 3, 0][:p], tiny_images(p, 10), [101, 102, 103, 104][:p],
                     batch_size=4)


def _method(key: str):
    return METHODS[key.split("_stim")[0]](PARITY[key])


@pytest.mark.parametrize("key", sorted(PARITY))
def test_parity_batched_equals_alone(key):
    """METHODS.md §4: each pair's result is the same alone or in a batch (float64, tol 1e-9);
    the batch includes an all-to-one pair (victim None)."""
    model, batch = _tiny(), _batch()
    together = _method(key).invert(model, batch)
    for i in range(batch.size):
        alone = _method(key).invert(model, batch.subset([i]))[0]
        assert torch.allclose(together[i].trigger.array, alone.trigger.array, atol=1e-9), (key, i)
        assert together[i].converged == alone.converged
        assert together[i].steps == alone.steps
        assert together[i].attack_asr == pytest.approx(alone.attack_asr)
        assert together[i].extra == pytest.approx(alone.extra)
        if key == "nc_prune":  # two optimisations, no one loss: it logs no curve
            assert together[i].loss_curve == alone.loss_curve == []
        else:
            assert same_loss_curve(together[i], alone), (key, i)


# ---- ABS ------------------------------------------------------------------------------------
def test_abs_penalty_three_branches():
    """pen = 0 if n_nz <= B; w*S if B < n_nz <= (sqrt(B)+2)^2; 2*w*S above (n_nz: m > 0.01)."""
    bound, w = 4, 10.0  # band limit (2+2)^2 = 16
    masks = torch.zeros(5, 8, 8, dtype=torch.float64)
    masks[0].view(-1)[:4] = 0.5  # n_nz = 4 = B -> 0
    masks[1].view(-1)[:5] = 0.5  # 5 -> w*S
    masks[2].view(-1)[:16] = 0.25  # 16 = band -> w*S
    masks[3].view(-1)[:17] = 0.25  # 17 -> 2*w*S
    masks[4].view(-1)[:40] = 0.01  # exactly 0.01 is not "on": n_nz = 0 -> 0
    pen = size_penalty(masks, bound, w)
    s = masks.flatten(1).sum(1).tolist()
    assert pen.tolist() == pytest.approx([0.0, w * s[1], w * s[2], 2 * w * s[3], 0.0])
    m = masks[3].clone().requires_grad_()
    size_penalty(m, bound, w).backward()
    assert torch.allclose(m.grad, torch.full_like(m, 2 * w)), "the gradient flows through S only"


def test_abs_init_square_and_cifar_defaults():
    a = init_mask_variable(32, 32, 64)
    assert (a[:8, :8] == 2).all() and (a[8:, :] == -2).all() and (a[:, 8:] == -2).all()
    p = ABS.Params()
    assert (p.size_bound, p.lr, p.betas, p.epochs) == (64, 0.1, (0.9, 0.999), 1000)
    assert p.penalty_weight == pytest.approx(500 / (50 * 64)), "w_pair = w / (N_ref * P_ref), METHODS.md §2(c)"
    assert p.asr_threshold == 0.8, "[ABS] reasr_bound"
    out = ABS(ABS.Params(epochs=1, size_bound=4)).invert(_tiny(), _batch(1))[0]
    assert out.steps == 1, "B = N: one epoch is one full-batch step"
    assert "abs_nnz" in out.extra and out.trigger.kind == "blend"


# ---- UAP ------------------------------------------------------------------------------------
def test_uap_stays_in_linf_ball_every_epoch():
    """max |delta| <= eps after every epoch, and the kept (best) delta too."""
    prm = UAP.Params(epochs=30, eps=4 / 255)
    batch = _batch()
    problem = UAPProblem(prm, batch, batch.images.device, batch.images.dtype)
    seen: list[float] = []
    end_epoch = problem.end_epoch

    def watch(*args):
        end_epoch(*args)
        seen.extend([float(problem.variables[0].detach().abs().max()), float(problem.best.abs().max())])

    problem.end_epoch = watch
    run_epochs(problem, _tiny(), prm.epochs)
    assert len(seen) == 2 * prm.epochs
    assert max(seen) <= prm.eps
    assert max(seen) == pytest.approx(prm.eps), "sign steps should reach the boundary"
    out = problem.outcomes()
    assert all(o.trigger.array.abs().max() <= prm.eps + 1e-7 for o in out)  # float32 copy


def test_uap_all_clipped_uses_unclipped_ce_and_counts_it():
    """With beta below every CE all samples are clipped: each step falls back to plain CE
    (so delta still moves) and is counted."""
    out = UAP(UAP.Params(epochs=5, eps=4 / 255, beta=1e-6)).invert(_tiny(), _batch(2))
    for o in out:
        assert o.extra["uap_unclipped_steps"] == 5 * 2  # 5 epochs × floor(10/4) batches
        assert o.trigger.array.abs().max() > 0


# ---- NC Prune --------------------------------------------------------------------------------
def test_nc_prune_params_nested_and_checked():
    p = PRUNE.Params(nc={"epochs": 3, "betas": [0.5, 0.9]})  # rows store params as plain JSON
    assert isinstance(p.nc, NCParams) and p.nc.epochs == 3 and p.ours == PixelParams()
    from farm.config import MethodSpec

    with pytest.raises(ConfigError) as err:
        build(MethodSpec, {"name": "nc_prune", "params": {"nc": {"epochs": 0}, "ours": {"lr": -1}}})
    assert set(err.value.problems) == {"params.nc.epochs: must be >= 1, got 0",
                                       "params.ours.lr: must be > 0, got -1.0"}


# ---- recovery on the zoo-trained BadNets model (target 0, 3×3 patch = 9 px): slow ----------
@pytest.fixture(scope="module")
def prune_run(badnets_model):
    model, ds, _ = badnets_model
    pairs = [(1, 0), (1, 3)]
    prm = PRUNE.Params(nc=NCParams(epochs=150), ours=PixelParams(epochs=150))
    return model, ds, pairs, PRUNE(prm).invert(model, attack_batch(ds, pairs))


def _heldout_asr(model, ds, pair, trigger) -> float:
    return asr(model, trigger, heldout(ds, *pair).float() / 255, pair[1])


@pytest.mark.slow  # trains the zoo BadNets model once per session
def test_nc_prune_recovers_planted_trigger(prune_run):
    model, ds, pairs, out = prune_run
    o = out[0]  # 1 -> 0, the planted target
    assert o.converged
    # NC stops at its 0.9 attack-set bound and the cut keeps ours' k pixels, so held-out ASR
    # straddles 0.9 (measured 0.77-0.97 over seeds and threads, docs/testing.md).
    assert _heldout_asr(model, ds, pairs[0], o.trigger) >= 0.7
    assert trigger_size(o.trigger) <= 3 * 9, "within 3x the planted 9 pixels"


@pytest.mark.slow  # trains the zoo BadNets model once per session
def test_nc_prune_size_is_min_of_k_and_uncut(prune_run):
    _, _, _, out = prune_run
    for o in out:
        k, uncut = o.extra["ours_k"], o.extra["nc_size"]
        assert trigger_size(o.trigger) == min(k, uncut)
        assert o.steps == o.extra["nc_steps"] + o.extra["ours_steps"]


def test_nc_prune_cuts_to_exactly_k():
    """Composition step alone: a 40-pixel NC mask cut to ours' k = 7 has size exactly 7, keeps
    the 7 largest mask values and NC's pattern; converged needs both halves; the attack ASR is the cut
    trigger's."""
    g = torch.Generator().manual_seed(0)
    mask = torch.zeros(8, 8)
    mask.view(-1)[torch.randperm(64, generator=g)[:40]] = torch.rand(40, generator=g) * 0.9 + 0.05
    nc = PairOutcome(Trigger("blend", torch.cat([mask[None], torch.rand(3, 8, 8, generator=g)])), True, 10, 1.0)
    delta = torch.zeros(3, 8, 8)
    delta[0].view(-1)[:7] = 0.5
    ours = PairOutcome(Trigger("additive", delta), False, 12, 0.5)
    # seed 2: a net whose target-1 hits differ for the cut (1 of 5) and the uncut mask (0 of 5)
    model, images = TinyNet(seed=2).eval().requires_grad_(False), torch.rand(5, 3, 8, 8, generator=g)
    out = NCPrune._compose(model, images, 1, nc, ours)
    assert trigger_size(out.trigger) == 7 and out.extra["nc_size"] == 40 and out.extra["ours_k"] == 7
    kept = out.trigger.mask.flatten()
    assert set(kept.nonzero().flatten().tolist()) == set(mask.flatten().topk(7).indices.tolist())
    assert torch.equal(out.trigger.pattern, nc.trigger.pattern)
    assert not out.converged and out.steps == 22

    def hits(trigger: Trigger) -> float:
        return float((model(stamp(images, trigger)).argmax(1) == 1).double().mean())

    assert out.attack_asr == hits(out.trigger) != hits(nc.trigger)  # the cut trigger's ASR, not NC's


@pytest.mark.slow  # trains the zoo BadNets model once per session
def test_uap_reaches_backdoor_target(badnets_model):
    """eps = 0.05 (the SVHN value; 4/255 moves nothing on this small model in 150 epochs).

    Measured over 5 seeds x 1, 2 threads (docs/testing.md): into the planted target the best
    held-out ASR is >= 0.9 and the worst >= 0.83. At this budget UAP also moves other pairs
    (up to 0.97), so "into the target beats other targets" held in 6/10 runs only and is not
    asserted: UAP has no size term to single the backdoor out."""
    model, ds, _ = badnets_model
    pairs = [(1, 0), (3, 0), (1, 3), (4, 7)]
    out = UAP(UAP.Params(epochs=150, eps=0.05)).invert(model, attack_batch(ds, pairs))
    rates = [_heldout_asr(model, ds, p, o.trigger) for p, o in zip(pairs, out)]
    assert max(rates[:2]) >= 0.85 and min(rates[:2]) >= 0.75, rates


@pytest.mark.slow  # trains the zoo BadNets model once per session
def test_abs_converges_on_planted_target_pairs(badnets_model):
    """METHODS.md §2(c) amendment: with w_pair = 500/3200 (the default) ABS converges on the
    pairs into the planted target (held-out ASR >= 0.9; measured 1.0) and its mask leaves the
    top-left init square. With [ABS]'s raw w = 500 against our per-image mean margin, the
    penalty freezes the mask inside that square (the bug behind 0/90 converged pairs)."""
    model, ds, _ = badnets_model
    pairs = [(1, 0), (2, 0), (3, 0)]
    batch = attack_batch(ds, pairs, n=50)
    out = ABS(ABS.Params(epochs=200)).invert(model, batch)
    for (v, t), o in zip(pairs, out):
        rate = asr(model, o.trigger, heldout(ds, v, t).float() / 255, t)
        assert o.converged and o.stop_reason == "converged" and rate >= 0.9, (v, t, rate)
        on = o.trigger.mask >= 1 / 255
        assert on[8:, :].sum() + on[:8, 8:].sum() > on[:8, :8].sum(), "the mask must leave its init square"
    frozen = ABS(ABS.Params(epochs=100, penalty_weight=500.0)).invert(model, batch.subset([0]))[0]
    on = frozen.trigger.mask > 0.01
    assert on[8:, :].sum() + on[:8, 8:].sum() == 0 and on[:8, :8].sum() > 0, "w = 500 keeps it in the square"
