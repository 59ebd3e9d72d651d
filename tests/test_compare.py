"""``farm compare`` on the committed fixture run: identical to a copy of itself, and every kind of
per-pair difference (trigger bytes, size, converged flip, missing pair) is found and counted."""
from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from farm.cli import main
from farm.compare import compare, resolve
from farm.store import RunStore

FIXTURE = Path(__file__).parent / "fixtures" / "tables_run"


@pytest.fixture
def copy(tmp_path) -> Path:
    shutil.copytree(FIXTURE, tmp_path / "b")
    return tmp_path / "b"


def _shards(root: Path) -> list[Path]:
    return sorted((root / "fixture" / "pairs").rglob("*.parquet"))


def _edit_first_shard(root: Path, edit) -> None:
    path = _shards(root)[0]
    table = pq.read_table(path)
    rows = table.to_pylist()
    edit(rows)
    pq.write_table(type(table).from_pylist(rows, schema=table.schema), path)


def test_a_copy_is_identical(copy, capsys):
    comp = compare(RunStore(str(FIXTURE), "fixture"), RunStore(str(copy), "fixture"))
    assert comp.identical and comp.same_config
    assert len(comp.joined) == len(RunStore(str(FIXTURE), "fixture").read(with_triggers=False))
    assert (comp.summary()["identical_triggers"] == comp.summary()["pairs"]).all()
    assert main(["compare", str(FIXTURE / "fixture"), str(copy / "fixture")]) == 0
    assert "IDENTICAL" in capsys.readouterr().out


def test_every_difference_is_found(copy, tmp_path, capsys):
    def edit(rows):
        rows[0]["trigger_size"] = (rows[0]["trigger_size"] or 0) + 3
        rows[0]["raw_size"] = (rows[0]["raw_size"] or 0) + 3
        rows[1]["converged"] = not rows[1]["converged"]
        rows[2]["trigger"] = bytes(rows[2]["trigger"]) + b"\x01"  # other bytes, all else equal
        del rows[3]  # a pair only run A has

    _edit_first_shard(copy, edit)
    comp = compare(resolve(str(FIXTURE / "fixture"), None), resolve(str(copy / "fixture"), None))
    assert not comp.identical
    assert len(comp.only_a) == 1 and comp.only_b.empty
    assert int(comp.joined["differs"].sum()) == 3
    assert int(comp.joined["converged_flip"].sum()) == 1
    assert int(comp.joined["size_differs"].sum()) == 1 and comp.joined["dsize"].max() == 3
    assert int((~comp.joined["same_trigger"]).sum()) == 1
    csv = tmp_path / "diff.csv"
    assert main(["compare", "fixture", "fixture", "--output", str(FIXTURE), "--output-b", str(copy),
                 "--csv", str(csv)]) == 1
    out = capsys.readouterr().out
    assert "DIFFERENT (3 pairs differ, 1 with a converged/status flip)" in out and "only in A: 1" in out
    assert csv.read_text().count("\n") == len(comp.joined) + 1


def test_missing_run_is_a_clear_error(tmp_path, capsys):
    assert main(["compare", "nope", "fixture", "--output", str(tmp_path), "--output-b", str(FIXTURE)]) == 2
    assert "run 'nope': no manifest.json" in capsys.readouterr().err
