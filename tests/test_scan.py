"""K-Arm scanning: pre-screening and scheduler on hand-built inputs, recovery on the zoo."""
from __future__ import annotations

import math

import pytest
import torch

from farm.methods import METHODS
from farm.scan.bandit import Bandit, BanditParams
from farm.scan.karm import KArmParams, scan_model
from farm.scan.mad import mad_scan
from farm.scan.prescreen import Arm, prescreen, top_k


# ---- pre-screening -------------------------------------------------------------------------
def _logits(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows)


def test_top_k_follows_karm_rule():
    assert top_k(4) == 2 and top_k(8) == 2 and top_k(10) == 2 and top_k(20) == 5 and top_k(43) == 11


def test_prescreen_global_target_in_every_top_k():
    # K=4, k=2: label 3 is second everywhere -> one global arm.
    logits = _logits([[5, 0, 0, 4], [0, 5, 0, 4], [0, 0, 5, 4], [0, 0, 4, 5]] * 5)
    assert prescreen(logits) == [Arm(None, 3)]


def test_prescreen_pair_when_only_one_victim_leans_to_target():
    # images of class 0 put 2 second; other classes put a varying label second.
    rows = [[5, 0, 4, 0]] * 6 + [[0, 5, 0, 4], [4, 5, 0, 0], [0, 4, 0, 5], [0, 0, 4, 5]] * 3
    assert prescreen(_logits(rows)) == [Arm(0, 2)]


def _one_hot_rows(top1: int, second: int, k: int = 4) -> list[float]:
    row = [0.0] * k
    row[top1], row[second] = 5.0, 4.0
    return row


def test_prescreen_falls_back_to_most_frequent_runner_up_labels():
    # Every class puts each other label second once (no global, no pair candidate); one extra
    # image each for classes 0 and 1 makes 3 and 2 the most frequent runner-ups.
    rows = [_one_hot_rows(c, o) for c in range(4) for o in range(4) if o != c]
    rows += [_one_hot_rows(0, 3), _one_hot_rows(1, 2)]
    arms = prescreen(_logits(rows), fallback=2)
    assert sorted(arms, key=lambda a: a.target) == [Arm(None, 2), Arm(None, 3)]


# ---- scheduler -----------------------------------------------------------------------------
def _pull_counts(true_sizes: list[float], rounds: int, epsilon: float, seed: int = 0) -> list[int]:
    """Arms whose size shrinks by 10% per pull from ``true_sizes``; count pulls per arm."""
    bandit = Bandit(len(true_sizes), BanditParams(epsilon=epsilon, beta=1.0), seed)
    current = list(true_sizes)
    for a in range(len(current)):  # warm-up: every arm once
        bandit.record(a, current[a])
    counts = [0] * len(current)
    for _ in range(rounds):
        a = bandit.choose()
        current[a] *= 0.9
        bandit.record(a, current[a])
        counts[a] += 1
    return counts


def test_greedy_bandit_spends_every_round_on_the_smallest_arm():
    assert _pull_counts([50.0, 5.0, 80.0, 40.0], rounds=30, epsilon=0.0) == [0, 30, 0, 0]


def test_epsilon_bandit_explores_but_favours_the_smallest_arm():
    counts = _pull_counts([50.0, 5.0, 80.0, 40.0], rounds=200, epsilon=0.3, seed=1)
    assert counts[1] > 0.7 * 200  # 1 - 0.3 + 0.3/4 = 0.775 expected
    assert all(c > 0 for c in counts)


def test_bandit_prefers_a_fast_shrinking_arm_of_equal_size():
    bandit = Bandit(2, BanditParams(epsilon=0.0, beta=1.0))
    for a, sizes in enumerate([[10.0, 10.0], [20.0, 10.0]]):
        for s in sizes:
            bandit.record(a, s)
    assert bandit.choose() == 1


def test_bandit_skips_finished_and_unsuccessful_arms():
    bandit = Bandit(3, BanditParams(epsilon=0.0, beta=1.0))
    bandit.record(0, 1.0, finished=True)
    bandit.record(1, math.inf)
    bandit.record(2, 50.0)
    assert bandit.choose() == 2
    assert bandit.best() == (0, 1.0)
    bandit.record(2, 40.0, finished=True)
    bandit.record(1, math.inf, finished=True)
    assert bandit.choose() is None


