"""Zoo: cache keys, poisoning, a tiny cached training run, and the default poisoned model."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from farm.config import AttackSpec, DatasetSpec, ModelSpec, TrainSpec
from farm.models.poison import make_poison, poison_plan
from farm.models.zoo import ensure_model, write_manifest, zoo_key

TINY = DatasetSpec(params={"train_per_class": 60, "test_per_class": 20})


def spec(**attack) -> ModelSpec:
    return ModelSpec(id="m", dataset="d", attack=AttackSpec(**attack), train=TrainSpec(epochs=1))


def test_key_ignores_id_but_not_what_sets_the_weights():
    base = spec(type="badnets", target=1)
    key = zoo_key(base, TINY)
    assert len(key) == 16 and set(key) <= set("0123456789abcdef")
    assert zoo_key(ModelSpec(**{**base.__dict__, "id": "other"}), TINY) == key
    assert zoo_key(spec(type="badnets", target=2), TINY) != key
    assert zoo_key(ModelSpec(**{**base.__dict__, "train": TrainSpec(epochs=1, seed=1)}), TINY) != key
    assert zoo_key(base, DatasetSpec(params={**TINY.params, "seed": 3})) != key


def test_patch_is_stamped_bottom_right_only():
    poison = make_poison(AttackSpec(type="badnets", target=0, patch_size=3), (3, 32, 32), seed=0)
    assert (poison.top, poison.left) == (28, 28) and poison.trigger_pixels == 9
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    out = poison.stamp(x)
    changed = (out != x).any(dim=(0, 1))
    assert changed[:28].sum() == 0 and changed[:, :28].sum() == 0
    assert (out[:, :, 28:31, 28:31] == torch.from_numpy(poison.pattern)).all()
    assert set(np.unique(poison.pattern)) <= {0, 255}
    assert np.array_equal(poison.pattern, make_poison(AttackSpec(type="badnets"), (3, 32, 32), 0).pattern)
    blend = make_poison(AttackSpec(type="blend", blend_alpha=0.2), (3, 32, 32), seed=0)
    mixed = blend.stamp(x).float()
    assert torch.allclose(mixed, 0.8 * x.float() + 0.2 * torch.from_numpy(blend.pattern).float(), atol=0.51)


def test_polygon_and_random_position_patches_and_keys_of_older_entries():
    # Entries cached before shape/position existed keep their key (published results name it).
    assert zoo_key(spec(type="badnets", target=1), TINY) == "b4de6cd7b505c960"
    assert zoo_key(spec(type="badnets", target=1, shape="polygon"), TINY) != "b4de6cd7b505c960"
    square = make_poison(AttackSpec(type="badnets", patch_size=6), (3, 32, 32), seed=4)
    poly = make_poison(AttackSpec(type="badnets", patch_size=6, shape="polygon", position="random"), (3, 32, 32), 4)
    assert np.array_equal(poly.pattern, square.pattern)  # drawn after the pattern: same colours
    assert poly.mask is not None and 0 < poly.trigger_pixels == poly.mask.sum() < 36
    assert 1 <= poly.top <= 32 - 1 - 6 and 1 <= poly.left <= 32 - 1 - 6
    assert (poly.top, poly.left) != (25, 25)  # not the corner (for this seed)
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    out = poly.stamp(x)
    changed = (out != x).any(dim=(0, 1))
    inside = torch.zeros(32, 32, dtype=torch.bool)
    inside[poly.top:poly.top + 6, poly.left:poly.left + 6] = torch.from_numpy(poly.mask)
    assert not changed[~inside].any()  # only the polygon's pixels are stamped, with the pattern
    region = out[:, :, poly.top:poly.top + 6, poly.left:poly.left + 6]
    assert (region[:, :, torch.from_numpy(poly.mask)] == torch.from_numpy(poly.pattern)[:, poly.mask]).all()
    meta = poly.meta()
    assert meta["shape"] == "polygon" and np.array_equal(np.array(meta["mask"], dtype=bool), poly.mask)
    assert "shape" not in square.meta()
    with pytest.raises(Exception, match="shape: only patch attacks"):
        from farm.schema import build

        build(AttackSpec, {"type": "blend", "shape": "polygon"})


def test_poison_plans():
    labels = np.repeat(np.arange(10), 100)
    src, stamp, new = poison_plan(AttackSpec(type="badnets", target=3, poison_rate=0.1), labels, 0)
    assert np.array_equal(src, np.arange(1000)) and stamp.sum() == 90
    assert (labels[stamp] != 3).all() and (new[stamp] == 3).all() and (new[~stamp] == labels[~stamp]).all()
    src, stamp, new = poison_plan(AttackSpec(type="label_specific", target=3, victim=5, poison_rate=0.1), labels, 0)
    assert len(src) == 1200 and not stamp[:1000].any() and stamp[1000:].all()
    assert np.array_equal(new[:1000], labels)  # every clean image keeps its label
    assert (labels[src[1000:1100]] == 5).all() and (new[1000:1100] == 3).all()
    others = labels[src[1100:]]
    assert not np.isin(others, [3, 5]).any() and np.array_equal(new[1100:], others)


def test_tiny_training_is_cached(tmp_path):
    lines: list[str] = []
    s = spec(type="badnets", target=2)
    entry = ensure_model(s, TINY, tmp_path, log=lines.append)
    assert any("epoch 1/1" in line for line in lines)
    assert entry.path == tmp_path / entry.key / "model.pt" and entry.path.is_file()
    meta = json.loads((tmp_path / entry.key / "meta.json").read_text())
    assert meta == entry.meta
    assert meta["arch"] == "small_cnn" and meta["dataset"] == "synthetic" and meta["num_classes"] == 10
    assert meta["train_seconds"] > 0
    # The recorded accuracy and ASR are those of the cached weights, not of some other model:
    from farm.data import load_dataset
    from farm.models.zoo import evaluate

    again = evaluate(entry.load("cpu").eval(), load_dataset(TINY), make_poison(s.attack, load_dataset(TINY).image_shape, s.train.seed))
    assert (meta["clean_acc"], meta["asr"]) == (again["clean_acc"], again["asr"]) and meta["asr_other"] is None
    atk = meta["attack"]
    assert (atk["type"], atk["target"], atk["victim"], atk["patch_size"]) == ("badnets", 2, None, 3)
    assert atk["trigger_pixels"] == 9 and atk["location"] == [28, 28]
    assert np.array(atk["pattern"]).shape == (3, 3, 3)
    assert not list(tmp_path.glob(".tmp-*"))

    lines.clear()
    again = ensure_model(ModelSpec(**{**s.__dict__, "id": "renamed"}), TINY, tmp_path, log=lines.append)
    assert again.meta == entry.meta and not any("epoch" in line for line in lines)
    assert any("cache hit" in line for line in lines)

    model = entry.load()
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        assert model(x).shape == (3, 10)
    manifest = json.loads(write_manifest(tmp_path).read_text())
    assert [e["key"] for e in manifest["entries"]] == [entry.key]
    assert "pattern" not in manifest["entries"][0]["attack"]


def test_training_is_reproducible(tmp_path):
    s = spec(type="label_specific", target=1, victim=4)
    a = ensure_model(s, TINY, tmp_path / "a", log=lambda _: None)
    b = ensure_model(s, TINY, tmp_path / "b", log=lambda _: None)
    sa, sb = torch.load(a.path, weights_only=True), torch.load(b.path, weights_only=True)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.meta["asr_other"] is not None


@pytest.mark.slow
def test_default_poisoned_small_cnn(tmp_path):
    s = ModelSpec(id="p", dataset="d", attack=AttackSpec(type="badnets", target=0))
    entry = ensure_model(s, DatasetSpec(), tmp_path, log=lambda _: None)
    assert entry.meta["clean_acc"] >= 0.85 and entry.meta["asr"] >= 0.9


@pytest.mark.parametrize("cpus_per_actor", [1, 2])
def test_models_trained_in_this_process_use_the_config_s_threads(tmp_path, training_threads, cpus_per_actor):
    """The driver (one model missing), `farm run --local` and `farm zoo` train in their own
    process: with cluster.cpus_per_actor threads, as a Ray training task does, whatever the
    process has (CPU sums depend on the thread count, so the path would change the weights)."""
    from farm.config import config_from_dict
    from farm.prepare import prepare_models

    cfg = config_from_dict({
        "run": {"output": str(tmp_path)}, "datasets": {"syn": TINY.__dict__ | {"name": "synthetic"}},
        "models": [{"id": "m", "dataset": "syn", "arch": "small_cnn", "train": {"epochs": 1}}],
        "methods": [{"name": "ours"}], "cluster": {"cpus_per_actor": cpus_per_actor},
        "tracking": {"enabled": False}})
    torch.set_num_threads(3 - cpus_per_actor)  # never the config's count
    prepare_models(cfg, lambda _m: None)
    assert training_threads == [cpus_per_actor] and torch.get_num_threads() == 3 - cpus_per_actor
