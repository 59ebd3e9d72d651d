"""Augmented variant (METHODS.md §2(a), [S-J]): per-pair draws, transformed inputs, ranges, fill."""
from __future__ import annotations

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from conftest import TinyNet, same_loss_curve, tiny_images
from farm.methods import METHODS, PairBatch
from farm.methods.augment import AugmentDraw, AugmentParams, draw, make_augment, transform

MEAN = (0.3, 0.5, 0.7)
STD = (0.2, 0.25, 0.3)


def _tiny() -> torch.nn.Module:
    return TinyNet().double().eval().requires_grad_(False)


def _batch() -> PairBatch:
    """32x32: on 8x8 images every draw is the identity (see test_small_images_are_barely_changed)."""
    return PairBatch([0, 1, 2], [1, 2, 3], tiny_images(3, 10, hw=32), [21, 22, 23], batch_size=4)


@pytest.mark.parametrize("name", ["ours", "nc"])
def test_parity_with_augmentation(name):
    """Draws come from each pair's own generator: alone == in a batch (float64)."""
    cls, batch = METHODS[name], _batch()
    together = cls(cls.Params(epochs=15), augment=make_augment(MEAN)).invert(_tiny(), batch)
    plain = cls(cls.Params(epochs=15)).invert(_tiny(), batch)
    assert any(not torch.allclose(a.trigger.array, b.trigger.array) for a, b in zip(together, plain))
    for i in range(batch.size):
        alone = cls(cls.Params(epochs=15), augment=make_augment(MEAN)).invert(_tiny(), batch.subset([i]))[0]
        assert torch.allclose(together[i].trigger.array, alone.trigger.array, atol=1e-9), name
        assert together[i].steps == alone.steps and together[i].converged == alone.converged
        assert same_loss_curve(together[i], alone), (name, i)


def _torchvision(x: torch.Tensor, d: AugmentDraw) -> torch.Tensor:
    """The reference: [PB]'s transform as torchvision applies it to one pair's images."""
    h, w = x.shape[-2:]
    x = TF.rotate(x, d.angle, interpolation=TF.InterpolationMode.NEAREST, fill=list(MEAN))
    return TF.resized_crop(x, d.top, d.left, d.height, d.width, [h, w], antialias=True)


def apply(x: torch.Tensor, d: AugmentDraw, fill: list[float]) -> torch.Tensor:
    """One draw on one pair's images B×C×H×W through the batched transform."""
    return transform(x.unsqueeze(0), [d], fill)[0]


@pytest.mark.parametrize("hw", [(32, 32), (23, 29)])
def test_batched_transform_is_torchvision_per_pair(hw):
    """All pairs in one transform == torchvision rotate + resized_crop pair by pair (float64),
    with draws strong enough (up to 30 degrees, crops down to 30% of the area) that the
    rotation moves pixels and every crop is resized; gradients reach every pair's input."""
    g = torch.Generator().manual_seed(3)
    params = AugmentParams(max_degrees=30.0, scale=(0.3, 1.0))
    x = torch.rand(7, 4, 3, *hw, generator=g, dtype=torch.float64, requires_grad=True)
    draws = [draw(g, *hw, params) for _ in range(x.shape[0])]
    assert len({(d.height, d.width) for d in draws}) == len(draws)
    out = transform(x, draws, list(MEAN))
    for xi, d, oi in zip(x, draws, out):
        ref = _torchvision(xi, d)
        assert not torch.allclose(ref, xi)
        assert torch.allclose(oi, ref, atol=1e-12, rtol=0)
    out.sum().backward()
    assert (x.grad.flatten(1).abs().sum(1) > 0).all()


