"""Config schema: defaults, every error at once with its path, overrides, hashing."""
from __future__ import annotations

import json
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from farm.config import DEFAULT_CONFIG, ConfigError, config_from_dict, load_config, load_raw
from farm.methods import METHODS
from farm.methods.nc import NCParams
from farm.methods.pixel import PixelParams

ROOT = Path(__file__).resolve().parents[1]


def minimal(**extra):
    base = {"models": [{"id": "m", "dataset": "synthetic"}], "methods": [{"name": "ours"}]}
    base.update(extra)
    return base


def test_default_config_is_valid():
    cfg = load_config(DEFAULT_CONFIG)
    assert {m.name for m in cfg.methods} == {"ours", "nc"}
    assert len(cfg.models) == 2 and cfg.pairs.mode == "all"


def test_method_defaults_match_methods_md():
    p = PixelParams()
    assert (p.epochs, p.lr, p.betas, p.asr_threshold, p.init_cost, p.patience, p.cost_up) == \
        (1000, 0.1, (0.5, 0.9), 0.9, 1e-3, 10, 1.5)
    assert p.cost_down == pytest.approx(1.5**1.5)
    assert p.early_stop_epochs is None  # METHODS.md §2(a): 1000 epochs, no early stop
    n = NCParams()
    assert (n.epochs, n.lr, n.betas, n.asr_threshold, n.init_cost, n.patience, n.cost_up,
            n.early_stop_threshold, n.early_stop_patience) == (1000, 0.1, (0.5, 0.9), 0.9, 1e-3, 5, 2.0, 1.0, 25)
    assert n.cost_down == pytest.approx(2**1.5)


def test_every_problem_listed_with_its_path():
    data = minimal(
        bogus=1,
        pairs={"mode": "list", "list": [[0, 12], [3, 3]], "victim_images": "many"},
        cluster={"pairs_per_batch": 0},
    )
    data["methods"] = [{"name": "ours", "params": {"epochs": "x", "lr": 0.1, "nope": 2}}, {"name": "nope"}]
    data["models"][0]["attack"] = {"type": "badnets", "target": 11}
    with pytest.raises(ConfigError) as err:
        config_from_dict(data)
    text = str(err.value)
    for needle in ("bogus: unknown key", "pairs.victim_images: expected int", "cluster.pairs_per_batch",
                   "methods[0].params.epochs: expected int", "methods[0].params.nope: unknown key",
                   "methods[1].name: unknown method 'nope'"):
        assert needle in text, (needle, text)


def test_impossible_classes_fail_before_anything_runs():
    data = minimal(pairs={"mode": "list", "list": [[0, 12]]})
    data["models"][0]["attack"] = {"type": "badnets", "target": 11}
    with pytest.raises(ConfigError) as err:
        config_from_dict(data)
    text = str(err.value)
    assert "models[0].attack.target: class 11" in text
    assert "pairs.list[0]: [0, 12]" in text


def test_method_param_ranges_checked():
    data = minimal()
    data["methods"] = [{"name": "nc", "params": {"asr_threshold": 1.5, "cost_up": 0.5}}]
    with pytest.raises(ConfigError) as err:
        config_from_dict(data)
    assert "methods[0].params.asr_threshold" in str(err.value)
    assert "methods[0].params.cost_up" in str(err.value)


def test_ours_early_stop_is_validated_and_off_in_every_paper_config():
    """The opt-in early stop of ours: >= 1 or null; no paper config may turn it on."""
    for value, expect in ((0, "methods[0].params.early_stop_epochs: must be >= 1 or null (off), got 0"),
                          ("soon", "methods[0].params.early_stop_epochs: expected int, got 'soon'")):
        data = minimal()
        data["methods"] = [{"name": "ours", "params": {"early_stop_epochs": value}}]
        with pytest.raises(ConfigError) as err:
            config_from_dict(data)
        assert expect in str(err.value), str(err.value)
    data = minimal()
    data["methods"] = [{"name": "ours", "params": {"early_stop_epochs": 50}}]
    assert config_from_dict(data).methods[0].params["early_stop_epochs"] == 50
    papers = sorted((DEFAULT_CONFIG.parent / "paper").glob("*.yaml"))
    assert len(papers) >= 4
    for path in papers:
        for method in load_raw(path).get("methods", []):
            assert "early_stop_epochs" not in (method.get("params") or {}), path


