"""Issue 10, point 6: each bad value or file gets one clear error naming the field or file and
the fix, before any work starts where possible (exit 2, no traceback)."""
from __future__ import annotations

import socket

import numpy as np
import pytest

from e2e_util import tiny_config, write_config
from farm.cli import main
from farm.data import load_dataset
from farm.data.base import DatasetError
from farm.schema import build
from farm.store import RunStore, StoreError
from real_fixtures import write_imagefolder


def _fails(capsys, *argv: str) -> str:
    code = main(list(argv))
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize("key, value, expect", [
    ("run.seed", "-1", "run.seed: must be >= 0"),
    ("models.0.train.lr", ".nan", "models[0].train.lr: must be a finite number"),
    ("models.0.train.lr", ".inf", "models[0].train.lr: must be a finite number"),
    ("datasets.syn.params.train_per_class", "100000000", "datasets.syn.params.train_per_class, test_per_class"),
    ("cluster.num_cpus", "1000", "cluster.num_cpus: 1000 but this machine has"),
    ("tracking.connect_timeout_s", "0", "tracking.connect_timeout_s: must be > 0 seconds"),
])
def test_bad_config_values_fail_validation_naming_the_field(tmp_path, capsys, key, value, expect):
    path = write_config(tmp_path / "c.yaml", tiny_config(tmp_path / "out"))
    err = _fails(capsys, "validate", str(path), "--set", f"{key}={value}")
    assert expect in err, err
    err = _fails(capsys, "run", str(path), "--set", f"{key}={value}")  # run refuses before any work
    assert expect in err and not (tmp_path / "out").exists(), err


def test_truncated_image_in_an_imagefolder_names_the_file(tmp_path):
    from farm.config import DatasetSpec

    root = write_imagefolder(tmp_path / "imnet")
    victim = sorted((root / "train" / "n00000001").glob("*.png"))[0]
    victim.write_bytes(victim.read_bytes()[:200])
    ds = load_dataset(build(DatasetSpec, {"name": "imagefolder", "root": str(root),
                                          "params": {"image_size": 32, "resize": None}}))
    with pytest.raises(DatasetError, match=rf"{victim.name}: cannot decode the image.*replace or delete"):
        ds.images("train", np.arange(len(ds.labels("train"))))


def test_ui_refuses_a_public_host_without_expose_and_a_taken_port(capsys):
    err = _fails(capsys, "ui", "--host", "0.0.0.0", "--dry-run")
    assert "--host 0.0.0.0" in err and "no login" in err and "--expose" in err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        err = _fails(capsys, "ui", "--port", str(port), "--dry-run")
        assert f"--port {port}" in err and "Pass another --port" in err
    assert main(["ui", "--host", "0.0.0.0", "--expose", "--port", str(port), "--dry-run"]) == 0


def test_run_id_with_a_trailing_newline_is_refused(tmp_path, capsys):
    with pytest.raises(StoreError, match="run id"):
        RunStore(str(tmp_path), "abc\n")
    err = _fails(capsys, "run", "--resume", "abc\n", "--set", f"run.output={tmp_path}")
    assert "run id" in err and "no trailing newline" in err
    path = write_config(tmp_path / "c.yaml", tiny_config(tmp_path / "out", run={"name": "n", "id": "abc\n"}))
    assert "run.id: 'abc\\n'" in _fails(capsys, "validate", str(path))
