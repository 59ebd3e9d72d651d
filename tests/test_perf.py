"""Speed machinery (issue #11): baseline, autotuned P, precision, the device check.

No timing assertions here (shared machines): speed is measured by ``farm bench`` and
``scripts/device-check.sh`` and recorded in docs/benchmarks.md. These tests check that the
machinery does what it claims: the baseline inverts a real backdoor, the sweep backs off on
out-of-memory, autocast really runs the model in bf16, and the GPU-box scripts run without
Ray or MLflow installed.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TinyNet, tiny_images
from farm.autotune import SweepPoint, best_pairs_per_batch, sweep_pairs_per_batch
from farm.baseline import baseline_pair
from farm.methods import METHODS
from farm.worker import precision_context

ROOT = Path(__file__).resolve().parents[1]


def test_baseline_recovers_the_backdoor(badnets_model):
    """The baseline is the same algorithm as ours/NC (so timing it is a fair reference): on the
    BadNets model it reaches the attack on victim images."""
    model, ds, _meta = badnets_model
    x = ds.images("train", np.flatnonzero(ds.labels("train") == 3)[:20]).float() / 255
    for method in ("ours", "nc"):
        out = baseline_pair(model, x, 0, method, epochs=30, batch_size=10, seed=0)
        assert out["asr"] >= 0.9, (method, out["asr"])
        assert out["best"], f"{method}: a successful trigger was recorded"
    with pytest.raises(ValueError, match="no baseline for method 'cw'"):
        baseline_pair(model, x, 0, "cw", 1, 10, 0)


class OutOfMemoryAbove(torch.nn.Module):
    """A model that raises CUDA's out-of-memory error for batches above ``limit`` images, as
    a GPU does; the sweep must back off instead of failing."""

    def __init__(self, limit: int):
        super().__init__()
        self.net, self.limit = TinyNet().eval().requires_grad_(False), limit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.net(x)


def test_sweep_backs_off_on_out_of_memory():
    images = tiny_images(3, 8).float()
    method = METHODS["ours"](METHODS["ours"].Params(epochs=1))
    points = sweep_pairs_per_batch(method, OutOfMemoryAbove(4 * 8), images, [1, 2, 3], max_pairs=64,
                                   batch_size=8, epochs=1)
    assert [pt.pairs for pt in points] == [1, 2, 4], "P = 8 needs 64 images > the 32 that fit"
    assert best_pairs_per_batch(points) in (1, 2, 4)
    with pytest.raises(IndexError):  # other errors (here: a target the model lacks) are not swallowed
        sweep_pairs_per_batch(method, TinyNet(k=2).eval().requires_grad_(False), images, [5, 5, 5], 4, 8, 1)


def test_best_pairs_per_batch_prefers_the_smallest_near_the_top():
    pts = [SweepPoint(1, 10.0, None), SweepPoint(2, 19.5, None), SweepPoint(4, 20.0, None), SweepPoint(8, 12.0, None)]
    assert best_pairs_per_batch(pts) == 2
    assert best_pairs_per_batch([]) == 1


def test_bf16_precision_runs_the_model_in_bf16_and_keeps_variables_fp32():
    model = TinyNet().eval().requires_grad_(False)
    seen: list[torch.dtype] = []
    model.conv.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    from farm.methods import PairBatch

    batch = PairBatch([0, 1], [1, 2], tiny_images(2, 8).float(), [1, 2], 8)
    with precision_context(torch.device("cpu"), "bf16"):
        out = METHODS["ours"](METHODS["ours"].Params(epochs=3)).invert(model, batch)
    assert seen and set(seen) == {torch.bfloat16}
    assert all(o.trigger.array.dtype == torch.float32 and torch.isfinite(o.trigger.array).all() for o in out)


def _without_ray_and_mlflow(tmp_path: Path) -> dict[str, str]:
    """An environment where ``import ray`` / ``import mlflow`` fail, like the GPU box."""
    for name in ("ray", "mlflow"):
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "__init__.py").write_text(f"raise ImportError('{name} is not installed here')\n")
    return {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}", "FARM_CHECK_TINY": "1",
            "OMP_NUM_THREADS": "1", "PYTHON": sys.executable}


@pytest.mark.slow
def test_device_check_script_runs_without_ray_or_mlflow(tmp_path):
    env = _without_ray_and_mlflow(tmp_path / "block")
    out = tmp_path / "check.csv"
    proc = subprocess.run(["bash", str(ROOT / "scripts/device-check.sh"), "--device", "cpu", "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import pandas as pd

    df = pd.read_csv(out)
    assert set(df.method) == {"ours", "nc"}
    assert {"baseline", "P", "auto"} <= set(df.config)
    assert {"fp32", "bf16"} <= set(df.precision)
    assert (df.pair_epochs_per_s > 0).all()
    paper = pd.read_csv(tmp_path / "check-paper.csv")  # the paper-setting run: all 90 pairs as one batch
    assert set(paper.precision) == {"fp32", "bf16"} and (paper.pairs == 90).all()
    assert (paper.seconds > 0).all() and (paper.x_baseline > 0).all()


@pytest.mark.slow
def test_bench_baseline_runs_without_ray_or_mlflow(tmp_path):
    env = _without_ray_and_mlflow(tmp_path / "block")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"run: {{output: {tmp_path / 'out'}}}\n"
        "datasets: {syn: {name: synthetic, params: {train_per_class: 60, test_per_class: 10}}}\n"
        "models: [{id: m, dataset: syn, arch: small_cnn, train: {epochs: 1}}]\n"
        "methods: [{name: ours}]\ntracking: {enabled: false}\n")
    proc = subprocess.run([sys.executable, "-m", "farm", "bench", str(cfg), "--method", "ours,nc", "--pairs", "4",
                           "--pairs-per-batch", "1,4,auto", "--epochs", "2", "--baseline", "--baseline-pairs", "2",
                           "--out", str(tmp_path / "b.csv")], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import pandas as pd

    df = pd.read_csv(tmp_path / "b.csv")
    for method, part in df.groupby("method"):  # each method gets its own measured P
        configs = sorted(part.config)
        assert configs[:2] == ["P=1", "P=4"] and configs[-1] == "baseline", method
        assert len(configs) == 4 and configs[2].startswith("auto=") and 1 <= int(configs[2][5:]) <= 4, method
    assert (df[df.config == "baseline"].x_baseline == 1.0).all()
    assert df.x_baseline.notna().all() and (df.eval_share.between(0, 1)).all()


def test_bench_baseline_runs_the_model_as_loaded_whatever_the_farm_options(tmp_path, monkeypatch):
    """The baseline is the paper's code: its model is not folded (nor compiled) and runs in fp32
    even when the farm's configurations use run.fold_batchnorm / run.precision; its row says so."""
    from farm import bench as bench_mod
    from farm.config import config_from_dict

    seen = []

    def spy(model, *args, **kwargs):
        seen.append(model)
        return 1.0

    monkeypatch.setattr(bench_mod, "time_baseline", spy)
    cfg = config_from_dict({
        "run": {"output": str(tmp_path), "precision": "bf16", "fold_batchnorm": True},
        "datasets": {"syn": {"name": "synthetic", "params": {"train_per_class": 20, "test_per_class": 4}}},
        "models": [{"id": "m", "dataset": "syn", "arch": "small_cnn", "train": {"epochs": 1}}],
        "methods": [{"name": "ours"}], "tracking": {"enabled": False}})
    df = bench_mod.bench(cfg, None, ["ours"], [2], pairs=2, epochs=1, device="cpu", baseline=True,
                         baseline_pairs=1)
    assert len(seen) == 1 and any(isinstance(m, torch.nn.BatchNorm2d) for m in seen[0].modules())
    rows = df.set_index("config")
    assert rows.loc["baseline", ["precision", "fold_batchnorm", "compile"]].tolist() == ["fp32", False, False]
    assert rows.loc["P=2", ["precision", "fold_batchnorm"]].tolist() == ["bf16", True]


