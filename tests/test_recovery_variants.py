"""Recovery on the zoo BadNets model (target 0, 3×3 patch) for ours' ablations and for the
augmented variant of ours and NC.

Stated criteria: the pair into the planted target converges (attack-set ASR >= 0.9, the
methods' own bound), its held-out ASR is >= 0.7 (size-minimising methods stop right at the
bound, so held-out ASR lands either side of 0.9), and where the method has working size
control its size stays within the stated factor of the planted 9 pixels. Two ablations have
none by design: the single-variable forms (Table 6: ~1024 px) and, in our [REC] reading,
no-tanh, whose L1 on clamp(u) gives u no push below 0 (measured ~270 px; docs/methods.md).
"""
from __future__ import annotations

import pytest

from conftest import attack_batch, heldout
from farm.methods import METHODS
from farm.methods.augment import make_augment
from farm.metrics import asr
from farm.triggers import trigger_size

pytestmark = pytest.mark.slow  # trains the zoo BadNets model once per session
PLANTED = 9  # 3×3 patch
CASES = [  # (method, variant, max size in planted-patch units or None = no size control)
    ("ours", "augmented", 4),
    ("nc", "augmented", 4),
    ("ours_single_positive", "plain", 6),
    ("ours_no_tanh", "plain", None),
    ("ours_single_variable", "plain", None),
    ("ours_no_tanh_single", "plain", None),
]


@pytest.mark.parametrize("name,variant,factor", CASES)
def test_variant_recovers_planted_backdoor(badnets_model, name, variant, factor):
    model, ds, _ = badnets_model
    pairs = [(1, 0), (2, 0)]
    cls = METHODS[name]
    augment = make_augment(ds.mean) if variant == "augmented" else None
    out = cls(cls.Params(epochs=600), augment=augment).invert(model, attack_batch(ds, pairs, n=32))
    for (victim, target), o in zip(pairs, out):
        assert o.converged, (name, variant, victim)
        assert asr(model, o.trigger, heldout(ds, victim, target), target) >= 0.7, (name, variant, victim)
        if factor is not None:
            assert trigger_size(o.trigger) <= factor * PLANTED, (name, variant, trigger_size(o.trigger))
