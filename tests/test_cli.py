"""The `farm` command: zoo, ui, help, and user errors without tracebacks."""
from __future__ import annotations

import json

import pytest

from e2e_util import tiny_config, write_config
from farm.cli import build_parser, main


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for cmd in ("run", "validate", "zoo", "tables", "ui", "bench"):
        assert cmd in out


def test_zoo_trains_caches_and_writes_manifest(tmp_path, capsys):
    path = write_config(tmp_path / "c.yaml", tiny_config(tmp_path / "out"))
    assert main(["zoo", str(path)]) == 0
    out = capsys.readouterr().out
    assert "clean_acc=" in out and "poisoned" in out
    manifest = json.loads((tmp_path / "out" / "zoo" / "manifest.json").read_text())
    assert {e["kind"] for e in manifest["entries"]} == {"clean", "poisoned"}
    for e in manifest["entries"]:  # the printed accuracy/ASR are the manifest's, in percent
        assert f"clean_acc={100 * e['clean_acc']:.1f}%" in out
    poisoned = next(e for e in manifest["entries"] if e["kind"] == "poisoned")
    assert f"asr={100 * poisoned['asr']:.1f}%" in out and "asr=-" in out  # the clean model has none
    assert main(["zoo", str(path)]) == 0
    assert "cache hit" in capsys.readouterr().out


def test_ui_binds_loopback_by_default(capsys, tmp_path):
    assert main(["ui", "--output", str(tmp_path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "--host 127.0.0.1" in out and f"sqlite:///{tmp_path}" in out
    assert build_parser().parse_args(["ui"]).host == "127.0.0.1"


def test_resume_unknown_run_is_a_clean_error(tmp_path, capsys):
    path = write_config(tmp_path / "c.yaml", tiny_config(tmp_path / "out"))
    assert main(["run", str(path), "--resume", "nope"]) == 2
    err = capsys.readouterr().err
    assert "no run 'nope'" in err and "Traceback" not in err


def test_unreachable_cluster_address_fails_fast(tmp_path, capsys):
    import socket

    import ray

    ray.shutdown()  # connect() reuses an initialised Ray (conftest.local_ray of an earlier test in this worker)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once the socket is closed
    path = write_config(tmp_path / "c.yaml", tiny_config(tmp_path / "out"))
    assert main(["run", str(path), "--address", f"127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err
    assert "does not answer" in err and "Traceback" not in err
