"""Shared loop machinery: batched Adam, cost schedule, parity (batched == alone), isolation."""
from __future__ import annotations

import math

import pytest
import torch

from conftest import TinyNet, same_loss_curve, tiny_images
from farm.methods import METHODS, PairBatch
from farm.methods.base import BatchedAdam, CostSchedule

PARITY_METHODS = ["ours", "nc", "ours_no_tanh", "ours_single_positive", "ours_single_variable",
                  "ours_no_tanh_single"]


def test_batched_adam_matches_torch_adam_per_row():
    torch.manual_seed(0)
    x0 = torch.randn(3, 5, dtype=torch.float64)
    ours = x0.clone().requires_grad_()
    ref = [x0[i].clone().requires_grad_() for i in range(3)]
    opt = BatchedAdam([ours], lr=0.1, betas=(0.5, 0.9))
    refs = [torch.optim.Adam([r], lr=0.1, betas=(0.5, 0.9)) for r in ref]
    active = torch.tensor([True, False, True])
    for _ in range(7):
        target = torch.randn(3, 5, dtype=torch.float64)
        ((ours - target) ** 2).sum().backward()
        opt.step(active)
        ours.grad = None
        for i in (0, 2):
            refs[i].zero_grad()
            ((ref[i] - target[i]) ** 2).sum().backward()
            refs[i].step()
    assert torch.allclose(ours[0], ref[0], atol=1e-12)
    assert torch.allclose(ours[2], ref[2], atol=1e-12)
    assert torch.equal(ours[1].detach(), x0[1]), "an inactive row must not move"
    assert opt.step_count.tolist() == [7, 0, 7]


def test_cost_schedule_pb_rule():
    s = CostSchedule(1, 1e-3, patience=10, up=1.5, down=1.5**1.5, start_at_zero=False,
                     device=torch.device("cpu"), dtype=torch.float64)
    yes, on = torch.tensor([True]), torch.tensor([True])
    for _ in range(9):
        s.update(yes, on)
    assert s.cost.item() == pytest.approx(1e-3)
    s.update(yes, on)
    assert s.cost.item() == pytest.approx(1.5e-3) and s.up.item() == 0
    for _ in range(10):
        s.update(~yes, on)
    assert s.cost.item() == pytest.approx(1.5e-3 / 1.5**1.5)
    s.update(yes, torch.tensor([False]))  # inactive rows are frozen
    assert s.up.item() == 0 and s.down.item() == 0


def test_cost_schedule_nc_warmup_starts_at_zero():
    s = CostSchedule(2, 1e-3, patience=5, up=2.0, down=2**1.5, start_at_zero=True,
                     device=torch.device("cpu"), dtype=torch.float64)
    on = torch.tensor([True, True])
    for _ in range(4):
        s.update(torch.tensor([True, False]), on)
    assert s.cost.tolist() == [0.0, 0.0]
    s.update(torch.tensor([True, False]), on)
    assert s.cost.tolist() == [1e-3, 0.0]  # pair 0 succeeded 5 epochs in a row
    assert not s.raised[0] and not s.lowered[0]


def _run(name: str, batch: PairBatch, epochs: int = 25):
    cls = METHODS[name]
    return cls(cls.Params(epochs=epochs)).invert(TinyNet().double().eval().requires_grad_(False), batch)


def _batch(p: int = 4) -> PairBatch:
    return PairBatch([0, 1, 2, None][:p], [1, 2, 3, 0][:p], tiny_images(p, 10), [101, 102, 103, 104][:p],
                     batch_size=4)


@pytest.mark.parametrize("name", PARITY_METHODS)
def test_parity_batched_equals_alone(name):
    """METHODS.md §4: each pair's result is the same alone or in a batch (float64, tol 1e-9)."""
    batch = _batch()
    together = _run(name, batch)
    for i in range(batch.size):
        alone = _run(name, batch.subset([i]))[0]
        assert torch.allclose(together[i].trigger.array, alone.trigger.array, atol=1e-9), name
        assert together[i].converged == alone.converged
        assert together[i].steps == alone.steps
        assert together[i].attack_asr == pytest.approx(alone.attack_asr)
        assert same_loss_curve(together[i], alone), (name, i)


def test_parity_independent_of_batch_order():
    batch = _batch()
    forward = _run("ours", batch)
    backward = _run("ours", batch.subset([3, 2, 1, 0]))[::-1]
    for a, b in zip(forward, backward):
        assert torch.allclose(a.trigger.array, b.trigger.array, atol=1e-9)