class Recorder(torch.nn.Module):
    """Wraps a model and keeps every input batch it sees."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model, self.seen = model, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return self.model(x)


@pytest.mark.parametrize("name", ["ours", "cw"])
def test_loss_sees_transformed_inputs(name):
    """The model receives rotate+resized_crop of the stamped batch, with the pair's draws."""
    real = make_augment(MEAN)
    calls = []

    def spy(x: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
        states = [g.get_state() for g in generators]
        out = real(x, generators)
        calls.append((x.detach().clone(), states, out.detach().clone()))
        return out

    cls = METHODS[name]
    params = cls.Params(epochs=2) if name == "ours" else cls.Params(max_iterations=2, max_cost=0.01)
    model = Recorder(_tiny())
    cls(params, augment=spy).invert(model, _batch())
    assert calls and len(calls) == len(model.seen)
    changed = 0
    for (stamped, states, out), seen in zip(calls, model.seen):
        assert torch.equal(seen, out.flatten(0, 1))
        changed += not torch.allclose(seen, stamped.flatten(0, 1))
        h, w = stamped.shape[-2:]
        for xi, state, oi in zip(stamped, states, out):
            d = draw(torch.Generator().set_state(state), h, w)
            assert torch.allclose(oi, _torchvision(xi, d), atol=1e-12)
    assert changed > 0, "the model must see transformed inputs"


def test_draw_ranges():
    """Angles in [-1, 1] degrees; crop area fraction in [0.99, 1] (up to integer rounding,
    negligible on a 1000x1000 image); both actually vary."""
    g = torch.Generator().manual_seed(0)
    draws = [draw(g, 1000, 1000) for _ in range(300)]
    angles = torch.tensor([d.angle for d in draws])
    assert angles.abs().max() <= 1.0 and angles.min() < -0.5 and angles.max() > 0.5
    area = torch.tensor([d.height * d.width / 1e6 for d in draws])
    assert area.min() >= 0.99 - 2e-3 and area.max() <= 1.0
    assert len({(d.top, d.left, d.height, d.width) for d in draws}) > 10
    p = AugmentParams()
    assert p.max_degrees == 1.0 and p.scale == (0.99, 1.0)


def test_fill_is_dataset_mean_so_normalised_fill_is_zero():
    """[PB] rotates the normalised batch with fill 0; in pixel space that is the dataset mean."""
    x = torch.ones(2, 3, 32, 32, dtype=torch.float64)
    out = apply(x, AugmentDraw(5.0, 0, 0, 32, 32), list(MEAN))
    filled = out[0, 0] != 1
    assert 0 < int(filled.sum()) < 32 * 32 // 4
    mean = torch.tensor(MEAN, dtype=torch.float64).view(3, 1, 1)
    std = torch.tensor(STD, dtype=torch.float64).view(3, 1, 1)
    normalised = (out - mean) / std
    assert torch.allclose(normalised[:, :, filled], torch.zeros(1, dtype=torch.float64), atol=1e-12)
    # identity draw leaves the image unchanged; gradients flow through the transform
    y = torch.rand(1, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.allclose(apply(y, AugmentDraw(0.0, 0, 0, 8, 8), list(MEAN)), y)
    apply(y, AugmentDraw(0.7, 0, 1, 8, 7), list(MEAN)).sum().backward()
    assert y.grad is not None and y.grad.abs().sum() > 0



def test_small_images_are_barely_changed():
    """A property of [PB]'s transform, not a bug: a +-1 degree nearest-neighbour rotation moves
    no pixel centre of a 32x32 image across a pixel border (corner shift 0.39 px), so only the
    crop changes CIFAR-size inputs (about one mini-batch in five); at 224x224 the rotation
    alone moves most pixels."""
    x = torch.rand(1, 3, 32, 32, dtype=torch.float64)
    for angle in (-1.0, -0.4, 0.3, 1.0):
        assert torch.equal(apply(x, AugmentDraw(angle, 0, 0, 32, 32), list(MEAN)), x)
    g = torch.Generator().manual_seed(0)
    full = sum((d.height, d.width) == (32, 32) for d in (draw(g, 32, 32) for _ in range(1000)))
    assert 600 < full < 950
    big = torch.rand(1, 3, 224, 224)
    moved = (apply(big, AugmentDraw(1.0, 0, 0, 224, 224), list(MEAN)) != big).any(1).float().mean()
    assert moved > 0.5
