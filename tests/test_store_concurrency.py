"""Issue 10, point 4: the store under real concurrent processes (no Ray needed here).

Two processes rewrite one file through the store while a third reads it; two processes
create one fresh sqlite MLflow store at once; a process holding a run's lock makes a second
``farm run --resume`` refuse. Rows lost and duplicated stay 0 in the run tests
(tests/test_resume_store.py).
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from farm.cli import main
from farm.store import RunStore

ROOT = Path(__file__).resolve().parent.parent


def _spawn(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "RAY_USAGE_STATS_ENABLED": "0"})


WRITER = """
import sys
from farm.store import RunStore
store, failures = RunStore(sys.argv[1], "race"), 0
for i in range(400):
    try:
        store.write_manifest({"writer": sys.argv[2], "i": i, "pad": "x" * 400_000})
    except Exception as exc:
        failures += 1
print(failures)
"""

READER = """
import json, sys, time
from pathlib import Path
path, bad, deadline = Path(sys.argv[1]) / "race" / "manifest.json", 0, time.time() + 60
seen = 0
while seen < 2000 and time.time() < deadline:
    try:
        json.loads(path.read_text())
        seen += 1
    except FileNotFoundError:
        pass
    except ValueError:
        bad += 1
        seen += 1
print(bad)
"""


def test_two_writers_of_one_file_never_fail_and_readers_never_see_half_a_file(tmp_path):
    RunStore(str(tmp_path), "race").create("a: 1\n", {"writer": "init"})
    procs = [_spawn(WRITER, str(tmp_path), w) for w in ("a", "b", "c")] + [_spawn(READER, str(tmp_path))]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e for _, e in outs]
    writer_failures, half_read = [int(o.strip()) for o, _ in outs[:3]], int(outs[3][0].strip())
    print(f"rename failures per writer: {writer_failures}; half-written manifests read: {half_read}")
    assert writer_failures == [0, 0, 0] and half_read == 0
    assert json.loads((tmp_path / "race" / "manifest.json").read_text())["i"] == 399
    assert not [p for p in (tmp_path / "race").iterdir() if p.name.startswith(".tmp")]


MLFLOW = """
import sys
import mlflow
from farm.tracking import scoped_uri
with scoped_uri(sys.argv[1]):
    mlflow.set_experiment("farm")
    with mlflow.start_run(run_name=sys.argv[2]):
        mlflow.log_param("who", sys.argv[2])
print("ok")
"""


def test_two_processes_creating_one_sqlite_mlflow_store_both_succeed(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    procs = [_spawn(MLFLOW, uri, name) for name in ("first", "second")]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-2000:] for _, e in outs]
    import mlflow

    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert sorted(r.data.params["who"] for r in runs) == ["first", "second"]


HOLDER = """
import sys, time
from farm.store import RunStore
lock = RunStore(sys.argv[1], "busy").lock()
print("locked", flush=True)
sys.stdin.read()
"""


def test_resume_of_a_run_another_process_is_writing_is_refused(tmp_path, capsys):
    from e2e_util import tiny_config, write_config
    from farm.config import config_from_dict

    cfg = tiny_config(tmp_path, run={"name": "busy", "id": "busy", "output": str(tmp_path)})
    RunStore(str(tmp_path), "busy").create(write_config(tmp_path / "c.yaml", cfg).read_text(),
                                           {"config_hash": config_from_dict(cfg).hash(), "status": "running"})
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], cwd=ROOT, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    try:
        assert holder.stdout.readline().strip() == "locked"
        code = main(["run", "--resume", "busy", "--set", f"run.output={tmp_path}"])
        err = capsys.readouterr().err
        assert code == 2 and "being written by another farm process" in err and f"pid {holder.pid}" in err, err
        code = main(["run", str(tmp_path / "c.yaml")])  # a fresh run with the same id: refused too
        assert code == 2 and "already exists" in capsys.readouterr().err
        code = main(["align", "busy", "--output", str(tmp_path)])  # align writes into the run folder too
        err = capsys.readouterr().err
        assert code == 2 and "being written by another farm process" in err and "Traceback" not in err, err
    finally:
        holder.communicate("", timeout=30)
    # The holder is gone (its lock died with it): the run can be resumed again.
    lock = RunStore(str(tmp_path), "busy").lock()
    assert lock is not None
    lock.release()
