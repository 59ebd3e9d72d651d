"""farm.align: which pairs are aligned, and that the stored numbers are METHODS.md §2(g)'s."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

from conftest import TinyNet
from farm.align import align_items, plan, shards
from farm.metrics import align_by_asr, align_by_size
from farm.triggers import Trigger
from farm.worker import PairImages


def _trig(kind: str, seed: int) -> Trigger:
    g = torch.Generator().manual_seed(seed)
    c = 3 if kind == "additive" else 4
    arr = torch.rand((c, 8, 8), generator=g) * (torch.rand((1, 8, 8), generator=g) > 0.6)
    return Trigger(kind, arr.half().float())


def _row(method: str, v: int, t: int, trig: Trigger, status: str = "ok") -> dict:
    return {"model_id": "m", "method": method, "variant": "plain", "victim": v, "target": t, "status": status,
            "converged": True, "trigger_kind": trig.kind, "trigger_shape": list(trig.array.shape),
            "trigger": trig.to_bytes()}


def test_plan_pairs_reference_with_every_other_method():
    rows = [_row("ours", 0, 1, _trig("additive", 0)), _row("nc", 0, 1, _trig("blend", 1)),
            _row("uap", 0, 1, _trig("additive", 2)), _row("nc", 1, 0, _trig("blend", 3)),  # no ours for 1->0
            _row("ours", 2, 1, _trig("additive", 4)), _row("nc", 2, 1, _trig("blend", 5), status="failed"),
            _row("ours", -1, 1, _trig("additive", 6)), _row("nc", -1, 1, _trig("blend", 7))]  # universal: skipped
    work = plan(pd.DataFrame(rows))
    assert sorted((i["method"], i["victim"], i["target"]) for i in work["m"]) == [("nc", 0, 1), ("uap", 0, 1)]
    ids = [s[0] for s in shards(work["m"], "m", "ours")]
    assert len(ids) == 2 and ids == [s[0] for s in shards(list(reversed(work["m"])), "m", "ours")]


def test_align_items_match_the_metrics():
    model = TinyNet(k=3).eval().requires_grad_(False)
    held = (torch.rand((10, 3, 8, 8), generator=torch.Generator().manual_seed(9)) * 255).to(torch.uint8)
    images = PairImages({}, {"v0": held}, {})
    ours, other = _trig("additive", 0), _trig("blend", 1)
    item = {"method": "nc", "variant": "plain", "victim": 0, "target": 1, "converged_ref": True,
            "converged_other": False, "ref": ("additive", [3, 8, 8], ours.to_bytes()),
            "other": ("blend", [4, 8, 8], other.to_bytes())}
    (row,) = align_items(model, images, [item])
    by_size = align_by_size(model, ours, other, held, 1)
    assert row["status"] == "ok" and row["converged_other"] is False
    assert row["k_ref"] == by_size["k"] and row["size_other"] == by_size["size_other"]
    assert row["asr_other_cut"] == pytest.approx(by_size["asr_other_cut"])
    assert row["k_star"] == align_by_asr(model, ours, by_size["asr_other"], held, 1)
    bad = dict(item, other=("blend", [4, 8, 8], b"\x00\x01"))
    assert align_items(model, images, [bad])[0]["status"] == "failed"