@pytest.mark.slow
def test_auto_pairs_per_batch_is_measured_recorded_and_reused_on_resume(tmp_path, local_ray):
    """A run with ``pairs_per_batch: auto`` measures P per model through Ray, records it in the
    manifest, stores every pair once, and a resume reuses that P (same shard ids: nothing
    is recomputed)."""
    import json


    from e2e_util import tiny_config
    from farm.config import config_from_dict
    from farm.runner import execute

    raw = tiny_config(tmp_path, cluster={"num_cpus": 2, "pairs_per_batch": "auto"}, tracking={"enabled": False})
    raw["models"] = raw["models"][:1]
    raw["methods"] = raw["methods"][:1]
    cfg = config_from_dict(raw | {"run": {**raw["run"], "id": "auto"}})
    first = execute(cfg, log_fn=print)
    manifest = json.loads((tmp_path / "auto" / "manifest.json").read_text())
    p = manifest["pairs_per_batch"]["clean"]
    assert isinstance(p, int) and p >= 1
    assert len(first.frame) == 90 and first.frame.groupby(["victim", "target"]).size().max() == 1
    again = execute(cfg, resume="auto", log_fn=print)
    assert json.loads((tmp_path / "auto" / "manifest.json").read_text())["pairs_per_batch"] == {"clean": p}
    assert len(again.frame) == 90
    assert set(again.frame.shard_id) == set(first.frame.shard_id)


