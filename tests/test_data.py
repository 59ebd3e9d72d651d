"""Synthetic dataset, the registry/loader, and per-pair image selection."""
from __future__ import annotations


import numpy as np
import pytest
import torch

from farm.config import DatasetSpec
from farm.data import DATASETS, load_dataset
from farm.data.selection import attack_indices, gather, heldout_indices
from farm.data.synthetic import Synthetic, SyntheticParams
from farm.schema import ConfigError, build

SMALL = {"train_per_class": 30, "test_per_class": 10}


def small(**kw) -> Synthetic:
    params = SyntheticParams(**(SMALL | kw))
    return Synthetic(DatasetSpec(params=SMALL | kw), params)


def all_bytes(ds: Synthetic) -> bytes:
    return b"".join(ds.images(s, np.arange(len(ds.labels(s)))).numpy().tobytes() for s in ("train", "test"))


def test_registry_and_cached_loader():
    assert DATASETS["synthetic"] is Synthetic
    a = load_dataset(DatasetSpec(params=dict(SMALL)))
    assert load_dataset(DatasetSpec(params=dict(SMALL))) is a
    assert load_dataset(DatasetSpec(params=SMALL | {"seed": 1})) is not a


def test_params_are_validated_by_the_config():
    with pytest.raises(ConfigError) as err:
        build(DatasetSpec, {"name": "synthetic", "params": {"num_clases": 5, "noise": "high"}})
    text = str(err.value)
    assert "params.num_clases: unknown key" in text and "params.noise" in text
    with pytest.raises(ConfigError, match="num_classes"):
        build(DatasetSpec, {"params": {"num_classes": 1}})
    assert Synthetic.known_num_classes(DatasetSpec(params={"num_classes": 7})) == 7
    assert Synthetic.known_num_classes(DatasetSpec()) == 10


def test_same_seed_same_bytes_other_seed_differs():
    assert all_bytes(small()) == all_bytes(small())
    assert all_bytes(small()) != all_bytes(small(seed=1))


def test_test_split_independent_of_train_size():
    a, b = small(), small(train_per_class=50)
    idx = np.arange(len(a.labels("test")))
    assert torch.equal(a.images("test", idx), b.images("test", idx))


def test_shapes_dtypes_balance_and_stats():
    ds = small(num_classes=40)
    assert ds.num_classes == 40 and ds.image_shape == (3, 32, 32)
    assert ds.class_names[:3] == ["c0", "c1", "c2"] and len(ds.class_names) == 40
    for split, per in (("train", 30), ("test", 10)):
        y = ds.labels(split)
        assert y.dtype == np.int64
        assert np.bincount(y).tolist() == [per] * 40
        x = ds.images(split, np.array([0, 5, 7]))
        assert x.dtype == torch.uint8 and x.shape == (3, 3, 32, 32)
    x = ds.images("train", np.arange(len(ds.labels("train")))).float() / 255
    assert np.allclose(ds.mean, x.mean(dim=(0, 2, 3)).numpy(), atol=1e-4)
    assert np.allclose(ds.std, x.std(dim=(0, 2, 3)).numpy(), atol=1e-3)
    assert 0.05 < min(ds.std) and max(ds.std) < 0.45  # a varied image set, not saturated


# ---- selection ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ds() -> Synthetic:
    return small()


def test_attack_set_deterministic_and_from_victim(ds):
    a = attack_indices(ds, 3, 5, 20, seed=0)
    assert np.array_equal(a, attack_indices(ds, 3, 5, 20, seed=0))
    assert len(a) == 20 and len(set(a.tolist())) == 20
    assert (ds.labels("train")[a] == 3).all()
    assert not np.array_equal(a, attack_indices(ds, 3, 5, 20, seed=1))


def test_attack_set_of_a_victim_does_not_depend_on_target(ds):
    sets = [attack_indices(ds, 3, t, 20, seed=0) for t in range(10) if t != 3]
    assert all(np.array_equal(sets[0], s) for s in sets)


def test_all_to_one_excludes_target_and_depends_on_it(ds):
    a = attack_indices(ds, None, 4, 50, seed=0)
    assert len(a) == 50 and 4 not in ds.labels("train")[a]
    assert len(np.unique(ds.labels("train")[a])) > 3
    assert not np.array_equal(a, attack_indices(ds, None, 5, 50, seed=0))


def test_small_class_returns_all_it_has(ds):
    a = attack_indices(ds, 2, 0, 1000, seed=0)
    assert sorted(a.tolist()) == np.flatnonzero(ds.labels("train") == 2).tolist()


def test_heldout_is_the_test_split_sorted_and_capped(ds):
    h = heldout_indices(ds, 3, 5, None, seed=0)
    assert np.array_equal(h, np.flatnonzero(ds.labels("test") == 3))
    c = heldout_indices(ds, 3, 5, 4, seed=0)
    assert len(c) == 4 and np.array_equal(c, np.sort(c)) and set(c) <= set(h)
    assert np.array_equal(c, heldout_indices(ds, 3, 5, 4, seed=0))
    h_all = heldout_indices(ds, None, 5, None, seed=0)
    assert 5 not in ds.labels("test")[h_all] and len(h_all) == 90
    # The attack set comes from "train", the held-out set from "test": disjoint images.
    x_att = gather(ds, "train", attack_indices(ds, 3, 5, 20, seed=0))
    x_held = gather(ds, "test", h)
    assert x_att.dtype == torch.uint8 and x_held.shape == (10, 3, 32, 32)
    flat_att = {bytes(r) for r in x_att.reshape(len(x_att), -1).numpy()}
    assert not flat_att & {bytes(r) for r in x_held.reshape(len(x_held), -1).numpy()}
