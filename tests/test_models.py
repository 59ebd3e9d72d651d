"""Architectures, the normalising wrapper and safe checkpoint loading."""
from __future__ import annotations

import random
import pickle

import pytest
import torch
from torch import nn

from farm.models import ARCHS, build_model, build_net, register_arch
from farm.models.loading import CheckpointError, load_checkpoint, save_state_dict, save_torchscript
from farm.models.wrapper import NormalizedModel

pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.*deprecated:FutureWarning")

SHAPE = (3, 32, 32)
MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)


def _warm_bn(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Give BatchNorm non-trivial running stats, then switch to eval."""
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(x)
    return model.eval()


@pytest.mark.parametrize("arch", ["small_cnn", "resnet20", "resnet32", "nin", "torchvision:resnet18"])
def test_forward_shape_and_no_cross_sample_coupling(arch):
    torch.manual_seed(0)
    model = build_model(arch, 7, SHAPE, MEAN, STD)
    x = torch.rand(6, *SHAPE)
    _warm_bn(model, x)
    with torch.no_grad():
        batch = model(x)
        assert batch.shape == (6, 7)
        alone = torch.cat([model(x[i:i + 1]) for i in range(6)])
        swapped = model(torch.cat([x[:1], torch.rand(5, *SHAPE)]))[0]
    assert torch.allclose(batch, alone, atol=1e-5)
    assert torch.allclose(batch[0], swapped, atol=1e-5)


def test_registry_rejects_unknown_and_duplicates():
    assert {"small_cnn", "resnet20", "resnet32", "nin"} <= set(ARCHS)
    with pytest.raises(ValueError, match="unknown architecture 'nope'"):
        build_net("nope", 10, SHAPE)
    with pytest.raises(ValueError, match="registered twice"):
        register_arch("small_cnn")(lambda k, s: nn.Identity())


def test_small_cnn_is_small():
    n = sum(p.numel() for p in build_net("small_cnn", 10, SHAPE).parameters())
    assert 30_000 < n < 100_000


def test_normalized_model_normalises_inside():
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    model = NormalizedModel(net, MEAN, STD)
    x = torch.rand(3, 3, 4, 4)
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    assert torch.allclose(model(x), net((x - mean) / std), atol=1e-6)
    sd = model.state_dict()
    assert torch.equal(sd["mean"].flatten(), torch.tensor(MEAN)) and "net.1.weight" in sd


# ---- loading -------------------------------------------------------------------------------
@pytest.fixture
def trained(tmp_path):
    torch.manual_seed(0)
    model = _warm_bn(build_model("small_cnn", 10, SHAPE, MEAN, STD), torch.rand(8, *SHAPE))
    return model, torch.rand(4, *SHAPE)


def _load(path, fmt="state_dict", k=10, shape=SHAPE, mean=(0.5,) * 3, std=(0.5,) * 3):
    return load_checkpoint(path, fmt, "small_cnn", k, shape, mean, std, trust_code=fmt == "torchscript")


def test_state_dict_round_trip_all_layouts(trained, tmp_path):
    model, x = trained
    with torch.no_grad():
        want = model(x)
    save_state_dict(model, tmp_path / "wrapper.pt")
    loaded = _load(tmp_path / "wrapper.pt")  # mean/std buffers in the file win
    assert not loaded.training
    # Bare net (normalisation from the dataset) and {"state_dict": ...} / "module." layouts.
    torch.save(model.net.state_dict(), tmp_path / "net.pt")
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.net.state_dict().items()}, "epoch": 3},
               tmp_path / "wrapped.pt")
    with torch.no_grad():
        assert torch.allclose(loaded(x), want, atol=1e-6)
        for name in ("net.pt", "wrapped.pt"):
            assert torch.allclose(_load(tmp_path / name, mean=MEAN, std=STD)(x), want, atol=1e-6)
    assert not list(tmp_path.glob(".tmp-*"))  # atomic write left no temp file


def test_missing_and_corrupt_files(trained, tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        _load(tmp_path / "absent.pt")
    save_state_dict(trained[0], tmp_path / "m.pt")
    raw = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "trunc.pt").write_bytes(raw[: len(raw) // 2])
    # Seeded junk: different bytes fail in different places of torch's unpickler
    # (UnpicklingError, IndexError, KeyError, ...); every one must be a clear CheckpointError.
    junk = [f"junk{seed}.pt" for seed in range(40)]
    for seed, name in enumerate(junk):
        (tmp_path / name).write_bytes(random.Random(seed).randbytes(2000))
    for name in ("trunc.pt", *junk):
        with pytest.raises(CheckpointError, match=f"{name}: unreadable checkpoint.*truncated or corrupt"):
            _load(tmp_path / name)
    (tmp_path / "ts.pt").write_bytes(raw[:100])
    with pytest.raises(CheckpointError, match="not a readable TorchScript archive"):
        _load(tmp_path / "ts.pt", fmt="torchscript")


class _Evil:
    """Unpickling this would create ``victim_path``: the loader must never run it."""

    victim_path = ""

    def __reduce__(self):
        return (open, (self.victim_path, "w"))


@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_malicious_pickle_is_refused_without_running(tmp_path, writer):
    evil = _Evil()
    evil.victim_path = str(tmp_path / "pwned")
    path = tmp_path / "evil.pt"
    payload = {"conv.weight": torch.zeros(1), "x": evil}
    if writer == "torch":
        torch.save(payload, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f)
    assert not (tmp_path / "pwned").exists()
    with pytest.raises(CheckpointError, match=r"refused: the file contains pickled code objects.*open"):
        _load(path)
    assert not (tmp_path / "pwned").exists()


def test_class_count_and_input_mismatch(trained, tmp_path):
    save_state_dict(trained[0], tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match="has 10 output classes .* the dataset has 43"):
        _load(tmp_path / "m.pt", k=43)
    with pytest.raises(CheckpointError, match="expects 3-channel inputs"):
        _load(tmp_path / "m.pt", shape=(1, 32, 32), mean=(0.5,), std=(0.5,))
    with pytest.raises(CheckpointError, match="does not match arch 'resnet20'"):
        load_checkpoint(tmp_path / "m.pt", "state_dict", "resnet20", 10, SHAPE, MEAN, STD)


def test_torchscript_round_trip_and_checks(trained, tmp_path):
    model, x = trained
    with torch.no_grad():
        want = model(x)
    save_torchscript(model, tmp_path / "unit.pt", SHAPE)  # marked: takes [0,1] inputs
    with torch.no_grad():
        assert torch.allclose(_load(tmp_path / "unit.pt", "torchscript")(x), want, atol=1e-5)
    # A bare scripted net without farm's marker is wrapped with the dataset's normalisation.
    torch.jit.save(torch.jit.trace(model.net.eval(), torch.rand(1, *SHAPE)), str(tmp_path / "bare.pt"))
    wrapped = _load(tmp_path / "bare.pt", "torchscript", mean=MEAN, std=STD)
    with torch.no_grad():
        assert torch.allclose(wrapped(x), want, atol=1e-5)
    # Loaded modules are ScriptModules that re-save and reload without double normalisation.
    for i, loaded in enumerate([wrapped, _load(tmp_path / "unit.pt", "torchscript")]):
        assert isinstance(loaded, torch.jit.ScriptModule)
        torch.jit.save(loaded, str(tmp_path / f"resaved{i}.pt"))
        with torch.no_grad():
            assert torch.allclose(_load(tmp_path / f"resaved{i}.pt", "torchscript")(x), want, atol=1e-5)
    with pytest.raises(CheckpointError, match="dataset has 5 classes"):
        _load(tmp_path / "unit.pt", "torchscript", k=5)
    fixed = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    torch.jit.save(torch.jit.script(fixed), str(tmp_path / "fixed.pt"))
    with pytest.raises(CheckpointError, match="does not accept the dataset's 3×28×28 images"):
        _load(tmp_path / "fixed.pt", "torchscript", shape=(3, 28, 28))
