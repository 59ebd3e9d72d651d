"""Issue 10, point 2: a received results folder is untrusted input to ``farm tables``.

Each test copies the committed fixture run and plants the attack for real: a config that
names a file-writing TorchScript model inside the folder, a stored tracking URI, a partition
folder whose name percent-decodes to ``../..``, a symlink where an output file goes.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from farm.cli import main
from test_security_models import FileWriter

RUN = Path(__file__).parent / "fixtures" / "tables_run"


@pytest.fixture
def received(tmp_path) -> Path:
    """A copy of the fixture run, as if received from someone else."""
    root = tmp_path / "received"
    shutil.copytree(RUN, root)
    return root


def _config(root: Path) -> tuple[Path, dict]:
    path = root / "fixture" / "config.yaml"
    return path, yaml.safe_load(path.read_text())


def _tables(capsys, root: Path, out: Path, *extra: str) -> tuple[int, str]:
    code = main(["tables", "fixture", "--output", str(root), "--out", str(out), *extra])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_tables_never_load_the_folders_models_unless_asked(received, tmp_path, capsys):
    marker = tmp_path / "written-by-the-model"
    shutil.rmtree(received / "fixture" / "align")
    evil = received / "fixture" / "evil.pt"
    torch.jit.save(torch.jit.script(FileWriter(str(marker))), str(evil))
    path, cfg = _config(received)
    for m in cfg["models"]:
        m.update(source="checkpoint", checkpoint=str(evil), format="torchscript")
    path.write_text(yaml.safe_dump(cfg))
    code, text = _tables(capsys, received, tmp_path / "t", "--no-mlflow")
    assert code == 0, text
    assert not marker.exists()
    assert "alignment maps missing" in (tmp_path / "t" / "fig9_13_align_size.md").read_text()
    assert "--align" in (tmp_path / "t" / "fig9_13_align_size.md").read_text()


def test_stored_tracking_uri_is_not_followed_without_the_flag(received, tmp_path, capsys):
    elsewhere = tmp_path / "attacker.db"
    path, cfg = _config(received)
    cfg["tracking"]["uri"] = f"sqlite:///{elsewhere}"
    path.write_text(yaml.safe_dump(cfg))
    code, text = _tables(capsys, received, tmp_path / "t")
    assert code == 0, text
    assert not elsewhere.exists() and (received / "mlflow.db").is_file()
    assert "--allow-tracking-uri" in text


def test_partition_folder_decoding_to_a_path_is_refused(received, tmp_path, capsys):
    pairs = received / "fixture" / "pairs"
    source = next((pairs / "model_id=clean" / "method=ours" / "variant=plain").glob("*.parquet"))
    bad = pairs / "model_id=..%2F..%2F..%2Fescape" / "method=ours" / "variant=plain"
    bad.mkdir(parents=True)
    shutil.copy(source, bad / source.name)
    manifest_path = received / "fixture" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["models"]["../../../escape"] = manifest["models"]["clean"]  # the attacker controls it too
    manifest_path.write_text(json.dumps(manifest))
    out = tmp_path / "a" / "b" / "t"
    code, text = _tables(capsys, received, out, "--no-mlflow")
    assert code == 2 and "Traceback" not in text
    assert "model_id=" in text and "not a valid id" in text
    assert not [p for p in tmp_path.rglob("*.png") if out not in p.parents and received not in p.parents]


def test_symlinked_output_file_is_refused_and_its_target_untouched(received, tmp_path, capsys):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    out = received / "fixture" / "tables"
    out.mkdir()
    (out / "index.md").symlink_to(victim)
    code = main(["tables", "fixture", "--output", str(received), "--no-mlflow"])
    err = capsys.readouterr().err
    assert code == 2 and "symlink" in err and "index.md" in err and "Traceback" not in err
    assert victim.read_text() == "precious\n"
    shutil.rmtree(out)
    out.mkdir()
    (out / "figures").symlink_to(tmp_path)  # a symlinked folder is refused too
    assert main(["tables", "fixture", "--output", str(received), "--no-mlflow"]) == 2
    assert "symlink" in capsys.readouterr().err and not (tmp_path / "clean").exists()


def test_out_must_be_a_writable_folder(received, tmp_path, capsys):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    code, text = _tables(capsys, received, a_file, "--no-mlflow")
    assert code == 2 and "is a file, not a folder" in text and "Traceback" not in text
    code, text = _tables(capsys, received, a_file / "sub", "--no-mlflow")
    assert code == 2 and "cannot write there" in text and "Traceback" not in text
    assert a_file.read_text() == "x"


def test_written_tables_leave_no_temp_files(received, tmp_path, capsys):
    code, text = _tables(capsys, received, tmp_path / "t", "--no-mlflow")
    assert code == 0, text
    files = [p for p in (tmp_path / "t").rglob("*") if p.is_file()]
    assert len(files) > 20 and not [p for p in files if p.name.startswith(".tmp")]


@pytest.mark.parametrize("value", [10**9, 1, "10", True])
def test_absurd_class_count_in_a_received_manifest_is_refused(received, tmp_path, capsys, value):
    """A manifest claiming 10⁹ classes would make the K(K-1) pair grid hang the reader."""
    manifest_path = received / "fixture" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    model = sorted(manifest["models"])[0]
    manifest["models"][model]["num_classes"] = value
    manifest_path.write_text(json.dumps(manifest))
    code, err = _tables(capsys, received, tmp_path / "t", "--no-mlflow")
    assert code == 2 and f"num_classes={value!r}" in err and "[2, 4096]" in err and "Traceback" not in err, err


def test_a_symlink_planted_after_the_folder_check_is_still_refused_at_write_time(tmp_path):
    """``prepare_folder`` refuses links early; ``write_file`` checks again, because one can be
    planted between the check and the write (minutes of rendering for a large run)."""
    from farm.report.files import prepare_folder, write_file
    from farm.store import StoreError

    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    out = prepare_folder(tmp_path / "tables")
    (out / "index.md").symlink_to(victim)
    (out / "figures").symlink_to(tmp_path)
    with pytest.raises(StoreError, match="symlink"):
        write_file(out, "index.md", b"overwritten")
    with pytest.raises(StoreError, match="symlink"):
        write_file(out, "figures/clean.png", b"x")
    with pytest.raises(StoreError, match="inside the output folder"):
        prepare_folder(out)
    assert victim.read_text() == "precious\n" and not (tmp_path / "clean.png").exists()
    assert write_file(out, "table.md", b"ok").read_bytes() == b"ok"  # a plain file is written