def test_bandit_params_check_names_fields():
    errs = BanditParams(epsilon=1.5, max_rounds=0).check()
    assert any(e.startswith("epsilon") for e in errs) and any(e.startswith("max_rounds") for e in errs)


# ---- recovery on the zoo -----------------------------------------------------------------
SCAN = KArmParams(bandit=BanditParams(max_rounds=20), round_epochs=2, attack_size=32)


@pytest.mark.slow
def test_karm_nc_finds_planted_badnets_target_not_clean(badnets_model, clean_model):
    """On the 500-image/class fixture the label-specific model's pair arm (2, 5) was not
    pre-screened (global arms 8 and 0 were): K-Arm's label-specific detection is open work
    (issue 13, docs/scanning.md), so it is not asserted here."""
    nc = METHODS["nc"]()
    bad = scan_model(badnets_model[0], badnets_model[1], nc, SCAN)
    clean = scan_model(clean_model[0], clean_model[1], nc, SCAN)
    # The chosen arms and the score ranking hold with margin; the K-Arm decision bound itself
    # ([KA]'s 0.0343 of the image area; configs/scan.yaml's are tuned, docs/scanning.md) decided the BadNets
    # model wrongly at this 2-epoch round budget on the 500-image/class fixture (score 0.071),
    # so the bound is not asserted for it (issue 16: no verdicts at a coin-flip threshold).
    assert bad.arm == Arm(None, 0), bad
    assert not clean.trojaned
    assert clean.score > 1.5 * bad.score, (bad.score, clean.score)  # measured 1.96x


@pytest.mark.slow
def test_nc_mad_flags_badnets_target_not_clean(badnets_model, clean_model):
    nc = METHODS["nc"](METHODS["nc"].Params(epochs=30))
    bad = mad_scan(badnets_model[0], badnets_model[1], nc, attack_size=32)
    clean = mad_scan(clean_model[0], clean_model[1], nc, attack_size=32)
    # MAD over 10 labels is noise (docs/testing.md: the MAD rule held in 8/10 measured runs of
    # the default scan; here the clean fixture model scored 2.56): assert the rank claims.
    assert min(range(len(bad.sizes)), key=bad.sizes.__getitem__) == 0, bad.sizes
    assert 0 in bad.flagged and clean.score < bad.score, (bad, clean)


# ---- Table 8 metrics -------------------------------------------------------------------------
def test_roc_auc_and_tpr_at_fpr_on_known_rankings():
    import numpy as np

    from farm.scan.table import roc_auc, tpr_at_fpr

    pos = np.array([True, True, False, False, False])
    assert roc_auc(np.array([5.0, 4.0, 3.0, 2.0, 1.0]), pos) == 1.0
    assert roc_auc(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), pos) == 0.0
    assert roc_auc(np.array([3.0, 1.0, 3.0, 2.0, 0.0]), pos) == pytest.approx(3.5 / 6)  # ties count 1/2
    assert tpr_at_fpr(np.array([5.0, 2.5, 3.0, 2.0, 1.0]), pos) == 0.5  # threshold = best clean score


def test_table8_negates_karm_scores_so_small_triggers_rank_high():
    import pandas as pd

    from farm.scan.table import table8

    rows = pd.DataFrame({"scanner": "karm-nc", "kind": "karm", "attack": ["badnets", "none", "none"],
                         "poisoned": [True, False, False], "decision": [True, False, True],
                         "score": [0.01, 0.2, 0.3], "seconds": [1.0, 2.0, 3.0]})
    t = table8(rows).set_index("attack")
    assert t.loc["all", "roc_auc"] == 1.0 and t.loc["all", "accuracy_pct"] == pytest.approx(200 / 3)
    assert t.loc["badnets", "median_s_per_model"] == 2.0


