"""Shared fixtures: tiny deterministic models and images that need no zoo training."""
from __future__ import annotations

import math
import os

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two pytest workers on a 2-core machine: one compute thread each (and in
    # every process a test starts), or OpenMP threads of both workers fight over the cores.
    # Recovery margins hold at 1 thread as at 2 (docs/testing.md measures both).
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch
from torch import nn

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)

# Modules by measured duration, longest first (the rest keep their order after these): with
# `pytest -n 2 --dist loadfile` each module runs whole on one worker, and starting the long ones
# first keeps one worker from finishing its queue with a 2-minute module still to go. Needs
# `--no-loadscope-reorder` (Makefile): pytest-xdist 3.8 otherwise orders modules by test count.
LONGEST_FIRST = ["test_recovery", "test_job_submit_cluster", "test_ray_exposure", "test_resilience", "test_scan",
                 "test_e2e", "test_harden", "test_recovery_variants", "test_cluster_deploy", "test_resume_store",
                 "test_security_tables", "test_tracking_server", "test_real_datasets", "test_fashion_mnist_ci",
                 "test_perf", "test_tables", "test_load", "test_object_store", "test_models", "test_security_models",
                 "test_methods_cw", "test_e2e_abs_uap_prune", "test_local", "test_methods_abs_uap_prune",
                 "test_store_concurrency", "test_cli_commands"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.module.__name__.rpartition(".")[2], len(rank)))


class TinyNet(nn.Module):
    """A small conv net without cross-sample coupling, for fast method tests."""

    def __init__(self, k: int = 4, c: int = 3, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(c, 6, 3, padding=1)
        self.fc = nn.Linear(6 * 4 * 4, k)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x))
        h = nn.functional.adaptive_avg_pool2d(h, 4)
        return self.fc(h.flatten(1))


@pytest.fixture
def tiny_model() -> nn.Module:
    return TinyNet().double().eval().requires_grad_(False)


def tiny_images(p: int, n: int, hw: int = 8, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand((p, n, 3, hw, hw), generator=g, dtype=torch.float64)


def same_loss_curve(a, b) -> bool:
    """Two PairOutcomes' loss curves: the same epochs, losses equal to 1e-9 (parity tests)."""
    return [e for e, _ in a.loss_curve] == [e for e, _ in b.loss_curve] and bool(a.loss_curve) and all(
        math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12) for (_, x), (_, y) in zip(a.loss_curve, b.loss_curve))


# ---- zoo models for recovery tests (trained once per session, a few seconds each) ----------
# 500 images per class (the dataset default): with 300, a dark random patch was not learned at
# every seed (model ASR 0.13 at seed 2, docs/testing.md), and a recovery test on a model without
# a backdoor tests nothing.
ZOO_DATA = {"name": "synthetic", "params": {"train_per_class": 500, "test_per_class": 60}}


def zoo_model(tmp_root, attack: dict, model_id: str, seed: int = 0):
    """(model, dataset, meta) of a small_cnn trained by the real zoo code on synthetic data.

    ``seed`` sets both the data and the training seed (scripts/measure_margins.py varies it)."""
    from farm.config import DatasetSpec, ModelSpec
    from farm.data import load_dataset
    from farm.models.zoo import ensure_model
    from farm.schema import build

    ds_spec = build(DatasetSpec, {**ZOO_DATA, "params": {**ZOO_DATA["params"], "seed": seed}})
    spec = build(ModelSpec, {"id": model_id, "dataset": "syn", "arch": "small_cnn", "attack": attack,
                             "train": {"seed": seed}})
    entry = ensure_model(spec, ds_spec, tmp_root, log=lambda _m: None)
    if attack.get("type", "none") != "none":
        # Precondition of every recovery test: the backdoor is there (measured >= 0.98, docs/testing.md).
        assert entry.meta["asr"] >= 0.9, f"zoo model {model_id!r} did not learn its backdoor: {entry.meta}"
    model = entry.load("cpu").eval().requires_grad_(False)
    return model, load_dataset(ds_spec), entry.meta


@pytest.fixture(scope="session")
def zoo_root(tmp_path_factory):
    return tmp_path_factory.mktemp("zoo")


@pytest.fixture(scope="session")
def clean_model(zoo_root):
    return zoo_model(zoo_root, {"type": "none"}, "clean")


@pytest.fixture(scope="session")
def label_specific_model(zoo_root):
    """Label-specific backdoor: victim 2 -> target 5."""
    return zoo_model(zoo_root, {"type": "label_specific", "victim": 2, "target": 5, "patch_size": 3}, "ls")


@pytest.fixture(scope="session")
def badnets_model(zoo_root):
    """All-to-one BadNets small_cnn, target 0, 3x3 patch."""
    return zoo_model(zoo_root, {"type": "badnets", "target": 0, "patch_size": 3}, "badnets")


@pytest.fixture
def training_threads(monkeypatch):
    """The intra-op thread count of every zoo training in this process, in order; the process
    runs with 2 threads meanwhile (so a path that ignores the config's count shows it), and gets
    its own count back after the test."""
    from farm.models import zoo as zoo_mod

    seen: list[int] = []
    real = zoo_mod.train_model

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(zoo_mod, "train_model", spy)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield seen
    torch.set_num_threads(before)


def attack_batch(ds, pairs: list[tuple[int | None, int]], n: int = 32, seed: int = 0):
    """A PairBatch of real attack images for (victim or None, target) pairs."""
    from farm.data.selection import attack_indices, gather
    from farm.methods import PairBatch, pair_seed

    imgs = torch.stack([gather(ds, "train", attack_indices(ds, v, t, n, seed)) for v, t in pairs]).float() / 255
    seeds = [pair_seed(seed, "test", "m", -1 if v is None else v, t) for v, t in pairs]
    return PairBatch([v for v, _ in pairs], [t for _, t in pairs], imgs, seeds, batch_size=32)


def heldout(ds, victim: int | None, target: int, max_n: int | None = None):
    from farm.data.selection import gather, heldout_indices

    return gather(ds, "test", heldout_indices(ds, victim, target, max_n, 0))


@pytest.fixture(scope="session")
def local_ray():
    """One private local Ray (2 CPUs, loopback) for every in-process end-to-end test.

    Starting Ray costs ~10 s on 2 cores; ``farm.cluster.connect`` reuses an initialised Ray,
    so tests that take this fixture share one and do not shut it down. A test that needs another
    cluster (multi-node, ``ray start``) shuts it down first; the next ``execute`` then starts a
    fresh local Ray by itself (``connect`` with the config's ``num_cpus``).
    """
    import ray

    from farm.cluster import connect

    if not ray.is_initialized():
        connect(None, num_cpus=2)
    yield
    ray.shutdown()


@pytest.fixture(autouse=True)
def _isolated_tracking_env(monkeypatch):
    """Each test starts and ends without $MLFLOW_TRACKING_URI: ``mlflow.set_tracking_uri`` in a
    test writes it (and MLflow's in-process default), and it would redirect every later run's
    logging, including module fixtures, which are set up before this fixture of their first test."""
    import sys

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    if "mlflow" in sys.modules:
        sys.modules["mlflow"].set_tracking_uri(None)
