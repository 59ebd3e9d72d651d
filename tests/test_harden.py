"""Hardening (issue 13): Eq 12 on known inputs, the on-the-fly trigger step, a small
end-to-end `farm harden`, and resume after SIGKILL."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import TinyNet

from farm.metrics import relative_improvement


# ---- Eq 12 ---------------------------------------------------------------------------------
def test_relative_improvement_on_known_inputs():
    d = np.array([[9.0, 1.0, 2.0], [4.0, 9.0, 1.0], [2.0, 2.0, 9.0]])  # diagonal never counts
    dh = np.array([[0.0, 2.0, 2.0], [2.0, 0.0, math.nan], [3.0, 1.0, 0.0]])
    # (2-1)/1 + (2-2)/2 + (2-4)/4 + (3-2)/2 + (1-2)/2, the NaN pair skipped: 0.5 / 5
    assert relative_improvement(d, dh) == pytest.approx(0.1)
    assert relative_improvement(d, d) == 0.0
    assert relative_improvement(d, 2 * d) == pytest.approx(1.0)  # twice as far: +100 %
    assert math.isnan(relative_improvement(np.full((2, 2), math.nan), np.ones((2, 2))))
    with pytest.raises(ValueError, match="equal K×K"):
        relative_improvement(np.ones((3, 3)), np.ones((2, 2)))


def test_distance_is_the_smallest_converged_size_over_restarts_by_each_measure():
    import pandas as pd

    from farm.harden.distance import distance_matrix, smallest

    rows = pd.DataFrame({  # two restarts of pair 0->1 and one of 1->0, NC and ours, plus a method not measured
        "model_id": ["m"] * 7, "method": ["nc", "nc", "ours", "ours", "nc", "ours", "uap"],
        "victim": [0, 0, 0, 0, 1, 1, 0], "target": [1, 1, 1, 1, 0, 0, 1],
        "converged": [True, True, True, False, False, True, True],
        "mask_l1": [30.0, 20.0, 99.0, 99.0, 5.0, 99.0, 1.0], "trigger_size": [64.0, 50.0, 40.0, 10.0, 8.0, 7.0, 1.0]})
    d = smallest(rows).set_index(["measure", "victim", "target"])["distance"]
    assert d[("nc", 0, 1)] == 20.0 and d[("ours", 0, 1)] == 40.0  # NC: L1 of the mask; ours: pixels
    assert math.isnan(d[("nc", 1, 0)]) and d[("ours", 1, 0)] == 7.0  # unconverged is no distance
    assert len(d) == 4  # uap rows are no measure
    m = distance_matrix(smallest(rows).query("measure == 'ours'"), 2)
    assert m[0, 1] == 40.0 and m[1, 0] == 7.0 and math.isnan(m[0, 0])


def test_config_names_every_problem_with_its_path():
    from farm.harden.config import HardenConfig
    from farm.schema import ConfigError, build

    with pytest.raises(ConfigError) as err:
        build(HardenConfig, {"models": [{"id": "m", "dataset": "nope"}],
                             "methods": [{"name": "ours", "params": {"lr": -1}}, {"name": "natural", "params": {"x": 1}}],
                             "train": {"stamp_share": 0}})
    text = str(err.value)
    for expected in ("models[0].dataset: 'nope' is not a key", "methods[0].params.lr: must be > 0",
                     "methods[1].params: 'natural' generates no triggers", "train.stamp_share: must be in (0, 1]"):
        assert expected in text, text


# ---- trigger sources -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_ds():
    from farm.config import DatasetSpec
    from farm.data import load_dataset
    from farm.schema import build

    return load_dataset(build(DatasetSpec, {"name": "synthetic",
                                            "params": {"num_classes": 3, "train_per_class": 16, "test_per_class": 4}}))


def test_on_the_fly_step_continues_only_the_drawn_pair_and_attacks_its_target(tiny_ds):
    from farm.harden.sources import OnTheFly, pair_images
    from farm.methods import METHODS

    model = TinyNet(k=3).train()
    source = OnTheFly(METHODS["ours"](), tiny_ds, attack_images=8, inversion_epochs=3, seed=0, tag="t")
    source.begin_epoch(0)
    before = [v.detach().clone() for v in source.problem.variables]
    x = pair_images(tiny_ds, [0], [1], 8, seed=1, device="cpu")[0]  # class-0 images the pair never saw
    victims, targets = torch.zeros(8, dtype=torch.long), torch.ones(8, dtype=torch.long)
    stamped = source.stamp(model, x, victims, targets)

    row = int(source.index[0, 1])
    others = torch.arange(6) != row
    assert source.problem.steps.tolist() == [3 if i == row else 0 for i in range(6)]
    for v, b in zip(source.problem.variables, before):
        assert torch.equal(v[others], b[others]) and not torch.equal(v[row], b[row])
    assert model.training and all(p.requires_grad for p in model.parameters())  # handed back for training
    with torch.no_grad():  # pushed towards the target: CE measured 5.2 -> 0.003 (TinyNet seeds 0-2: >= 75x)
        assert F.cross_entropy(model(stamped), targets) < 0.1 * F.cross_entropy(model(x), targets)
    source.stamp(model, x, victims, targets)
    assert int(source.problem.steps[row]) == 6  # warm start: the next step continues the same trigger

    again = OnTheFly(METHODS["ours"](), tiny_ds, attack_images=8, inversion_epochs=3, seed=0, tag="t")
    again.begin_epoch(0)  # same epoch, same seeds: the resume after a checkpoint sees the same triggers
    assert torch.equal(again.stamp(model, x, victims, targets), stamped)
    again.begin_epoch(1)  # a new epoch starts the triggers afresh
    assert int(again.problem.steps.sum()) == 0


def test_universal_source_stamps_the_fixed_trigger_of_each_target(tiny_ds):
    from farm.harden.sources import Universal
    from farm.methods import METHODS
    from farm.triggers import stamp

    nc = METHODS["nc"](METHODS["nc"].Params(epochs=3))
    source = Universal(nc, TinyNet(k=3).eval(), tiny_ds, attack_images=8, seed=0, tag="t")
    x = torch.rand(4, 3, 32, 32)
    victims, targets = torch.tensor([0, 1, 2, 2]), torch.tensor([1, 0, 0, 1])
    out = source.stamp(TinyNet(k=3), x, victims, targets)
    for i, t in enumerate(targets.tolist()):  # the victim plays no part: one trigger per target
        assert torch.allclose(out[i], stamp(x[i : i + 1], source.triggers[t])[0])
    assert not torch.equal(source.triggers[0].array, source.triggers[1].array)


def test_make_source_uses_the_dataset_linf_bound_and_the_published_nc_schedule(tiny_ds):
    from farm.harden.config import HardenConfig, HardenMethodSpec
    from farm.harden.run import make_source
    from farm.harden.sources import OnTheFly, Universal

    cfg = HardenConfig()
    uap = make_source(HardenMethodSpec("uap"), TinyNet(k=3), tiny_ds, cfg, "t", "cpu")
    assert isinstance(uap, OnTheFly)
    uap.begin_epoch(0)
    assert uap.problem.prm.eps == tiny_ds.uap_eps == 0.05  # synthetic's L∞ bound, not a constant
    nc = make_source(HardenMethodSpec("nc", {"epochs": 2}), TinyNet(k=3).eval(), tiny_ds, cfg, "t", "cpu")
    assert isinstance(nc, Universal) and len(nc.triggers) == 3  # fixed: one universal trigger per target
    assert isinstance(make_source(HardenMethodSpec("iterative_nc"), TinyNet(k=3), tiny_ds, cfg, "t", "cpu"), OnTheFly)


# ---- end to end ----------------------------------------------------------------------------
def _config(tmp: Path, zoo: Path, methods: list[dict], epochs: int) -> dict:
    return {
        "run_id": "h", "output": str(tmp / "out"), "zoo_dir": str(zoo), "seed": 0,
        "datasets": {"syn": {"name": "synthetic", "params": {"num_classes": 3, "train_per_class": 40,
                                                             "test_per_class": 12}}},
        "models": [{"id": "cnn", "dataset": "syn", "arch": "small_cnn", "train": {"epochs": 3}}],
        "methods": methods,
        "train": {"epochs": epochs, "batch_size": 32, "inversion_epochs": 1, "attack_images": 8},
        "distance": {"images": 8, "epochs": 10, "restarts": 1, "heldout_images": 4, "pairs_per_batch": 6},
        "num_cpus": 2, "tracking": {"enabled": False},
    }


@pytest.fixture(scope="module")
def harden_zoo(tmp_path_factory):
    return tmp_path_factory.mktemp("harden-zoo")


@pytest.mark.slow
def test_harden_end_to_end_rows_distances_and_table7(local_ray, harden_zoo, tmp_path, training_threads):
    from farm.harden.config import HardenConfig
    from farm.harden.report import write_harden_tables
    from farm.harden.run import execute, read_rows
    from farm.schema import build
    from farm.store import RunStore

    raw = _config(tmp_path, harden_zoo, [{"name": "natural"}, {"name": "ours"}], epochs=2)
    cfg = build(HardenConfig, raw)
    store = execute(cfg, yaml.safe_dump(raw), log=lambda _m: None)
    # The natural model trained in the driver with the tasks' one thread, whatever the driver has,
    # as `farm zoo` and `farm run` train it (the module's first test: the zoo starts empty).
    assert training_threads == [1]
    rows = read_rows(store).set_index("method")
    assert sorted(rows.index) == ["natural", "ours"]
    natural, ours = rows.loc["natural"], rows.loc["ours"]
    assert natural["accuracy"] == natural["natural_accuracy"] and natural["stamped"] == 0
    # 120 training images in 120 // 32 = 3 batches of 40, 20 % of each stamped, 2 epochs
    assert ours["stamped"] == 2 * 3 * round(0.2 * 40)
    assert ours["accuracy"] > 0.5 * natural["accuracy"] and ours["seconds"] > 0
    pairs = RunStore(cfg.output, "h-distance-0").read(columns=["model_id", "method", "victim", "target"],
                                                      with_triggers=False)
    assert len(pairs) == 2 * 2 * 6  # 2 models (natural, hardened) x NC, ours x K(K-1)
    assert set(pairs["model_id"]) == {"cnn.natural", "cnn.ours"}

    folder = write_harden_tables(store, str(tmp_path / "tables"), log_mlflow=False)
    import pandas as pd

    t7 = pd.read_csv(folder / "table7.csv").set_index("method")
    assert list(t7.index) == ["natural", "ours"]  # the paper's row order
    assert math.isnan(t7.loc["natural", "inc_nc"]) and math.isnan(t7.loc["natural", "inc_ours"])
    assert t7.loc["natural", "adv_nc"] > 0 and t7.loc["natural", "accuracy"] == pytest.approx(100 * natural["accuracy"])
    assert "139.77" in (folder / "table7_paper.md").read_text()  # CIFAR-10 ResNet20, ours, Inc_Ours


@pytest.mark.slow
def test_harden_resumes_after_sigkill_with_the_weights_of_an_uninterrupted_run(harden_zoo, tmp_path):
    from kill_util import kill_then_rerun

    from farm.harden.config import HardenConfig
    from farm.harden.run import CHECKPOINTS, WEIGHTS, harden_one, read_rows
    from farm.schema import build
    from farm.store import RunStore

    raw = _config(tmp_path, harden_zoo, [{"name": "natural"}, {"name": "ours"}], epochs=4)
    raw["num_cpus"] = 1
    path = tmp_path / "h.yaml"
    path.write_text(yaml.safe_dump(raw))
    ckpt = tmp_path / "out" / "h" / CHECKPOINTS / "cnn" / "ours.pt"
    # stalled (farm.failpoints) right after the first epoch's checkpoint and killed there
    out = kill_then_rerun(["harden", str(path), "--no-mlflow"], tmp_path, ckpt.is_file,
                          failpoint="harden.checkpoint")
    assert "harden cnn/ours: resuming after epoch 1" in out
    rows = read_rows(RunStore(str(tmp_path / "out"), "h")).set_index("method")
    assert rows.loc["ours", "resumed_from"] == 1, rows

    cfg = build(HardenConfig, {**raw, "output": str(tmp_path / "fresh")})
    threads = torch.get_num_threads()
    try:
        harden_one(cfg, cfg.models[0], cfg.methods[1])  # uninterrupted, in this process
    finally:
        torch.set_num_threads(threads)
    resumed = torch.load(tmp_path / "out" / "h" / WEIGHTS / "cnn" / "ours.pt", weights_only=True)
    fresh = torch.load(tmp_path / "fresh" / "h" / WEIGHTS / "cnn" / "ours.pt", weights_only=True)
    assert all(torch.equal(resumed[k], fresh[k]) for k in fresh)