def test_path_escape_ids_rejected():
    data = minimal(run={"id": "../../etc"})
    data["models"][0]["id"] = "a/b"
    with pytest.raises(ConfigError) as err:
        config_from_dict(data)
    assert "run.id" in str(err.value) and "models[0].id" in str(err.value)


def test_overrides_and_malformed_yaml(tmp_path):
    cfg = load_config(DEFAULT_CONFIG, ["methods.0.params.epochs=7", "pairs.mode=sample", "pairs.sample=5"])
    assert cfg.methods[0].params["epochs"] == 7 and cfg.pairs.sample == 5
    with pytest.raises(ConfigError, match="not a valid index"):
        load_config(DEFAULT_CONFIG, ["methods.9.params.epochs=7"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [\n  - id: x\n")
    with pytest.raises(ConfigError, match="malformed YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")


def test_hash_tracks_results_not_resources():
    a = config_from_dict(minimal())
    b = config_from_dict(minimal(cluster={"pairs_per_batch": 3}, tracking={"enabled": False}))
    c = config_from_dict(minimal(run={"seed": 1}))
    assert a.hash() == b.hash() and a.hash() != c.hash()


@pytest.mark.parametrize("setting", [{"precision": "bf16"}, {"compile": True}, {"fold_batchnorm": True}])
def test_hash_tracks_numerics_options_and_keeps_fp32_runs_identity(setting):
    """bf16, compile and folding change pair results: a run with them is another run (a resume
    cannot mix them in), while the defaults leave the hash of runs made before them unchanged."""
    a = config_from_dict(minimal())
    assert config_from_dict(minimal(run={"precision": "fp32", "compile": False, "fold_batchnorm": False})).hash() \
        == a.hash()
    assert config_from_dict(minimal(run=setting)).hash() != a.hash()


def test_hash_of_a_published_run_survives_later_attack_fields():
    """Fields added to AttackSpec since (shape, position) must not orphan a stored run: the CW
    run published in docs/results/fashion-mnist/gpu-cw resumes only if its hash is unchanged."""
    cfg = load_config(ROOT / "configs/paper/fashion-mnist-gpu.yaml",
                      ["methods=[{name: cw}]", "run.id=fashion-mnist-gpu-cw"])
    published = json.loads((ROOT / "docs/results/fashion-mnist/gpu-cw/run-manifest.json").read_text())
    assert cfg.hash() == published["config_hash"] == "e1fbad55512b50c2"
    polygon = replace(cfg, models=[replace(m, attack=replace(m.attack, shape="polygon"))
                                   if m.attack.type == "badnets" else m for m in cfg.models])
    assert polygon.hash() != cfg.hash()  # a non-default value is part of the identity


def test_yaml_round_trip(tmp_path):
    cfg = load_config(DEFAULT_CONFIG)
    path = tmp_path / "c.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config(path) == cfg


def test_registry_has_spine_methods():
    assert {"ours", "nc"} <= set(METHODS)


def test_validate_cli_lists_errors(tmp_path, capsys):
    from farm.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text(textwrap.dedent("""
        models: [{id: m, dataset: nowhere}]
        methods: [{name: ours, params: {epochs: -1}}]
    """))
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "models[0].dataset: 'nowhere'" in err and "methods[0].params.epochs" in err
    assert "Traceback" not in err
    assert main(["validate", str(DEFAULT_CONFIG)]) == 0