@pytest.mark.parametrize("name", ["ours", "nc"])
def test_nan_pair_fails_alone(name):
    """A pair whose loss turns non-finite is failed; its batch-mates are untouched."""
    batch = _batch()
    poisoned = batch.images.clone()
    poisoned[1] = float("nan")
    bad = PairBatch(batch.victims, batch.targets, poisoned, batch.seeds, batch.batch_size)
    out = _run(name, bad)
    clean = _run(name, batch)
    assert out[1].failure is not None and "non-finite" in out[1].failure and out[1].stop_reason == "failed"
    for i in (0, 2, 3):
        assert out[i].failure is None
        assert torch.allclose(out[i].trigger.array, clean[i].trigger.array, atol=1e-12)


def test_seed_changes_result_and_same_seed_repeats():
    batch = _batch(2)
    a, b = _run("ours", batch), _run("ours", batch)
    assert all(torch.equal(x.trigger.array, y.trigger.array) for x, y in zip(a, b))
    other = PairBatch(batch.victims, batch.targets, batch.images, [7, 8], batch.batch_size)
    c = _run("ours", other)
    assert not torch.equal(a[0].trigger.array, c[0].trigger.array)


def test_ours_trigger_is_thresholded_and_projected():
    """Single-variable forms: every entry is 0 or >= tau. Two variables threshold p+ and p-
    separately ([PB]), so their sum may be small but the size must match the recorded trace."""
    for o in _run("ours_single_variable", _batch(), epochs=40):
        d = o.trigger.array
        assert ((d == 0) | (d.abs() >= 1 / 255)).all(), "sub-threshold entries must be exactly 0"
    out = _run("ours", _batch(), epochs=40)
    converged = [o for o in out if o.converged]
    assert len(converged) >= 2, [o.stop_reason for o in out]  # else the trace check below checks nothing
    for o in converged:
        d = o.trigger.array
        assert o.time_to_best is not None and o.trace
        assert o.trace[-1][1] == float(((d.abs().sum(0)) > 0).sum())


def test_single_positive_only_brightens_and_single_variable_cannot_do_both():
    """Ablation (2) can only add intensity; ours and ablation (3) also remove it. Only ours'
    two variables can do both at one entry: p+ and p- are thresholded apart (each 0 or >= tau),
    so an entry with 0 < |delta| < tau is an overlap of the two, which a single variable never
    shows (measured at 30 epochs: ours has such entries in 3 of 4 pairs, ablation (3) in none)."""
    pos = _run("ours_single_positive", _batch(), epochs=30)
    assert all((o.trigger.array >= 0).all() for o in pos)
    ours, single = _run("ours", _batch(), epochs=30), _run("ours_single_variable", _batch(), epochs=30)
    assert any((o.trigger.array < 0).any() for o in ours) and any((o.trigger.array < 0).any() for o in single)

    def overlaps(o) -> int:
        d = o.trigger.array.abs()
        return int(((d > 0) & (d < 1 / 255)).sum())

    assert sum(map(overlaps, ours)) > 0 and sum(map(overlaps, single)) == 0


def test_nc_early_stop_and_cost_warmup():
    """With an easy model NC's cost is switched on, raised and lowered, then it stops early."""
    cls = METHODS["nc"]
    params = cls.Params(epochs=400, patience=2, early_stop_patience=3)
    out = cls(params).invert(TinyNet().double().eval().requires_grad_(False), _batch(2))
    assert min(o.steps for o in out) < 400, "early stop never triggered"
    assert all(o.converged for o in out)
    assert {o.stop_reason for o in out if o.steps < 400} == {"early_stop"}
    assert all(math.isfinite(o.extra["mask_l1"]) for o in out)


def _ours(batch: PairBatch, epochs: int, early_stop_epochs: int | None):
    cls = METHODS["ours"]
    params = cls.Params(epochs=epochs, early_stop_epochs=early_stop_epochs)
    return cls(params).invert(TinyNet().double().eval().requires_grad_(False), batch)


def test_ours_early_stop_parity_while_batch_mates_continue():
    """Opt-in early stop of ours: a pair that stops mid-run is compacted out while its batch-mates
    go on, and every pair's result is still the same alone or in the batch (float64)."""
    batch = _batch()
    together = _ours(batch, 40, early_stop_epochs=5)
    steps = [o.steps for o in together]
    assert min(steps) < max(steps) < 40, steps  # one stopped early while another continued
    assert {o.stop_reason for o in together} == {"early_stop"}
    for i in range(batch.size):
        alone = _ours(batch.subset([i]), 40, early_stop_epochs=5)[0]
        assert torch.allclose(together[i].trigger.array, alone.trigger.array, atol=1e-9)
        assert (together[i].steps, together[i].stop_reason) == (alone.steps, alone.stop_reason)
        assert together[i].attack_asr == pytest.approx(alone.attack_asr)