@pytest.mark.parametrize("arch", ["small_cnn", "resnet20"])
def test_fold_batchnorm_removes_batchnorm_and_keeps_logits(arch):
    from farm.models import build_model
    from farm.models.fold import fold_batchnorm

    torch.manual_seed(0)
    model = build_model(arch, 10, (3, 32, 32), (0.5,) * 3, (0.25,) * 3)
    for m in model.modules():  # non-trivial running statistics, as after training
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    model.eval()
    x = torch.rand(4, 3, 32, 32)
    expected = model(x)
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert torch.allclose(folded(x), expected, atol=1e-4, rtol=1e-4)
    trained = build_model(arch, 10, (3, 32, 32), (0.5,) * 3, (0.25,) * 3)  # train mode: left alone
    assert fold_batchnorm(trained) is trained and any(isinstance(m, torch.nn.BatchNorm2d) for m in trained.modules())


def test_processes_get_the_driver_s_shards_round_robin():
    from farm.bench_procs import deal
    from farm.grid import Pair

    pairs = [Pair(0, t) for t in range(1, 8)]
    assert deal(pairs, 2, 2) == [pairs[0:2] + pairs[4:6], pairs[2:4] + pairs[6:7]]
    assert deal(pairs, 7, 2) == [pairs, []]  # one shard: one process busy, as one actor would be
    assert deal(pairs, 1, 3) == [pairs[0::3], pairs[1::3], pairs[2::3]]


@pytest.mark.slow
def test_bench_in_two_processes_runs_every_pair_once_beside_a_one_process_baseline(tmp_path):
    """--processes 2: the farm's rows come from two spawned processes (ProcessGroup checks that
    together they ran exactly the pairs dealt), the baseline from this one with all its threads."""
    from farm.bench import bench
    from farm.config import config_from_dict

    cfg = config_from_dict({
        "run": {"output": str(tmp_path)},
        "datasets": {"syn": {"name": "synthetic", "params": {"train_per_class": 20, "test_per_class": 4}}},
        "models": [{"id": "m", "dataset": "syn", "arch": "small_cnn", "train": {"epochs": 1}}],
        "methods": [{"name": "ours"}], "tracking": {"enabled": False}})
    df = bench(cfg, None, ["ours", "nc"], [1, 3], pairs=5, epochs=1, device="cpu", baseline=True, baseline_pairs=1,
               processes=2).set_index(["method", "config"])
    assert len(df) == 6
    for method in ("ours", "nc"):
        assert df.loc[(method, "baseline"), ["processes", "threads", "pairs"]].tolist() == [1, torch.get_num_threads(), 1]
        for p in ("P=1", "P=3"):
            row = df.loc[(method, p)]
            assert row["processes"] == 2 and row["threads"] == max(1, torch.get_num_threads() // 2), row
            assert row["pairs"] == 5 and row["pair_epochs_per_s"] > 0 and row["x_baseline"] > 0