def test_resume_skips_exactly_the_finished_model_scanner_results(tmp_path):
    import pyarrow as pa

    from farm.scan.config import ScanConfig, ScanZooSpec
    from farm.scan.run import MODEL_DIR, _path, pending
    from farm.scan.zoo import zoo_specs
    from farm.store import RunStore

    cfg = ScanConfig(output=str(tmp_path), zoo=ScanZooSpec(clean=1, poisoned=2))
    store = RunStore(cfg.output, cfg.run_id)
    store.create("{}", {"kind": "scan"})
    specs = zoo_specs(cfg, num_classes=10)
    assert [s.attack.type == "none" for s in specs] == [True, False, False]
    done = cfg.scanners[0].name
    store.write_parquet(_path(MODEL_DIR, specs[0].id, done), pa.Table.from_pylist([{"x": 1}]))
    todo = {spec.id: [s.name for s in scanners] for spec, scanners in pending(cfg, store, specs)}
    assert todo[specs[0].id] == [s.name for s in cfg.scanners[1:]]
    assert todo[specs[1].id] == [s.name for s in cfg.scanners]
    # a temp file left by a killed writer does not count as done
    store.fs.create_dir(f"{store.run_dir}/{MODEL_DIR}/model_id={specs[1].id}", recursive=True)
    with store.fs.open_output_stream(f"{store.run_dir}/{MODEL_DIR}/model_id={specs[1].id}/.tmp-{done}.parquet") as f:
        f.write(b"partial")
    assert len(dict((s.id, t) for s, t in pending(cfg, store, specs))[specs[1].id]) == len(cfg.scanners)


def test_a_run_id_started_with_another_config_is_refused_before_anything_runs(tmp_path):
    from farm.errors import FarmError
    from farm.harden.config import HardenConfig
    from farm.harden.run import execute as harden
    from farm.scan.config import ScanConfig
    from farm.scan.run import execute as scan
    from farm.schema import build
    from farm.store import RunStore

    for run_id, execute, cfg in [("s", scan, build(ScanConfig, {"run_id": "s", "output": str(tmp_path)})),
                                 ("h", harden, build(HardenConfig, {"run_id": "h", "output": str(tmp_path),
                                                                     "models": [{"id": "m", "dataset": "synthetic"}]}))]:
        RunStore(str(tmp_path), run_id).create("seed: 0\n", {"kind": "x"})
        with pytest.raises(FarmError, match=f"run {run_id!r} .* was started with another config"):
            execute(cfg, "seed: 1\n", log=lambda _m: None)


def test_scan_zoo_draws_shapes_and_positions_and_keeps_older_zoos():
    from farm.scan.config import ScanConfig, ScanZooSpec
    from farm.scan.zoo import zoo_specs

    def draw(**zoo):
        return zoo_specs(ScanConfig(zoo=ScanZooSpec(clean=1, **zoo)), 10)

    # One shape and one position (the default): nothing more is drawn, so a zoo drawn before
    # they existed is the same models (these tuples are what the code before them drew).
    old = [(s.id, s.attack.type, s.attack.target, s.attack.victim, s.attack.patch_size, s.train.seed)
           for s in draw(poisoned=5)]
    assert old == [("clean-000", "none", 0, None, 3, 1826701615), ("blend-001", "blend", 2, None, 2, 1367864807),
                   ("badnets-002", "badnets", 1, None, 3, 161576974), ("blend-003", "blend", 6, None, 4, 1960127676),
                   ("blend-004", "blend", 5, None, 2, 1357791199),
                   ("label_specific-005", "label_specific", 0, 4, 4, 1752032166)]
    varied = draw(poisoned=30, shapes=("square", "polygon"), positions=("corner", "random"))
    patches = [s.attack for s in varied if s.attack.type in ("badnets", "label_specific")]
    assert {a.shape for a in patches} == {"square", "polygon"} and {a.position for a in patches} == {"corner", "random"}
    assert all(s.attack.shape == "square" and s.attack.position == "corner" for s in varied if s.attack.type == "blend")