def test_ours_early_stop_only_truncates_the_run():
    """Early stop changes nothing but the number of epochs: a pair stopped after S epochs with
    E = 5 returns what a plain run of S epochs returns, whose best was last improved at epoch
    S - E (a run of S - E epochs gives the same trigger, one of S - E - 1 does not). Off by
    default: every epoch runs."""
    batch = _batch()
    stopped = _ours(batch, 40, early_stop_epochs=5)
    full = _ours(batch, 40, early_stop_epochs=None)
    assert [o.steps for o in full] == [40] * batch.size
    assert {o.stop_reason for o in full} == {"converged"}
    for i, o in enumerate(stopped):
        pair = batch.subset([i])
        same = [_ours(pair, epochs, early_stop_epochs=None)[0] for epochs in (o.steps, o.steps - 5)]
        for plain in same:
            assert torch.equal(o.trigger.array, plain.trigger.array)
            assert [s for _, s in plain.trace] == [s for _, s in o.trace]
        earlier = _ours(pair, o.steps - 6, early_stop_epochs=None)[0]
        assert len(earlier.trace) == len(o.trace) - 1
    assert METHODS["ours"].Params().early_stop_epochs is None
    assert METHODS["ours"].Params(early_stop_epochs=0).check() == [
        "early_stop_epochs: must be >= 1 or null (off), got 0"]


def test_stop_reason_rule():
    """Failure beats a cap beats an early stop; otherwise converged vs out of budget."""
    from farm.methods.base import stop_reason

    assert stop_reason(True, "nan", early_stopped=True, capped=True) == "failed"
    assert stop_reason(True, None, early_stopped=True, capped=True) == "cap"
    assert stop_reason(True, None, early_stopped=True) == "early_stop"
    assert stop_reason(True, None) == "converged"
    assert stop_reason(False, None) == "budget"


def test_no_success_within_the_epochs_is_out_of_budget():
    """A UAP budget of 1e-3 cannot raise a pair's ASR from below half to 0.9 in two epochs:
    such pairs end 'budget' (pairs the clean model already sends to the target may converge)."""
    cls, model, batch = METHODS["uap"], TinyNet().double().eval().requires_grad_(False), _batch()
    clean = [float((model(batch.images[i]).argmax(1) == t).double().mean()) for i, t in enumerate(batch.targets)]
    out = cls(cls.Params(epochs=2, eps=1e-3)).invert(model, batch)
    hard = [i for i, a in enumerate(clean) if a < 0.5]
    assert len(hard) >= 2, clean
    assert all(out[i].stop_reason == "budget" and not out[i].converged for i in hard)


def test_nc_original_code_loss_is_the_swapped_keras_ce():
    """loss: original_code reproduces Keras categorical_crossentropy(y_true=softmax, y_pred=onehot)
    (normalise y_pred, clip it to [1e-7, 1 - 1e-7], -sum y_true log y_pred): bounded by
    -log(1e-7) ~ 16.1 where CE is unbounded, and linear in p_t."""
    from farm.methods.nc import swapped_keras_ce

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 4, generator=g, dtype=torch.float64) * 8
    targets = torch.tensor([0, 2, 3])
    onehot = torch.nn.functional.one_hot(targets, 4).double()[:, None, :].expand(3, 5, 4)
    y_pred = (onehot / onehot.sum(-1, keepdim=True)).clamp(1e-7, 1 - 1e-7)
    keras = -(logits.softmax(-1) * y_pred.log()).sum(-1).mean(1)
    assert torch.allclose(swapped_keras_ce(logits, targets), keras, atol=1e-12)
    hopeless = torch.tensor([[[-50.0, 50.0, 0.0, 0.0]]], dtype=torch.float64)
    assert float(swapped_keras_ce(hopeless, torch.tensor([0]))) == pytest.approx(-math.log(1e-7), rel=1e-6)


def test_nc_loss_switch_changes_the_optimisation_and_is_validated():
    cls = METHODS["nc"]
    ce = cls(cls.Params(epochs=20)).invert(TinyNet().double().eval().requires_grad_(False), _batch(2))
    orig = cls(cls.Params(epochs=20, loss="original_code")).invert(TinyNet().double().eval().requires_grad_(False),
                                                                   _batch(2))
    assert not torch.allclose(ce[0].trigger.array, orig[0].trigger.array)
    from farm.schema import ConfigError, build
    from farm.config import MethodSpec

    with pytest.raises(ConfigError, match="loss"):
        build(MethodSpec, {"name": "nc", "params": {"loss": "keras"}})


