"""Tests for farm.metrics (and the parts of farm.triggers the metrics rely on)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from farm.metrics import (
    ROBUSTNESS,
    align_by_asr,
    align_by_size,
    anomaly_index,
    asr,
    evaluate_pairs,
    predict,
    relative_improvement,
    rescale,
    robust_asr,
    rotate,
    summarise_sizes,
)
from farm.triggers import TAU, Trigger, prune, stamp, trigger_size

H = W = 8
TARGET = 1


class PixelModel(nn.Module):
    """Class 1 iff channel 0 at pixel (r, c) > 0.5, else class 0 (a linear model)."""

    def __init__(self, r: int, c: int, channels: int = 3) -> None:
        super().__init__()
        self.lin = nn.Linear(channels * H * W, 2)
        with torch.no_grad():
            self.lin.weight.zero_()
            self.lin.bias.copy_(torch.tensor([0.0, -5.0]))
            self.lin.weight[1, r * W + c] = 10.0  # channel 0 comes first in the flattening

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x.flatten(1))


class CountModel(nn.Module):
    """Class 1 iff the number of channel-0 pixels > 0.5 is in ``hits`` (else class 0)."""

    def __init__(self, hits: set[int]) -> None:
        super().__init__()
        self.hits = hits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        count = (x[:, 0] > 0.5).flatten(1).sum(1).tolist()
        is_t = torch.tensor([c in self.hits for c in count], dtype=torch.float32)
        return torch.stack([1 - is_t, is_t], 1)


def dark_images(n: int = 10, channels: int = 3, h: int = H, w: int = W) -> torch.Tensor:
    return torch.rand(n, channels, h, w, generator=torch.Generator().manual_seed(0)) * 0.4


def pixel_trigger(r: int, c: int, channels: int = 3) -> Trigger:
    delta = torch.zeros(channels, H, W)
    delta[:, r, c] = 1.0
    return Trigger("additive", delta)


def ones_trigger(n: int, h: int, w: int) -> Trigger:
    """Additive trigger with delta 1 on the first n pixels (flat order), all scores equal."""
    delta = torch.zeros(1, h * w)
    delta[0, :n] = 1.0
    return Trigger("additive", delta.view(1, h, w))


# ---- predict / asr -----------------------------------------------------------------------
def test_predict_uint8_and_float_agree_and_batching() -> None:
    model = PixelModel(2, 3)
    x = dark_images(7)
    x[::2, 0, 2, 3] = 1.0
    xu8 = (x * 255).round().to(torch.uint8)
    expected = torch.tensor([1, 0, 1, 0, 1, 0, 1])
    assert torch.equal(predict(model, x, batch_size=3), expected)
    assert torch.equal(predict(model, xu8, batch_size=2), expected)
    assert predict(model, x).dtype == torch.int64


def test_asr_right_pixel_vs_wrong_pixel() -> None:
    model = PixelModel(2, 3)
    x = dark_images(10)
    assert asr(model, pixel_trigger(2, 3), x, TARGET, batch_size=4) == 1.0
    assert asr(model, pixel_trigger(5, 5), x, TARGET) == 0.0
    assert asr(model, pixel_trigger(2, 3), (x * 255).to(torch.uint8), TARGET) == 1.0
    assert math.isnan(asr(model, pixel_trigger(2, 3), x[:0], TARGET))


def test_asr_partial_and_transform() -> None:
    model = PixelModel(2, 3)
    x = dark_images(4)
    x[:1, 0, 2, 3] = 1.0  # already target without any trigger
    empty = Trigger("additive", torch.zeros(3, H, W))
    assert asr(model, empty, x, TARGET) == 0.25
    # A transform that wipes the image removes the trigger effect.
    assert asr(model, pixel_trigger(2, 3), x, TARGET, transform=torch.zeros_like) == 0.0


# ---- stamping and sizes (farm.triggers) --------------------------------------------------
def test_additive_vs_blend_stamping() -> None:
    x = torch.full((2, 3, H, W), 0.6)
    delta = torch.zeros(3, H, W)
    delta[:, 1, 1] = 0.7
    delta[:, 2, 2] = -0.2
    out = stamp(x, Trigger("additive", delta))
    assert torch.allclose(out[:, :, 1, 1], torch.ones(2, 3))  # clamped at 1
    assert torch.allclose(out[:, :, 2, 2], torch.full((2, 3), 0.4))
    assert torch.allclose(out[:, :, 0, 0], torch.full((2, 3), 0.6))

    arr = torch.zeros(4, H, W)
    arr[0, 1, 1] = 0.5  # mask
    arr[1:, 1, 1] = torch.tensor([1.0, 0.0, 0.2])  # pattern, per channel
    out = stamp(x, Trigger("blend", arr))
    assert torch.allclose(out[0, :, 1, 1], torch.tensor([0.8, 0.3, 0.4]))
    assert torch.allclose(out[:, :, 0, 0], torch.full((2, 3), 0.6))


def test_sizes_threshold_and_channel_sum() -> None:
    delta = torch.zeros(3, H, W)
    delta[0, 0, 0] = 0.99 * TAU  # below tau: does not count
    delta[0, 0, 1] = 1.01 * TAU  # above: counts
    delta[1, 0, 1] = -0.5  # same pixel, second channel: still one pixel
    delta[:, 1, 0] = 0.6 * TAU  # each channel below tau, sum above: zeroed per channel first
    delta[0, 2, 0] = 0.6 * TAU
    delta[2, 2, 0] = -2 * TAU  # one channel above tau: counts
    assert trigger_size(Trigger("additive", delta)) == 2

    arr = torch.zeros(4, H, W)
    arr[0, 0, 0] = 0.99 * TAU
    arr[0, 0, 1] = 1.01 * TAU
    arr[0, 3, 3] = 1.0
    arr[1:, 5, 5] = 1.0  # pattern alone does not make a pixel part of the trigger
    assert trigger_size(Trigger("blend", arr)) == 2


def test_prune_top_k_ties_lower_index() -> None:
    delta = torch.zeros(1, 2, 3)
    delta[0] = torch.tensor([[0.5, 0.9, 0.5], [0.5, 0.1, 0.0]])
    p = prune(Trigger("additive", delta), 3)
    # top: 0.9 at flat 1, then ties 0.5 at flat 0, 2, 3 -> keep 0 and 2
    assert torch.equal(p.array[0] != 0, torch.tensor([[True, True, True], [False, False, False]]))
    assert trigger_size(p) == 3

    arr = torch.zeros(2, 2, 2)
    arr[0] = torch.tensor([[0.3, 0.3], [0.8, 0.3]])
    arr[1] = 0.7
    pb = prune(Trigger("blend", arr), 2)
    assert torch.equal(pb.mask, torch.tensor([[0.3, 0.0], [0.8, 0.0]]))
    assert torch.equal(pb.pattern, arr[1:])  # pattern untouched
    assert trigger_size(prune(Trigger("blend", arr), 0)) == 0


# ---- robustness transforms ---------------------------------------------------------------
def test_rescale_identity_and_centre() -> None:
    x = torch.rand(2, 3, 9, 9)
    assert torch.allclose(rescale(x, 1.0), x, atol=1e-6)
    # 33×33, s = (31/33)^2 -> side 31, offset 1: the centre pixel maps onto itself.
    y = torch.zeros(1, 1, 33, 33)
    y[0, 0, 16, 16] = 1.0
    out = rescale(y, (31 / 33) ** 2)
    assert out[0, 0, 16, 16].item() == pytest.approx(1.0, abs=1e-6)
    assert out.shape == y.shape
    # Zooming in enlarges a centred square: a 5×5 crop of a 3×3 square fills the centre more.
    z = torch.zeros(1, 1, 9, 9)
    z[..., 3:6, 3:6] = 1.0
    assert rescale(z, (5 / 9) ** 2).sum() > z.sum()
    # s is an AREA fraction: 10×10 at s = 0.64 crops the central 8×8 (side 10*0.8).
    x10 = torch.rand(1, 2, 10, 10)
    want = torch.nn.functional.interpolate(x10[..., 1:9, 1:9], size=(10, 10), mode="bilinear",
                                           align_corners=False)
    assert torch.allclose(rescale(x10, 0.64), want)


def test_rotate_identity_and_direction() -> None:
    x = torch.rand(2, 3, 7, 7)
    assert torch.allclose(rotate(x, 0.0), x)
    # +90 degrees = counter-clockwise as displayed: right of centre -> above centre.
    y = torch.zeros(1, 1, 7, 7)
    y[0, 0, 3, 5] = 1.0
    out = rotate(y, 90.0)
    assert out[0, 0, 1, 3].item() == pytest.approx(1.0, abs=1e-5)
    assert out.sum().item() == pytest.approx(1.0, abs=1e-5)
    # small angle: deterministic, fill 0 at the corners, centre preserved
    z = torch.ones(1, 1, 7, 7)
    r1, r2 = rotate(z, 5.0), rotate(z, 5.0)
    assert torch.equal(r1, r2)
    assert r1[0, 0, 3, 3].item() == pytest.approx(1.0)
    assert r1[0, 0, 0, 0].item() < 1.0


def test_evaluate_pairs_equals_per_pair_metrics() -> None:
    """The shard-batched evaluation gives each pair exactly its own asr/robust_asr/asr_correct,
    whatever the grouping (small batch_size: several groups) and with an empty image set."""
    model = PixelModel(4, 4)
    g = torch.Generator().manual_seed(1)
    images = [torch.rand(n, 3, H, W, generator=g) for n in (7, 0, 5, 9)]
    block = torch.zeros(3, H, W)
    block[:, 3:6, 3:6] = 0.1
    blend = torch.zeros(4, H, W)
    blend[0, 4, 4], blend[1:, 4, 4] = 1.0, 0.9
    triggers = [pixel_trigger(4, 4), pixel_trigger(0, 0), Trigger("additive", block), Trigger("blend", blend)]
    targets = [TARGET, TARGET, 0, TARGET]
    correct = [torch.rand(len(x), generator=g) > 0.4 for x in images]
    for batch_size in (4, 2048):
        got = evaluate_pairs(model, triggers, images, correct, targets, batch_size=batch_size)
        assert len(got) == len(triggers)
        for res, t, x, ok, target in zip(got, triggers, images, correct, targets):
            if len(x) == 0:
                assert all(math.isnan(v) for v in res.values())
                continue
            assert res["asr"] == asr(model, t, x, target)
            assert res["asr_correct"] == asr(model, t, x[ok], target) or (ok.sum() == 0 and
                                                                         math.isnan(res["asr_correct"]))
            assert {k: res[k] for k in ROBUSTNESS} == robust_asr(model, t, x, target)
    assert any(0 < r["asr"] < 1 for r in got), "a partial ASR makes the comparison meaningful"


def test_robust_asr_keys_and_values() -> None:
    assert list(ROBUSTNESS) == ["r98", "r96", "r88", "r80", "rot1", "rot2", "rot3", "rot4", "rot5"]
    model = PixelModel(4, 4)
    x = dark_images(5)
    big = torch.zeros(3, H, W)
    big[:, 2:7, 2:7] = 1.0  # a block covering the pixel survives small crops and rotations
    res = robust_asr(model, Trigger("additive", big), x, TARGET, batch_size=16)
    assert list(res) == list(ROBUSTNESS)
    assert all(v == 1.0 for v in res.values())
    res0 = robust_asr(model, pixel_trigger(0, 0), x, TARGET)
    assert all(v == 0.0 for v in res0.values())
    # consistency with asr(transform=...)
    single = pixel_trigger(4, 4)
    res1 = robust_asr(model, single, x, TARGET, batch_size=7)
    for name, fn in ROBUSTNESS.items():
        assert res1[name] == asr(model, single, x, TARGET, transform=fn)


# ---- MAD ---------------------------------------------------------------------------------
def test_anomaly_index_hand_example() -> None:
    # med = 10; |s - med| = [0,0,1,1,0,8] -> median 0.5; MAD = 0.7413
    idx, flagged = anomaly_index([10, 10, 11, 9, 10, 2])
    mad = 1.4826 * 0.5
    assert idx == pytest.approx(8 / mad)
    assert flagged == [5]  # 9 is 1/0.7413 = 1.35 MADs away: not flagged


def test_anomaly_index_mad_zero_nan_and_too_few() -> None:
    assert anomaly_index([5, 5, 5, 5]) == (0.0, [])
    idx, flagged = anomaly_index([5, 5, 5, 1, 7])
    assert idx == math.inf and flagged == [3]
    # NaN ignored but labels keep their positions
    idx, flagged = anomaly_index([10, math.nan, 10, 11, 9, 10, 2])
    assert idx == pytest.approx(8 / (1.4826 * 0.5)) and flagged == [6]
    idx, flagged = anomaly_index([1.0, math.nan, 3.0])
    assert math.isnan(idx) and flagged == []


# ---- alignment ---------------------------------------------------------------------------
def test_align_by_size_cuts_only_larger_other() -> None:
    model = PixelModel(0, 0, channels=1)
    x = dark_images(6, channels=1)
    ours = ones_trigger(1, H, W)  # pixel (0,0): size 1, ASR 1
    other = torch.zeros(1, H, W)
    other[0, 0, 0] = 0.6
    other[0, 3, 3] = 0.9  # higher score than (0,0): survives a cut to 1, (0,0) does not
    res = align_by_size(model, ours, Trigger("additive", other), x, TARGET)
    assert res["k"] == 1 and res["size_other"] == 2
    assert res["asr_ours"] == 1.0
    assert res["asr_other"] == 1.0  # dark pixels are <= 0.4, so 0.6 added lands above 0.5
    assert res["asr_other_cut"] == 0.0
    # other not larger than ours -> not cut
    big_ours = ones_trigger(5, H, W)
    res2 = align_by_size(model, big_ours, Trigger("additive", other), x, TARGET)
    assert res2["k"] == 5 and res2["asr_other_cut"] == res2["asr_other"]


def test_align_by_size_blend() -> None:
    model = PixelModel(0, 0, channels=1)
    x = dark_images(4, channels=1)
    arr = torch.zeros(2, H, W)
    arr[0, 0, 0], arr[0, 5, 5], arr[0, 6, 6] = 0.5, 0.9, 0.95
    arr[1] = 1.0
    res = align_by_size(model, ones_trigger(2, H, W), Trigger("blend", arr), x, TARGET)
    assert res["k"] == 2 and res["asr_other"] == 1.0 and res["asr_other_cut"] == 0.0


@pytest.mark.parametrize(("n", "j", "h"), [(30, 10, 8), (40, 40, 8), (200, 137, 16), (200, 5, 16)])
def test_align_by_asr_threshold_model(n: int, j: int, h: int) -> None:
    """Target iff >= j trigger pixels are set: ASR(k) = [k >= j], so k* = j - 1 at a_ref 0.99."""
    model = CountModel(set(range(j, h * h + 1)))
    x = torch.zeros(3, 1, h, h)
    assert align_by_asr(model, ones_trigger(n, h, h), 0.99, x, TARGET) == j - 1


def test_align_by_asr_already_below_and_first_semantics() -> None:
    x = torch.zeros(3, 1, H, W)
    model = CountModel(set(range(10, H * W + 1)))
    assert align_by_asr(model, ones_trigger(20, H, W), 1.0, x, TARGET) == 20
    # non-monotone: ASR(k) = 1 for k >= 10 except k = 15 -> the first k from the top wins
    model = CountModel(set(range(10, H * W + 1)) - {15})
    assert align_by_asr(model, ones_trigger(20, H, W), 0.5, x, TARGET) == 15
    # a_ref below the clean target rate: floor 0
    model = CountModel(set(range(0, H * W + 1)))
    assert align_by_asr(model, ones_trigger(20, H, W), 0.5, x, TARGET) == 0


def test_align_by_asr_large_branch_non_monotone_local_scan() -> None:
    """Bisection finds k=99; a dip at k=104 inside the +-8 window is taken as 'first'."""
    h = 16
    x = torch.zeros(2, 1, h, h)
    model = CountModel(set(range(100, h * h + 1)) - {104})
    assert align_by_asr(model, ones_trigger(150, h, h), 0.5, x, TARGET) == 104


# ---- tables ------------------------------------------------------------------------------
def test_relative_improvement_hand_example() -> None:
    d = np.array([[np.nan, 10.0, 20.0], [5.0, np.nan, 4.0], [8.0, 2.0, 0.0]])
    dh = np.array([[0.0, 15.0, 20.0], [10.0, 99.0, np.nan], [4.0, 3.0, 5.0]])
    # (15-10)/10=0.5, 0, (10-5)/5=1, skip nan, (4-8)/8=-0.5, (3-2)/2=0.5 -> mean 1.5/5
    assert relative_improvement(d, dh) == pytest.approx(0.3)
    assert relative_improvement(torch.tensor(d), torch.tensor(dh)) == pytest.approx(0.3)
    with pytest.raises(ValueError):
        relative_improvement(d, dh[:2])
    assert math.isnan(relative_improvement(np.full((2, 2), np.nan), np.ones((2, 2))))


def test_summarise_sizes() -> None:
    s = summarise_sizes([1.0, math.nan, 3.0, 8.0])
    assert s == {"mean": 4.0, "median": 3.0, "std": pytest.approx(np.std([1, 3, 8])),
                 "min": 1.0, "max": 8.0, "n": 3}
    e = summarise_sizes([math.nan])
    assert e["n"] == 0 and math.isnan(e["mean"])


# ---- per-label sizes for MAD (farm.report.aggregate.label_sizes) --------------------------
def _size_rows(method: str, rows: list[tuple[int, int, float, float, str]]):
    import pandas as pd

    return pd.DataFrame([{"method": method, "victim": v, "target": t, "trigger_size": s, "mask_l1": l1,
                          "status": "ok", "stop_reason": reason} for v, t, s, l1, reason in rows])


def test_label_sizes_pair_min_skips_missing_and_capped_sizes() -> None:
    from farm.report.aggregate import label_sizes

    g = _size_rows("ours", [(0, 1, 5.0, 0.0, "converged"), (2, 1, 3.0, 0.0, "early_stop"),
                            (1, 0, math.nan, 0.0, "budget"), (2, 0, 7.0, 0.0, "converged"),
                            (0, 2, 1.0, 0.0, "cap"), (1, 2, math.nan, 0.0, "converged"),
                            (-1, 2, 0.5, 0.0, "converged")])  # a universal row: not a pair size
    out = label_sizes(g, "ours", 4, "pair-min")
    assert out[0] == 7.0 and out[1] == 3.0
    assert math.isnan(out[2]), "a capped size is the cap's, not the label's"
    assert math.isnan(out[3]), "a label without rows is NaN, in its place"


def test_label_sizes_universal_and_the_methods_own_size_column() -> None:
    from farm.report.aggregate import label_sizes

    rows = [(-1, 0, 9.0, 2.5, "converged"), (-1, 1, 4.0, 1.5, "converged"), (0, 1, 1.0, 0.1, "converged")]
    assert label_sizes(_size_rows("ours", rows), "ours", 2, "universal").tolist() == [9.0, 4.0]
    assert label_sizes(_size_rows("nc", rows), "nc", 2, "universal").tolist() == [2.5, 1.5]  # NC: mask L1