def test_farm_zoo_trains_a_scan_config_s_zoo_that_farm_scan_then_reuses(tmp_path, capsys, training_threads):
    """... each model with one thread whatever the process has, as `farm scan`'s tasks would
    train a model they miss (another thread count gives other weights)."""
    import yaml

    from farm.cli import main
    from farm.data import load_dataset
    from farm.models.zoo import zoo_key
    from farm.scan.config import load_scan_config
    from farm.scan.zoo import zoo_specs

    path = tmp_path / "scan.yaml"
    path.write_text(yaml.safe_dump({
        "run_id": "z", "output": str(tmp_path / "out"), "zoo_dir": str(tmp_path / "zoo"),
        "dataset": {"name": "synthetic", "params": {"num_classes": 4, "train_per_class": 20, "test_per_class": 4}},
        "zoo": {"clean": 1, "poisoned": 2, "attacks": ["badnets"], "shapes": ["polygon"], "positions": ["random"],
                "train": {"epochs": 1}}}))
    assert main(["zoo", str(path)]) == 0
    assert training_threads == [1, 1, 1] and torch.get_num_threads() == 2
    out = capsys.readouterr().out
    assert "scan zoo of" in out and out.count("polygon random") == 2, out  # the two poisoned models' lines
    cfg = load_scan_config(path)
    specs = zoo_specs(cfg, load_dataset(cfg.dataset).num_classes)
    assert all((tmp_path / "zoo" / zoo_key(s, cfg.dataset) / "meta.json").is_file() for s in specs)
    assert main(["zoo", str(path), "--set", "run.seed=1"]) == 2  # run-config options are refused
    assert "apply to run configs" in capsys.readouterr().err


def test_every_shipped_scan_and_harden_config_is_valid():
    from farm.config import DEFAULT_CONFIG
    from farm.harden.config import load_harden_config
    from farm.scan.config import load_scan_config

    scans = sorted(DEFAULT_CONFIG.parent.glob("scan*.yaml"))
    assert {p.name for p in scans} >= {"scan.yaml", "scan-heldout.yaml", "scan-fashion-mnist.yaml"}
    configs = [load_scan_config(p) for p in scans]
    assert len({c.run_id for c in configs}) == len(configs)  # one results folder each
    load_harden_config(DEFAULT_CONFIG.parent / "harden.yaml")


# ---- a TrojAI-style round instead of a trained zoo --------------------------------------------
def _round(tmp_path):
    """Three model folders: poisoned (target 1), clean, and one without ground truth."""
    from real_fixtures import write_trojai

    from farm.models import build_model

    root = tmp_path / "round"
    for i, poisoned in enumerate([True, False, None]):
        torch.manual_seed(i)
        net = build_model("small_cnn", 3, (3, 32, 32), (0, 0, 0), (1, 1, 1)).eval()
        write_trojai(root / f"id-{i:08d}", net, per_class=6, poisoned=poisoned, target=1)
    return root


def test_round_folders_are_checked_before_any_scan(tmp_path):
    from farm.errors import FarmError
    from farm.scan.trojai_round import round_models

    with pytest.raises(FarmError, match="is not a folder"):
        round_models(str(tmp_path / "nope"), trust_code=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FarmError, match="no id-\\* model folders"):
        round_models(str(tmp_path / "empty"), trust_code=True)
    root = _round(tmp_path)
    with pytest.raises(FarmError, match="TorchScript is code .*--trust-code"):
        round_models(str(root), trust_code=False)
    assert [m.id for m in round_models(str(root), trust_code=True)] == ["id-00000000", "id-00000001", "id-00000002"]
    (root / "id-00000001" / "model.pt").unlink()
    with pytest.raises(FarmError, match="id-00000001: no model.pt"):
        round_models(str(root), trust_code=True)


def test_farm_scan_of_a_torchscript_round_needs_trust_code_and_leaves_no_run_folder(tmp_path, capsys):
    import yaml

    from farm.cli import main

    path = tmp_path / "round.yaml"
    path.write_text(yaml.safe_dump({"run_id": "r", "output": str(tmp_path / "out"), "round_dir": str(_round(tmp_path))}))
    assert main(["scan", str(path), "--no-mlflow"]) == 2
    assert "pass --trust-code only if you trust" in capsys.readouterr().err
    assert not (tmp_path / "out" / "r").exists()


