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
    # (0.0343 of the image area, not re-tuned for 32x32, docs/scanning.md) decided the BadNets
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
           "scanners": [{"kind": "karm", "core": "nc"}, {"kind": "mad", "core": "ours", "params": {"epochs": 3}}],
           "karm": {"round_epochs": 1, "attack_size": 8, "screen_per_class": 4, "bandit": {"max_rounds": 2}},
           "mad_attack_size": 8}
    path = tmp_path / "scan.yaml"
    path.write_text(yaml.safe_dump(cfg))
    rows_dir = tmp_path / "out" / "s" / MODEL_DIR

    def finished() -> dict:
        return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in rows_dir.rglob("*.parquet")
                if not p.name.startswith(".")}

    # Killed at the first stored row (one scanner of one model). The task computing the next
    # scanner may still store its row before the reap ends it (seen under load: with the kill
    # at "first model done", the orphan finished the second model too and nothing was left to
    # resume), so what the rerun must do is read from the files after the reap.
    killed: dict = {}
    out = kill_then_rerun(["scan", str(path), "--no-mlflow"], tmp_path, lambda: len(finished()) >= 1,
                          after_kill=lambda: killed.update(finished()))
    done_models = sum(len([p for p in killed if p.parent == d]) == 2 for d in {p.parent for p in killed})
    assert done_models < 2, "nothing was left to resume: the kill came too late"
    assert f"2 models x 2 scanners, {2 - done_models} model(s) to do" in out
    after = finished()
    assert len(after) == 4 and all(after[p] == v for p, v in killed.items())  # kept, not rewritten
    models = pd.concat([pd.read_parquet(p) for p in after], ignore_index=True)
    karm = models[models["kind"] == "karm"]
    for row in karm.itertuples():
        trigger = Trigger.from_bytes(row.trigger_kind, row.trigger_shape, row.trigger)
        assert trigger.kind == "blend" and tuple(trigger.array.shape) == (4, 32, 32)  # NC: [mask; pattern]
