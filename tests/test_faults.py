"""Failure handling without a cluster: numerical isolation, bad inputs, safety (issue 6).

Every test here runs in seconds and needs no Ray: user errors must be caught before Ray
starts or any model is trained.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess

import pytest
import torch

from e2e_util import tiny_config, write_config
from farm.cli import main
from farm.config import ClusterSpec, ConfigError
from farm.grid import Job, Pair, Shard, shard_id
from farm.models import build_model
from farm.store import RunStore, StoreError
from farm.worker import PairImages, ShardExecutor, image_key, payload_from_module

K = 4


# ---- 3. numerical failure: one pair's NaN leaves its batch mates untouched --------------------
@pytest.fixture(scope="module")
def executor():
    torch.manual_seed(0)
    model = build_model("small_cnn", K, (3, 16, 16), [0.5] * 3, [0.25] * 3)
    payload = payload_from_module("m", "small_cnn", model, K, (3, 16, 16), (0.5,) * 3, (0.25,) * 3,
                                  {"dataset": "syn", "arch": "small_cnn", "model_kind": "clean", "attack": "none",
                                   "gt_victim": None, "gt_target": None})
    g = torch.Generator().manual_seed(1)
    pairs = [Pair(v, t) for v in range(K) for t in range(K) if v != t][:4]
    keys = {image_key(p) for p in pairs}
    images = PairImages({k: torch.randint(0, 256, (6, 3, 16, 16), generator=g, dtype=torch.uint8) for k in keys},
                        {k: torch.randint(0, 256, (5, 3, 16, 16), generator=g, dtype=torch.uint8) for k in keys},
                        {k: torch.zeros(5, dtype=torch.long) for k in keys})
    ex = ShardExecutor(payload, "ours", {"epochs": 3}, "plain", images, "cpu")
    job = Job("m", "ours", "plain", json.dumps({"epochs": 3}))
    shard = Shard(job, tuple(pairs), 0, shard_id(job, tuple(pairs), 0))
    return ex, shard


def test_nan_pair_fails_alone_and_batch_mates_are_unchanged(executor):
    ex, shard = executor
    clean = ex.run(shard, 6, "r", "h", fault=None, shard_no=0)
    poisoned = ex.run(shard, 6, "r", "h", fault="nan:0", shard_no=0)
    assert [r["status"] for r in clean] == ["ok"] * 4
    assert poisoned[0]["status"] == "failed" and "non-finite" in poisoned[0]["reason"]
    for a, b in zip(clean[1:], poisoned[1:]):
        assert b["status"] == "ok" and b["reason"] == ""
        ta = torch.frombuffer(bytearray(a["trigger"]), dtype=torch.float16).float()
        tb = torch.frombuffer(bytearray(b["trigger"]), dtype=torch.float16).float()
        assert torch.allclose(ta, tb, atol=1e-3), "a NaN in pair 0 changed another pair's trigger"
        assert a["steps"] == b["steps"] and a["asr"] == pytest.approx(b["asr"])


def test_rows_time_optimisation_and_evaluation_apart(executor):
    """Each row carries its share of the batch's optimisation (wall_s) and of its held-out and
    robustness evaluation (eval_wall_s), so a run shows where its time went."""
    ex, shard = executor
    rows = ex.run(shard, 6, "r", "h")
    evals = {r["eval_wall_s"] for r in rows}
    assert len(evals) == 1 and evals.pop() > 0  # amortised over the shard, like wall_s (NaN fails)
    assert all(r["wall_s"] == pytest.approx(r["batch_wall_s"] / len(rows)) for r in rows)


# ---- 2. fault injection setting: off by default, env var validated ---------------------------
def test_fault_injection_off_by_default_and_env_checked(monkeypatch):
    from farm.cluster import FAULT_ENV, fault_setting

    monkeypatch.delenv(FAULT_ENV, raising=False)
    assert fault_setting(ClusterSpec()) is None
    monkeypatch.setenv(FAULT_ENV, "exit:3")
    assert fault_setting(ClusterSpec()) == "exit:3"
    assert fault_setting(ClusterSpec(fault_injection="raise:1")) == "raise:1"
    monkeypatch.setenv(FAULT_ENV, "boom")
    with pytest.raises(ConfigError, match=FAULT_ENV):
        fault_setting(ClusterSpec())


# ---- 6. bad inputs: one clear message naming file/field and fix, exit 2, no traceback ---------
def _cli(capsys, *argv: str) -> str:
    code = main(list(argv))
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    return err


def test_malformed_yaml_unknown_method_wrong_types(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  - id: a\n    dataset: [unclosed\n")
    err = _cli(capsys, "run", str(bad))
    assert "bad.yaml line" in err and "malformed YAML" in err
    cfg = tiny_config(tmp_path)
    cfg["methods"] = [{"name": "oursx"}]
    cfg["pairs"]["victim_images"] = "many"
    err = _cli(capsys, "run", str(write_config(tmp_path / "c.yaml", cfg)))
    assert "unknown method 'oursx'" in err and "ours" in err
    assert "pairs.victim_images" in err


def test_output_of_another_config_is_never_mixed(tmp_path, capsys):
    cfg = tiny_config(tmp_path, run={"name": "t", "id": "fixed", "output": str(tmp_path)})
    first = write_config(tmp_path / "a.yaml", cfg)
    RunStore(str(tmp_path), "fixed").create("x: 1\n", {"config_hash": "someotherhash"})
    err = _cli(capsys, "run", str(first))
    assert "belongs to a different config" in err and "run.id" in err
    err = _cli(capsys, "run", str(first), "--resume", "fixed")
    assert "config hash someotherhash" in err and "omit CONFIG" in err
    assert sorted(p.name for p in (tmp_path / "fixed").iterdir()) == ["config.yaml", "manifest.json", "pairs"]


def test_read_only_output_fails_before_any_work(tmp_path, capsys, monkeypatch):
    """Root ignores permission bits, so as root the folder is made immutable (chattr +i).
    "Before any work": Ray is never connected to (a tripwire on farm.cluster.connect)."""
    import farm.cluster

    def tripwire(*_a, **_k):
        raise AssertionError("farm run connected to Ray before checking that run.output is writable")

    monkeypatch.setattr(farm.cluster, "connect", tripwire)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    immutable = os.geteuid() == 0
    if immutable and subprocess.run(["chattr", "+i", str(ro)], capture_output=True).returncode != 0:
        pytest.skip("running as root on a filesystem without chattr +i: cannot make a read-only folder")
    try:
        path = write_config(tmp_path / "c.yaml", tiny_config(ro))
        err = _cli(capsys, "run", str(path))
        assert "run.output" in err and "cannot write" in err and "--set run.output" in err
        assert list(ro.iterdir()) == []
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(ro)], check=True)
        ro.chmod(0o755)


# ---- 7. safety -----------------------------------------------------------------------------
@pytest.mark.parametrize("run_id", ["../escape", "a/../../b", "..", "/abs"])
def test_run_ids_cannot_escape_output_root(tmp_path, capsys, run_id):
    with pytest.raises(StoreError, match="run id"):
        RunStore(str(tmp_path / "out"), run_id)
    err = _cli(capsys, "run", "--resume", run_id, "--set", f"run.output={tmp_path / 'out'}")
    assert "run id" in err
    assert not (tmp_path / "escape").exists() and not (tmp_path / "b").exists()


def test_ui_binds_loopback_by_default(capsys):
    assert main(["ui", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "--host 127.0.0.1" in out and "0.0.0.0" not in out


def test_unreachable_tracking_server_gives_up_quickly():
    from farm.tracking import TrackingUnavailable, wait_reachable

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(TrackingUnavailable, match="unreachable after 3 tries"):  # gives up: it does not hang
        wait_reachable(f"http://127.0.0.1:{port}", backoff_s=0.1)
    wait_reachable("sqlite:///nowhere.db")  # local stores need no probe