@pytest.mark.slow
def test_round_models_are_scanned_with_their_own_examples_and_ground_truth(tmp_path):
    from farm.scan.config import ScanConfig
    from farm.scan.run import read_scan, scan_one
    from farm.scan.table import table8
    from farm.scan.trojai_round import round_models
    from farm.schema import build
    from farm.store import RunStore

    cfg = build(ScanConfig, {"run_id": "r", "output": str(tmp_path / "out"), "round_dir": str(_round(tmp_path)),
                             "scanners": [{"kind": "karm", "core": "nc"}],
                             "karm": {"round_epochs": 1, "attack_size": 4, "screen_per_class": 2,
                                      "bandit": {"max_rounds": 2}}})
    store = RunStore(cfg.output, cfg.run_id)
    store.create("{}", {"kind": "scan"})
    threads = torch.get_num_threads()
    try:
        for model in round_models(cfg.round_dir, trust_code=True):
            scan_one(cfg, model, list(cfg.scanners), trust_code=True)
    finally:
        torch.set_num_threads(threads)
    rows = read_scan(store).set_index("model_id")
    assert list(rows.index) == ["id-00000000", "id-00000001", "id-00000002"]
    assert rows.loc["id-00000000", "poisoned"] and rows.loc["id-00000000", "true_target"] == 1
    clean = rows.loc["id-00000001", "poisoned"]
    assert clean is not None and not clean
    assert rows.loc["id-00000002", "poisoned"] is None and rows["decision"].notna().all()
    assert set(rows["arm_target"]) <= {0, 1, 2}  # arms over the folder's own 3 classes
    t = table8(read_scan(store)).set_index("attack")
    assert t.loc["all", "models"] == 2  # the model without ground truth is decided but not scored


# ---- K-Arm bounds tuned on held-out models (METHODS.md §5.16) --------------------------------
def test_best_threshold_decides_most_models_and_prefers_the_widest_gap():
    import numpy as np

    from farm.scan.tune import best_threshold

    thr, right, gap = best_threshold(np.array([0.01, 0.02, 0.05, 0.2]), np.array([True, True, False, False]))
    assert thr == pytest.approx((0.02 * 0.05) ** 0.5) and right == 4 and gap == pytest.approx(2.5)
    # Two thresholds decide 2 of 3 right (between 0.01 and 0.05: gap 5x; above 0.3: 2x): the wider gap wins.
    thr, right, gap = best_threshold(np.array([0.01, 0.05, 0.3]), np.array([True, False, True]))
    assert thr == pytest.approx((0.01 * 0.05) ** 0.5) and right == 2 and gap == pytest.approx(5.0)
    # A scan that inverted nothing (NaN/inf score) is never below a bound: clean by every threshold.
    thr, right, _ = best_threshold(np.array([np.nan, np.inf, 0.04]), np.array([False, False, True]))
    assert right == 3 and thr > 0.04


def test_tune_bounds_sets_each_arm_type_apart_and_keeps_an_unused_one():
    import pandas as pd
    import yaml

    from farm.scan.karm import PAIR_BOUND
    from farm.scan.tune import bounds_yaml, tune_bounds

    rows = pd.DataFrame({"scanner": "karm-ours", "kind": "karm", "score": [0.01, 0.3, 0.4, 0.02, 0.08],
                         "arm_victim": [None, None, None, 3, 4], "poisoned": [True, False, False, True, False],
                         "threshold": [0.0343, 0.0343, 0.0343, PAIR_BOUND, PAIR_BOUND]})
    mad = rows.assign(scanner="mad-nc", kind="mad")  # not a K-Arm scanner: no bounds
    unknown = rows.iloc[:1].assign(poisoned=None, score=0.5)  # no ground truth: not used
    t = tune_bounds(pd.concat([rows, mad, unknown])).set_index("arm_type")
    assert list(t["scanner"]) == ["karm-ours", "karm-ours"]
    assert t.loc["global", "bound"] == pytest.approx((0.01 * 0.3) ** 0.5) and t.loc["global", "right"] == 3
    assert t.loc["global", "old_right"] == 3
    assert t.loc["pair", "bound"] == pytest.approx((0.02 * 0.08) ** 0.5) and t.loc["pair", "right"] == 2
    assert t.loc["pair", "old_right"] == 1  # 0.02 is above [KA]'s 0.0199: the old pair bound missed it
    only_global = tune_bounds(rows.iloc[:4]).set_index("arm_type")
    assert only_global.loc["pair", "bound"] == PAIR_BOUND  # one pair-arm model, poisoned: not identified
    assert only_global.loc["pair", "note"] == "one class only: not identified, kept"
    no_pair = tune_bounds(rows.iloc[:3]).set_index("arm_type")
    assert no_pair.loc["pair", "bound"] == PAIR_BOUND and "kept" in no_pair.loc["pair", "note"]
    [spec] = yaml.safe_load(bounds_yaml(t.reset_index()))["scanners"]
    assert spec["kind"] == "karm" and spec["core"] == "ours"
    assert spec["global_bound"] == pytest.approx(t.loc["global", "bound"], rel=1e-5)


