"""Grid expansion: pair selection and deterministic shard ids."""
from __future__ import annotations

from farm.config import PairsSpec, config_from_dict
from farm.grid import ANY, Pair, expand, select_pairs


def cfg(**pairs):
    return config_from_dict({"models": [{"id": "a", "dataset": "synthetic"}, {"id": "b", "dataset": "synthetic"}],
                             "methods": [{"name": "ours", "variants": ["plain", "augmented"]}, {"name": "nc"}],
                             "pairs": pairs, "cluster": {"pairs_per_batch": 7}})


def test_all_pairs_and_universal():
    pairs = select_pairs(PairsSpec(universal=True), 10, 0)
    assert len(pairs) == 90 + 10
    assert len(set(pairs)) == len(pairs)
    assert all(p.victim != p.target for p in pairs)
    assert pairs[-10:] == [Pair(ANY, t) for t in range(10)]


def test_sample_is_deterministic_and_seeded():
    a = select_pairs(PairsSpec(mode="sample", sample=12), 10, 0)
    assert a == select_pairs(PairsSpec(mode="sample", sample=12), 10, 0)
    assert a != select_pairs(PairsSpec(mode="sample", sample=12), 10, 1)
    assert len(set(a)) == 12


def test_list_mode_dedupes():
    assert select_pairs(PairsSpec(mode="list", list=[(1, 2), (1, 2), (3, 0)]), 10, 0) == [Pair(1, 2), Pair(3, 0)]


def test_shards_cover_every_pair_once_with_stable_ids():
    c = cfg()
    shards = expand(c, {"a": 10, "b": 10})
    assert len({s.shard_id for s in shards}) == len(shards)
    per_job = {}
    for s in shards:
        per_job.setdefault(s.job.key, []).extend(s.pairs)
    assert len(per_job) == 2 * 3
    assert all(len(v) == 90 and len(set(v)) == 90 for v in per_job.values())
    assert [s.shard_id for s in expand(cfg(), {"a": 10, "b": 10})] == [s.shard_id for s in shards]


def test_shard_ids_change_with_params_and_seed():
    base = {s.shard_id for s in expand(cfg(), {"a": 10, "b": 10})}
    c2 = config_from_dict({"models": [{"id": "a", "dataset": "synthetic"}, {"id": "b", "dataset": "synthetic"}],
                           "methods": [{"name": "ours", "params": {"epochs": 5}, "variants": ["plain", "augmented"]},
                                       {"name": "nc"}], "cluster": {"pairs_per_batch": 7}})
    changed = {s.shard_id for s in expand(c2, {"a": 10, "b": 10})}
    assert base != changed and len(base & changed) > 0  # only ours' shards changed


def test_uap_budget_is_the_datasets_unless_set():
    """UAP's eps is a per-dataset setting (METHODS.md §2(e)): null resolves to the model's
    dataset (CIFAR-10 4/255, SVHN 0.05 ...) in the stored params; an explicit eps wins."""
    import json

    from farm.data import DATASETS
    from farm.grid import jobs

    c = config_from_dict({"datasets": {"syn": {"name": "synthetic"}, "c10": {"name": "cifar10", "root": "/nowhere"},
                                       "sv": {"name": "svhn", "root": "/nowhere"}},
                          "models": [{"id": "s", "dataset": "syn"}, {"id": "c", "dataset": "c10"},
                                     {"id": "v", "dataset": "sv"}],
                          "methods": [{"name": "uap"}]})
    eps = {j.model_id: json.loads(j.params_json)["eps"] for j in jobs(c)}
    assert eps == {"s": DATASETS["synthetic"].uap_eps, "c": 4 / 255, "v": 0.05}
    fixed = config_from_dict({"models": [{"id": "s", "dataset": "synthetic"}],
                              "methods": [{"name": "uap", "params": {"eps": 0.01}}]})
    assert json.loads(jobs(fixed)[0].params_json)["eps"] == 0.01
