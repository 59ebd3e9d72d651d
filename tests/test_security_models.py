"""Issue 10, point 1: TorchScript is code. Real scripted models that write a file or never
return; a real zip bomb. Untrusted TorchScript is refused before anything runs; trusted
TorchScript gets its first forward in a limited child process."""
from __future__ import annotations

import tracemalloc
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from e2e_util import tiny_config, write_config
from farm.cli import main
from farm.models.loading import CheckpointError, load_checkpoint
from farm.models.pickles import pickled_globals
from real_fixtures import write_trojai

SHAPE = (3, 32, 32)


class FileWriter(nn.Module):
    """A working classifier whose forward also creates ``path`` (``torch.from_file(shared=True)``)."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path
        self.fc = nn.Linear(3 * 32 * 32, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = torch.from_file(self.path, shared=True, size=8, dtype=torch.uint8)
        return self.fc(x.flatten(1)) + t.sum().float() * 0


class Endless(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        i = 0
        while i >= 0:
            i = (i + 1) % 1000
        return x.flatten(1)[:, :3]


def _script(module: nn.Module, path: Path) -> Path:
    torch.jit.save(torch.jit.script(module), str(path))
    return path


def _load(path: Path, fmt: str, trust: bool = False):
    return load_checkpoint(path, fmt, "small_cnn", 3, SHAPE, (0,) * 3, (1,) * 3, trust_code=trust)


def test_untrusted_torchscript_is_refused_before_it_runs(tmp_path):
    marker = tmp_path / "written-by-the-model"
    evil = _script(FileWriter(str(marker)), tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"evil\.pt: refused: a TorchScript file is a program.*trust_code"):
        _load(evil, "torchscript")
    folder = write_trojai(tmp_path / "trojai", nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 3)))
    (folder / "model.pt").write_bytes(evil.read_bytes())
    with pytest.raises(CheckpointError, match=r"model\.pt: refused.*--trust-code"):
        _load(folder, "trojai")
    assert not marker.exists()


def test_farm_zoo_refuses_untrusted_torchscript_and_trust_code_lifts_it(tmp_path, capsys):
    marker = tmp_path / "written-by-the-model"
    evil = _script(FileWriter(str(marker)), tmp_path / "evil.pt")
    cfg = tiny_config(tmp_path / "out")
    cfg["datasets"] = {"syn": {"name": "synthetic", "params": {"num_classes": 3,
                                                               "train_per_class": 10, "test_per_class": 4}}}
    cfg["models"] = [{"id": "user", "dataset": "syn", "source": "checkpoint", "checkpoint": str(evil),
                      "format": "torchscript"}]
    path = write_config(tmp_path / "c.yaml", cfg)
    assert main(["zoo", str(path)]) == 2
    err = capsys.readouterr().err
    assert "refused" in err and "--trust-code" in err and "Traceback" not in err
    assert not marker.exists()
    assert main(["zoo", str(path), "--trust-code"]) == 0, capsys.readouterr().err
    assert marker.exists()  # trusted: the user's own choice, the model runs as written


@pytest.mark.timeout(120)
def test_trusted_endless_forward_fails_within_the_time_limit(tmp_path, monkeypatch):
    from farm.models import probe

    monkeypatch.setattr(probe, "PROBE_TIMEOUT_S", 15.0)
    path = _script(Endless(), tmp_path / "loop.pt")
    with pytest.raises(CheckpointError, match=r"loop\.pt: .*did not finish within 15 s"):
        _load(path, "torchscript", trust=True)


def test_trusted_torchscript_that_allocates_without_bound_hits_the_memory_limit(tmp_path, monkeypatch):
    from farm.models import probe

    class Hog(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            big = torch.ones(64 * 1024 * 1024 * 1024 // 4)  # 64 GiB of float32
            return x.flatten(1)[:, :3] + big[0]

    monkeypatch.setattr(probe, "PROBE_MEMORY_BYTES", 6 << 30)
    with pytest.raises(CheckpointError, match=r"hog\.pt: .*(memory|alloc)"):
        _load(_script(Hog(), tmp_path / "hog.pt"), "torchscript", trust=True)


def test_pickle_scan_does_not_inflate_a_zip_bomb(tmp_path):
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        with zf.open("archive/data.pkl", "w", force_zip64=True) as f:
            chunk = b"\x00" * (16 << 20)
            for _ in range(32):  # 512 MiB uncompressed, about 0.5 MB on disk
                f.write(chunk)
    assert bomb.stat().st_size < 2 << 20
    tracemalloc.start()
    try:
        assert pickled_globals(bomb) is None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 200 << 20, f"scan allocated {peak >> 20} MiB"
    with pytest.raises(CheckpointError, match="bomb.pt"):
        _load(bomb, "state_dict")


def test_state_dict_still_needs_no_trust(tmp_path):
    from farm.models import build_net

    path = tmp_path / "sd.pt"
    torch.save(build_net("small_cnn", 3, SHAPE).state_dict(), path)
    assert _load(path, "state_dict")(torch.zeros(1, *SHAPE)).shape == (1, 3)