def test_parity_with_a_pair_that_stops_early_mid_run():
    """A batch-mate that early-stops leaves the forward pass (compaction): the pairs still
    running must not notice, and the stopped pair must end exactly as it does alone."""
    batch = _batch()
    params = METHODS["nc"].Params(epochs=40, patience=2, early_stop_patience=3)
    model = TinyNet().double().eval().requires_grad_(False)
    together = METHODS["nc"](params)(model, batch)
    steps = [o.steps for o in together]
    assert "early_stop" in {o.stop_reason for o in together} and len(set(steps)) > 1, steps
    for i in range(batch.size):
        alone = METHODS["nc"](params)(model, batch.subset([i]))[0]
        assert torch.allclose(together[i].trigger.array, alone.trigger.array, atol=1e-9)
        assert (together[i].steps, together[i].stop_reason) == (alone.steps, alone.stop_reason)
        assert same_loss_curve(together[i], alone), i
        assert together[i].loss_curve[-1][0] == together[i].steps - 1  # the last epoch is always a point


def test_loss_curve_keeps_a_stride_of_each_pairs_own_epochs_and_its_last():
    """record_loss: a pair's points are its epochs 0, s, 2s, ... and its last one, at most
    LOSS_POINTS + 1 of them however long it runs; a pair that stops keeps its curve while a
    batch-mate goes on, and a masked-out epoch is not one of its epochs."""
    from farm.methods.base import LOSS_POINTS, PairState

    state = PairState(_batch(3), torch.device("cpu"), torch.float64)
    for epoch in range(1000):
        rows = torch.tensor([True, epoch < 70, epoch % 2 == 0])
        loss = torch.tensor([float(epoch), 1000.0 + epoch, float(epoch // 2)], dtype=torch.float64)
        state.record_loss(loss, rows)
    long, short, halves = state.loss_curves()
    assert long == [(e, float(e)) for e in range(0, 1000, 16)] + [(999, 999.0)]  # stride 1, 2, 4, 8, then 16
    assert len(long) <= LOSS_POINTS + 1
    assert short == [(e, 1000.0 + e) for e in range(0, 70, 2)] + [(69, 1069.0)]
    assert halves == [(e, float(e)) for e in range(0, 500, 8)] + [(499, 499.0)]

class BatchNormNet(torch.nn.Module):
    """A net whose BatchNorm couples samples in train mode (batch statistics)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 6, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(6)
        self.fc = torch.nn.Linear(6, 4)
        self.bn.running_mean.uniform_(-0.1, 0.1)
        self.bn.running_var.uniform_(0.5, 1.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


def test_a_train_mode_model_does_not_couple_pairs():
    """Method.__call__ runs invert in eval mode with frozen weights (then restores both):
    a caller's train-mode BatchNorm model gives each pair its result alone."""
    model = BatchNormNet().double().train()
    method = METHODS["ours"](METHODS["ours"].Params(epochs=3))
    batch = _batch()
    together = method(model, batch)
    assert model.training and all(p.requires_grad for p in model.parameters()), "mode and flags restored"
    for i in range(batch.size):
        alone = method(model, batch.subset([i]))[0]
        assert torch.allclose(together[i].trigger.array, alone.trigger.array, atol=1e-9)
    # What __call__ prevents: invert on the train-mode model couples the pairs.
    coupled = method.invert(model, batch)[0]
    alone = method.invert(model, batch.subset([0]))[0]
    assert not torch.allclose(coupled.trigger.array, alone.trigger.array, atol=1e-9)


def test_inputs_outside_unit_range_are_refused():
    batch = _batch(2)
    scaled = PairBatch(batch.victims, batch.targets, batch.images * 255, batch.seeds, batch.batch_size)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        METHODS["ours"]()(TinyNet().double(), scaled)


def test_create_method_and_metadata():
    from farm.errors import ConfigError
    from farm.methods import create_method, method_info

    m = create_method("nc", {"epochs": 3}, augment=None)
    assert m.params.epochs == 3 and m.name == "nc"
    assert create_method("nc", m.params).params is m.params
    assert method_info("nc").trigger_kind == "blend" and method_info("nc").mad_size == "mask_l1"
    assert method_info("ours").trigger_kind == "additive" and method_info("ours").display == "ours"  # default: the name
    assert method_info("ours_no_tanh").ablation_of == "ours"
    for name in METHODS:  # every method's triggers are of the kind its metadata declares
        assert method_info(name).trigger_kind in ("additive", "blend")
    with pytest.raises(ConfigError, match="nope"):
        create_method("nope")