def test_scanner_bounds_are_validated_and_override_karm_s():
    from farm.errors import ConfigError
    from farm.scan.config import ScanConfig
    from farm.schema import build

    cfg = build(ScanConfig, {"scanners": [{"kind": "karm", "core": "ours", "global_bound": 0.2}, {"kind": "karm"}],
                             "karm": {"pair_bound": 0.05}})
    ours, nc = (s.karm_params(cfg.karm) for s in cfg.scanners)
    assert (ours.global_bound, ours.pair_bound) == (0.2, 0.05)
    assert (nc.global_bound, nc.pair_bound) == (cfg.karm.global_bound, 0.05)
    with pytest.raises(ConfigError) as err:
        build(ScanConfig, {"scanners": [{"kind": "mad", "pair_bound": 0.1}, {"kind": "karm", "global_bound": 1.5}]})
    text = str(err.value)
    assert "scanners[0].pair_bound: only a karm scanner has decision bounds" in text
    assert "scanners[1].global_bound: must be in (0, 1]" in text


@pytest.mark.slow
def test_scan_resumes_after_sigkill_and_rows_carry_the_chosen_trigger(tmp_path):
    import pandas as pd
    import yaml
    from kill_util import kill_then_rerun

    from farm.scan.run import MODEL_DIR
    from farm.triggers import Trigger

    cfg = {"run_id": "s", "output": str(tmp_path / "out"), "zoo_dir": str(tmp_path / "zoo"), "num_cpus": 1,
           "dataset": {"name": "synthetic", "params": {"num_classes": 4, "train_per_class": 40, "test_per_class": 8}},
           "zoo": {"clean": 1, "poisoned": 1, "attacks": ["badnets"], "train": {"epochs": 2}},
           "scanners": [{"kind": "karm", "core": "nc", "global_bound": 0.5, "pair_bound": 0.25},
                        {"kind": "mad", "core": "ours", "params": {"epochs": 3}}],
           "karm": {"round_epochs": 1, "attack_size": 8, "screen_per_class": 4, "bandit": {"max_rounds": 2}},
           "mad_attack_size": 8}
    path = tmp_path / "scan.yaml"
    path.write_text(yaml.safe_dump(cfg))
    rows_dir = tmp_path / "out" / "s" / MODEL_DIR

    def finished() -> dict:
        return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in rows_dir.rglob("*.parquet")
                if not p.name.startswith(".")}

    # Stalled (farm.failpoints) right after the first stored row (one scanner of one model) and
    # killed there; with one CPU no other scan task runs beside it, so one model is half done.
    killed: dict = {}
    out = kill_then_rerun(["scan", str(path), "--no-mlflow"], tmp_path, lambda: len(finished()) >= 1,
                          after_kill=lambda: killed.update(finished()), failpoint="scan.model_row")
    assert len(killed) == 1, sorted(killed)
    assert "2 models x 2 scanners, 2 model(s) to do" in out
    after = finished()
    assert len(after) == 4 and all(after[p] == v for p, v in killed.items())  # kept, not rewritten
    models = pd.concat([pd.read_parquet(p) for p in after], ignore_index=True)
    karm = models[models["kind"] == "karm"]
    for row in karm.itertuples():
        trigger = Trigger.from_bytes(row.trigger_kind, row.trigger_shape, row.trigger)
        assert trigger.kind == "blend" and tuple(trigger.array.shape) == (4, 32, 32)  # NC: [mask; pattern]
        assert row.threshold == (0.5 if pd.isna(row.arm_victim) else 0.25)  # the scanner's own bounds
    assert (models.loc[models["kind"] == "mad", "threshold"] == 2.0).all()

    from farm.cli import main

    assert main(["tune-bounds", "s", "--output", str(tmp_path / "out")]) == 0
    tuned = pd.read_csv(tmp_path / "out" / "s" / "tables" / "karm_bounds.csv")
    assert list(tuned["scanner"]) == ["karm-nc", "karm-nc"] and set(tuned["arm_type"]) == {"global", "pair"}
    assert main(["tune-bounds", "nope", "--output", str(tmp_path / "out")]) == 2
